"""Whitespace-separated number tables: nanoBragg's ``.stol`` and ``-sourcefile`` layouts.

nanoBragg splits lines on any of `` \\t,;:!``, skips blank lines, and reads unparsable
text as 0.  braggsim reads the same layout but refuses text that is not a number, so a
garbled file fails with the file and line instead of becoming zeros.  Lines starting
with ``#`` are comments (nanoBragg would read them as a row of zeros).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

_SPLIT = re.compile(r"[ \t,;:!]+")


def read_rows(path, what: str, columns: int, *, required: int) -> list[tuple[int, list[float]]]:
    """(line number, values) for every data line of ``path``.

    Each row has ``columns`` values; columns missing at the end of a line are NaN.  A line
    with fewer than ``required`` numbers, a value that is not a finite number among the
    first ``columns`` fields, an unreadable or an empty file raise ValueError naming the
    file (and line).  ``what`` names the file's role in messages ("source file").
    """
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path}: not a text file") from None
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = [f for f in _SPLIT.split(line.strip()) if f]
        if not fields or fields[0].startswith("#"):
            continue
        values = []
        for field in fields[:columns]:
            try:
                value = float(field)
            except ValueError:
                raise ValueError(f"{what} {path}, line {number}: {field!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{what} {path}, line {number}: {field!r} is not a finite number")
            values.append(value)
        if len(values) < required:
            raise ValueError(
                f"{what} {path}, line {number}: expected at least {required} numbers, got {line.strip()!r}"
            )
        rows.append((number, values + [math.nan] * (columns - len(values))))
    if not rows:
        raise ValueError(f"{what} {path}: no data (the file is empty or has only comments)")
    return rows
