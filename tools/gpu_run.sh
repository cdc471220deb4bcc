#!/usr/bin/env bash
# A GPU run as a recipe: everything a lent GPU machine does, in one script, every result into one folder.
#
#   tools/gpu_run.sh CARRIED RESULTS [TRAINING_SECONDS]
#
# CARRIED holds what the machine lacks, made here first (docs: "A GPU run"):
#   data.zip   tools/pack_training_data.py's training and validation pairs (never the test split);
#   photo.jpg  a 1024×768 dermoscopy JPEG for the serving benchmark;
#   wheels/    lesionseg's pure-Python needs that a bare CUDA image may lack (pydantic and pydantic-settings
#              with theirs, and timm at lesionseg's pin); torch, torchvision, OpenCV, NumPy and safetensors
#              are expected there.
# RESULTS gets machine.txt, serving.txt and serving.json (benchmarks/gpu.py), cuda-tests.txt (the CUDA
# tests), train.log, and the candidate's best.safetensors, best.json and log.json: eight files. Each step has
# a time limit, so a slow step costs its own results only; training stops after TRAINING_SECONDS (default 200)
# whatever its schedule, keeping its best checkpoint so far.
set -uo pipefail
carried=$(realpath "${1:?the carried folder}")
results=$(realpath -m "${2:?the results folder}")
training_seconds=${3:-200}
mkdir -p "$results"
work=$(mktemp -d)

# Ahead of the machine's own packages: lesionseg's pinned timm names the weights as the checkpoint does.
python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$carried"/wheels/*.whl || exit 1
export PYTHONPATH="$PWD/src:$PWD:$work/site" PYTHONUNBUFFERED=1
python3 -c "import zipfile, sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$carried/data.zip" "$work/data"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true) | tee "$results/machine.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cpus', __import__('os').cpu_count())" \
  | tee -a "$results/machine.txt"

# 1. Serving: CUDA against the CPU in one run, the masks' agreement, `lesionseg batch`.
timeout 240 python3 benchmarks/gpu.py --photo "$carried/photo.jpg" --pairs "$work/data/isic2018/images" \
  --out "$results/serving.json" 2>&1 | grep -v "it/s]" | tee "$results/serving.txt"

# 2. The candidate: Lite0 at 192 px, from the shipped weights, batch 256, augmented on the GPU.
timeout "$training_seconds" python3 -m lesionseg.cli train --data-root "$work/data" --output-directory "$work/lite0-192" \
  --device cuda --batch-size 256 --epochs 20 --samples-per-epoch 25600 --checkpoint-every 1000 --select-on mean \
  --initial-weights src/lesionseg/weights/default.safetensors 2>&1 | grep -v "it/s]\|step/s]\|s/step]" | tee "$results/train.log"
for name in best.safetensors best.json log.json; do
  [ -f "$work/lite0-192/$name" ] && cp "$work/lite0-192/$name" "$results/"
done
# 3. The CUDA tests, on the carried pairs.
LESIONSEG_DATA_ROOT="$work/data" timeout 60 python3 -m pytest -q -p no:cacheprovider tests/backends/test_cuda.py \
  2>&1 | tail -15 | tee "$results/cuda-tests.txt"

ls -la "$results"
