"""Progress of long commands (`build`, `eval`) on stderr: one line per step, elapsed and ETA.

The library reports through a ``progress(message, done, total)`` hook (see
``uniroute.embeddings.factory.ProgressHook``): ``done`` of a step's ``total`` units are finished,
0 when the step starts. Each event becomes one line with the time since the command started and,
inside a step, the estimated time left. On a terminal the lines inside a step replace each other
in place; elsewhere (a log, a pipe) each is its own line, but at most one per ``min_interval``
seconds, so that many quick units do not flood the log. A step's first and last lines always
appear.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

#: Fewest seconds between two lines inside a step when stderr is not a terminal.
MIN_INTERVAL = 1.0
#: Erase the terminal's current line (carriage return, then ANSI "erase to end of line").
_CLEAR_LINE = "\r\x1b[K"


def format_duration(seconds: float) -> str:
    """'4.2 s', '3 min 05 s' or '1 h 02 min'."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(int(round(seconds)), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(int(round(seconds)) // 60, 60)
    return f"{hours} h {rest:02d} min"


class ProgressPrinter:
    """A ``ProgressHook`` that prints each event as a line on ``stream`` (stderr by default)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        min_interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        live: bool | None = None,
        started: float | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.min_interval = min_interval
        self.clock = clock
        # A terminal shows the lines inside a step in place; a file keeps each line.
        self.live = _is_terminal(self.stream) if live is None else live
        # When the command started, on ``clock``: the elapsed time printed counts from it.
        self.started = clock() if started is None else started
        self._step_started = self.started
        self._done = 0
        self._total = 0
        self._last_line = float("-inf")
        self._pending_live = False

    def __call__(self, message: str, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` units of the current step are finished."""
        now = self.clock()
        if done <= 0:
            self._step_started = now
        self._done, self._total = done, total
        inside = 0 < done < total
        if inside and not self.live and now - self._last_line < self.min_interval:
            return
        suffix = "..." if done <= 0 else ""
        self._write(f"{message}{suffix}  [{self._status(now)}]", transient=inside and self.live)

    def line(self, text: str) -> None:
        """Print ``text`` as its own line, with the elapsed time and the ETA of the current step."""
        self._write(f"{text}  [{self._status(self.clock())}]", transient=False)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds the current step should still take, from its pace so far; None outside one."""
        if not 0 < self._done < self._total:
            return None
        now = self.clock() if now is None else now
        per_unit = (now - self._step_started) / self._done
        return per_unit * (self._total - self._done)

    def _status(self, now: float) -> str:
        parts = []
        if 0 < self._done < self._total:
            parts.append(f"{self._done}/{self._total}")
        parts.append(f"{format_duration(now - self.started)} elapsed")
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        return ", ".join(parts)

    def _write(self, text: str, *, transient: bool) -> None:
        if self._pending_live:
            self.stream.write(_CLEAR_LINE)
            self._pending_live = False
        if transient:
            # A line wider than the terminal wraps, and clearing it would then erase only its
            # last row: an in-place line is cut to the width.
            width = shutil.get_terminal_size().columns - 1
            self.stream.write(text[:width])
            self._pending_live = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._last_line = self.clock()

    def close(self) -> None:
        """End a line still shown in place, so that what follows starts on a fresh line."""
        if self._pending_live:
            self.stream.write("\n")
            self.stream.flush()
            self._pending_live = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
