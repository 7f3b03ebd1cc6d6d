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
