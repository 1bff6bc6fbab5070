#!/usr/bin/env bash
# One-shot GPU verification for a lent device machine (see docs/benchmarks.md, "GPU").
#
#   bash benchmarks/gpu_check.sh DATA.h5mu OUT_DIR
#
# 1. the GPU-path unit tests with a real CUDA device present;
# 2. benchmarks/speed.py on CUDA (bf16 autocast and fp32; default and paper presets) -> cells/s, MFU;
# 3. the released model's exact training command on CUDA/bf16 for three seeds -> wall time, validation and
#    held-out (09I/09J) FOSCTTM from each run's summary.json, to compare with the CPU/fp32 runs in docs/quality.md.
# Every step has its own time limit so that one hang cannot spend the whole lease.
set -u
DATA=${1:?usage: gpu_check.sh DATA.h5mu OUT_DIR}
OUT_DIR=${2:?usage: gpu_check.sh DATA.h5mu OUT_DIR}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, scclip; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', 'scclip', scclip.__version__)"

echo "== 1. GPU-path tests"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_training_gpu_path.py tests/test_model.py 2>&1 | tail -5

echo "== 2. speed"
for prec in bf16 fp32; do
  timeout 150 $PY benchmarks/speed.py --data "$DATA" --device cuda --precision $prec --presets default,paper \
    --steps 20 --warmup 3 --batch-size 256 --embed-cells 20000 2>/dev/null | tee -a "$OUT_DIR/speed.md"
done
timeout 90 $PY benchmarks/speed.py --data "$DATA" --device cuda --precision bf16 --presets paper \
  --steps 20 --warmup 3 --batch-size 1024 --embed-cells 20000 2>/dev/null | tee -a "$OUT_DIR/speed.md"

echo "== 3. released-model training command on CUDA (bf16 autocast), seeds 0 1 2"
for seed in 0 1 2; do
  start=$(date +%s%N)
  timeout 150 $PY -m scclip.cli train --data "$DATA" --out "/tmp/gpu_run_s$seed" --feature-space mm10 \
    --atac tfidf --holdout-key batch --holdout 09I,09J --val-size 1000 --device cuda --seed $seed \
    > "$OUT_DIR/train_s$seed.log" 2>&1
  rc=$?
  echo "seed $seed: rc $rc, wall $(( ($(date +%s%N) - start) / 1000000 )) ms"
  tail -3 "$OUT_DIR/train_s$seed.log"
  cp "/tmp/gpu_run_s$seed/model/summary.json" "$OUT_DIR/summary_s$seed.json" 2>/dev/null
done
