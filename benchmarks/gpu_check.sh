#!/usr/bin/env bash
# The checks a machine with one CUDA GPU runs, in one go of at most 9 minutes (each step has its own limit), from
# the repository root:
#
#     OUT=gpu-check bash benchmarks/gpu_check.sh
#
# It needs torch with CUDA, numpy, h5py, click, scikit-learn, tqdm and OpenCV (the plain headless wheel will do:
# without the contrib modules the benchmark leaves out its OpenCV rows and gives ratios against --opencv-rate,
# OpenCV's 2-thread rate at 320x240 measured on the 2-core development machine). The demos extract with the torch
# TV-L1. The project runs from the source tree (PYTHONPATH), nothing is installed. Everything goes to $OUT/log:
#   1. versions and the device;
#   2. the recognition demo with training and evaluation on CUDA in bf16, its flow extracted by the torch TV-L1
#      on the GPU;
#   3. the detection demo (seed 0) on CUDA, its flow likewise;
#   4. benchmarks/tvl1.py with its CUDA rows (batch 1, 16, 64) beside torch on 2 CPU threads;
#   5. benchmarks/detection.py on CUDA.
# DistributedDataParallel over NCCL needs two GPUs and is not part of this check.
set -uo pipefail
OUT=${OUT:-gpu-check}
PYTHON=${PYTHON:-python3}
OPENCV_RATE=${OPENCV_RATE:-1.323}  # docs/tvl1-torch.md, 320x240, 2 threads
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
exec > >(tee "$OUT/log") 2>&1

step() { echo; echo "== $1 ($(date +%T))"; }
SECONDS=0

# A copy of a demo config with settings added at the top of some tables: "table|line" pairs.
with_settings() {
    "$PYTHON" - "$@" <<'PY'
import sys
source, target, *edits = sys.argv[1:]
text = open(source).read()
edits += ['extract|backend = "torch"', 'extract|device = "cuda"']  # the flow store filled on the GPU
for edit in edits:
    table, line = edit.split("|", 1)
    header = f"[{table}]\n"
    text = text.replace(header, header + line + "\n", 1) if header in text else text + f"\n{header}{line}\n"
open(target, "w").write(text)
PY
}

step "versions"
"$PYTHON" -c "import click, h5py, numpy, sklearn, tqdm, cv2, torch" || { echo "missing a package: see above"; exit 1; }
nvidia-smi -L
"$PYTHON" -c "import torch, cv2; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
torch.cuda.get_device_name(), '| opencv', cv2.__version__, 'contrib' if hasattr(cv2, 'optflow') else 'no contrib')"

step "recognition demo: CUDA, bf16"
with_settings configs/demo.toml "$OUT/demo-gpu.toml" 'train|device = "cuda"' 'train|amp = "bf16"' \
    'evaluate|device = "cuda"' 'evaluate|amp = "bf16"'
time timeout 200 "$PYTHON" -m cli run "$OUT/demo-gpu.toml" --out "$OUT/demo"

step "detection demo: CUDA, seed 0"
with_settings configs/detection-demo.toml "$OUT/detection-gpu.toml"
time timeout 120 "$PYTHON" -m cli demo --task detection --out "$OUT/detection" --seed 0 \
    --config "$OUT/detection-gpu.toml"

step "TV-L1 benchmark"
timeout 150 "$PYTHON" benchmarks/tvl1.py --sizes 320x240 340x256 --pairs 64 --single-pairs 2 --cpu-batches 16 \
    --opencv-rate "$OPENCV_RATE"

step "detection benchmark"
timeout 90 "$PYTHON" benchmarks/detection.py --videos 12 --repeats 3 --device cuda

step "done in $SECONDS s"
