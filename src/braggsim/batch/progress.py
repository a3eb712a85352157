"""A text progress display for a batch: frames done, frames/s, ETA and counts by status.

On a terminal it redraws one line; elsewhere (a log file, a pipe) it prints a plain line
when frames have finished since the last one, at most every ``plain_interval_s``, and at
the end.  Failed frames are printed as they
arrive, one line each, with their reason.
"""

from __future__ import annotations

import sys
import time

_BAR_WIDTH = 24


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def progress_line(progress, bar: bool = True) -> str:
    """``[####----] 12/100 frames  0.80 frames/s  ETA 1m50s  indexed 10, no-lattice 1, failed 1``."""
    finished = progress.skipped + progress.done
    counts = ", ".join(f"{status} {n}" for status, n in sorted(progress.counts.items()) if n)
    parts = [f"{finished}/{progress.total} frames"]
    if progress.skipped:
        parts.append(f"({progress.skipped} done before)")
    parts.append(f"{progress.frames_per_s:.2f} frames/s")
    if progress.state == "running":
        parts.append(f"ETA {format_duration(progress.eta_s)}")
    else:
        parts.append(f"in {format_duration(progress.elapsed_s)}")
    if counts:
        parts.append(counts)
    line = "  ".join(parts)
    if bar:
        filled = int(_BAR_WIDTH * finished / progress.total) if progress.total else _BAR_WIDTH
        line = "[" + "#" * filled + "-" * (_BAR_WIDTH - filled) + "] " + line
    return line


def failure_line(result) -> str | None:
    """``frame: failed: reason`` for a failed frame, None for the others."""
    return f"{result.frame}: failed: {result.reason}" if result.status == "failed" else None


class ProgressPrinter:
    """Callable taking BatchProgress; writes the progress to ``stream`` (default stderr).

    frame_line: ``result -> str | None``, a line for each finished frame, written to
        ``out`` (default ``stream``); None prints none.
    """

    def __init__(
        self,
        stream=None,
        *,
        frame_line=failure_line,
        out=None,
        plain_interval_s: float = 10.0,
        redraw_interval_s: float = 0.2,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.out = out if out is not None else self.stream
        self.frame_line = frame_line
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = redraw_interval_s if self.tty else plain_interval_s
        self._last = float("-inf")
        self._drawn = False
        self._announced = False
        self._printed_finished = -1

    def __call__(self, progress) -> None:
        if not self._announced and progress.scheduler:
            self._announced = True
            who = progress.scheduler + (f", {progress.workers} workers" if progress.workers else "")
            self._print(f"processing {progress.remaining} frames on {who}")
            self._last = time.monotonic()  # the first progress line when there is progress
            self._printed_finished = progress.skipped + progress.done
        if progress.state == "stopping":
            self._print(f"stopping: {progress.skipped + progress.done} frames are done and kept; closing the workers")
            return
        if progress.result is not None and self.frame_line is not None:
            line = self.frame_line(progress.result)
            if line:
                self._print(line, self.out)
        now = time.monotonic()
        last_step = progress.state != "running"
        finished = progress.skipped + progress.done
        news = self.tty or finished != self._printed_finished
        if last_step or (news and now - self._last >= self.interval_s):
            self._last = now
            self._printed_finished = finished
            line = progress_line(progress, bar=self.tty)
            if self.tty:
                self.stream.write("\r\x1b[2K" + line + ("\n" if last_step else ""))
                self._drawn = not last_step
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def _print(self, text: str, stream=None) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False
            self._last = float("-inf")  # redraw the bar under the message
        stream = stream if stream is not None else self.stream
        stream.write(text + "\n")
        stream.flush()
