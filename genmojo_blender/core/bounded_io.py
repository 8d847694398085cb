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
  the expected number of bytes is inflated. An ``ArraySpec`` widens that for a caller that needs it:
  lengths named instead of fixed (read from the file, the same for every array that names them,
  each capped by ``max_lengths``) and other dtype kinds (booleans, bounded text), as the camera
  file's flags and labels; still never objects, structured or sub-array dtypes.

Standard library and numpy only (it runs inside Blender); ``bundle.py`` turns ``Refused`` into a
``BundleError`` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
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
BOOL_KIND = "b"
TEXT_KIND = "U"  # numpy's fixed-width unicode (4 bytes a character)
_KIND_NAMES = {"f": "float", "i": "integer", "u": "unsigned integer", "b": "boolean", "U": "text"}


class Refused(ValueError):
    """The file is not read: it is malformed, or bigger than the readers allow."""


@dataclass(frozen=True)
class ArraySpec:
    """What one npz member must be. ``shape``: an int is a fixed length, a name (``"T"``) a length
    read from the file, equal for every array of one read that names it and at most that read's
    ``max_lengths[name]``. ``kinds``: the dtype kinds accepted (numpy's ``dtype.kind`` letters),
    each item at most ``max_itemsize`` bytes (text: 4 bytes a character)."""

    shape: tuple[int | str, ...]
    kinds: str = NUMERIC_KINDS
    max_itemsize: int = MAX_ITEMSIZE


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


def _check_dtype(name: str, dtype: np.dtype, kinds: str = NUMERIC_KINDS, max_itemsize: int = MAX_ITEMSIZE) -> None:
    if (dtype.fields is not None or dtype.subdtype is not None or dtype.hasobject
            or dtype.kind not in kinds or dtype.itemsize > max_itemsize):
        if kinds == NUMERIC_KINDS:
            wanted = "plain numbers (float or integer)"
        else:
            wanted = " or ".join(_KIND_NAMES.get(k, k) for k in kinds) + " values"
            if TEXT_KIND in kinds:
                wanted += f" (text of at most {max_itemsize // 4} characters)"
        raise Refused(f"{name} has dtype {dtype.str!r}; expected {wanted}")


def _bound(shape: tuple[int | str, ...], lengths: dict[str, int]) -> tuple[int, ...]:
    """``shape`` with each named length replaced by its value (learnt or its cap)."""
    return tuple(d if isinstance(d, int) else lengths[d] for d in shape)


def read_npz(path: str | os.PathLike, expected: dict[str, tuple[int, ...] | ArraySpec],
             max_bytes: int = MAX_ARRAY_BYTES, *, max_lengths: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``expected`` names from an npz, each of the expected shape (a tuple: exactly that
    shape, plain numbers; an ``ArraySpec``: named lengths and other dtype kinds, see there).

    Sizes, dtypes and shapes are checked from the zip directory and each member's ``.npy`` header
    before its data is inflated. Raises Refused naming the array (``"<name> has shape ..."`` for a
    shape mismatch), or with ``missing arrays [...]``; OSError for a file that cannot be read.
    """
    specs = {n: s if isinstance(s, ArraySpec) else ArraySpec(tuple(s)) for n, s in expected.items()}
    caps = dict(max_lengths or {})
    for name, spec in specs.items():
        unbounded = [d for d in spec.shape if isinstance(d, str) and d not in caps]
        if unbounded:
            raise ValueError(f"{name}: no max_lengths entry for the named length {unbounded[0]!r}")
        check_array_size(name, _bound(spec.shape, caps), max_bytes)
    try:
        zf = zipfile.ZipFile(path)
    except _UNREADABLE as e:
        raise Refused(f"unreadable npz ({e})") from None
    out, lengths = {}, {}
    with zf:
        members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
        missing = [k for k in specs if k not in members]
        if missing:
            raise Refused(f"missing arrays {missing}")
        for name, spec in specs.items():
            out[name] = _read_member(zf, members[name], name, spec, lengths, caps, max_bytes)
    return out


def _match_shape(name: str, got: tuple[int, ...], spec: ArraySpec, lengths: dict[str, int],
                 caps: dict[str, int]) -> None:
    """Check a header's shape against ``spec``, learning named lengths into ``lengths``."""
    want = tuple(d if isinstance(d, int) else lengths.get(d, d) for d in spec.shape)
    shown = "(" + ", ".join(str(d) for d in want) + ("," if len(want) == 1 else "") + ")"
    if len(got) != len(want) or any(isinstance(w, int) and g != w for g, w in zip(got, want)):
        raise Refused(f"{name} has shape {got}, expected {shown}")
    for g, d in zip(got, spec.shape):
        if isinstance(d, str) and g > caps[d]:
            raise Refused(f"{name} has shape {got}: {g} along {d}, more than the {caps[d]} it may have")
        if isinstance(d, str):
            lengths[d] = g


def _read_member(zf: zipfile.ZipFile, member: str, name: str, spec: ArraySpec, lengths: dict[str, int],
                 caps: dict[str, int], max_bytes: int) -> np.ndarray:
    shape = _bound(spec.shape, {**caps, **lengths})
    info = zf.getinfo(member)
    if info.file_size > MAX_NPY_HEADER_BYTES + 16 + math.prod(shape) * spec.max_itemsize:
        raise Refused(f"{name} inflates to {info.file_size} bytes, more than an array of shape {shape} needs")
    try:
        with zf.open(info) as fh:
            got, fortran, dtype = _read_header(fh)
            _check_dtype(name, dtype, spec.kinds, spec.max_itemsize)
            got = tuple(got)
            _match_shape(name, got, spec, lengths, caps)
            shape = got
            nbytes = math.prod(shape) * dtype.itemsize
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
