"""No traceback on any input: property-based fuzzing of suite YAMLs, command lines and data files.

The property everywhere: the input either works, or fails with a `UserError` whose message is one
sentence (one line, ending in '.' or '?', not a page long), which the CLI prints as its last
line on stderr with exit code 2. Any other exception is a failure that hypothesis shrinks and
reports. Examples are derandomized with fixed budgets (EXAMPLES), so the run is reproducible and
its time bounded.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
from pathlib import Path

import matplotlib.figure
import matplotlib.pyplot  # noqa: F401 (before a test patches Figure.savefig: pyplot wraps it when imported)
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ctxenc.bench import plan_suite
from ctxenc.cli import main
from ctxenc.errors import UserError
from tests.conftest import make_fashion_mnist

EXAMPLES = {"suite": 150, "pretrain": 40, "evaluate": 25, "bench": 12, "tiny_bench": 8, "inpaint": 25, "report": 10,
            "idx": 60, "cifar": 60, "stl10": 60, "image": 50, "voc_xml": 40, "voc_png": 40}


def fuzz(target: str):
    return settings(max_examples=EXAMPLES[target], deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def assert_one_sentence(message: str) -> None:
    assert "\n" not in message and message == message.strip(), message
    assert message.endswith((".", "?")), message
    assert len(message) < 600, message


def user_error_or_ok(call) -> UserError | None:
    try:
        call()
    except UserError as err:
        assert_one_sentence(str(err))
        return err
    return None


# ---------------------------------------------------------------- shared files

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Real inputs of every kind the generators choose from (built once per module)."""
    base = tmp_path_factory.mktemp("world")
    cache = base / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CTXENC_CACHE", str(cache))
        root = make_fashion_mnist(base / "fmnist", n_train=64, n_test=32)
        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet:
            for pretext, *options in (("context_encoder", "--mask", "center"), ("autoencoder",)):
                assert main(["pretrain", "--pretext", pretext, *options, "--data-root", str(root), "--max-steps", "1",
                             "--batch-size", "8", "--out", str(base / pretext), "--no-progress"]) == 0
            assert main(["evaluate", "--checkpoint", str(base / "autoencoder" / "checkpoint.pt"), "--protocol", "knn",
                         "--data-root", str(root), "--limit", "32", "--out", str(base / "records")]) == 0
    (base / "file.txt").write_text("not a folder")
    (base / "empty").mkdir()
    (base / "junk.png").write_bytes(b"\x89PNG junk")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(base / "photo.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(base / "mask.png")
    (base / "knn.yaml").write_text("protocol: knn\nk: 3\n")
    (base / "list.yaml").write_text("- knn\n- 3\n")
    (base / "bad.yaml").write_text("protocol: [knn\n")
    (base / "suite.yaml").write_text("suite: fz\npretexts: [{name: random}]\nprotocols: [{protocol: knn, k: 3}]\n"
                                     "train: {steps: 1, batch_size: 8}\n")
    (base / "junk_records").mkdir()
    (base / "junk_records" / "records.csv").write_text('a,"b\n1,2,3,,\n')
    (base / "header_records").mkdir()
    (base / "header_records" / "records.csv").write_text("suite,dataset,method\n")
    other = base / "other_suite"
    other.mkdir()
    (other / "suite.yaml").write_text("suite: another\n")
    (other / "run.json").write_text('{"limit": 2}\n')
    return {"root": root, "base": base, "cache": cache}


def paths(world, tmp: Path) -> dict[str, Path]:
    """Named paths of every kind: existing files and folders, missing ones, ones under a file."""
    base = world["base"]
    return {
        "new": tmp / "new", "existing_dir": base / "empty", "file": base / "file.txt", "under_file": base / "file.txt" / "sub",
        "missing": tmp / "missing" / "x", "records": base / "records", "other_suite": base / "other_suite",
        "data": world["root"], "ce": base / "context_encoder" / "checkpoint.pt", "ae": base / "autoencoder" / "checkpoint.pt",
        "photo": base / "photo.png", "junk_png": base / "junk.png", "mask": base / "mask.png", "knn_yaml": base / "knn.yaml",
        "list_yaml": base / "list.yaml", "bad_yaml": base / "bad.yaml", "suite": base / "suite.yaml",
        "junk_records": base / "junk_records", "header_records": base / "header_records",
    }


def run_cli(argv: list[str], world) -> tuple[int, str]:
    """main(argv) with stdout/stderr captured; argparse's own refusals (SystemExit 2) count as exit 2."""
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        mp.setenv("CTXENC_CACHE", str(world["cache"]))
        mp.delenv("CTXENC_DATA", raising=False)
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    return code, err.getvalue()


def assert_clean_exit(argv: list[str], world) -> None:
    code, err = run_cli(argv, world)
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        last = err.strip().splitlines()[-1]
        if last.startswith("ctxenc: error: "):
            assert_one_sentence(last.removeprefix("ctxenc: error: "))
        else:  # argparse's own refusal (a bad choice or number): its usage, then one line
            assert re.match(r"ctxenc \w+: error: argument ", last), err


# ---------------------------------------------------------------- (a) suite YAMLs

NAMES = ["knn", "linear_probe", "segmentation", "random", "context_encoder", "autoencoder", "rotation", "center",
         "fashion_mnist", "fashion_scenes", "cifar10", "imagefolder:x", "small", "alexnet", "timm:nope", "jigsaw", "",
         " ", "/", "..", "a/b", "train", "test", "pool", "name", "protocol", "label", "dataset", "1e-3", "-1", "null"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, -1, 1, 2**31, 2**63, -2**63]),
                    st.floats(allow_nan=True), st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
                    st.sampled_from(NAMES))
keys = st.one_of(st.sampled_from(NAMES + ["suite", "steps", "batch_size", "lr", "k", "mask", "seeds", "size", "columns",
                                          "comparisons", "protocols", "pretexts", "encoder", "input_size"]),
                 st.integers(-3, 3), st.none(), st.booleans())
junk = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(keys, kids, max_size=3)),
                    max_leaves=8)


@st.composite
def deep(draw):
    value = draw(scalars)
    for _ in range(draw(st.integers(20, 200))):
        value = [value] if draw(st.booleans()) else {"name": value}
    return value


VALID_SUITE = {
    "suite": "fz", "dataset": "fashion_mnist", "encoder": {"name": "small"}, "seeds": [0, 1],
    "train": {"steps": 2, "batch_size": 8}, "pretrain_steps": [0, 2],
    "pretexts": [{"name": "random"}, {"name": "context_encoder", "mask": "center"}, "autoencoder"],
    "protocols": ["knn", {"protocol": "linear_probe", "label": "lp", "dataset": "fashion_mnist"}],
    "report": {"comparisons": [["context_encoder/center/l2", "random"]]},
}


@st.composite
def mutated(draw, doc):
    """`doc` with one to three mutations at random places: a value replaced, a key removed or added."""
    doc = yaml.safe_load(yaml.safe_dump(doc))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        holder = doc
        while True:  # walk down to a random container
            children = list(holder.items()) if isinstance(holder, dict) else list(enumerate(holder))
            containers = [(k, v) for k, v in children if isinstance(v, (dict, list)) and v]
            if not containers or draw(st.booleans()):
                break
            holder = draw(st.sampled_from(containers))[1]
        places = list(holder) if isinstance(holder, dict) else list(range(len(holder)))
        action = draw(st.sampled_from(["replace", "replace", "deep", "remove", "add"]))
        if action == "add" or not places:
            if isinstance(holder, dict):
                holder[draw(keys)] = draw(junk)
            else:
                holder.append(draw(junk))
        elif action == "remove":
            del holder[draw(st.sampled_from(places))]
        else:
            holder[draw(st.sampled_from(places))] = draw(deep() if action == "deep" else junk)
    return doc


suites = st.one_of(mutated(VALID_SUITE), junk, deep())


def test_valid_suite_plans(world, tmp_path):
    """The base of the mutations is itself valid (else every example would fail for one reason)."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(VALID_SUITE))
    plan = plan_suite(path, tmp_path / "out", world["root"], limit=2)
    assert [label for label, *_ in plan.protocols] == ["knn", "lp"] and len(plan.pretexts) == 3


@fuzz("suite")
@given(doc=suites)
def test_fuzzed_suites_plan_or_refuse_in_one_sentence(world, doc):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(doc))
        user_error_or_ok(lambda: plan_suite(path, Path(tmp) / "out", world["root"], limit=2))


# Whole benches (pretraining, protocols, records, report and figures) on generated suites: protocol
# labels name files and figure legends, and tiny --limit values leave a protocol one or two images.
# Random pretexts, shortened protocols and figures drawn at 10 dpi keep an example under a second.
LABELS = ["lp", "seg frozen", "a/b", "..", "", "x\0y", "$x_{", "x" * 300, 7, None]  # None: no label
TINY_PROTOCOLS = {
    "knn": {"protocol": "knn", "k": 3},
    "linear_probe": {"protocol": "linear_probe", "weight_decays": [1.0e-3], "max_iter": 5},
    "finetune": {"protocol": "finetune", "lrs": [1.0e-3], "max_epochs": 1, "min_steps": 0, "batch_size": 8},
}


@st.composite
def tiny_benches(draw):
    """(a suite of a random pretext and 1-2 short protocols, fine-tuning the likeliest (it writes a figure per
    label), each with a drawn label or none; a --limit)."""
    protocols = []
    for name in draw(st.lists(st.sampled_from(["finetune", "finetune", "knn", "linear_probe"]), min_size=1, max_size=2)):
        label = draw(st.sampled_from(LABELS))
        protocols.append({**TINY_PROTOCOLS[name], **({} if label is None else {"label": label})})
    suite = {"suite": "tiny", "threads": 1, "pretexts": [{"name": "random"}], "protocols": protocols}
    return suite, draw(st.sampled_from([1, 2, 3, 8]))


@fuzz("tiny_bench")
@given(drawn=tiny_benches())
def test_fuzzed_tiny_benches_run_or_refuse_in_one_sentence(world, drawn):
    suite, limit = drawn

    def quick_savefig(fig, fname, *args, **kwargs):
        """Draws the figure (its labels parsed, as for the real file) at 10 dpi and writes an empty file at its path."""
        fig.dpi = 10
        fig.canvas.draw()
        Path(fname).write_bytes(b"")

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "savefig", quick_savefig)
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(suite))
        assert_clean_exit(["bench", str(path), "--limit", str(limit), "--out", str(Path(tmp) / "out"),
                           "--data-root", str(world["root"]), "--no-progress"], world)


# ---------------------------------------------------------------- (b) command lines

def option(flag: str, values: list) -> st.SearchStrategy[list[str]]:
    return st.sampled_from(values).map(lambda v: [] if v is None else [flag] if v is True else [flag, str(v)])


def path_of(kinds: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(kinds)


@st.composite
def pretrain_args(draw):
    args = ["pretrain", "--pretext", draw(st.sampled_from(["context_encoder", "autoencoder", "random", "rotation",
                                                           "colorization", "context_prediction"]))]
    for flag, values in [
        ("--encoder", [None, "small", "dcgan", "vgg", "timm:nope", ""]),
        ("--input-size", [None, -8, 0, 4, 7, 12, 16, 31, 33, 48]),
        ("--dataset", [None, "fashion_mnist", "cifar10", "stl10", "imagefolder", "imagefolder:x", "mnist"]),
        ("--split", [None, "train", "test", "pool", "unlabeled", "nope"]),
        ("--limit", [None, -5, 0, 1, 2, 64, 10**12]),
        ("--max-steps", [-1, 0, 1]),
        ("--steps", [None, -1, 0, 2]),
        ("--epochs", [None, -1, 0, 1]),
        ("--batch-size", [None, -1, 0, 1, 8, 10**9]),
        ("--lr", [None, 0, -1, "nan", "inf", 1e30]),
        ("--seed", [None, -1, 0, 2**40, 2**70]),
        ("--log-every", [None, -1, 0, 1]),
        ("--checkpoint-every", [None, 0, 1]),
        ("--mask", [None, "center", "random_block", "random_region"]),
        ("--mask-ratio", [None, -0.1, 0, 0.25, 0.5, 2]),
        ("--overlap-px", [None, -1, 0, 2, 40]),
        ("--overlap-weight", [None, -1, 0, 10]),
        ("--predict", [None, "image", "center"]),
        ("--loss-region", [None, "hole", "image"]),
        ("--option", [None, "mask=center", "nope=1", "mask", "=", "overlap_px=[1, 2]", "mask_ratio=abc", "mask={a: 1}"]),
        ("--augment", [None, True]),
        ("--resume", [None, True]),
    ]:
        args += draw(option(flag, values))
    return args, draw(path_of(["data", "missing", "file", "existing_dir", "under_file"])), \
        draw(path_of(["new", "new", "existing_dir", "file", "under_file", "records"]))


@fuzz("pretrain")
@given(drawn=pretrain_args())
def test_fuzzed_pretrain_arguments(world, drawn):
    args, data, out = drawn
    with tempfile.TemporaryDirectory() as tmp:
        p = paths(world, Path(tmp))
        assert_clean_exit(args + ["--data-root", str(p[data]), "--out", str(p[out]), "--no-progress"], world)


@st.composite
def evaluate_args(draw):
    args = ["evaluate"]
    for flag, values in [("--dataset", [None, "fashion_mnist", "cifar10", "voc2007", "nope"]),
                         ("--limit", [None, -1, 0, 1, 16, 32])]:
        args += draw(option(flag, values))
    protocol = draw(st.sampled_from(["knn", "linear_probe", "segmentation", "svm", "", "knn_yaml", "list_yaml", "bad_yaml",
                                     "missing"]))
    return args, protocol, draw(path_of(["ce", "ae", "file", "existing_dir", "missing", "junk_png"])), \
        draw(path_of(["data", "missing", "file"])), draw(path_of(["new", "existing_dir", "file", "under_file", "records"]))


@fuzz("evaluate")
@given(drawn=evaluate_args())
def test_fuzzed_evaluate_arguments(world, drawn):
    args, protocol, ckpt, data, out = drawn
    with tempfile.TemporaryDirectory() as tmp:
        p = paths(world, Path(tmp))
        protocol = str(p[protocol]) if protocol in p else protocol
        limit = [] if "--limit" in args else ["--limit", "32"]  # keeps linear probes cheap
        assert_clean_exit(args + limit + ["--protocol", protocol, "--checkpoint", str(p[ckpt]), "--data-root", str(p[data]),
                                          "--out", str(p[out])], world)


@fuzz("bench")
@given(suite=path_of(["suite", "bad_yaml", "list_yaml", "missing", "existing_dir", "file"]),
       out=path_of(["new", "file", "under_file", "other_suite", "existing_dir", "records"]),
       limit=option("--limit", [-1, 0, 1, 2]), data=path_of(["data", "missing", "file"]))
def test_fuzzed_bench_arguments(world, suite, out, limit, data):
    with tempfile.TemporaryDirectory() as tmp:
        p = paths(world, Path(tmp))
        assert_clean_exit(["bench", str(p[suite]), "--out", str(p[out]), "--data-root", str(p[data]), "--no-progress", *limit],
                          world)


@fuzz("inpaint")
@given(ckpt=path_of(["ce", "ae", "file", "missing", "existing_dir"]),
       mask=st.sampled_from(["center", "mask", "junk_png", "photo", "missing", "file", "", "square"]),
       images=st.lists(path_of(["photo", "junk_png", "missing", "existing_dir", "file", "mask"]), min_size=1, max_size=3),
       out=path_of(["new", "existing_dir", "file", "under_file"]))
def test_fuzzed_inpaint_arguments(world, ckpt, mask, images, out):
    with tempfile.TemporaryDirectory() as tmp:
        p = paths(world, Path(tmp))
        mask = str(p[mask]) if mask in p else mask
        assert_clean_exit(["inpaint", "--checkpoint", str(p[ckpt]), "--mask", mask, *[str(p[i]) for i in images],
                           "--out", str(p[out])], world)


def test_inpaint_center_hole_of_a_random_region_checkpoint(world, tmp_path):
    base = world["base"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["pretrain", "--pretext", "context_encoder", "--data-root", str(world["root"]), "--max-steps", "1",
                     "--batch-size", "8", "--out", str(tmp_path / "rr"), "--no-progress"]) == 0
    assert_clean_exit(["inpaint", "--checkpoint", str(tmp_path / "rr" / "checkpoint.pt"), "--mask", "center",
                       str(base / "photo.png"), "--out", str(tmp_path / "o")], world)


def test_report_on_a_damaged_records_csv(world):
    assert_clean_exit(["report", str(world["base"] / "junk_records")], world)


@fuzz("report")
@given(folder=path_of(["records", "existing_dir", "file", "missing", "under_file", "header_records", "other_suite"]))
def test_fuzzed_report_arguments(world, folder):
    with tempfile.TemporaryDirectory() as tmp:
        assert_clean_exit(["report", str(paths(world, Path(tmp))[folder])], world)


# ---------------------------------------------------------------- (c) data files

@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """A small valid fixture per reader, in its real on-disk format."""
    from tests.real_formats import write_cifar, write_imagefolder, write_stl10, write_voc

    base = tmp_path_factory.mktemp("formats")
    return {
        "idx": make_fashion_mnist(base / "idx", n_train=16, n_test=8),
        "cifar": write_cifar(base / "cifar", per_batch=4, n_test=8),
        "stl10": write_stl10(base / "stl10", n_train=4, n_test=4, n_unlabeled=2),
        "image": write_imagefolder(base / "image", classes=("a", "b"), per_class=2, test=False),
        "voc2007": write_voc(base / "voc2007", "2007", {"trainval": 3, "test": 2}),
        "voc2012": write_voc(base / "voc2012", "2012", {"train": 3, "val": 2}),
    }


@st.composite
def corruption(draw, size: int):
    """(name, bytes -> bytes): truncation, zero length, flipped bytes, a wrong magic number, appended junk."""
    kind = draw(st.sampled_from(["truncate", "zero", "flip", "flip", "magic", "append"]))
    if kind == "truncate":
        at = draw(st.integers(0, max(0, size - 1)))
        return f"truncate to {at}", lambda b: b[:at]
    if kind == "zero":
        return "zero length", lambda b: b""
    if kind == "append":
        extra = draw(st.binary(min_size=1, max_size=64))
        return f"append {extra!r}", lambda b: b + extra
    if kind == "magic":
        magic = draw(st.binary(min_size=4, max_size=4))
        return f"magic {magic!r}", lambda b: magic + b[4:]
    flips = draw(st.lists(st.tuples(st.integers(0, max(0, size - 1)), st.integers(1, 255)), min_size=1, max_size=3))

    def flip(b: bytes) -> bytes:
        b = bytearray(b)
        for at, mask in flips:
            if at < len(b):
                b[at] ^= mask
        return bytes(b)
    return f"flip {flips}", flip


def check_reader(load, clean, victim: Path, exact: bool) -> None:
    """`load()` gives data shaped like `clean` (equal to it when `exact`), or a one-sentence UserError naming `victim`."""
    try:
        data = load()
    except UserError as err:
        assert_one_sentence(str(err))
        assert victim.name in str(err), (str(err), victim)
        return
    for field in ("images", "labels", "class_maps"):
        got, want = getattr(data, field), getattr(clean, field)
        assert (got is None) == (want is None), field
        if got is not None:
            assert got.shape == want.shape and got.dtype == want.dtype, (field, got.shape, want.shape)
            if exact:
                assert bool((got == want).all()), field


READERS = {
    # target: (fixture, files to damage (glob), split of a file, loader(root, split), exact)
    "idx": ("idx", "*.gz", lambda f: "test" if f.name.startswith("t10k") else "train",
            lambda root, split: _fashion(split, root), True),
    "cifar": ("cifar", "cifar-10-batches-py/*", lambda f: "test" if f.name == "test_batch" else "train",
              lambda root, split: _cifar(split, root), False),
    "stl10": ("stl10", "stl10_binary/*.bin", lambda f: f.name.split("_")[0],
              lambda root, split: _stl10(split, root), False),
    "image": ("image", "train/*/*", lambda f: "train", lambda root, split: _imagefolder(root), False),
    "voc_xml": ("voc2007", "VOCdevkit/VOC2007/Annotations/*.xml", lambda f: _voc_split(f, "Main"),
                lambda root, split: _voc("2007", split, root), False),
    "voc_png": ("voc2012", "VOCdevkit/VOC2012/*/*.[pj][np]g", lambda f: _voc_split(f, "Segmentation"),
                lambda root, split: _voc("2012", split, root), False),
}


def _fashion(split, root):
    from ctxenc.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist(split, root)


def _cifar(split, root):
    from ctxenc.data.cifar import load

    return load("cifar10", split, root)


def _stl10(split, root):
    from ctxenc.data.stl10 import load

    return load(split, root)


def _imagefolder(root):
    from ctxenc.data.imagefolder import load

    return load("imagefolder", "train", root, load_size=16)


def _voc(year, split, root):
    from ctxenc.data import voc

    return voc.load_classification(split, root, load_size=16) if year == "2007" else voc.load_segmentation(split, root, load_size=16)


def _voc_split(victim: Path, sets: str) -> str:
    ids = victim.parents[1] / "ImageSets" / sets
    return next(p.stem for p in sorted(ids.glob("*.txt")) if victim.stem in p.read_text().split())


def fuzz_reader(target: str):
    fixture, pattern, split_of, loader, exact = READERS[target]

    @fuzz(target)
    @given(data=st.data())
    def test(formats, data):
        files = sorted(p.relative_to(formats[fixture]) for p in formats[fixture].glob(pattern) if p.is_file())
        rel = data.draw(st.sampled_from(files), label="file")
        original = (formats[fixture] / rel).read_bytes()
        _, damage = data.draw(corruption(len(original)), label="corruption")
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "root"
            shutil.copytree(formats[fixture], root)
            split = split_of(root / rel)
            clean = loader(formats[fixture], split)
            (root / rel).write_bytes(damage(original))
            check_reader(lambda: loader(root, split), clean, root / rel, exact)

    test.__name__ = f"test_fuzzed_{target}_files_load_or_name_the_file"
    return test


test_fuzzed_idx_files_load_or_name_the_file = fuzz_reader("idx")
test_fuzzed_cifar_files_load_or_name_the_file = fuzz_reader("cifar")
test_fuzzed_stl10_files_load_or_name_the_file = fuzz_reader("stl10")
test_fuzzed_image_files_load_or_name_the_file = fuzz_reader("image")
test_fuzzed_voc_xml_files_load_or_name_the_file = fuzz_reader("voc_xml")
test_fuzzed_voc_png_files_load_or_name_the_file = fuzz_reader("voc_png")
