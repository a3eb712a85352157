"""Placeholder RefineWidget (filled in by the plugin issue)."""
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


class RefineWidget(QWidget):
    def __init__(self, napari_viewer=None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("RefineWidget"))
