"""Records that cannot lie: one row per measurement, limit recorded, mixes refused, readable files."""

import os
import stat

import pandas as pd
import pytest

from ctxenc.cli import main
from ctxenc.errors import UserError
from ctxenc.io import atomic_write_text
from ctxenc.results.records import KEY, read_records, replace_records

ROW = {"suite": "adhoc", "dataset": "fashion_mnist", "method": "random", "pretext": "random", "seed": 0,
       "protocol": "knn", "metric": "accuracy", "value": 0.5, "pretrain_steps": 50, "limit": None}


def test_the_same_measurement_replaces_its_rows(tmp_path):
    path = tmp_path / "records.csv"
    frame, replaced = replace_records(path, [ROW, {**ROW, "metric": "val_k", "value": 5}])
    assert replaced == 0 and len(frame) == 2
    # Read back from the CSV (seed and steps as numbers, limit as NaN), the same key still matches.
    frame, replaced = replace_records(path, [{**ROW, "value": 0.7}])
    assert replaced == 2 and len(read_records(path)) == 1 and read_records(path)["value"].item() == 0.7
    # Another seed, protocol or limit is another measurement.
    for change in ({"seed": 1}, {"protocol": "linear_probe"}, {"limit": 500}, {"pretrain_steps": 100}):
        _, replaced = replace_records(path, [{**ROW, **change}])
        assert replaced == 0, change
    assert len(read_records(path)) == 5
    assert {"method", "seed", "protocol", "limit"} <= set(KEY)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "table.md", "x\n")
        replace_records(tmp_path / "records.csv", [ROW])
    finally:
        os.umask(old)
    for written in (path, tmp_path / "records.csv"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask, (written, oct(written.stat().st_mode))


def test_report_refuses_records_mixing_limited_and_full_rows(tmp_path, capsys):
    replace_records(tmp_path / "records.csv", [ROW, {**ROW, "limit": 500}])
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mixes rows measured with --limit 500 and with no --limit" in err and err.count("\n") == 1
    assert not (tmp_path / "report.md").exists()


def test_report_of_limited_records_says_so(tmp_path):
    rows = [{**ROW, "seed": s, "limit": 8, "value": 0.5 + s / 10, "encoder": "small"} for s in (0, 1)]
    replace_records(tmp_path / "records.csv", rows)
    out = tmp_path / "elsewhere"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "measured with `--limit 8`" in report
    assert (out / "records.csv").read_bytes() == (tmp_path / "records.csv").read_bytes()
    assert not (tmp_path / "report.md").exists()  # --out is where the report goes


def test_a_suite_limit_key_is_refused(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("suite: s\nlimit: 8\n")
    assert main(["bench", str(suite), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "a suite has no limit: key" in err and "--limit N" in err
    assert not (tmp_path / "o").exists()
