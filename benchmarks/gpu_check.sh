#!/usr/bin/env bash
# The prepared GPU check, under 8 minutes on one CUDA GPU. CI never runs it.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # from the repository root; OUT_DIR default gpu_check/
#
# What it runs, each step with its own time limit (one that hangs cannot eat the others' minutes):
#  1. throughput: the AlexNet context encoder at 227 px, batch 256, channels-last, fp32 and --amp;
#     the dcgan paper model beside PyTorch-GAN's context encoder (benchmarks/speed_pretrain.py);
#     masks drawn on the GPU (benchmarks/masks.py).
#  2. every pretext and every protocol on CUDA at --limit: benchmarks/scenes_table2.yaml (13 rows:
#     every pretext; fine-tuning, both segmentations, detection, the layer-wise probe) and a
#     Fashion-MNIST suite for kNN, the linear probe and inpainting, through the local launcher
#     with --workers 2, so each job gets its own GPU (round-robin: both share GPU 0 on one GPU).
#  3. paper_table2.yaml (AlexNet, STL-10 -> VOC) at --limit 64 with --amp, on $CTXENC_DATA if it
#     holds stl10_binary/ and VOCdevkit/, else on tiny fixtures in the real on-disk formats
#     (tests/real_formats.py): a pipeline check and its time, not an accuracy.
#  4. with two or more GPUs visible: 2-process DDP pretraining under torchrun (NCCL).
# Each step's output goes to OUT_DIR/<step>.txt; the summary table (step, exit, seconds, figures)
# to OUT_DIR/summary.txt and the terminal. Needs python ($PYTHON, default python3) with CUDA torch
# and ctxenc's dependencies.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
ROWS=$OUT/rows.md
: > "$ROWS"

step() {  # step NAME SECONDS COMMAND...: run with a limit, keep its output, add a row to the table
    local name=$1 limit=$2
    shift 2
    local tic=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    # the figures a step prints: markdown table rows and "name: value" lines of the benchmarks
    local figures
    figures=$(grep -E '^\| [a-z]' "$OUT/$name.txt" | grep -v '^| workload' | tr -s ' ' | sed 's/^| //; s/ |$//' | paste -sd ';' -)
    echo "| $name | $rc | $((SECONDS - tic)) | ${figures:-see $name.txt} |" >> "$ROWS"
    [ "$rc" = 0 ] || tail -n 5 "$OUT/$name.txt" | sed 's/^/   | /'
}

GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
HEADER=$({ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } 2>&1)
echo "$HEADER"

# 1. throughput
BENCH="$PY benchmarks/speed_pretrain.py --device cuda --channels-last --rounds 3"
step alexnet_fp32 75 $BENCH --workloads alexnet,peak --batch-size 256 --steps 5
step alexnet_amp 75 $BENCH --workloads alexnet,peak --batch-size 256 --steps 5 --amp
step paper_amp 75 $BENCH --workloads paper,pytorch_gan,peak --batch-size 64 --steps 5 --amp
step masks 45 $PY benchmarks/masks.py --device cuda

# 2. every pretext and protocol on CUDA, one GPU per job
cat > "$OUT/fmnist_protocols.yaml" <<'EOF'
suite: gpu_check_fmnist
dataset: fashion_mnist
encoder: {name: small}
seeds: [0]
train: {steps: 20, batch_size: 64}
pretexts:
  - {name: context_encoder, mask: random_region}
protocols:
  - eval/linear_probe.yaml
  - eval/knn.yaml
  - {protocol: inpainting}
EOF
step all_pretexts 200 $PY -m ctxenc bench benchmarks/scenes_table2.yaml --limit 64 --device cuda \
    --launcher local --workers 2 --out "$OUT/scenes_table2" --no-progress
step fmnist_protocols 60 $PY -m ctxenc bench "$OUT/fmnist_protocols.yaml" --limit 256 --device cuda --amp \
    --launcher local --workers 1 --out "$OUT/fmnist_protocols" --no-progress
# the records must say where they ran
$PY - "$OUT/scenes_table2/records.csv" <<'EOF' >> "$OUT/all_pretexts.txt" 2>&1
import sys
import pandas as pd
records = pd.read_csv(sys.argv[1])
print("| records | rows", len(records), "| methods", records["method"].nunique(), "| protocols", records["protocol"].nunique(),
      "| devices", ",".join(sorted(records["device"].astype(str).unique())), "|")
EOF

# 3. the paper's Table 2 pipeline
DATA=${CTXENC_DATA:-}
if [ -z "$DATA" ] || [ ! -d "$DATA/stl10_binary" ] || [ ! -d "$DATA/VOCdevkit" ]; then
    DATA=$OUT/fixtures
    $PY - "$DATA" <<'EOF'
import sys
from pathlib import Path
from tests.real_formats import write_stl10, write_voc
root = Path(sys.argv[1])
write_stl10(root, n_train=64, n_test=64, n_unlabeled=64)
write_voc(root, "2007", splits={"trainval": 64, "test": 64})
write_voc(root, "2012", splits={"train": 64, "val": 64})
EOF
    echo "paper_table2 runs on tiny fixtures in $DATA (no real data here): a pipeline check, not a result"
fi
step paper_table2 120 $PY -m ctxenc bench benchmarks/paper_table2.yaml --limit 64 --device cuda --amp \
    --data-root "$DATA" --out "$OUT/paper_table2" --no-progress

# 4. DDP across GPUs
if [ "$GPUS" -ge 2 ]; then
    step ddp_2gpu 90 $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m ctxenc pretrain \
        --pretext context_encoder --encoder alexnet --device cuda --amp --steps 30 --batch-size 128 \
        --out "$OUT/ddp" --no-progress
else
    echo "| ddp_2gpu | skipped | 0 | one GPU visible |" >> "$ROWS"
fi

{
    echo "$HEADER"
    echo
    echo "| step | exit | seconds | figures |"
    echo "|---|---|---|---|"
    cat "$ROWS"
} > "$SUMMARY"
echo
cat "$SUMMARY"
