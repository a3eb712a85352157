"""A refinement result as text and as JSON, the same for the command line and the GUI."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping

from ..io import atomic_output
from .parameters import PARAMETERS
from .refiner import RefineResult

__all__ = ["format_search", "format_status", "format_summary", "format_table", "result_json", "write_json"]


def format_table(result: RefineResult, truth: Mapping[str, float] | None = None) -> str:
    """Parameter | [True] | Initial | Refined | [Error] | Std. err., one row a parameter,
    then the losses, the status and the orientation search."""
    header = (
        ["Parameter"]
        + (["True"] if truth else [])
        + ["Initial", "Refined"]
        + (["Error"] if truth else [])
        + ["Std. err."]
    )
    rows = []
    for name, refined in result.parameters.items():
        row = [name]
        if truth:
            row.append(f"{truth[name]:.4f}")
        row += [f"{result.initial_parameters[name]:.4f}", f"{refined:.4f}"]
        if truth:
            row.append(f"{refined - truth[name]:+.2e}")
        row.append(f"{result.standard_errors.get(name, math.nan):.2e}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows
    ]
    ratio = result.initial_loss / result.final_loss if result.final_loss > 0 else math.inf
    lines.append("")
    lines.append(f"initial loss {result.initial_loss:.6g}  final loss {result.final_loss:.6g}  ratio {ratio:.3g}x")
    lines.append(format_status(result))
    if result.standard_errors_note:
        lines.append(f"standard errors: {result.standard_errors_note}")
    search_line = format_search(result.search)
    if search_line:
        lines.append(search_line)
    return "\n".join(lines)


def format_status(result: RefineResult) -> str:
    """``status: <status> (<message>)``."""
    return f"status: {result.status} ({result.message})"


def format_search(search: Mapping | None) -> str:
    """One line on the orientation search, or "" when none ran."""
    if not search:
        return ""
    chosen = ", ".join(f"{name[len('misset_')]} {value:+.2f}" for name, value in search["chosen"].items())
    return (
        f"orientation search: {search['points_tried']} starts {search['step_deg']:g} deg apart; "
        f"descent began at misset {chosen} deg (loss {search['chosen_loss']:.6g}, "
        f"start {search['start_loss']:.6g})"
    )


def format_summary(result: RefineResult, row: Callable[[str, float, float], str] | None = None) -> str:
    """The result for a panel: status and losses, each value +- its standard error with
    its unit, the orientation search.  ``row(name, value, error)`` lays out one parameter's
    line (a GUI uses its fields' labels and number formats); by default the name, the value
    to 5 digits, the error and the unit."""
    lines = [f"{result.status}: loss {result.initial_loss:.4g} -> {result.final_loss:.4g}"]
    if result.message:
        lines.append(result.message)
    lines.append("refined value ± standard error")
    for name, value in result.parameters.items():
        error = result.standard_errors.get(name, math.nan)
        if row is not None:
            lines.append(row(name, value, error))
            continue
        parameter = PARAMETERS.get(name)
        unit = f" {parameter.unit}" if parameter is not None and parameter.unit else ""
        lines.append(f"{name:<18} {value:10.5g} ± {error:.2g}{unit}")
    search_line = format_search(getattr(result, "search", None))
    if search_line:
        lines.append(search_line)
    return "\n".join(lines)


def result_json(result: RefineResult, **extra) -> dict:
    """The result as a JSON-ready dict, with ``extra`` entries added."""
    return dict(result.to_dict(), **extra)


def write_json(path: str | os.PathLike, payload: Mapping) -> None:
    """Write ``payload`` as indented JSON; a reader never sees a half-written file."""
    with atomic_output(path) as handle:
        handle.write(json.dumps(payload, indent=1).encode("utf-8"))
