"""napari-braggsim: dock widgets around the braggsim simulator and refiner.

Importing this package is cheap: torch and napari are imported only when a widget,
reader or sample is used.
"""

from braggsim import __version__  # one version for the distribution, kept in braggsim

__all__ = ["__version__"]
