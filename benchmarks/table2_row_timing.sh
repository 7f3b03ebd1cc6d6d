#!/usr/bin/env bash
# Wall time of one scenes_table2 row at two commits, at equal work: the central context encoder
# (random region, L2 over the hidden pixels), seeds 0 and 1 as two one-thread processes side by
# side (two inline benches, one seed each: the local launcher of older commits cannot run), the
# suite's 2,000-step pretraining and every one of its protocols with the same grids and caps.
# Detection runs at its one rate without the step decay (decays: 0), which older commits lack.
# Run it alone on an idle machine (about 17 min on 2 cores); it prints each commit's wall time,
# the summed pretraining and evaluation seconds of its records, the epochs its evaluators chose
# (equal choices mean equal work), and the ratio.
#
#   benchmarks/table2_row_timing.sh BEFORE [AFTER]      e.g. 8bcd775 HEAD
set -euo pipefail
before=${1:?usage: benchmarks/table2_row_timing.sh BEFORE_COMMIT [AFTER_COMMIT]}
after=${2:-HEAD}
repo=$(git rev-parse --show-toplevel)
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d)  # kept: each commit's records and logs stay there for a second look
trap 'for t in "$work"/tree-*; do git -C "$repo" worktree remove --force "$t"; done; echo "records and logs: $work"' EXIT

row() {  # $1: the seed; $2: whether this commit's detection has step decay. scenes_table2.yaml's
  # settings, cut to the central row and one seed (decay off: older commits have none).
  "$python" - "$repo/benchmarks/scenes_table2.yaml" "$1" "$2" <<'PY'
import sys
import yaml
suite = yaml.safe_load(open(sys.argv[1]))
suite.update(suite="table2_row_timing", seeds=[int(sys.argv[2])],
             pretexts=[{"name": "context_encoder", "mask": "random_region"}])
suite.pop("report", None)
for protocol in suite["protocols"]:
    if protocol["protocol"] == "detection":
        protocol.pop("decays", None)
        if sys.argv[3] == "yes":
            protocol["decays"] = 0
print(yaml.safe_dump(suite, sort_keys=False))
PY
}

for commit in "$before" "$after"; do
  tree=$work/tree-$(git -C "$repo" rev-parse --short "$commit")
  git -C "$repo" worktree add --detach --quiet "$tree" "$commit"
  decays=no
  if grep -q "decays" "$tree/ctxenc/evaluators/detection.py"; then decays=yes; fi
  start=$(date +%s)
  for seed in 0 1; do
    row "$seed" "$decays" >"$tree/row$seed.yaml"
    (cd "$tree" && PYTHONPATH=$tree "$python" -m ctxenc bench "row$seed.yaml" --out "$work/out-$commit-$seed" \
       --no-progress >"$work/log-$commit-$seed" 2>&1) &
  done
  for job in $(jobs -p); do wait "$job" || { cat "$work"/log-"$commit"-*; exit 1; }; done
  echo "$commit $(( $(date +%s) - start ))" >>"$work/walls"
done

"$python" - "$work" "$before" "$after" <<'PY'
import sys
from pathlib import Path
import pandas as pd
work, commits = Path(sys.argv[1]), sys.argv[2:]
walls = dict(line.split() for line in (work / "walls").read_text().splitlines())
rows = {}
for commit in commits:
    records = pd.concat([pd.read_csv(work / f"out-{commit}-{seed}" / "records.csv") for seed in (0, 1)])
    cells = records.drop_duplicates(["seed", "protocol"])
    pretrain = cells.drop_duplicates("seed")["pretrain_seconds"].sum()
    evaluate = cells.groupby("protocol")["eval_seconds"].sum()
    chosen = records[records["metric"].str.startswith("epochs")]  # equal chosen epochs: equal work
    epochs = chosen.groupby("protocol")["value"].sum()
    rows[commit] = {"wall s": int(walls[commit]), "pretrain s": round(pretrain), "eval s": round(evaluate.sum()),
                    **{f"{p} s": round(s) for p, s in evaluate.items()},
                    **{f"{p} chosen epochs": int(e) for p, e in epochs.items()}}
table = pd.DataFrame(rows)
table["before/after"] = (table[commits[0]] / table[commits[1]]).round(2)
print(table.to_string())
PY
