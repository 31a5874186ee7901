#!/usr/bin/env bash
# Build the sdist and, from it, the wheel; list both; check what each must and must not hold;
# unpack the sdist in a temporary folder and run its test suite there with this checkout's
# .venv, importing the package from the unpacked copy (not from the editable install).
#
#   scripts/check_sdist.sh                 # default: pytest -q -x (the default, non-slow run)
#   PYTEST_ARGS="-m 'not notebooks'" scripts/check_sdist.sh
#   KEEP=1 scripts/check_sdist.sh          # keep the temporary folder (printed at the end)
#
# Needs `build` in the venv (.venv/bin/python -m pip install build). It builds without build
# isolation, with the venv's own setuptools (>= 77), so it works offline.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
export TTFS_DATA_DIR="${TTFS_DATA_DIR:-$ROOT/../shared/data}"
WORK="$(mktemp -d /tmp/ttfs-sdist.XXXXXX)"
cleanup() { if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi; }
trap cleanup EXIT

"$PY" -c "import build" 2>/dev/null || { echo "check_sdist: pip install build first" >&2; exit 2; }

echo "== build (sdist, then the wheel from the sdist) into $WORK/dist"
start=$(date +%s)
"$PY" -m build --no-isolation --outdir "$WORK/dist" "$ROOT" > "$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; exit 1; }
echo "built in $(( $(date +%s) - start )) s:"
ls -l "$WORK/dist"
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/*.whl)"

"$PY" - "$SDIST" "$WHEEL" <<'EOF'
import sys, tarfile, zipfile
from collections import Counter

sdist, wheel = sys.argv[1:]
with tarfile.open(sdist) as tar:
    s_names = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()]
with zipfile.ZipFile(wheel) as zf:
    w_names = zf.namelist()


def summary(names):
    return ", ".join(f"{top} {n}" for top, n in sorted(Counter(
        n.split("/")[0] if "/" in n else "(top level)" for n in names).items()))


print(f"\n== sdist {sdist.rsplit('/', 1)[1]}: {len(s_names)} files ({summary(s_names)})")
for name in sorted(s_names):
    print("  ", name)
print(f"\n== wheel {wheel.rsplit('/', 1)[1]}: {len(w_names)} files ({summary(w_names)})")
for name in sorted(w_names):
    print("  ", name)

configs = ["cifar100_vgg16.toml", "cifar10_vgg16.toml", "mnist_cnn.toml", "nmnist_cnn.toml"]
must_sdist = ["pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in",
              "tests/conftest.py", "tests/_data_helpers.py", "ttfs_plugin/py.typed",
              "ttfs_plugin/configs/__init__.py", "mkdocs.yml", "docs/index.md",
              "examples/01_quickstart.py", "examples/01_quickstart.ipynb", "benchmarks/run.py",
              *(f"ttfs_plugin/configs/{c}" for c in configs)]
must_wheel = ["ttfs_plugin/py.typed", "ttfs_plugin/configs/__init__.py",
              *(f"ttfs_plugin/configs/{c}" for c in configs)]
problems = [f"sdist lacks {n}" for n in must_sdist if n not in s_names]
problems += [f"wheel lacks {n}" for n in must_wheel if n not in w_names]
problems += [f"sdist holds {n}" for n in s_names
             if n.startswith(("site/", "runs/", ".venv/")) or "__pycache__" in n]
problems += [f"wheel holds {n}" for n in w_names
             if not n.startswith(("ttfs_plugin/", "ttfs_plugin-")) or "__pycache__" in n]
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in w_names):
    problems.append("wheel lacks the LICENSE file")
if problems:
    sys.exit("\n".join(["", "check_sdist: FAILED", *problems]))
print("\ncontents OK: sdist has tests + conftest + helpers + configs + py.typed; "
      "wheel has configs + py.typed and nothing but the package")
EOF

echo
echo "== unpack the sdist and run its tests (TTFS_DATA_DIR=$TTFS_DATA_DIR)"
mkdir -p "$WORK/unpacked"
tar -xzf "$SDIST" -C "$WORK/unpacked" --strip-components 1
cd "$WORK/unpacked"
# python -m puts the working folder first on sys.path; PYTHONPATH does the same for the
# subprocesses the tests start (torchrun, the notebook kernels, `python -m ttfs_plugin`).
export PYTHONPATH="$WORK/unpacked${PYTHONPATH:+:$PYTHONPATH}"
where=$("$PY" -c "import ttfs_plugin, ttfs_plugin.configs as c; print(ttfs_plugin.__file__, len(c.list_configs()))")
echo "ttfs_plugin imported from: $where"
case "$where" in "$WORK/unpacked/"*) ;; *) echo "check_sdist: not the unpacked copy" >&2; exit 1;; esac
eval "set -- ${PYTEST_ARGS:-}"
"$PY" -m pytest -q -x -p no:cacheprovider -rs "$@"
