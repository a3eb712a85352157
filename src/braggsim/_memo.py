"""A small memo for values that depend only on plain (hashable) inputs.

The simulator rebuilds the same constants on every refinement step (detector frame, cell
axes, spindle and mosaic rotation terms); each is keyed on the exact input values, so a
changed input can never meet a stale value.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class BoundedMemo(dict):
    """A dict that empties itself when it holds ``max_entries`` values."""

    def __init__(self, max_entries: int):
        super().__init__()
        self.max_entries = max_entries

    def get_or_build(self, key: Hashable | None, build: Callable[[], T]) -> T:
        """``build()``, memoised on ``key``; a None or unhashable key (e.g. holding a numpy
        array) builds without memoising."""
        if key is None:
            return build()
        try:
            value = self.get(key)
        except TypeError:
            return build()
        if value is None:
            if len(self) >= self.max_entries:
                self.clear()
            value = self[key] = build()
        return value
