"""Progress bars that suit where they are shown.

On a terminal, tqdm's bar; when stderr is a file or a pipe (`make demo > log`, a cluster job),
one plain line every `every` seconds and at the end instead of thousands of carriage-return frames.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class LineProgress:
    """The slice of tqdm's interface the loops use, printing `desc: n/total (rate/s) postfix` lines."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", every: float = 30.0):
        self.total, self.n, self.desc, self.unit, self.every = total, initial, desc, unit, every
        self.start, self.first, self.postfix = time.monotonic(), initial, ""
        self.last_print = self.start

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last_print >= self.every:
            self.last_print = now
            self._print(now)

    def set_postfix(self, values: dict | None = None, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(values or {}), **kwargs}.items())

    def _print(self, now: float) -> None:
        rate = (self.n - self.first) / max(now - self.start, 1e-9)
        tail = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s ({rate:.1f} {self.unit}/s){tail}", file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._print(time.monotonic())


def progress_bar(total: int, desc: str, unit: str = "it", initial: int = 0, disable: bool = False):
    """tqdm on a terminal, `LineProgress` elsewhere, a silent tqdm when disabled."""
    if disable or sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)
    return LineProgress(total, initial, desc, unit)
