import os

import pytest

# napari's canvas needs OpenGL: run these under Xvfb (pytest-xvfb), never offscreen Qt
os.environ.pop("QT_QPA_PLATFORM", None) if os.environ.get("QT_QPA_PLATFORM") == "offscreen" else None


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.gui)
