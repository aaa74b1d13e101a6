#!/usr/bin/env bash
# Every GPU figure detbench reports, from a plain checkout on a GPU machine that has its own
# PyTorch stack and no network, installing nothing:
#
#     PYTHONPATH=. bash scripts/gpu_figures.sh            # writes results/gpu-<device>/
#
# Needs torch, torchvision, timm, pandas, matplotlib, pyyaml, jinja2, tabulate, psutil and
# omegaconf importable; pycocotools only for the CUDA tests. A pure-Python package the machine
# lacks (omegaconf) can be put as a wheel into .whl/: wheels there are put on PYTHONPATH as they
# are (Python imports pure-Python wheels as zip files), nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1
for wheel in .whl/*.whl; do
  [ -e "$wheel" ] && PYTHONPATH="$PYTHONPATH:$wheel"
done
python - <<'PY' || { echo "error: no CUDA device, or a package is missing (see the header of this script)" >&2; exit 2; }
import torch, torchvision, timm, omegaconf  # noqa: F401
assert torch.cuda.is_available()
PY
device=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
out="${OUT_DIR:-results/gpu-$device}"
mkdir -p "$out"
: > "$out/commands.txt"
step() {  # step NAME COMMAND...: record the command, keep its output
  local name=$1; shift
  echo "\$ $*" | tee -a "$out/commands.txt"
  "$@" 2>&1 | tee "$out/$name.txt"
}

# 1. Cost at the paper's 800 px: batch 1/2/4/8, fp32/bf16, channels-last, torch.compile; CUDA memory.
step measure python -m bench.measure --backbones detnet59,resnet50,resnet101 --device cuda --profile paper \
  --set 'measure.batch_sizes=[1,2,4,8]' --set 'measure.channels_last=[false,true]' \
  --set 'measure.compile=[false,true]' --out "$out/measure" --no-progress
# 2. MFU of backbone inference against the card's bf16 peak.
step mfu python scripts/mfu.py "$out/measure"
# 3. Paper-geometry training on generated 800 px images, bf16, 200 iterations: images/s, the harness's
#    overhead against a bare loop, the fast paths; peak memory is in measure's train_step rows.
for backbone in resnet50 detnet59; do
  step "overhead-$backbone" python -m bench.overhead --profile paper --device cuda --backbone "$backbone" \
    --set train.batch_size=8 --set synthetic.image_size=800 --set synthetic.num_train=64 \
    --set synthetic.num_val=16 --iterations 200 --rounds 20
done
# 4. The CUDA code paths under test (skipped without pycocotools).
if python -c "import pycocotools" 2>/dev/null; then
  step tests python -m pytest -q tests/test_cuda.py -p no:cacheprovider
else
  echo "pycocotools is missing: CUDA tests skipped" | tee "$out/tests.txt"
fi
echo "figures in $out"
