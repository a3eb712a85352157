"""braggsim: nanoBragg's diffraction physics in PyTorch, differentiable end to end.

    import braggsim
    image = braggsim.simulate(braggsim.Crystal(default_F=100), braggsim.Detector(fpixels=64))

This package never imports napari or Qt.
"""

from .background import AmorphousBackground, StolTable, read_stol
from .beam import Beam
from .crystal import Crystal
from .detector import Detector
from .simulate import simulate, simulate_background
from .sources import Sources, read_source_file
from .structure_factors import HKLTable, read_hkl

__all__ = [
    "AmorphousBackground",
    "Beam",
    "Crystal",
    "Detector",
    "HKLTable",
    "Sources",
    "StolTable",
    "read_hkl",
    "read_source_file",
    "read_stol",
    "simulate",
    "simulate_background",
]
__version__ = "0.1.0"
