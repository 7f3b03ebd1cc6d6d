"""How often the cheap learning-rate selection picks the full grid's rate, how far the test score
moves, and what each costs: cells of small FashionScenes runs evaluated both ways.

    OMP_NUM_THREADS=1 python benchmarks/selection_agreement.py [--seeds 0 1] [--pretexts random supervised]
        [--steps 300] [--train-scenes 500] [--test-scenes 300] [--protocols finetune segmentation_finetune segmentation_frozen detection_frozen]

Each (pretext, seed) pretrains the small encoder for `--steps` steps on a pool of FashionScenes
(random init: none), then evaluates each protocol twice at equal settings (the grids of
benchmarks/scenes_table2.yaml; segmentation_finetune: its first design's, results/scenes_table2_v1), on
`--train-scenes` labelled scenes):
- fine-tuned protocols (finetune at 100% labels, segmentation_finetune): `selection: grid` (every
  rate to its own stop) against `selection: halving`;
- frozen protocols (segmentation_frozen, detection_frozen): the sequential grid (one call per
  rate, each training its head alone, the best validation kept; the features are computed in
  each call) against every rate's head in one pass with halving's cuts (the default), which
  trains the heads that survive exactly as their sequential runs (tests/test_selection.py checks
  it bit for bit): any disagreement comes from halving's cuts alone.
Printed per protocol: cells, agreement (same rate chosen), mean |test score change| and the
largest, and the mean CPU seconds per cell each way (one thread: wall time on an idle core).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from ctxenc.api import load_encoder
from ctxenc.engine import TrainConfig, pretrain
from ctxenc.data import eval_splits
from ctxenc.evaluation import prepared_split
from ctxenc.evaluators import DetectionConfig, FinetuneConfig, SegmentationConfig, detection, finetune, segmentation
from ctxenc.pretext import pretext_spec

LRS = (1e-4, 1e-3, 1e-2, 1e-1)  # benchmarks/scenes_table2.yaml's fine-tuning grids
FROZEN_LRS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
DETECTION_LRS = (1e-2, 3e-2, 1e-1, 3e-1)
PROTOCOLS = {  # name: (evaluator, config, test metric, target): the suite's settings, 100% labels
    "finetune": (finetune, FinetuneConfig(lrs=LRS, max_epochs=60, patience=4, min_steps=200, val_every_steps=20), "map@100%",
                 "labels"),
    "segmentation_finetune": (segmentation, SegmentationConfig(mode="finetune", lrs=LRS, max_epochs=60, patience=3), "miou",
                              "class_maps"),
    "segmentation_frozen": (segmentation, SegmentationConfig(mode="frozen", lrs=FROZEN_LRS, max_epochs=60, patience=3,
                                                             weight_decay=0.0, flip=False), "miou", "class_maps"),
    "detection_frozen": (detection, DetectionConfig(mode="frozen", lrs=DETECTION_LRS, max_epochs=40, patience=2, decays=1,
                                                    batch_size=16, roi_size=4, rois_per_image=32, proposals=100), "map",
                         "boxes"),
}
FROZEN = ("segmentation_frozen", "detection_frozen")


def timed(fn):
    tic = time.process_time()
    out = fn()
    return out, time.process_time() - tic


def both_ways(name: str, encoder, train, test, seed: int) -> dict:
    """{lr_grid, lr_cheap, score_grid, score_cheap, seconds_grid, seconds_cheap} of one cell."""
    run, cfg, metric, _ = PROTOCOLS[name]
    cfg = dataclasses.replace(cfg, seed=seed)
    lr = "lr@100%" if name == "finetune" else "lr"
    if name in FROZEN:  # the sequential grid: each rate alone, the best validation kept
        alone, seconds = [], 0.0
        for rate in cfg.lrs:
            out, s = timed(lambda: run(encoder, train, test, dataclasses.replace(cfg, lrs=(rate,))))
            alone.append(out)
            seconds += s
        grid = max(alone, key=lambda out: out[f"val_{metric}"])  # max keeps the first of equals, as the grid
    else:
        grid, seconds = timed(lambda: run(encoder, train, test, dataclasses.replace(cfg, selection="grid")))
    cheap, cheap_seconds = timed(lambda: run(encoder, train, test, dataclasses.replace(cfg, selection="halving")))
    return {"lr_grid": grid[lr], "lr_cheap": cheap[lr], "score_grid": grid[metric], "score_cheap": cheap[metric],
            "seconds_grid": seconds, "seconds_cheap": cheap_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--pretexts", nargs="+", default=["random", "supervised"])
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps of 64")
    parser.add_argument("--pool-scenes", type=int, default=5000)
    parser.add_argument("--train-scenes", type=int, default=500)
    parser.add_argument("--test-scenes", type=int, default=300)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--out", help="folder for the checkpoints (default: a temporary one)")
    args = parser.parse_args()

    dataset = {"name": "fashion_scenes", "pool_scenes": args.pool_scenes, "train_scenes": args.train_scenes,
               "test_scenes": args.test_scenes}
    cells = {name: [] for name in args.protocols}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for pretext in args.pretexts:
            for seed in args.seeds:
                train_cfg = TrainConfig(steps=args.steps, batch_size=64, lr=2e-3, seed=seed)
                checkpoint = pretrain(dataset, {"name": "small"}, pretext_spec({"name": pretext}), train_cfg,
                                      out / f"{pretext}-{seed}", download=True, progress=False)
                encoder = load_encoder(checkpoint)
                for name in args.protocols:
                    target = PROTOCOLS[name][3]
                    train_split, test_split = eval_splits(dataset)
                    train = prepared_split(dataset, train_split, None, 32, None, target)
                    test = prepared_split(dataset, test_split, None, 32, None, target)
                    cell = both_ways(name, encoder, train, test, seed)
                    cells[name].append(cell)
                    print(f"{pretext} seed {seed} {name}: lr {cell['lr_grid']:g} -> {cell['lr_cheap']:g}, "
                          f"score {cell['score_grid']:.4f} -> {cell['score_cheap']:.4f}, "
                          f"{cell['seconds_grid']:.1f} s -> {cell['seconds_cheap']:.1f} s", flush=True)
    print(f"\n{args.train_scenes} labelled / {args.test_scenes} test scenes, pretraining {args.steps} steps, "
          f"pretexts {', '.join(args.pretexts)}, seeds {args.seeds}")
    print("| protocol | cheap selection | cells | same rate | mean abs score change | largest | s/cell grid | s/cell cheap |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in cells.items():
        same = sum(r["lr_grid"] == r["lr_cheap"] for r in rows)
        moves = [abs(r["score_cheap"] - r["score_grid"]) for r in rows]
        way = "heads in one pass, halving" if name in FROZEN else "halving"
        print(f"| {name} | {way} | {len(rows)} | {same}/{len(rows)} | {sum(moves) / len(moves):.4f} | {max(moves):.4f} "
              f"| {sum(r['seconds_grid'] for r in rows) / len(rows):.1f} | {sum(r['seconds_cheap'] for r in rows) / len(rows):.1f} |")


if __name__ == "__main__":
    main()
