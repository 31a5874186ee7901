#!/usr/bin/env bash
# The GPU suite on a bare CUDA machine, from the project root:
#
#     bash benchmarks/gpu_check.sh [extra options for python -m benchmarks.run]
#
# The machine needs Python with PyTorch (CUDA), numpy, scikit-learn and tqdm, and no network:
# the project is installed without its dependencies (torch is never touched) and snntorch, norse,
# nir and nirtorch come from the pure-Python wheels in .wheels/ (see docs/benchmarks.md, section 5,
# for how to fill it). Writes docs/benchmarks.md's GPU section and docs/benchmarks/gpu.json; when
# $OUT is set (the device tool), copies them and the log there.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
LOG=${OUT:+$OUT/gpu_check.log}
LOG=${LOG:-/tmp/gpu_check.log}
exec > >(tee "$LOG") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "available", torch.cuda.is_available())'

echo "== install"
if compgen -G ".wheels/*.whl" >/dev/null; then
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile .wheels/*.whl; then
        echo "pip could not install into the environment; using --target /tmp/ttfs-site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade \
            --target /tmp/ttfs-site .wheels/*.whl
        export PYTHONPATH=/tmp/ttfs-site${PYTHONPATH:+:$PYTHONPATH}
    fi
else
    echo "no .wheels/*.whl: the snnTorch and Norse parts will fail (carry .wheels)"
fi
# --no-build-isolation: the machine reaches no index to fetch setuptools into an isolated build
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .; then
    echo "editable install failed; running from the source tree (PYTHONPATH)"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -m pip list 2>/dev/null | grep -i -E '^(torch|torchvision|numpy|scikit-learn|tqdm|snntorch|norse|nir|nirtorch|ttfs-plugin) ' || true

echo "== suite"
start=$SECONDS
"$PY" -m benchmarks.run --suite gpu "$@"
rc=$?
echo "== suite exited with $rc after $((SECONDS - start)) s"
if [ -n "${OUT:-}" ]; then
    cp docs/benchmarks.md docs/benchmarks/gpu.json "$OUT"/ 2>/dev/null || true
fi
exit $rc
