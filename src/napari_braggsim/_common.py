"""Small shared pieces of the plugin: the viewer behind napari's proxy and error reporting."""

from __future__ import annotations


def unwrap(viewer):
    """The real viewer behind napari's PublicOnlyProxy (plugins receive the proxy)."""
    return getattr(viewer, "__wrapped__", viewer)


def notify_error(message: str) -> None:
    """Show ``message`` as a napari error notification (never a traceback)."""
    from napari.utils.notifications import show_error

    show_error(message)


def notify_warning(message: str) -> None:
    """Show ``message`` as a napari warning notification."""
    from napari.utils.notifications import show_warning

    show_warning(message)


def describe(exc: BaseException) -> str:
    """One readable line for an exception."""
    text = str(exc).strip() or exc.__class__.__name__
    return text if isinstance(exc, ValueError) else f"{exc.__class__.__name__}: {text}"
