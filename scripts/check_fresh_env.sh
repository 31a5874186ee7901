#!/usr/bin/env bash
# A user's install, away from the checkout: a fresh venv with only PyTorch and snnTorch, then
# `pip install "CHECKOUT[snntorch]"` (non-editable: no scikit-learn, no Norse, no torchvision),
# then the README's five snnTorch lines on a checkpoint trained beforehand with the checkout's
# .venv (the digits dataset needs scikit-learn, which the fresh venv does not have). Also
# checks that the install holds py.typed and the bundled configs, and that digits without
# scikit-learn is one clear line. The fresh venv (~5.5 GB) is deleted at the end.
#
#   scripts/check_fresh_env.sh                     # trains runs/demo with .venv first (~10 s)
#   CKPT=runs/demo/checkpoint.pt scripts/check_fresh_env.sh
#   KEEP=1 scripts/check_fresh_env.sh              # keep the folder (and the venv) to look at
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"          # the checkout's venv: trains the checkpoint
BASE_PYTHON="${BASE_PYTHON:-python3}"      # what the fresh venv is made from
TORCH="${TORCH:-torch==2.14.1}"
SNNTORCH="${SNNTORCH:-snntorch==1.0.0}"
WORK="$(mktemp -d /tmp/ttfs-fresh.XXXXXX)"
cleanup() { if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi; }
trap cleanup EXIT
stamp() { date +%s; }

mkdir -p "$WORK/user/runs/demo"
if [ -n "${CKPT:-}" ]; then
    cp "$CKPT" "$WORK/user/runs/demo/checkpoint.pt"
else
    echo "== train the checkpoint with $PY (ttfs train --dataset digits --epochs 2)"
    t=$(stamp)
    (cd "$ROOT" && "$PY" -m ttfs_plugin train --dataset digits --epochs 2 \
         --out "$WORK/user/runs/demo" --quiet)
    echo "trained in $(( $(stamp) - t )) s"
fi

echo "== fresh venv from $("$BASE_PYTHON" -V 2>&1) with $TORCH and $SNNTORCH"
t=$(stamp)
"$BASE_PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check "$TORCH"
echo "torch in $(( $(stamp) - t )) s"
t=$(stamp)
"$VPY" -m pip install -q --disable-pip-version-check "$SNNTORCH"
echo "snntorch in $(( $(stamp) - t )) s"

echo "== pip install \"$ROOT[snntorch]\" (non-editable)"
t=$(stamp)
"$VPY" -m pip install -q --disable-pip-version-check "$ROOT[snntorch]"
echo "ttfs-plugin in $(( $(stamp) - t )) s"
"$VPY" -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE "^(torch|snntorch|ttfs-plugin|numpy|tqdm|scikit-learn|scipy|norse|torchvision) "
du -sh "$WORK/venv" | sed 's/^/venv size: /'

cd "$WORK/user"   # away from the checkout: the installed package, not the source tree
echo "== the README's five snnTorch lines (images = torch.rand(8, 1, 8, 8))"
"$VPY" - <<'EOF'
import torch
torch.manual_seed(0)
images = torch.rand(8, 1, 8, 8)
from ttfs_plugin.checkpoint import load_checkpoint
from ttfs_plugin import snntorch as tsnn
model, _ = load_checkpoint("runs/demo/checkpoint.pt")   # load the trained surrogate
net = tsnn.to_snntorch(model)                            # convert (batch norm folded)
result = tsnn.simulate(net, images)                      # (L+1)*T steps of spk = net(x_t)
print(result.logits.argmax(1), result.spike_counts)      # predictions, spikes per layer

# The surrogate agrees with the simulation it was converted to.
with torch.no_grad():
    surrogate = model(images).argmax(1)
agree = (surrogate == result.logits.argmax(1)).float().mean().item()
print(f"agreement with the surrogate: {agree:.3f}")
assert agree == 1.0
EOF

echo "== what the install holds"
"$VPY" - <<'EOF'
import importlib.util
from pathlib import Path
import ttfs_plugin
from ttfs_plugin.configs import list_configs, resolve_config
package = Path(ttfs_plugin.__file__).parent
print("package:", package)
assert "site-packages" in str(package), "not the installed copy"
assert (package / "py.typed").is_file(), "py.typed missing"
print("configs:", list_configs(), "->", resolve_config("cifar10_vgg16").relative_to(package.parent))
assert len(list_configs()) == 4
for missing in ("sklearn", "scipy", "norse", "torchvision"):
    assert importlib.util.find_spec(missing) is None, f"{missing} was installed"
print("not installed (as meant): sklearn, scipy, norse, torchvision")
EOF

echo "== ttfs train --dataset digits without scikit-learn"
set +e
"$WORK/venv/bin/ttfs" train --dataset digits --epochs 1 --out "$WORK/user/runs/x" 2> err.txt
status=$?
set -e
cat err.txt
if [ "$status" -ne 2 ] || [ "$(wc -l < err.txt)" -ne 1 ] || ! grep -q "ttfs-plugin\[digits\]" err.txt; then
    echo "check_fresh_env: expected exit 2 and one line naming ttfs-plugin[digits]" >&2; exit 1
fi
echo "exit $status, one line"
echo "check_fresh_env: OK"
