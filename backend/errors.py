"""Errors the backend reports to the user, each with what to do about it."""

from __future__ import annotations


class GenmojoError(Exception):
    """Base class: ``str(err)`` is the one-line message, ``hint`` says what to do."""

    kind = "internal"

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class InputError(GenmojoError):
    """The clip, the masks, a camera file or an option is unusable. Raised before any heavy work."""

    kind = "input"


class Cancelled(GenmojoError):
    """The run was stopped by SIGINT/SIGTERM (Ctrl-C, Blender's Cancel)."""

    kind = "cancelled"
