"""Reading named arrays from an npz file a user points at, every failure an ``InputError`` with a hint;
and writing the backend's own cache entries atomically."""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError

# what np.load raises for an empty, truncated or foreign file, or a damaged member
UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def read_arrays(path: Path, keys: tuple[str, ...], hint: str, *, not_found: str = "missing",
                dtypes: dict[str, type] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the npz at ``path`` (no pickles), those named in ``dtypes`` converted to
    theirs. A missing file is reported as ``"{path}: {not_found}"``; an empty, truncated or foreign file,
    missing keys, and arrays whose values are not of the kind their target dtype holds (e.g. integers,
    complex numbers or strings where floating point is expected) name themselves."""
    dtypes = dtypes or {}
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {not_found}", hint)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)", hint)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise InputError(f"{path}: holds a single array, not an npz archive of named arrays", hint)
        with z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise InputError(f"{path}: missing arrays {missing}", hint)
            out = {}
            for k in keys:
                a, want = z[k], dtypes.get(k)
                if want is not None and a.dtype.kind != np.dtype(want).kind:
                    raise InputError(f"{path}: {k} holds {a.dtype} values, expected {_kind_name(np.dtype(want))}",
                                     hint)
                out[k] = np.asarray(a, dtype=want)
            return out
    except InputError:
        raise
    except UNREADABLE as e:
        raise InputError(f"{path}: not a readable npz, or truncated ({type(e).__name__}: {e})", hint) from e


def _kind_name(dtype: np.dtype) -> str:
    return {"f": "floating-point numbers", "i": "integers", "u": "unsigned integers", "b": "booleans"}.get(
        dtype.kind, dtype.name)


def write_npz_atomic(path: Path, prefix: str, **arrays) -> None:
    """``np.savez`` the ``arrays`` to ``path`` through a temporary file (named ``prefix``...``.npz``) in the
    same folder, renamed into place: a run killed while writing leaves no partial entry. OSError passes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
