"""napari-braggsim: dock widgets around the braggsim simulator and refiner.

Importing this package is cheap: torch and napari are imported only when a widget,
reader or sample is used.
"""
__version__ = "0.1.0"
