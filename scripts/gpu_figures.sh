#!/usr/bin/env bash
# Every GPU figure detbench reports, from a plain checkout on a GPU machine that has its own
# PyTorch stack and no network, installing nothing into it:
#
#     PYTHONPATH=. bash scripts/gpu_figures.sh            # writes results/gpu-<device>/
#
# Needs torch, torchvision, timm, pandas, matplotlib, pyyaml, jinja2, tabulate, psutil, tqdm,
# safetensors, omegaconf (with antlr4-python3-runtime), pycocotools and pytest importable. Wheels
# of what the machine lacks (built for its Python, e.g. `pip download --no-deps --only-binary=:all:
# --python-version 3.12 --platform manylinux2014_x86_64 -d .whl pycocotools omegaconf
# antlr4-python3-runtime==4.9.3`) can be put into .whl/: each is unpacked into a temporary folder
# on PYTHONPATH for this script only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  site=$(mktemp -d)
  for wheel in .whl/*.whl; do python -m zipfile -e "$wheel" "$site"; done
  PYTHONPATH="$PYTHONPATH:$site"
fi
python - <<'PY' || { echo "error: no CUDA device, or a package is missing (see the header of this script)" >&2; exit 2; }
import jinja2, matplotlib, omegaconf, pandas, psutil, pycocotools.coco, pytest, safetensors, tabulate, timm, torch  # noqa
import torchvision, tqdm, yaml  # noqa: F401
assert torch.cuda.is_available()
PY
device=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
out="${OUT_DIR:-results/gpu-$device}"
if [ -e "$out" ]; then
  echo "error: $out exists; move it away or set OUT_DIR" >&2
  exit 2
fi
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
  --set 'measure.compile=[false,true]' --set measure.cpu=false --out "$out/measure" --no-progress
# 2. MFU of backbone inference against the card's bf16 peak.
step mfu python scripts/mfu.py "$out/measure"
# 3. Paper-geometry training on generated 800 px images, bf16, 200 iterations: images/s, the harness's
#    overhead against a bare loop, the fast paths; peak memory is in measure's train_step rows.
for backbone in resnet50 detnet59; do
  step "overhead-$backbone" python -m bench.overhead --profile paper --device cuda --backbone "$backbone" \
    --set train.batch_size=8 --set synthetic.image_size=800 --set synthetic.num_train=64 \
    --set synthetic.num_val=16 --iterations 200 --rounds 20
done
# 4. The CUDA code paths under test (the project's pytest options need pytest-benchmark: not here).
step tests python -m pytest -q tests/test_cuda.py -p no:cacheprovider -o addopts=-ra
echo "figures in $out"
