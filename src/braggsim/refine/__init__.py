"""Refinement: recover crystal, detector, beam and scale parameters from an observed frame.

    from braggsim.refine import Refiner
    refiner = Refiner(crystal, detector, beam, observed, mask, refine=("mosaic", "misset"))
    for state in refiner.run(max_iter=100):
        print(state.iteration, state.loss, state.parameters)
    result = refiner.result

The package follows the layers of a refinement:

- :mod:`~braggsim.refine.parameters`: the refinable parameters, one class per model part,
  and the one registry of them (names, units, transforms, ranges, GUI hints);
- :mod:`~braggsim.refine.target`: observed data, mask, weights and loss;
- :mod:`~braggsim.refine.engine`: steppers, stages, orientation search, the descent loop;
- :mod:`~braggsim.refine.uncertainty`: standard errors from the curvature;
- :mod:`~braggsim.refine.gates`: the sanity gates (no-signal, diverged, out-of-range);
- :mod:`~braggsim.refine.refiner`: the :class:`Refiner` that assembles them;
- :mod:`~braggsim.refine.report`: a result as text and JSON.

The names below are the package's public contract.
"""

from .gates import GATE_STATUSES, GateFailure, check_fit, check_ranges, check_signal
from .parameters import (
    PARAMETER_GROUPS,
    PARAMETERS,
    PART_TYPES,
    Model,
    ModelPart,
    Parameter,
    ParameterSet,
    Range,
    default_parts,
)
from .refiner import STATUSES, Refiner, RefineResult, RefineState
from .report import format_search, format_status, format_summary, format_table, result_json, write_json
from .target import PixelTarget, Target

__all__ = [
    "GATE_STATUSES",
    "PARAMETERS",
    "PARAMETER_GROUPS",
    "PART_TYPES",
    "STATUSES",
    "GateFailure",
    "Model",
    "ModelPart",
    "Parameter",
    "ParameterSet",
    "PixelTarget",
    "Range",
    "RefineResult",
    "RefineState",
    "Refiner",
    "Target",
    "check_fit",
    "check_ranges",
    "check_signal",
    "default_parts",
    "format_search",
    "format_status",
    "format_summary",
    "format_table",
    "result_json",
    "write_json",
]
