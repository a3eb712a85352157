"""napari-braggsim: dock widgets around the braggsim simulator and refiner.

Importing this package is cheap: torch and napari are imported only when a widget,
reader or sample is used.
"""

from importlib.metadata import PackageNotFoundError, version

# one version for the distribution, kept in braggsim.__version__ (pyproject.toml reads it
# there); read back from the installed metadata, because importing braggsim imports torch
try:
    __version__ = version("napari-braggsim")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

__all__ = ["__version__"]
