"""A dependency-free progress display for long command-line work.

On a terminal one line is redrawn in place (stage, bar, count, rate, message);
when stderr is a file or pipe (batch jobs, logs) a plain line is printed at
most every ``log_every`` seconds and at the end of each stage, so logs stay
readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """Callable as ``bar(stage, done, total, message)``.

    Parameters
    ----------
    stream : file, optional
        Where to write (default ``sys.stderr``).
    log_every : float
        Seconds between lines when the stream is not a terminal.
    prefix : str
        Put before every line (e.g. the scan name in a batch).
    """

    def __init__(self, stream: TextIO | None = None, log_every: float = 10.0, prefix: str = "") -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = log_every
        self.prefix = prefix
        self._stage: str | None = None
        self._start = time.perf_counter()
        self._last = 0.0
        # (done, time) of a stage first heard of part-way (a trainer reports every 10
        # steps), until a second report dates the stage's real start.
        self._first: tuple[int, float] | None = None

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        now = time.perf_counter()
        if stage != self._stage:
            if self._stage is not None and self.tty:
                self.stream.write("\n")
            self._stage, self._start, self._last = stage, now, 0.0
            self._first = (done, now) if done > 0 else None
        elif self._first is not None and done > self._first[0] and now > self._first[1]:
            # The steps before the first report ran at about the rate seen since.
            d0, t0 = self._first
            self._start = t0 - d0 * (now - t0) / (done - d0)
            self._first = None
        elapsed = now - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        frac = done / total if total else 1.0
        finished = done >= total
        # No time is known before a stage's second report when its first came part-way.
        timed = self._first is None
        if self.tty:
            bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
            speed = f"{rate:6.1f}/s eta {eta:5.0f}s " if timed else ""
            line = f"\r{self.prefix}{stage:<12} [{bar}] {done}/{total} {speed}{message}"
            self.stream.write(line[:160].ljust(100))
            if finished:
                self.stream.write("\n")
                self._stage = None
        elif finished or now - self._last >= self.log_every:
            self._last = now
            when = f"{elapsed:.1f}s " if timed else ""
            self.stream.write(f"{self.prefix}{stage}: {done}/{total} ({100 * frac:.0f}%) "
                              f"{when}{message}\n")
        self.stream.flush()
