#!/usr/bin/env bash
# The folder a lent GPU machine needs for tools/gpu_run.sh, made here in one command, under the device's limit.
#
#   tools/prepare_gpu_run.sh [FOLDER]      # default .gpu; downloads wheels with pip
#
# Run from the checkout's root. DATA_ROOT (default ../shared/data) holds the sets; PYTHON (default
# .venv/bin/python) is a Python with lesionseg's requirements.
#
# FOLDER gets:
#   wheels/    what a bare CUDA image may lack, at lesionseg's pins (requirements.txt), for CPython 3.12 on
#              x86-64 Linux: pydantic and pydantic-settings with theirs, timm, and the server's packages, so
#              that HTTP is measured too;
#   photo.jpg  a dermoscopy photo for the serving benchmark (ISIC 2018, CC BY-NC: it stays on the lent machine);
#   data.zip   tools/pack_training_data.py's pack, as large as what the limit leaves.
# What travels to the device is this folder and the checkout's tracked files together, 64 MiB at most: the
# checkout's ONNX graphs (61 MB) must be set aside for the call, which the printed steps say how to do.
set -euo pipefail
folder=${1:-.gpu}
python=${PYTHON:-.venv/bin/python}
data_root=${DATA_ROOT:-../shared/data}
limit_bytes=$((64 * 1024 * 1024))
margin_bytes=$((1024 * 1024)) # the zip's own directory, file-system rounding
mkdir -p "$folder/wheels"

pins() { for name in "$@"; do grep -i -m1 "^$name==" requirements.txt | cut -d' ' -f1; done; }
# shellcheck disable=SC2046 # one argument a pin
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$folder/wheels" \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  $(pins pydantic pydantic-core pydantic-settings annotated-types typing-inspection python-dotenv timm \
    fastapi starlette fastapi-offline annotated-doc anyio python-multipart prometheus-client uvicorn h11 click)

"$python" - "$folder/photo.jpg" "$data_root" <<'PYTHON'
import sys
from pathlib import Path

import cv2

source = sorted(Path(sys.argv[2], "isic2018", "images").glob("*.jpg"))[0]
photo = cv2.resize(cv2.imread(str(source)), (1024, 768), interpolation=cv2.INTER_AREA)
cv2.imwrite(sys.argv[1], photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
PYTHON

checkout_bytes=$(git ls-files -z | grep -zv '\.onnx$' | xargs -0 stat -c %s | awk '{total += $1} END {print total}')
wheels_bytes=$(du -sb "$folder/wheels" | cut -f1)
photo_bytes=$(stat -c %s "$folder/photo.jpg")
left_bytes=$((limit_bytes - margin_bytes - checkout_bytes - wheels_bytes - photo_bytes))
"$python" tools/pack_training_data.py "$folder/data.zip" --data-root "$data_root" \
  --max-megabytes "$(awk -v bytes="$left_bytes" 'BEGIN {printf "%.1f", bytes / 1e6 - 0.05}')"

total_bytes=$((checkout_bytes + $(du -sb "$folder" | cut -f1)))
echo "to carry: $((total_bytes / 1024 / 1024)) MiB of 64 (checkout without its ONNX graphs, and $folder)"
echo "then (the folder must be one git ignores, as .gpu is): move src/lesionseg/weights/*.onnx aside; run"
echo "  tools/gpu_run.sh $folder \$OUT 200   with carry [\"$folder\"]; fetch; give the machine back; move the graphs back"
