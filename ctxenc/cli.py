"""The `ctxenc` command: pretrain, evaluate, bench, report, inpaint.

User mistakes raise `UserError`: one sentence on stderr, exit code 2, no traceback (unless
--debug).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctxenc.errors import UserError

EPILOG = ("Data: --data-root DIR, else $CTXENC_DATA, else (Fashion-MNIST) Debian's dataset-fashion-mnist package, else --download. "
          "DIR is the folder torchvision's class takes: it holds cifar-10-batches-py/, cifar-100-python/, stl10_binary/, "
          "VOCdevkit/; --dataset imagefolder:SUB reads DIR/SUB.")
DATASET_HELP = ("fashion_mnist (default), cifar10, cifar100, stl10, voc2007 (multi-label), voc2012_seg (segmentation), "
                "imagefolder (DIR itself) or imagefolder:SUB (DIR/SUB: class subfolders, or loose images for pretraining)")


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion_mnist", help=DATASET_HELP)
    p.add_argument("--data-root", metavar="DIR", help="folder holding the dataset files (default: $CTXENC_DATA, then the Debian package's folder)")
    p.add_argument("--download", action="store_true", help="download the dataset with torchvision when it is not found (needs internet)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N images of each split (quick end-to-end checks)")


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")


def build_parser() -> argparse.ArgumentParser:
    from ctxenc.evaluators import PROTOCOLS
    from ctxenc.masks import MASKS
    from ctxenc.pretext import PRETEXTS

    parser = argparse.ArgumentParser(prog="ctxenc", description="Context-encoder feature learning benchmarks (Pathak et al., CVPR 2016).", epilog=EPILOG)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain an encoder with a pretext task; writes OUT/checkpoint.pt and OUT/log.jsonl",
                       description="Pretrain an encoder with a pretext task on the train split (images only, no labels).", epilog=EPILOG)
    p.add_argument("--pretext", required=True, choices=PRETEXTS, help="random: N(0, 0.02) init, no training; autoencoder: reconstruct the whole unmasked image; context_encoder: inpaint masked pixels")
    p.add_argument("--mask", default="random_region", choices=list(MASKS), help="context-encoder mask: center (1/4 of the area), random_block (squares, <= 1/4), random_region (blobs, 20-30%%) (default: random_region)")
    p.add_argument("--mask-ratio", type=float, default=0.25, help="hidden fraction: the most for random_block, the middle of a +-5%% range for random_region; center is always 1/4 (default: 0.25)")
    p.add_argument("--adversarial", action="store_true", help="add the adversarial loss (non-saturating; lambda_rec 0.999, lambda_adv 0.001, generator lr 10x the discriminator's; with --mask center the discriminator judges the predicted hole and its overlap border, cropped)")
    p.add_argument("--predict", default="image", choices=["image", "center"], help="decode the whole image (default) or, with --mask center, only the central half-size square as the paper's 128 -> 64 px inpainting model (the hidden hole is then that square minus its overlap ring)")
    p.add_argument("--overlap-px", type=int, default=1, help="border of the hole that the prediction overlaps with the context (default: 1 px at 32 px; paper: 4 px at 128 px)")
    p.add_argument("--overlap-weight", type=float, default=10.0, help="loss weight of the overlap border (default: 10, as in the paper)")
    p.add_argument("--encoder", default="small", help="small (default, 32 px), dcgan (128 px), alexnet (227 px, the paper's) or timm:<model> (224 px, e.g. timm:resnet18, from scratch)")
    p.add_argument("--input-size", type=int, help="encoder input size in px (default: the encoder's); images within 15%% are padded or cropped, others resized")
    add_data_options(p)
    p.add_argument("--split", help="split to pretrain on (default: the dataset's train split; stl10: unlabeled or train+unlabeled)")
    p.add_argument("--augment", action="store_true", help="random crop + horizontal flip of every batch, as the paper's pretraining")
    add_device_option(p)
    p.add_argument("--amp", action="store_true", help="mixed precision: float16 with loss scaling on CUDA, bfloat16 on the CPU")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training images (default: 1)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64, as in the paper's code)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of the encoder-decoder (default: 2e-3, as in the paper's code)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--seed", type=int, default=0, help="seeds initial weights, data order and masks (default: 0)")
    p.add_argument("--log-every", type=int, default=50, metavar="STEPS", help="steps between lines of OUT/log.jsonl (default: 50)")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="STEPS", help="steps between resumable snapshots OUT/last.pt (default: 100)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt after an interruption (same settings); exact on CPU")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("evaluate", help="evaluate a checkpoint's frozen encoder; appends rows to OUT/records.csv",
                       description="Evaluate the encoder of a checkpoint with one protocol, on the test split.", epilog=EPILOG)
    p.add_argument("--checkpoint", required=True, type=Path, metavar="FILE", help="checkpoint.pt written by 'ctxenc pretrain'")
    p.add_argument("--protocol", required=True, metavar="NAME|YAML", help=f"protocol name ({', '.join(PROTOCOLS)}) or a YAML file such as eval/linear_probe.yaml")
    add_data_options(p)
    add_device_option(p)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder whose records.csv gets the rows")

    p = sub.add_parser("bench", help="run a suite (pretext x seed x protocol) and write records, table, plots and report",
                       description="Run every cell of a suite YAML; cells whose records exist are skipped.", epilog=EPILOG)
    p.add_argument("suite", type=Path, help="suite YAML, e.g. benchmarks/demo.yaml")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: results/<suite name>, or results/<suite name>-limitN with --limit)")
    p.add_argument("--data-root", metavar="DIR", help="folder holding the dataset files (default: $CTXENC_DATA)")
    p.add_argument("--limit", type=int, metavar="N", help="run every cell on N images per split, 3 training steps and shortened evaluators, to check a suite end to end")
    add_device_option(p)
    p.add_argument("--amp", action="store_true", help="pretrain in mixed precision (float16 on CUDA, bfloat16 on the CPU)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("inpaint", help="fill a hole in your own images with a context-encoder checkpoint",
                       description="Inpaint images with a context-encoder checkpoint. Each image is converted to the model's "
                                   "channels, centre-cropped to a square and resized (bicubic) to the model's input size; "
                                   "per image OUT gets NAME_inpainted.png and NAME_side_by_side.png (input with hole / result / original). "
                                   "Unreadable images get a one-sentence error and the others are still processed (exit code 2).")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="FILE", help="checkpoint.pt of a context_encoder pretraining")
    p.add_argument("--mask", default="center", metavar="center|MASK.png", help="the checkpoint's central hole (default), or a mask image whose white pixels mark the hole (cropped and resized like the images)")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG/JPEG files of any size and mode")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")

    p = sub.add_parser("report", help="(re)write table.md, bars.png, inpainting.png and report.md from DIR/records.csv")
    p.add_argument("dir", type=Path, help="results folder holding records.csv")
    p.add_argument("--data-root", metavar="DIR", help="folder holding the dataset files (for the inpainting figure)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a subcommand; returns the exit code (non-zero where some inputs failed but others ran)."""
    if args.command == "pretrain":
        from ctxenc import distributed
        from ctxenc.engine import TrainConfig, pretrain
        from ctxenc.pretext import PretextConfig

        pretext = PretextConfig(name=args.pretext, mask=args.mask, mask_ratio=args.mask_ratio, overlap_px=args.overlap_px,
                                overlap_weight=args.overlap_weight, adversarial=args.adversarial, predict=args.predict)
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            max_steps=args.max_steps, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                            augment=args.augment, amp=args.amp)
        encoder = {"name": args.encoder, **({"input_size": args.input_size} if args.input_size else {})}
        distributed.init()  # a no-op unless launched by torchrun
        try:
            path = pretrain(args.dataset, encoder, pretext, train, args.out, args.data_root, args.download, args.limit,
                            progress=not args.no_progress, resume=args.resume, split=args.split, device=args.device)
            if distributed.is_main():
                print(f"wrote {path}")
        finally:
            distributed.close()
    elif args.command == "evaluate":
        from ctxenc.evaluation import evaluate, resolve_protocol
        from ctxenc.results.records import append_records

        label, name, config = resolve_protocol(args.protocol)
        if args.download:
            from ctxenc.data import eval_splits, load_dataset

            load_dataset(args.dataset, eval_splits(args.dataset)[0], args.data_root, download=True, limit=1)
        rows = evaluate(args.checkpoint, name, config, args.dataset, args.data_root, args.limit, label=label,
                        device=args.device)
        append_records(args.out / "records.csv", [{**row, "suite": "adhoc"} for row in rows])
        for row in rows:
            print(f"{row['protocol']} {row['metric']}: {row['value']:.4f}")
        print(f"appended {len(rows)} rows to {args.out / 'records.csv'}")
    elif args.command == "bench":
        from ctxenc.bench import run_suite
        from ctxenc.results.report import write_report

        out = run_suite(args.suite, args.out, args.data_root, args.limit, progress=not args.no_progress,
                        device=args.device, amp=args.amp)
        print(f"wrote {write_report(out, args.data_root)}")
    elif args.command == "report":
        from ctxenc.results.report import write_report

        print(f"wrote {write_report(args.dir, args.data_root)}")
    elif args.command == "inpaint":
        from ctxenc.inpaint import inpaint_files

        written, errors = inpaint_files(args.checkpoint, args.images, args.mask, args.out)
        for message in errors:
            print(f"ctxenc: error: {message}", file=sys.stderr)
        print(f"wrote {len(written)} files to {args.out}")
        return 2 if errors else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = run(args)
    except UserError as err:
        if args.debug:
            raise
        print(f"ctxenc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctxenc: interrupted; checkpoints and records written so far are intact.", file=sys.stderr)
        return 130
    return code
