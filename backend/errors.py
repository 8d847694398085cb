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


def describe_error(e: Exception) -> str:
    """What a command-line tool prints for an error it refuses with: the message, then the hint if any."""
    hint = getattr(e, "hint", "")
    return f"error: {e}" + (f"\nhint: {hint}" if hint else "")
