"""napari-braggsim: dock widgets around the braggsim simulator and refiner.

Importing this package is cheap: torch and napari are imported only when a widget,
reader or sample is used (``__version__`` too is read from braggsim on first access).
"""

__all__ = ["__version__"]


def __getattr__(name: str):
    if name == "__version__":
        from braggsim import __version__  # one version for the distribution, kept in braggsim

        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
