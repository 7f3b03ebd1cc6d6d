import subprocess
from pathlib import Path

import torch

from ctxenc.provenance import CODE_PATHS, provenance

ROOT = Path(__file__).resolve().parents[1]


def test_provenance_names_the_last_code_commit_torch_threads_and_cpu():
    record = provenance()
    assert record["torch"] == str(torch.__version__) and record["threads"] == torch.get_num_threads() and record["cpu"]
    last = subprocess.run(["git", "log", "-1", "--format=%h", "--abbrev=12", "--", *CODE_PATHS], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    if last:  # inside a git checkout: results-only or docs-only commits do not change it
        assert record["commit"].removesuffix("+dirty") == last


def test_device_fields_name_the_device_the_gpu_and_the_precision(monkeypatch):
    from ctxenc.provenance import device_fields

    assert device_fields("cpu", False) == {"device": "cpu", "gpu": "", "amp": False}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"NVIDIA H100 80GB HBM3 ({device})")
    assert device_fields("cuda:1", 1) == {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3 (cuda:1)", "amp": True}


def test_records_and_the_report_carry_device_gpu_and_amp(tmp_path):
    from ctxenc.results.provenance import provenance_lines
    from ctxenc.results.records import replace_records, read_records

    row = {"suite": "s", "metric": "accuracy", "value": 0.5, "device": "cuda", "gpu": "NVIDIA H100", "amp": True}
    replace_records(tmp_path / "records.csv", [row, {**row, "device": "cpu", "gpu": "", "amp": False}])
    records = read_records(tmp_path / "records.csv")
    assert records[["device", "gpu", "amp"]].fillna("").values.tolist() == [["cuda", "NVIDIA H100", True], ["cpu", "", False]]
    lines = "\n".join(provenance_lines(records))
    assert "- device: `cuda`, `cpu`" in lines and "- GPU: `NVIDIA H100`" in lines and "`True`, `False`" in lines
