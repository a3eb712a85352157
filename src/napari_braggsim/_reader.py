"""napari reader contribution (placeholder until the frames issue lands)."""


def get_reader(path):
    return None
