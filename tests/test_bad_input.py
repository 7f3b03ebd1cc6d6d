"""Every bad input in the README's table: one sentence on stderr, exit code 2, nothing written corrupted.

Each case is (name, how to make it, the CLI arguments, a phrase of the message).
"""

import gzip

import pytest
import torch

from ctxenc.checkpoint import load_checkpoint, save_checkpoint
from ctxenc.cli import main
from tests.conftest import write_idx


@pytest.fixture
def ckpt(fmnist_root, tmp_path):
    out = tmp_path / "ok"
    assert main(["pretrain", "--pretext", "autoencoder", "--data-root", str(fmnist_root), "--max-steps", "2",
                 "--batch-size", "32", "--out", str(out), "--no-progress"]) == 0
    return out / "checkpoint.pt"


def pretrain(root, out, *extra):
    return ["pretrain", "--pretext", "context_encoder", "--data-root", str(root), "--max-steps", "2",
            "--batch-size", "32", "--out", str(out), "--no-progress", *extra]


def truncate(path):
    data = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def other_encoder(ckpt, tmp_path):
    state = load_checkpoint(ckpt)
    state.pop("format")
    state["encoder"]["widths"] = [8, 16, 32]
    save_checkpoint(tmp_path / "other.pt", state)
    return tmp_path / "other.pt"


def after(_side_effect, args):
    """The CLI arguments, once the lambda has made the bad input (the side effect)."""
    return args


CASES = {
    "missing data root": (lambda r, t, c: pretrain(t / "nowhere", t / "o"), "Fashion-MNIST not found in"),
    "empty data root": (lambda r, t, c: after((t / "empty").mkdir(), pretrain(t / "empty", t / "o")), "Fashion-MNIST not found in"),
    "truncated IDX file": (lambda r, t, c: after(truncate(r / "train-images-idx3-ubyte.gz"), pretrain(r, t / "o")), "truncated or corrupt"),
    "corrupt IDX file (not gzip)": (lambda r, t, c: after((r / "train-labels-idx1-ubyte.gz").write_bytes(b"junk"), pretrain(r, t / "o")), "is corrupt or truncated"),
    "IDX file of the wrong kind": (lambda r, t, c: after(write_idx(r / "train-images-idx3-ubyte.gz", torch.zeros(5).numpy(), 2049), pretrain(r, t / "o")), "magic number 2049, expected 2051"),
    "image smaller than the encoder/mask": (lambda r, t, c: pretrain(r, t / "o", "--input-size", "4"), "input size must be a multiple of 8"),
    "mask ratio out of range": (lambda r, t, c: pretrain(r, t / "o", "--mask-ratio", "0.9"), "mask ratio must lie in (0.05, 0.5]"),
    "mask ratio with the center mask": (lambda r, t, c: pretrain(r, t / "o", "--mask", "center", "--mask-ratio", "0.3"), "center mask always hides 1/4"),
    "overlap out of range": (lambda r, t, c: pretrain(r, t / "o", "--overlap-px", "40"), "overlap must be 0-16 pixels"),
    "unknown dataset": (lambda r, t, c: pretrain(r, t / "o", "--dataset", "mnist"), "unknown dataset 'mnist'; valid names: fashion_mnist"),
    "unknown encoder": (lambda r, t, c: pretrain(r, t / "o", "--encoder", "vgg"), "unknown encoder 'vgg'; valid encoders:"),
    "unknown protocol": (lambda r, t, c: ["evaluate", "--checkpoint", str(c), "--protocol", "svm", "--out", str(t)], "unknown protocol 'svm'"),
    "unknown suite key": (lambda r, t, c: after((t / "s.yaml").write_text("suite: s\nprotocol: [knn]\n"), ["bench", str(t / "s.yaml"), "--out", str(t / "b")]), "did you mean 'protocols'?"),
    "unknown pretext in a suite": (lambda r, t, c: after((t / "s.yaml").write_text("suite: s\npretexts: [{name: jigsaw}]\n"), ["bench", str(t / "s.yaml"), "--out", str(t / "b")]), "unknown pretext 'jigsaw' in pretexts of"),
    "suite section that is not a mapping": (lambda r, t, c: after((t / "s.yaml").write_text("suite: s\ntrain: 5\n"), ["bench", str(t / "s.yaml"), "--out", str(t / "b")]), "train must be a mapping"),
    "two suite rows with one label": (lambda r, t, c: after((t / "s.yaml").write_text("suite: s\npretexts: [{name: context_encoder, overlap_px: 1}, {name: context_encoder}]\n"), ["bench", str(t / "s.yaml"), "--out", str(t / "b")]), "are both 'context_encoder/random_region/l2'"),
    "report naming a method the suite lacks": (lambda r, t, c: after((t / "s.yaml").write_text("suite: s\npretexts: [{name: random}]\nreport: {comparisons: [[random, autoencodr]]}\n"), ["bench", str(t / "s.yaml"), "--out", str(t / "b")]), "names 'autoencodr', which is not a row of the suite"),
    "--out naming a file": (lambda r, t, c: after((t / "f").write_text("x"), pretrain(r, t / "f")), "is a file; name a folder"),
    "--out under a file": (lambda r, t, c: after((t / "f").write_text("x"), pretrain(r, t / "f" / "sub")), "which is a file; name a folder"),
    "bench --out holding another suite": (lambda r, t, c: after(((t / "b").mkdir(), (t / "b" / "suite.yaml").write_text("suite: other\n"), (t / "s.yaml").write_text("suite: s\n")), ["bench", str(t / "s.yaml"), "--out", str(t / "b")]), "holds the results of suite 'other', not 's'"),
    "suite value of the wrong type": (lambda r, t, c: after((t / "s.yaml").write_text("suite: s\ntrain: {steps: [1]}\n"), ["bench", str(t / "s.yaml"), "--out", str(t / "b")]), "steps must be a whole number or null, got [1]"),
    "--limit below 1": (lambda r, t, c: pretrain(r, t / "o", "--limit", "0"), "--limit must be at least 1"),
    "report of a folder that is a file": (lambda r, t, c: after((t / "f").write_text("x"), ["report", str(t / "f")]), "is not a folder; pass the results folder"),
    "option of another pretext": (lambda r, t, c: ["pretrain", "--pretext", "autoencoder", "--mask", "center", "--out", str(t / "o")], "takes no options, got 'mask'"),
    "checkpoint of another encoder": (lambda r, t, c: ["evaluate", "--checkpoint", str(other_encoder(c, t)), "--protocol", "knn", "--data-root", str(r), "--out", str(t)], "do not fit its encoder"),
    "file that is not a checkpoint": (lambda r, t, c: after((t / "x.pt").write_text("hello"), ["evaluate", "--checkpoint", str(t / "x.pt"), "--protocol", "knn", "--out", str(t)]), "is not a readable ctxenc checkpoint"),
    "diverging loss": (lambda r, t, c: pretrain(r, t / "nan", "--lr", "1e30", "--checkpoint-every", "1", "--max-steps", "20"), "the loss became nan at step"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_sentence_and_exit_2(case, fmnist_root, tmp_path, ckpt, capsys):
    make, phrase = CASES[case]
    args = make(fmnist_root, tmp_path, ckpt)
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctxenc: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert phrase in err, err
    assert ckpt.read_bytes() == before  # nothing already written is touched


def test_diverging_loss_keeps_the_last_snapshot(fmnist_root, tmp_path):
    assert main(pretrain(fmnist_root, tmp_path / "nan", "--lr", "1e30", "--checkpoint-every", "1", "--max-steps", "20")) == 2
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()
    assert load_checkpoint(tmp_path / "nan" / "last.pt")["step"] >= 1


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="Fashion-MNIST not found"):
        main(["--debug", *pretrain(tmp_path / "nowhere", tmp_path / "o")])


def test_damaged_decoded_image_cache_is_rebuilt_with_a_warning(tmp_path, capsys):
    """The issue's third case: cached images.npy truncated (a full disk, an interrupted copy) -> rebuilt, one warning."""
    from ctxenc.data import load_dataset
    from ctxenc.io import cache_root
    from tests.real_formats import write_imagefolder

    root = write_imagefolder(tmp_path / "imgs", classes=None, test=False, n_flat=12)
    args = ["pretrain", "--pretext", "autoencoder", "--dataset", "imagefolder", "--data-root", str(root), "--max-steps", "1",
            "--batch-size", "4", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    first = load_dataset("imagefolder", "train", root, load_size=36).images.clone()
    damaged = sorted((cache_root() / "decoded").glob("*/images.npy"))
    assert damaged
    for npy in damaged:
        with open(npy, "r+b") as f:
            f.truncate(npy.stat().st_size // 2)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("ctxenc: warning: the decoded-image cache entry"), warnings
    assert "damaged" in warnings[0] and "decoding the images again" in warnings[0]
    assert torch.equal(load_dataset("imagefolder", "train", root, load_size=36).images, first)
