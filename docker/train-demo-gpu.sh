#!/usr/bin/env bash
# Train the four demo networks on one GPU (H100/H200) and grade them: the GPU path of the recipe.
#
#   bash docker/train-demo-gpu.sh OUT_DIR          # plan gpu: all four networks share the GPU (--jobs 4)
#   PLAN=quick JOBS=2 THREADS=1 bash docker/train-demo-gpu.sh /tmp/x  # dry run on a 2-core CPU (minutes)
#
# Writes OUT_DIR/bundles/{demo-mambo,demo-dualview}, OUT_DIR/work (run folders, logs, previews),
# OUT_DIR/grade (report.md/json, contact sheets) and OUT_DIR/timings.txt. Budget: 8 minutes of wall
# time for the training on one H200 (bf16 autocast, batch 64, four processes on one device).
set -euo pipefail
out="${1:?usage: train-demo-gpu.sh OUT_DIR}"
plan="${PLAN:-gpu}"
cd "$(dirname "$0")/.."
py="${PYTHON:-python}"
mkdir -p "$out"
"$py" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
start=$(date +%s)
OMP_NUM_THREADS="${THREADS:-2}" "$py" -m app.cli.main train demo --plan "$plan" --jobs "${JOBS:-4}" --threads "${THREADS:-2}" --no-progress \
  --out "$out/bundles" --work "$out/work" --seed 0 > "$out/train.log" 2>&1
trained=$(date +%s)
echo "train_s $((trained - start))" > "$out/timings.txt"
gates=(--quick)
[ "$plan" = gpu ] && gates=()
"$py" -m app.cli.main evaluate demo "${gates[@]}" --bundle "$out/bundles/demo-mambo" \
  --dualview-bundle "$out/bundles/demo-dualview" --out "$out/grade" > "$out/grade.log" 2>&1 || true
echo "grade_s $(($(date +%s) - trained))" >> "$out/timings.txt"
cat "$out/timings.txt"
tail -n 30 "$out/grade/report.md" || true
