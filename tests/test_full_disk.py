"""A full disk (ENOSPC) while writing records or snapshots: the previous file stays byte-identical, one sentence, exit 2."""

import errno
import os

import pytest
import torch

from ctxenc.checkpoint import save_checkpoint
from ctxenc.cli import main
from ctxenc.errors import UserError
from ctxenc.results.records import replace_records

ROW = {"suite": "s", "dataset": "fashion_mnist", "method": "random", "seed": 0, "protocol": "knn", "metric": "accuracy",
       "value": 0.5}


def no_space(*_args):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(params=["fsync", "write"])
def full_disk(request, monkeypatch):
    """Make the disk 'full' on the temporary file: at fsync, or after 100 bytes of writing."""

    def arm():
        if request.param == "fsync":
            monkeypatch.setattr(os, "fsync", no_space)
            return
        real_fdopen = os.fdopen

        class Filling:
            def __init__(self, f):
                self.f, self.room = f, 100

            def write(self, data):
                if len(data) > self.room:
                    self.f.write(data[: self.room])
                    no_space()
                self.room -= len(data)
                return self.f.write(data)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.f.__exit__(*exc)

        monkeypatch.setattr(os, "fdopen", lambda *a, **k: Filling(real_fdopen(*a, **k)))

    return arm


def assert_disk_full_sentence(message: str, folder) -> None:
    assert str(folder) in message and "is full" in message and "needed" in message and "free" in message, message
    assert "\n" not in message and message.endswith("."), message


def test_records_survive(tmp_path, full_disk):
    path = tmp_path / "records.csv"
    replace_records(path, [ROW])
    before = path.read_bytes()
    full_disk()
    with pytest.raises(UserError) as err:
        replace_records(path, [dict(ROW, seed=1)] * 50)
    assert_disk_full_sentence(str(err.value), tmp_path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.csv", "records.csv.lock"]  # no temporary left


def test_snapshot_survives(tmp_path, full_disk):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(10)})
    before = path.read_bytes()
    full_disk()
    with pytest.raises(UserError) as err:
        save_checkpoint(path, {"step": 2, "w": torch.ones(1000)})
    assert_disk_full_sentence(str(err.value), tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_cli_evaluate_on_a_full_disk_exits_2_and_keeps_records(fmnist_root, tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert main(["pretrain", "--pretext", "random", "--data-root", str(fmnist_root), "--out", str(ckpt.parent)]) == 0
    out = tmp_path / "eval"
    evaluate = ["evaluate", "--checkpoint", str(ckpt), "--protocol", "knn", "--data-root", str(fmnist_root),
                "--limit", "32", "--out", str(out)]
    assert main(evaluate) == 0
    before = (out / "records.csv").read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(os, "fsync", no_space)
    assert main(evaluate) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctxenc: error: ") and err.count("\n") == 1
    assert_disk_full_sentence(err.strip(), out)
    assert (out / "records.csv").read_bytes() == before


def test_cli_pretrain_on_a_full_disk_keeps_the_snapshot(fmnist_root, tmp_path, capsys, monkeypatch):
    """The disk fills up at the second snapshot: last.pt still holds the first, byte for byte."""
    out = tmp_path / "run"
    real_fsync, first = os.fsync, {}

    def fsync_then_full(fd):
        if not first:
            first["bytes"] = None
            return real_fsync(fd)
        first["bytes"] = (out / "last.pt").read_bytes()  # the first snapshot, as it stands when the disk fills up
        no_space()

    monkeypatch.setattr(os, "fsync", fsync_then_full)
    assert main(["pretrain", "--pretext", "autoencoder", "--data-root", str(fmnist_root), "--batch-size", "32",
                 "--checkpoint-every", "1", "--max-steps", "3", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ctxenc: error: ")
    assert_disk_full_sentence(err, out)
    assert (out / "last.pt").read_bytes() == first["bytes"]
    assert not (out / "checkpoint.pt").exists()
