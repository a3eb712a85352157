"""A small thread-safe memo for values that depend only on plain (hashable) inputs.

The simulator rebuilds the same constants on every refinement step (detector frame, cell
axes, spindle and mosaic rotation terms, subpixel geometry); each is keyed on the exact
input values, so a changed input can never meet a stale value.  A refinement in a
worker thread and live simulation on the GUI thread share these memos: every read and
write of one happens under its lock, and the values are never modified after they are
built (callers must not write into them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class BoundedMemo:
    """A memo that empties itself when it would hold more than ``max_entries`` values or,
    with ``size_of``, more than ``max_bytes``; a value over a quarter of ``max_bytes`` is
    returned without being kept."""

    def __init__(self, max_entries: int, max_bytes: int | None = None, size_of: Callable[[Any], int] | None = None):
        if (max_bytes is None) != (size_of is None):
            raise ValueError("max_bytes and size_of go together")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size_of = size_of
        self._values: dict = {}
        self._sizes: dict = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._sizes.clear()

    def get_or_build(self, key: Hashable | None, build: Callable[[], T]) -> T:
        """``build()``, memoised on ``key``; a None or unhashable key (e.g. holding a numpy
        array) builds without memoising.  ``build`` runs outside the lock (it may be slow,
        and may use other memos); when two threads build the same key at once, both get
        the value that was stored first."""
        if key is None:
            return build()
        try:
            with self._lock:
                value = self._values.get(key)
        except TypeError:  # unhashable
            return build()
        if value is not None:
            return value
        value = build()
        size = self.size_of(value) if self.size_of is not None else 0
        if self.max_bytes is not None and size > self.max_bytes // 4:
            return value
        with self._lock:
            stored = self._values.get(key)
            if stored is not None:
                return stored
            full = len(self._values) >= self.max_entries
            if self.max_bytes is not None and sum(self._sizes.values()) + size > self.max_bytes:
                full = True
            if full:
                self._values.clear()
                self._sizes.clear()
            self._values[key] = value
            self._sizes[key] = size
        return value
