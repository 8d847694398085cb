"""Reading named arrays from an npz file a user points at, every failure an ``InputError`` with a hint."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError


def read_arrays(path: Path, keys: tuple[str, ...], hint: str, *, not_found: str = "missing",
                dtypes: dict[str, type] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the npz at ``path`` (no pickles), those named in ``dtypes`` converted to
    theirs. A missing file is reported as ``"{path}: {not_found}"``; missing keys and unreadable or
    unconvertible arrays name themselves."""
    dtypes = dtypes or {}
    if not path.is_file():
        raise InputError(f"{path}: {not_found}", hint)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise InputError(f"{path}: missing arrays {missing}", hint)
            return {k: np.asarray(z[k], dtype=dtypes.get(k)) for k in keys}
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable npz ({e})", hint) from e
