"""braggsim: nanoBragg's diffraction physics in PyTorch, differentiable end to end.

    import braggsim
    image = braggsim.simulate(braggsim.Crystal(default_F=100), braggsim.Detector(fpixels=64))

This package never imports napari or Qt.
"""

from .beam import Beam
from .crystal import Crystal
from .detector import Detector
from .simulate import simulate
from .structure_factors import HKLTable, read_hkl

__all__ = ["Beam", "Crystal", "Detector", "HKLTable", "read_hkl", "simulate"]
__version__ = "0.1.0"
