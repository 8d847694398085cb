"""Reading untrusted files within bounds: JSON and ``.npz`` arrays checked before anything is inflated.

A result bundle may come from anywhere (a download, a shared drive), and Blender must neither hang,
run out of memory nor show a traceback on a hostile one. A small npz can declare an array of
gigabytes; a small JSON file can nest deeper than Python's recursion limit or hold integers that no
float can take. These readers refuse all of that with ``Refused`` (a ``ValueError``) before the
expensive step:

* ``read_json``: the file's size is capped before it is read, numbers are parsed by bounded hooks
  (no NaN/Infinity, no integer of more than ``MAX_JSON_INT_DIGITS`` digits, no float that overflows),
  and the nesting depth of the result is capped (decoder recursion is caught too).
* ``read_npz``: each member's size in the zip directory, then its ``.npy`` header (format version,
  dtype, shape), is compared with what the caller expects before its data is read; only plain
  numeric dtypes are accepted (no strings, objects, structured or sub-array dtypes) and only exactly
  the expected number of bytes is inflated.

Standard library and numpy only (it runs inside Blender); ``bundle.py`` turns ``Refused`` into a
``BundleError`` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

MAX_JSON_BYTES = 16 * 1024 * 1024  # a manifest of 100 000 frames is about 3 MiB
MAX_JSON_DEPTH = 32  # the manifest nests 4 levels; its run.config a few more
MAX_JSON_INT_DIGITS = 18  # every integer fits in int64 and converts to float without overflow
MAX_ARRAY_BYTES = 8 * 1024 ** 3  # one array of a bundle: 200 frames x 2.5 M Gaussians x 4 floats x 4 bytes
MAX_NPY_HEADER_BYTES = 10_000  # numpy's own default limit for a .npy header
NUMERIC_KINDS = "fiu"  # float, signed and unsigned integer
MAX_ITEMSIZE = 8  # float64 / int64


class Refused(ValueError):
    """The file is not read: it is malformed, or bigger than the readers allow."""


# what zipfile and numpy raise for truncated, garbled or encrypted archives, unknown compression
# methods, multi-disk archives and headers numpy cannot parse
_UNREADABLE = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, NotImplementedError,
               RuntimeError)


# --------------------------------------------------------------------------------------------
# JSON


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise Refused(f"integer with {len(text.lstrip('-'))} digits (at most {MAX_JSON_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Refused(f"number {text[:40]} is out of range")
    return value


def _parse_constant(name: str) -> float:
    raise Refused(f"{name} is not a JSON number")


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d + 1)
            stack.extend((x, d + 1) for x in v if isinstance(x, (list, dict)))
    return deepest


def loads_json(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode JSON text with bounded numbers and depth; raises Refused with the reason."""
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except Refused:
        raise
    except RecursionError:
        raise Refused(f"nested more than {max_depth} levels deep") from None
    except ValueError as e:  # JSONDecodeError and the decoder's own limits
        raise Refused(f"not valid JSON ({e})") from None
    if json_depth(value) > max_depth:
        raise Refused(f"nested more than {max_depth} levels deep")
    return value


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Read and decode a JSON file of at most ``max_bytes`` (UTF-8); raises Refused or OSError."""
    path = Path(path)
    if path.stat().st_size > max_bytes:
        raise Refused(f"larger than {max_bytes // (1024 * 1024)} MiB")
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:  # it grew after the check
        raise Refused(f"larger than {max_bytes // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Refused(f"not UTF-8 text ({e})") from None
    return loads_json(text, max_depth)


# --------------------------------------------------------------------------------------------
# npz


def check_array_size(name: str, shape: tuple[int, ...], max_bytes: int = MAX_ARRAY_BYTES) -> None:
    """Refuse an expected array that would be bigger than ``max_bytes`` even before looking at the file."""
    count = math.prod(shape)
    if count * 4 > max_bytes:
        raise Refused(f"{name} would have shape {shape} ({count * 4 / 1024 ** 3:.1f} GiB as float32), more than "
                      f"the {max_bytes / 1024 ** 3:g} GiB a bundle array may have")


def _read_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
    raise Refused(f"npy format version {version} is not supported")


def _check_dtype(name: str, dtype: np.dtype) -> None:
    if (dtype.fields is not None or dtype.subdtype is not None or dtype.hasobject
            or dtype.kind not in NUMERIC_KINDS or dtype.itemsize > MAX_ITEMSIZE):
        raise Refused(f"{name} has dtype {dtype.str!r}; expected plain numbers (float or integer)")


def read_npz(path: str | os.PathLike, expected: dict[str, tuple[int, ...]],
             max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """The arrays ``expected`` names from an npz, each of exactly the expected shape.

    Sizes, dtypes and shapes are checked from the zip directory and each member's ``.npy`` header
    before its data is inflated. Raises Refused naming the array (``"<name> has shape ..."`` for a
    shape mismatch), or with ``missing arrays [...]``; OSError for a file that cannot be read.
    """
    for name, shape in expected.items():
        check_array_size(name, shape, max_bytes)
    try:
        zf = zipfile.ZipFile(path)
    except _UNREADABLE as e:
        raise Refused(f"unreadable npz ({e})") from None
    out = {}
    with zf:
        members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
        missing = [k for k in expected if k not in members]
        if missing:
            raise Refused(f"missing arrays {missing}")
        for name, shape in expected.items():
            out[name] = _read_member(zf, members[name], name, shape, max_bytes)
    return out


def _read_member(zf: zipfile.ZipFile, member: str, name: str, shape: tuple[int, ...],
                 max_bytes: int) -> np.ndarray:
    count = math.prod(shape)
    info = zf.getinfo(member)
    if info.file_size > MAX_NPY_HEADER_BYTES + 16 + count * MAX_ITEMSIZE:
        raise Refused(f"{name} inflates to {info.file_size} bytes, more than an array of shape {shape} needs")
    try:
        with zf.open(info) as fh:
            got, fortran, dtype = _read_header(fh)
            _check_dtype(name, dtype)
            if tuple(got) != tuple(shape):
                raise Refused(f"{name} has shape {tuple(got)}, expected {tuple(shape)}")
            nbytes = count * dtype.itemsize
            if nbytes > max_bytes:
                raise Refused(f"{name} holds {nbytes / 1024 ** 3:.1f} GiB of {dtype.name}, more than the "
                              f"{max_bytes / 1024 ** 3:g} GiB a bundle array may have")
            data = bytearray(nbytes)  # writable, so the array is too
            view, filled = memoryview(data), 0
            while filled < nbytes:
                n = fh.readinto(view[filled:])
                if not n:
                    break
                filled += n
    except Refused:
        raise
    except _UNREADABLE as e:
        raise Refused(f"unreadable npz ({name}: {e})") from None
    if filled != nbytes:
        raise Refused(f"unreadable npz ({name}: {filled} of {nbytes} data bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
