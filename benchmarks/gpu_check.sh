#!/usr/bin/env bash
# A prepared GPU check (issue 10), under 8 minutes on one CUDA GPU. CI never runs it.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # from the repository root; OUT_DIR default gpu_check/
#
# 1. AlexNet context-encoder pretraining at 227 px, batch 256, channels-last: fp32 vs --amp (images/s).
# 2. The dcgan paper inpainting model beside PyTorch-GAN's context encoder, batch 64, fp32 and --amp.
# 3. `ctxenc bench benchmarks/paper_table2.yaml --limit 64 --device cuda --amp` end to end, on
#    $CTXENC_DATA if it holds stl10_binary/ and VOCdevkit/, else on tiny STL-10 / VOC fixtures
#    written in the real on-disk formats (tests/real_formats.py): this checks the pipeline and
#    times it, it measures no accuracy.
#
# Needs python ($PYTHON, default python3) with torch (CUDA) and ctxenc's dependencies. Every step
# has its own time limit, so one that hangs cannot eat the others' minutes; each step's output
# goes to OUT_DIR/<step>.txt and a summary to OUT_DIR/summary.txt.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

step() {  # step NAME SECONDS COMMAND...: run with a limit, keep its output, note its status and wall time
    local name=$1 limit=$2
    shift 2
    local tic=$SECONDS
    echo "== $name (limit ${limit}s): $*" | tee -a "$SUMMARY"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "   exit $rc after $((SECONDS - tic)) s" | tee -a "$SUMMARY"
    grep -E '^\||x[0-9.]+,|share of|per step' "$OUT/$name.txt" | tee -a "$SUMMARY"
    tail -n 3 "$OUT/$name.txt" | sed 's/^/   | /' >> "$SUMMARY"
}

{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } 2>&1 | tee -a "$SUMMARY"

BENCH="$PY benchmarks/speed_pretrain.py --device cuda --channels-last --rounds 3"
step alexnet_fp32 75 $BENCH --workloads alexnet,peak --batch-size 256 --steps 5
step alexnet_amp 75 $BENCH --workloads alexnet,peak --batch-size 256 --steps 5 --amp
step paper_fp32 75 $BENCH --workloads paper,pytorch_gan,peak --batch-size 64 --steps 5
step paper_amp 75 $BENCH --workloads paper,pytorch_gan,peak --batch-size 64 --steps 5 --amp

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
print(f"fixtures in {root}")
EOF
    echo "paper_table2 runs on tiny fixtures in $DATA (no real data here): a pipeline check, not a result" | tee -a "$SUMMARY"
fi
step paper_table2 240 $PY -m ctxenc bench benchmarks/paper_table2.yaml --limit 64 --device cuda --amp \
    --data-root "$DATA" --out "$OUT/paper_table2" --no-progress
echo "summary: $SUMMARY"
