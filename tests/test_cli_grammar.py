"""One CLI grammar: shared flags mean the same everywhere, errors name the flags and show the
command's usage, training length has one way, evaluate never duplicates rows."""

import pandas as pd
import pytest

from ctxenc.cli import build_parser, main


def options(command: str) -> dict[str, str]:
    """{option string: help} of one subcommand."""
    sub = build_parser().commands[command]
    return {s: a.help for a in sub._actions for s in a.option_strings}


SHARED = {"--out": ["pretrain", "evaluate", "bench", "inpaint", "export", "report"],
          "--device": ["pretrain", "evaluate", "bench", "inpaint"],
          "--amp": ["pretrain", "evaluate", "bench"],
          "--no-progress": ["pretrain", "evaluate", "bench"],
          "--seed": ["pretrain", "evaluate", "inpaint"],
          "--debug": ["pretrain", "evaluate", "bench", "inpaint", "export", "report"]}


@pytest.mark.parametrize("flag", list(SHARED))
def test_shared_flags_exist_with_one_meaning(flag):
    helps = [options(command)[flag] for command in SHARED[flag]]
    # Each command may add what is particular to it, after the one shared meaning.
    first = helps[0].split(":")[0].split(" (")[0]
    assert all(h.startswith(first) for h in helps), helps


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == "ctxenc 0.1.0"


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="Fashion-MNIST not found"):
        main(["pretrain", "--pretext", "autoencoder", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
              "--debug"])


@pytest.mark.parametrize("command", ["pretrain --pretext random --out o", "evaluate --checkpoint c --protocol knn", "report d"])
def test_an_unknown_option_shows_the_commands_usage(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--bogus"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"usage: ctxenc {command.split()[0]} ") and "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("flags, phrase", [
    (["--steps", "0"], "--steps must be at least 1 (an untrained encoder is the baseline --pretext random), got 0."),
    (["--steps", "-5"], "--steps must be at least 1"),
    (["--max-steps", "0"], "--max-steps must be at least 1"),
    (["--steps", "50", "--max-steps", "20"], "--steps 50 and --max-steps 20 both set the training length; give one of them."),
    (["--steps", "50", "--epochs", "2"], "--steps 50 and --epochs 2 both set the training length"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0."),
    (["--log-every", "0"], "--log-every must be at least 1"),
    (["--lr", "0"], "--lr must be above 0"),
])
def test_training_flags_refused_by_their_names(flags, phrase, fmnist_root, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["pretrain", "--pretext", "context_encoder", "--data-root", str(fmnist_root), "--out", str(out),
                 "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert phrase in err and err.count("\n") == 1 and "max_steps" not in err, err
    assert not out.exists()


def test_evaluate_replaces_its_rows_runs_every_protocol_and_records_the_limit(fmnist_root, tmp_path, capsys):
    run = tmp_path / "ce"
    assert main(["pretrain", "--pretext", "context_encoder", "--data-root", str(fmnist_root), "--max-steps", "2",
                 "--batch-size", "32", "--seed", "3", "--out", str(run), "--no-progress"]) == 0
    evaluate = ["evaluate", "--checkpoint", str(run), "--data-root", str(fmnist_root)]  # a run folder, no --out: its records.csv
    assert main([*evaluate, "--protocol", "knn", "--protocol", "linear_probe"]) == 0
    captured = capsys.readouterr()
    assert "evaluate knn (1/2)" in captured.out and "evaluate linear_probe (2/2)" in captured.out  # progress
    assert captured.err == ""
    first = pd.read_csv(run / "records.csv")
    assert set(first["protocol"]) == {"knn", "linear_probe"} and set(first["seed"]) == {3}
    assert first["limit"].isna().all()
    # The same command again: the same rows, replaced, not added.
    assert main([*evaluate, "--protocol", "knn", "--protocol", "linear_probe", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "replaced" in captured.out and "evaluate knn" not in captured.out
    again = pd.read_csv(run / "records.csv")
    assert len(again) == len(first)
    pd.testing.assert_series_equal(again["value"], first["value"])  # the evaluation's seed is the checkpoint's, each time
    # With --limit: other rows, marked as such, kept apart from the full ones.
    assert main([*evaluate, "--protocol", "knn", "--limit", "40"]) == 0
    limited = pd.read_csv(run / "records.csv")
    knn = first[first["protocol"] == "knn"]
    assert len(limited) == len(first) + len(knn) and set(limited["limit"].dropna()) == {40}
    assert main(["report", str(run)]) == 2
    assert "mixes rows measured with --limit 40 and with no --limit" in capsys.readouterr().err


def test_evaluate_refuses_a_protocol_given_twice(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_text("x")
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--protocol", "knn", "--protocol", "knn"]) == 2
    assert "--protocol knn is given twice" in capsys.readouterr().err


def test_checkpoint_folder_without_checkpoint(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--protocol", "knn"]) == 2
    assert "is a folder without a checkpoint.pt" in capsys.readouterr().err
