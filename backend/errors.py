"""Errors the backend reports to the user, each with what to do about it."""

from __future__ import annotations

import errno
import os


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


# a write that fails for one of these reasons is the disk's or the folder's fault, not the program's
STORAGE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG")
                           if hasattr(errno, name))


def storage_error(e: BaseException, out_dir: str | os.PathLike) -> InputError | None:
    """An InputError naming the folder and what to do, when ``e`` is a failed write for lack of space,
    quota or permission (``STORAGE_ERRNOS``); None for any other error, which stays a bug to report."""
    if not isinstance(e, OSError) or e.errno not in STORAGE_ERRNOS:
        return None
    where = e.filename if e.filename else out_dir
    reason = e.strerror or os.strerror(e.errno)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {out_dir} writable, or choose another --out_dir"
    else:
        fix = f"free space on the disk that holds {out_dir}, or choose another --out_dir"
    return InputError(f"{where}: could not be written ({reason})",
                      f"{fix}, and run again (with --resume if a checkpoint was kept); "
                      "a previous result of the same name is left as it was")
