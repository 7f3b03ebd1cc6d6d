"""The `ctxenc` command: pretrain, evaluate, bench, report, inpaint, export.

User mistakes raise `UserError`: one sentence on stderr, exit code 2, no traceback (unless
--debug).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctxenc.errors import UserError

DATA_ROOT = ("Data: --data-root DIR, else $CTXENC_DATA, else (Fashion-MNIST) Debian's dataset-fashion-mnist package, else --download. "
             "DIR is the folder torchvision's class takes: it holds cifar-10-batches-py/, cifar-100-python/, stl10_binary/, VOCdevkit/")
EPILOG = DATA_ROOT + "; --dataset imagefolder:SUB reads DIR/SUB."
BENCH_EPILOG = DATA_ROOT + "; a suite's dataset imagefolder:SUB reads DIR/SUB."


def add_data_options(p: argparse.ArgumentParser) -> None:
    from ctxenc.data import describe_datasets

    p.add_argument("--dataset", default="fashion_mnist", help=describe_datasets())
    p.add_argument("--data-root", metavar="DIR", help="folder holding the dataset files (default: $CTXENC_DATA, then the Debian package's folder)")
    p.add_argument("--download", action="store_true", help="download the dataset with torchvision when it is not found (needs internet)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N images of each split (a quick end-to-end check, "
                   "recorded in the records' limit column)")


# The options several commands share: one flag, one meaning, one help text (with what is
# particular to the command after it).
def add_out(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--out", required=default is None, type=Path, metavar="DIR",
                   help="output folder, created if missing" + (f" (default: {default})" if default else ""))


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda or cuda:N")


PRETRAIN_AMP = "pretraining: float16 with loss scaling on CUDA, bfloat16 on the CPU"
EVALUATE_AMP = ("evaluation: bfloat16 autocast of the encoder's forward passes (frozen features, BatchNorm recalibration, "
                "scoring); fine-tuning trains in fp32")


def add_amp(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--amp", action="store_true", default=None, help=f"mixed precision: {what}")


def add_seed(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--seed", type=int, help=f"seeds this command's random draws: {what}")


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars and progress lines")


def build_parser() -> argparse.ArgumentParser:
    from ctxenc import __version__
    from ctxenc.engine import TrainConfig
    from ctxenc.evaluators import PROTOCOLS
    from ctxenc.masks import MASKS
    from ctxenc.pretext import PRETEXTS

    # --debug is accepted before or after the subcommand: each subparser has it too, with a
    # suppressed default so that it does not reset the value given before the subcommand.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks for errors")
    parser = argparse.ArgumentParser(prog="ctxenc", description="Context-encoder feature learning benchmarks (Pathak et al., CVPR 2016).", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"ctxenc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors (also after the command)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = sub.choices  # for main(): an unknown option shows its command's usage

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[debug], **kwargs)

    p = command("pretrain", help="pretrain an encoder with a pretext task; writes OUT/checkpoint.pt and OUT/log.jsonl",
                description="Pretrain an encoder with a pretext task on the dataset's pretraining split (images only, "
                            "unless the pretext trains on labels).", epilog=EPILOG)
    p.add_argument("--pretext", required=True, choices=list(PRETEXTS), help="; ".join(
        f"{name}: {(cls.__doc__ or name).strip().splitlines()[0].rstrip('.')}" for name, cls in PRETEXTS.items()).replace("%", "%%"))
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the pretext (repeatable), e.g. -o mask=center -o loss_region=image; see README's pretext table")
    ce = p.add_argument_group("context_encoder shortcuts (the same as -o KEY=VALUE; defaults are the pretext's)")
    ce.add_argument("--mask", choices=list(MASKS), help="center (1/4 of the area), random_block (squares) or random_region (blobs); default random_region")
    ce.add_argument("--mask-ratio", type=float, help="expected hidden fraction of the random masks; center is always 1/4 (default 0.25)")
    ce.add_argument("--loss-region", choices=["hole", "image", "hole+ring"], help="pixels the reconstruction loss covers: hole (default, the paper's Eq. 1), image (the released random-mask script), hole+ring")
    ce.add_argument("--adversarial", action="store_true", default=None, help="add the adversarial loss (lambda_rec 0.999, lambda_adv 0.001, generator lr 10x the discriminator's)")
    ce.add_argument("--predict", choices=["image", "center"], help="decode the whole image (default) or, with --mask center, only the central half-size square (the paper's 128 -> 64 px model)")
    ce.add_argument("--overlap-px", type=int, help="border of the hole the prediction overlaps with the context (default 1 px at 32 px; paper: 4 px at 128 px)")
    ce.add_argument("--overlap-weight", type=float, help="loss weight of the overlap border (default 10, as in the paper)")
    p.add_argument("--encoder", default="small", help="small (default, 32 px), dcgan (128 px), alexnet (227 px, the paper's) or timm:<model> (224 px, e.g. timm:resnet18, from scratch)")
    p.add_argument("--input-size", type=int, help="encoder input size in px (default: the encoder's); images within 15%% are padded or cropped, others resized")
    add_data_options(p)
    p.add_argument("--split", help="split to pretrain on (default: the dataset's pretraining split: fashion_scenes pool, stl10 train; also stl10 unlabeled or train+unlabeled)")
    add_device(p)
    d = TrainConfig
    t = p.add_argument_group("training (its length: --epochs, or --steps, or --epochs capped by --max-steps)")
    t.add_argument("--augment", action="store_true", default=None, help="random crop + horizontal flip of every batch, as the paper's pretraining")
    add_amp(t, PRETRAIN_AMP)
    t.add_argument("--epochs", type=int, help=f"passes over the training images (default: {d.epochs})")
    t.add_argument("--steps", type=int, help="train exactly this many steps, whatever the data size (instead of --epochs)")
    t.add_argument("--max-steps", type=int, help="stop after this many steps, or at the end of --epochs if sooner")
    t.add_argument("--batch-size", type=int, help=f"images per step (default: {d.batch_size}, as in the paper's code)")
    t.add_argument("--lr", type=float, help=f"Adam learning rate (default: {d.lr}, as in the paper's code)")
    add_seed(t, f"initial weights, data order and masks (default: {d.seed})")
    t.add_argument("--log-every", type=int, metavar="STEPS", help=f"steps between lines of OUT/log.jsonl (default: {d.log_every})")
    t.add_argument("--checkpoint-every", type=int, metavar="STEPS", help=f"steps between resumable snapshots OUT/last.pt (default: {d.checkpoint_every})")
    t.add_argument("--snapshot-minutes", type=float, metavar="MIN", help="instead of --checkpoint-every: snapshot at the first log line MIN minutes after the last snapshot (large models, whose snapshot is a multi-GB write)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt after an interruption (same settings); exact on CPU")
    add_out(p)
    add_no_progress(p)

    p = command("evaluate", help="evaluate a checkpoint's encoder with one or more protocols; writes their rows to OUT/records.csv",
                description="Evaluate the encoder of a checkpoint with each --protocol given, on the test split. Its rows in "
                            "OUT/records.csv replace those of an earlier run of the same evaluation (same suite, method, the checkpoint's "
                            "training seed, pretraining steps, protocol label, dataset and --limit), so a repeated command never adds rows.", epilog=EPILOG)
    p.add_argument("--checkpoint", required=True, type=Path, metavar="FILE|DIR", help="checkpoint.pt written by 'ctxenc pretrain', or its run folder")
    p.add_argument("--protocol", required=True, action="append", metavar="NAME|YAML",
                   help=f"protocol name ({', '.join(PROTOCOLS)}) or a YAML file such as eval/linear_probe.yaml; repeat it to run several")
    add_data_options(p)
    add_device(p)
    add_amp(p, EVALUATE_AMP)
    add_seed(p, "the protocol's validation split, initial weights and batch order (default: the checkpoint's training seed, as bench does)")
    add_out(p, "the checkpoint's folder")
    add_no_progress(p)

    p = command("bench", help="run a suite (pretext x seed x protocol) and write records, table, plots and report",
                description="Run every cell of a suite YAML; cells whose records exist are skipped.", epilog=BENCH_EPILOG)
    p.add_argument("suite", type=Path, help="suite YAML, e.g. benchmarks/demo.yaml")
    add_out(p, "results/<suite name>, or results/<suite name>-limitN with --limit")
    p.add_argument("--data-root", metavar="DIR", help="folder holding the dataset files (default: $CTXENC_DATA)")
    p.add_argument("--download", action="store_true", help="download the suite's datasets with torchvision where they are not "
                   "found, in this process before any cell runs (needs internet here, not on the cluster's nodes)")
    p.add_argument("--limit", type=int, metavar="N", help="a plumbing check, not a result: every cell on N images per split, the first "
                   "seed only, 3 training steps and shortened evaluators, to check a suite end to end")
    add_device(p)
    add_amp(p, f"{PRETRAIN_AMP}; {EVALUATE_AMP}; a results folder holds fp32 or AMP cells, not both")
    p.add_argument("--launcher", choices=["inline", "local", "slurm"], default="inline",
                   help="inline: cells one after another in this process (default); local: WORKERS parallel jobs on this "
                        "machine; slurm: one Slurm job per cell (submitit), requeued when it reaches its time limit or is "
                        "preempted, resuming from its last.pt; a re-run submits only the unfinished cells")
    p.add_argument("--workers", type=int, default=2,
                   help="local: parallel jobs, each on a GPU of its own with --device cuda (the visible GPUs in turn; more "
                        "workers than GPUs share them); slurm: array tasks running at once unless --slurm array_parallelism "
                        "is given (default: 2; on a small machine give the suite threads: 1)")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="a Slurm parameter for --launcher slurm (repeatable; wins over the suite's launcher: section): "
                        "partition, account, qos, constraint (text); gpus_per_node (default: tasks_per_node with --device "
                        "cuda, else none); cpus_per_task and mem_gb (default: the cluster's); timeout_min (default 720: a "
                        "job that reaches it is requeued and resumes, up to 10 times); array_parallelism (default: "
                        "--workers); tasks_per_node (default 1; N > 1 pretrains a cell with N processes, torch.distributed)")
    p.add_argument("--no-wait", action="store_true",
                   help="with --launcher slurm: submit the jobs and exit; the same command run later collects the records, "
                        "submits again the cells that ended without them (not those still queued or running) and writes "
                        "the report once every cell is done")
    add_no_progress(p)

    p = command("inpaint", help="fill a hole in your own images with a context-encoder checkpoint, at their own size",
                description="Inpaint images with a context-encoder checkpoint. The model sees each image's central square "
                            "at its input size; its fill is resized back and written into the hole only, so every other "
                            "pixel of the output is the input's. Per image OUT gets IMAGE.inpainted.png and "
                            "IMAGE.side_by_side.png (input with the hole in red / result / original), IMAGE being the input's "
                            "file name (a.png -> a.png.inpainted.png). Unreadable images get a one-sentence error and the "
                            "others are still processed (exit code 2).")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="FILE|DIR", help="checkpoint.pt of a context_encoder pretraining, or its run folder")
    p.add_argument("--mask", metavar="KIND|MASK.png",
                   help="the hole: the checkpoint's own mask kind (default: its center square, or a random_region / random_block mask "
                        "drawn with --seed), another kind (center, random_block, random_region), or a mask image at the image's size "
                        "whose white pixels mark the hole (inside the central square the model sees)")
    add_seed(p, "the random holes, one draw per image in the order given (default: 0)")
    add_device(p)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG/JPEG files of any size and mode")
    add_out(p)

    p = command("export", help="write a checkpoint's encoder as a plain state_dict (OUT/encoder.pt) and OUT/encoder.json",
                description="Export the encoder of a checkpoint for use without ctxenc: OUT/encoder.pt holds its state_dict "
                            "(tensors only), OUT/encoder.json its name, options, stages and input contract. A timm:<model> "
                            "encoder's state_dict loads into timm.create_model(...) with strict=True; encoder.json gives the arguments.")
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="checkpoint.pt written by 'ctxenc pretrain', or its run folder")
    add_out(p)

    p = command("report", help="(re)write table.md, table.tex, the figures and report.md from DIR/records.csv",
                description="Write the tables, figures and report.md of a results folder's records.csv.")
    p.add_argument("dir", type=Path, help="results folder holding records.csv")
    add_out(p, "DIR; another folder gets a copy of records.csv, suite.yaml and run.json beside the report")
    p.add_argument("--data-root", metavar="DIR", help="folder holding the dataset files (for the inpainting figure)")
    return parser


def pretext_options(args: argparse.Namespace) -> dict:
    """The pretext options given as -o KEY=VALUE (values read as YAML scalars) and as shortcut flags."""
    import yaml

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--option takes KEY=VALUE, got {item!r}.")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key.strip()] = value
    for flag in ("mask", "mask_ratio", "loss_region", "adversarial", "predict", "overlap_px", "overlap_weight"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    return options


def check_out_folder(out: Path) -> None:
    """--out must be a folder (or not exist yet) that can be written, checked before any work."""
    from ctxenc.io import check_writable_folder

    check_writable_folder(out, "--out")


def check_at_least(args: argparse.Namespace, minimum: float, *flags: str, why: str = "") -> None:
    """Each of `flags` (as the user writes them) that was given must be at least `minimum`."""
    for flag in flags:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None and not value >= minimum:
            raise UserError(f"{flag} must be at least {minimum:g}{why}, got {value:g}.")


def check_training_length(args: argparse.Namespace) -> None:
    """One way to set how long pretraining runs: --steps alone, or --epochs capped by --max-steps.

    --steps with --epochs or --max-steps would contradict (the checkpoint would record one
    budget and train another), so it is refused, as is a length of 0 (an untrained encoder is
    the random pretext).
    """
    check_at_least(args, 1, "--steps", "--epochs", "--max-steps",
                   why=" (an untrained encoder is the baseline --pretext random)")
    for other in ("epochs", "max_steps"):
        if args.steps is not None and getattr(args, other) is not None:
            flag = "--" + other.replace("_", "-")
            raise UserError(f"--steps {args.steps} and {flag} {getattr(args, other)} both set the training length; give one of them.")
    check_at_least(args, 1, "--batch-size", "--log-every", "--checkpoint-every")
    check_at_least(args, 0, "--snapshot-minutes")
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr must be above 0, got {args.lr:g}.")


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1 (images per split), got {limit}.")


def check_results_folder(folder: Path) -> None:
    """`ctxenc report DIR`: DIR must be a folder holding records.csv."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass the results folder that holds records.csv.")


def progress_line(args: argparse.Namespace, message: str) -> None:
    """A line telling what runs now (hidden by --no-progress), on stdout beside the results, as
    bench's cell lines are: stderr stays for errors."""
    if not args.no_progress:
        print(message, flush=True)


def run_evaluate(args: argparse.Namespace) -> None:
    """`ctxenc evaluate`: each --protocol in turn, every row written with replace_records."""
    import dataclasses
    import time

    from ctxenc.checkpoint import checkpoint_file, load_encoder
    from ctxenc.evaluation import evaluate, resolve_protocol
    from ctxenc.results.records import replace_records

    protocols = [resolve_protocol(spec) for spec in args.protocol]
    labels = [label for label, _, _ in protocols]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise UserError(f"--protocol {twice[0]} is given twice; give each protocol once (or a YAML file with its own label).")
    check_limit(args.limit)
    checkpoint = checkpoint_file(args.checkpoint)
    out = args.out or checkpoint.parent
    check_out_folder(out)
    _, ckpt = load_encoder(checkpoint)  # a checkpoint that does not load fails here, before any progress line
    seed = args.seed if args.seed is not None else ckpt["train"]["seed"]
    if args.download:
        from ctxenc.data import eval_splits, load_dataset

        load_dataset(args.dataset, eval_splits(args.dataset)[0], args.data_root, download=True, limit=1)
    records = out / "records.csv"
    for i, (label, name, config) in enumerate(protocols, 1):
        if hasattr(config, "seed"):  # as bench does: the seed varies the evaluation too
            config = dataclasses.replace(config, seed=seed)
        progress_line(args, f"evaluate {label} ({i}/{len(protocols)}) on {args.dataset}"
                            + (f", --limit {args.limit}" if args.limit else "") + " ...")
        tic = time.perf_counter()
        rows = evaluate(checkpoint, name, config, args.dataset, args.data_root, args.limit, label=label,
                        device=args.device, amp=bool(args.amp))
        progress_line(args, f"evaluate {label}: done in {time.perf_counter() - tic:.1f} s")
        rows = [{**row, "suite": "adhoc", "limit": args.limit} for row in rows]
        _, replaced = replace_records(records, rows)
        for row in rows:
            print(f"{row['protocol']} {row['metric']}: {row['value']:.4f}")
        if replaced:
            print(f"replaced {replaced} rows of an earlier run of this evaluation with {len(rows)} rows in {records}")
        else:
            print(f"added {len(rows)} rows to {records}")


def run(args: argparse.Namespace) -> int:
    """Run a subcommand; returns the exit code (non-zero where some inputs failed but others ran)."""
    if args.command == "pretrain":
        from ctxenc import distributed
        from ctxenc.config import from_dict
        from ctxenc.engine import TrainConfig, pretrain
        from ctxenc.pretext import pretext_spec

        check_training_length(args)
        pretext = pretext_spec({"name": args.pretext, **pretext_options(args)}, "--pretext and its options")
        given = {k: getattr(args, k) for k in ("epochs", "steps", "batch_size", "lr", "seed", "max_steps", "log_every",
                                               "checkpoint_every", "snapshot_minutes", "augment", "amp") if getattr(args, k) is not None}
        train = from_dict(TrainConfig, given, "the training options")
        check_limit(args.limit)
        check_out_folder(args.out)
        encoder = {"name": args.encoder, **({"input_size": args.input_size} if args.input_size else {})}
        distributed.init(args.device)  # a no-op unless launched by torchrun
        try:
            path = pretrain(args.dataset, encoder, pretext, train, args.out, args.data_root, args.download, args.limit,
                            progress=not args.no_progress, resume=args.resume, split=args.split, device=args.device)
            if distributed.is_main():
                print(f"wrote {path}")
        finally:
            distributed.close()
    elif args.command == "evaluate":
        run_evaluate(args)
    elif args.command == "bench":
        from ctxenc.bench import run_suite
        from ctxenc.results.report import write_report

        if args.workers < 1:
            raise UserError(f"--workers must be at least 1, got {args.workers}.")
        out, pending = run_suite(args.suite, args.out, args.data_root, args.limit, progress=not args.no_progress,
                                 device=args.device, amp=bool(args.amp), launcher=args.launcher, workers=args.workers,
                                 slurm=args.slurm, wait=not args.no_wait, download=args.download)
        if pending:
            print(f"{pending} Slurm job(s) queued or running (logs in {out / 'jobs'}); run the same command again to collect "
                  "their records, submit again what failed and write the report.")
        else:
            print(f"wrote {write_report(out, args.data_root)}")
    elif args.command == "report":
        from ctxenc.results.report import write_report

        check_results_folder(args.dir)
        out = args.out or args.dir
        check_out_folder(out)
        print(f"wrote {write_report(args.dir, args.data_root, out=out)}")
    elif args.command == "inpaint":
        from ctxenc.inpaint import inpaint_files

        check_out_folder(args.out)
        seed = args.seed if args.seed is not None else 0
        written, errors = inpaint_files(args.checkpoint, args.images, args.mask, args.out, args.device, seed)
        for message in errors:
            print(f"ctxenc: error: {message}", file=sys.stderr)
        print(f"wrote {len(written)} files to {args.out}")
        return 2 if errors else 0
    elif args.command == "export":
        from ctxenc.export import export_encoder

        check_out_folder(args.out)
        for path in export_encoder(args.checkpoint, args.out):
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would blame the top-level parser; the command's own usage helps more
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
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
