"""Sample data (placeholder until the plugin issue lands)."""


def synthetic_still():
    return []
