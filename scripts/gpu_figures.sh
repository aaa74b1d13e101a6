#!/usr/bin/env bash
# Every GPU figure detbench reports, and the GPU paths a CPU cannot try (NCCL, SyncBatchNorm, bf16 on
# CUDA, a rank that diverges), from a plain checkout on a GPU machine that has its own PyTorch stack
# and no network, installing nothing into it:
#
#     PYTHONPATH=. bash scripts/gpu_figures.sh            # writes results/gpu-<device>/
#
# Needs python (or python3) with torch >= 2.4, torchvision, timm >= 1.0.20, pandas, matplotlib, pyyaml,
# jinja2, tabulate, psutil, tqdm, safetensors, omegaconf (with antlr4-python3-runtime), pycocotools
# and pytest. Wheels of what the machine lacks (built for its Python, e.g. `pip download --no-deps
# --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl pycocotools
# omegaconf antlr4-python3-runtime==4.9.3`) can be put into .whl/: each is unpacked into a temporary
# folder on PYTHONPATH for this script only.
#
# Every step's output goes to <out>/<step>.log and its exit status and seconds to <out>/status.tsv;
# a failed step does not stop the others. Each step has a time limit (exit status 124 in status.tsv:
# it ran out of time). STEPS, a regular expression, runs only the steps whose names match it in full
# (e.g. STEPS='measure|mfu|overhead-.*'), to rerun what failed. On one H200 (2026-12-04,
# results/gpu-NVIDIA-H200/) the steps took: tests 18 s, smoke-bf16 41 s, measure 115 s, measure-compiled
# about 60 s a backbone, mfu 1 s, overhead about 50 s a backbone: about 7.5 minutes in all; the two-GPU
# torchrun steps have not run on a machine yet.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1
py=$(command -v python || command -v python3) || { echo "error: neither python nor python3 is on PATH" >&2; exit 2; }
if compgen -G ".whl/*.whl" > /dev/null; then
  site=$(mktemp -d)
  for wheel in .whl/*.whl; do "$py" -m zipfile -e "$wheel" "$site"; done
  PYTHONPATH="$PYTHONPATH:$site"
fi
"$py" - <<'PY' || exit 2
import importlib.util, re, sys

def version(text):
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])

for name, least in (("torch", (2, 4)), ("torchvision", (0, 19)), ("timm", (1, 0, 20))):
    try:
        module = __import__(name)
    except ImportError as err:
        sys.exit(f"error: {name} cannot be imported ({err}); see the header of scripts/gpu_figures.sh")
    if version(module.__version__) < least:
        sys.exit(f"error: {name} {module.__version__} is older than {'.'.join(map(str, least))}, which detbench needs")
needed = ("jinja2", "matplotlib", "omegaconf", "pandas", "psutil", "pycocotools", "pytest", "safetensors", "tabulate",
          "tqdm", "yaml")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"error: cannot import {', '.join(missing)}; see the header of scripts/gpu_figures.sh for wheels in .whl/")
import torch
if not torch.cuda.is_available():
    sys.exit("error: no CUDA device")
PY
device=$("$py" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
out="${OUT_DIR:-results/gpu-$device}"
if [ -e "$out" ]; then
  echo "error: $out exists; move it away or set OUT_DIR" >&2
  exit 2
fi
mkdir -p "$out"
runs=$(mktemp -d)  # run folders hold checkpoints: kept out of the results folder
: > "$out/commands.txt"
printf 'step\texit_status\tseconds\n' > "$out/status.tsv"
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its log and exit status, carry on
  local name=$1 limit=$2 start=$SECONDS status
  shift 2
  [[ -n "${STEPS:-}" && ! $name =~ ^(${STEPS})$ ]] && return 0
  echo "\$ $*" | tee -a "$out/commands.txt"
  timeout --kill-after=15 "$limit" "$@" > "$out/$name.log" 2>&1
  status=$?
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" | tee -a "$out/status.tsv"
  [ "$status" = 0 ] || tail -n 5 "$out/$name.log"
}
keep_run() {  # the run folder's record, without its checkpoints
  [ -d "$runs/$1" ] && mkdir -p "$out/runs/$1" && cp "$runs/$1"/{status.json,config.yaml,metrics.csv,report.md} \
    "$out/runs/$1/" 2>/dev/null
  return 0
}
small_measure=(--set 'measure.batch_sizes=[1]' --set 'measure.channels_last=[false]' --set measure.cpu=false
               --set measure.repeats=2 --set measure.min_run_time=0.1)

# 1. The CUDA code paths under test (the project's pytest options need pytest-benchmark: not here).
step tests 90 "$py" -m pytest -q tests/test_cuda.py -p no:cacheprovider -o addopts=-ra
# 2. The whole pipeline on one GPU with bf16.
step smoke-bf16 75 "$py" -m bench.run --profile smoke --device cuda --backbones detnet59,resnet50 \
  --set train.precision=bf16 "${small_measure[@]}" --out "$runs/smoke-bf16" --no-progress
keep_run smoke-bf16
# 3. Two processes under torchrun (NCCL): SyncBatchNorm from scratch; frozen norm with a compiled backbone;
#    rank 1's loss made NaN at iteration 1, which both ranks must stop on, naming rank 1.
if [ "$gpus" -ge 2 ]; then
  torchrun=("$py" -m torch.distributed.run --standalone --nproc_per_node=2)
  step torchrun-syncbn 60 "${torchrun[@]}" -m bench.run --profile smoke --device cuda --backbones resnet50 \
    --set detector.norm=batch --set train.iterations=20 "${small_measure[@]}" --out "$runs/torchrun-syncbn" --no-progress
  keep_run torchrun-syncbn
  step torchrun-frozen-compiled 90 "${torchrun[@]}" -m bench.run --profile smoke --device cuda --backbones resnet50 \
    --set detector.norm=frozen --set train.compile_backbone=true --set train.iterations=20 "${small_measure[@]}" \
    --out "$runs/torchrun-frozen-compiled" --no-progress
  keep_run torchrun-frozen-compiled
  step torchrun-diverge 60 "${torchrun[@]}" tests/dist_faults.py nan 1 --profile smoke --device cuda \
    --backbones resnet50 "${small_measure[@]}" --out "$runs/torchrun-diverge" --no-progress
  step torchrun-diverge-named 5 grep -q "became nan at iteration 1 on rank 1 (of 2 processes" "$out/torchrun-diverge.log"
else
  printf 'torchrun-*\tskipped: %s GPU\t0\n' "$gpus" | tee -a "$out/status.tsv"
fi
# 4. Cost at the paper's 800 px: eager at batch 1/8, fp32/bf16, channels-last; compiled at one batch.
step measure 220 "$py" -m bench.measure --backbones detnet59,resnet50,resnet101 --device cuda --profile paper \
  --set 'measure.batch_sizes=[1,8]' --set 'measure.channels_last=[false,true]' --set measure.cpu=false \
  --set measure.repeats=3 --set measure.min_run_time=0.2 --out "$out/measure" --no-progress
step measure-compiled 200 "$py" -m bench.measure --backbones detnet59,resnet50,resnet101 --device cuda --profile paper \
  --set 'measure.batch_sizes=[2]' --set 'measure.channels_last=[true]' --set 'measure.dtypes=[bfloat16]' \
  --set 'measure.compile=[true]' --set measure.cpu=false --set measure.repeats=3 --set measure.min_run_time=0.2 \
  --out "$out/measure-compiled" --no-progress
# 5. MFU of backbone inference against the card's bf16 peak.
step mfu 10 "$py" scripts/mfu.py "$out/measure"
# 6. Paper-geometry training on generated 800 px images, bf16, 40 iterations: images/s, the harness's
#    overhead against a bare loop, the fast paths.
for backbone in resnet50 detnet59; do
  step "overhead-$backbone" 65 "$py" -m bench.overhead --profile paper --device cuda --backbones "$backbone" \
    --set train.batch_size=8 --set synthetic.image_size=800 --set synthetic.num_train=64 \
    --set synthetic.num_val=16 --iterations 40 --rounds 5
done
rm -rf "$runs"
failed=$(awk -F'\t' 'NR > 1 && $2 != 0 && $2 !~ /^skipped/' "$out/status.tsv" | wc -l)
echo "figures in $out; $failed step(s) failed (status.tsv)"
[ "$failed" = 0 ]
