"""The output folder of a batch: what is done, and writing results as they arrive.

DIR/<frame>.json (+ .expt when indexed) are written by the pipeline's writer the moment a
frame's result reaches the client; DIR/summary.csv (one row per frame, in natural frame
order) is rewritten atomically, at most about once a second (less often when the rewrite
itself gets slow, so a million-row summary does not dominate), and always at the end or
on a stop.  A frame is done when it has a summary row and its .json exists, so a run
killed between the two re-runs that frame rather than trusting half of it.
DIR/options.json records the pipeline options, so a rerun with different options is
refused instead of mixing results (``force`` reprocesses).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time

from ..io import atomic_output
from .sources import natural_key

SUMMARY_NAME = "summary.csv"
OPTIONS_NAME = "options.json"


class OutputFolderError(ValueError):
    """The output folder cannot take this batch's results (not a folder, a foreign
    summary, results made with other options)."""


class ResultStore:
    """Results of one output folder.

    write_frame_outputs: ``(out_dir, result) -> None``, the pipeline's per-frame writer.
    fields: the summary's leading columns (others a row has follow them).
    stem_of: ``frame -> stem``, the file name a summary row's ``frame`` is written under;
        rows are kept by stem, in natural stem order.
    """

    def __init__(self, out_dir, write_frame_outputs, fields, stem_of, min_flush_interval_s: float = 1.0):
        self.out_dir = os.fspath(out_dir)
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise OutputFolderError(f"output {self.out_dir!r} exists and is not a folder")
        try:
            os.makedirs(self.out_dir, exist_ok=True)
        except OSError as exc:
            raise OutputFolderError(f"cannot create the output folder {self.out_dir!r}: {exc}") from None
        self._write_frame_outputs = write_frame_outputs
        self._fields = list(fields)
        self._stem_of = stem_of
        self._min_interval_s = min_flush_interval_s
        self.rows: dict = self._read_summary()
        self._dirty = False
        self._last_flush = 0.0
        self._flush_cost_s = 0.0

    @property
    def summary_path(self) -> str:
        return os.path.join(self.out_dir, SUMMARY_NAME)

    def json_path(self, name: str) -> str:
        return os.path.join(self.out_dir, name + ".json")

    def is_done(self, name: str) -> bool:
        return name in self.rows and os.path.exists(self.json_path(name))

    def check_options(self, options: dict, force: bool) -> None:
        """Record ``options``; ValueError if the folder holds results made with others
        (unless ``force``)."""
        path = os.path.join(self.out_dir, OPTIONS_NAME)
        if os.path.exists(path) and not force:
            try:
                with open(path, encoding="utf-8") as handle:
                    previous = json.load(handle).get("options")
            except (OSError, ValueError, AttributeError) as exc:
                raise OutputFolderError(f"{path} is unreadable ({exc}); pass --force to start over") from None
            if _canonical(previous) != _canonical(options):
                changed = sorted(
                    k for k in set(previous or {}) | set(options) if (previous or {}).get(k) != options.get(k)
                )
                raise OutputFolderError(
                    f"{self.out_dir} holds results made with other options ({', '.join(changed)} differ); "
                    "pass --force to reprocess, or choose another output folder"
                )
        from .. import __version__

        with atomic_output(path) as handle:
            handle.write(json.dumps({"braggsim_version": __version__, "options": options}, indent=2).encode())

    def forget(self, names) -> None:
        """Drop the rows of ``names`` (they are about to be reprocessed)."""
        for name in names:
            if self.rows.pop(name, None) is not None:
                self._dirty = True

    def add(self, result) -> None:
        """Write one frame's files now; its summary row follows within about a second."""
        self._write_frame_outputs(self.out_dir, result)
        self.rows[self._stem_of(result.frame)] = {k: _cell_text(v) for k, v in result.summary_row().items()}
        self._dirty = True
        self.maybe_flush()

    def maybe_flush(self) -> None:
        waited = time.monotonic() - self._last_flush
        if self._dirty and waited >= max(self._min_interval_s, 10.0 * self._flush_cost_s):
            self.flush()

    def flush(self) -> None:
        """Rewrite summary.csv (atomically) if anything changed."""
        if not self._dirty:
            return
        started = time.monotonic()
        fields = list(self._fields)
        for row in self.rows.values():
            fields.extend(k for k in row if k not in fields)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        for name in sorted(self.rows, key=natural_key):
            writer.writerow(self.rows[name])
        with atomic_output(self.summary_path) as handle:
            handle.write(text.getvalue().encode("utf-8"))
        self._dirty = False
        self._last_flush = time.monotonic()
        self._flush_cost_s = self._last_flush - started

    def _read_summary(self) -> dict:
        if not os.path.exists(self.summary_path):
            return {}
        try:
            with open(self.summary_path, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None or "frame" not in reader.fieldnames:
                    raise OutputFolderError("no 'frame' column")
                return {self._stem_of(row["frame"]): row for row in reader}
        except (OSError, ValueError, csv.Error, UnicodeDecodeError) as exc:
            raise OutputFolderError(
                f"{self.summary_path} is not a braggsim summary ({exc}); move it away or choose another output folder"
            ) from None


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)
