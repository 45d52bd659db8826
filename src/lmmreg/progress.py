"""Progress bars that suit where the output goes: tqdm on a terminal, a plain log line every few seconds
(and one at the end) when stderr is a file or a pipe, as under `dvc repro > log` or CI.

A tqdm bar written to a log leaves one carriage-return fragment per update (every epoch of every run);
the log lines say the same in a few lines: `train demo lmm_reg s0: 100/100 epoch, 3.1 s (32.3 epoch/s) loss=0.41`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("lmmreg.progress")

EVERY_S = 5.0  # seconds between two log lines of one bar


class LogProgress:
    """The part of tqdm's interface the project uses (iterate, update, set_postfix, close), as log lines."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", every: float = EVERY_S, disable: bool = False):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.every, self.disable = total, desc, unit, every, disable
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._emit(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._emit(time.monotonic(), done=True)

    def _emit(self, now: float, done: bool = False) -> None:
        if self.disable:
            return
        elapsed = now - self.start
        rate = f" ({self.n / elapsed:.1f} {self.unit}/s)" if elapsed > 0 and self.n else ""
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        state = "done, " if done else ""
        post = f" {self.postfix}" if self.postfix else ""
        log.info("%s: %s%s %s, %.1f s%s%s", self.desc or "progress", state, count, self.unit, elapsed, rate, post)


def is_terminal(stream: Any = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams (pytest capture)
        return False


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = True, disable: bool = False, every: float = EVERY_S, **tqdm_kwargs: Any):
    """A tqdm bar when stderr is a terminal, else a :class:`LogProgress` writing a line every `every` seconds
    and one when it closes. Same call as tqdm's for the arguments above (extra tqdm options pass through)."""
    if is_terminal():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable, **tqdm_kwargs)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, every=every, disable=disable)
