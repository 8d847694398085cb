"""Resumable checkpoints of a fit, so that a killed or cancelled run loses at most a few steps.

A checkpoint lives beside the result it will become, in ``<out_dir>/.<save_name>.checkpoint/``: a
``state.pt`` (the model's parameters, the optimizer, schedule and random-stream states, written with
``torch.save``) and a ``checkpoint.json`` (format, version, the run's fingerprint and the step). The
fingerprint holds a SHA-256 of the bytes of every input file (frames, masks, camera, depth and
background files), the configuration's digest and the iteration budget, so ``--resume`` refuses a
checkpoint whose inputs changed even where their paths did not. ``--resume`` reads and checks the whole
checkpoint before any heavy work (``open_checkpoint``); anything damaged, foreign, from another format
version or another run is refused with an ``InputError`` naming the folder. Files are written
atomically and read with ``torch.load(weights_only=True)``: no pickle.

Checkpoints of other runs in the same ``--out_dir`` are reported at the start of a run and removed
once older than ``config.STALE_CHECKPOINT_DAYS`` (``tidy_checkpoints``); a run's own checkpoint is
removed when its bundle is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from . import __version__
from .config import Config
from .errors import InputError

FORMAT = "genmojo-checkpoint"
VERSION = 2  # 2: input contents in the fingerprint; random streams saved as of the last finished unit
STATE_FILE = "state.pt"
INFO_FILE = "checkpoint.json"
SUFFIX = ".checkpoint"
READ_CHUNK = 1 << 20  # bytes read at a time while hashing the inputs
START_OVER = "run without --resume (with --overwrite to discard the checkpoint) to start over"


def checkpoint_dir(out_dir: Path, save_name: str) -> Path:
    return Path(out_dir) / f".{save_name}{SUFFIX}"


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files: every regular file below it whose name does not
    start with '.', in sorted order, each as its relative name, its size and its bytes."""
    path = Path(path)
    h = hashlib.sha256()
    try:
        if path.is_dir():
            files = sorted((p for p in path.rglob("*") if p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts)),
                           key=lambda p: p.relative_to(path).as_posix())
            for p in files:
                rel = p.relative_to(path).as_posix().encode()
                h.update(len(rel).to_bytes(8, "little") + rel + p.stat().st_size.to_bytes(8, "little"))
                _hash_file(h, p)
        else:
            _hash_file(h, path)
    except OSError as e:
        raise InputError(f"{path}: cannot be read to fingerprint the run's inputs ({e.strerror or e})",
                         "check that the input files are readable") from e
    return h.hexdigest()


def fingerprint(inputs: dict[str, Path | None], settings: dict, cfg: Config, iterations: int) -> dict:
    """What must match for a checkpoint to be continued: the contents of every input (``inputs``: the
    flag's name → its path, or None when not given), the run's other ``settings`` (JSON values), the
    configuration and the iteration budget."""
    return {
        "inputs": {name: None if p is None else {"path": str(Path(p).resolve()), "sha256": content_digest(p)}
                   for name, p in inputs.items()},
        "settings": dict(settings),
        "config_sha256": hashlib.sha256(cfg.to_json().encode()).hexdigest(),
        "preset": cfg.preset,
        "iterations": int(iterations),
    }


def _differences(info: dict, finger: dict) -> list[str]:
    """What differs between a checkpoint's fingerprint and this run's, in words. Inputs are compared by
    contents (a moved clip with the same bytes still resumes)."""
    out = []
    theirs = info.get("inputs") if isinstance(info.get("inputs"), dict) else {}
    for name, mine in finger["inputs"].items():
        other = theirs.get(name)
        if (mine is None) != (other is None):
            out.append(f"{name} was {'not ' if other is None else ''}given")
        elif mine is not None and (not isinstance(other, dict) or other.get("sha256") != mine["sha256"]):
            out.append(f"the contents of {name} ({mine['path']}) changed")
    out += [f"{name} differs" for name in theirs if name not in finger["inputs"]]
    for key in ("settings", "config_sha256", "preset", "iterations"):
        if info.get(key) != finger[key]:
            if key == "settings" and isinstance(info.get(key), dict):
                out += [f"{k} differs" for k in sorted(set(finger[key]) | set(info[key]))
                        if info[key].get(k) != finger[key].get(k)]
            else:
                out.append({"config_sha256": "the configuration differs"}.get(key, f"{key} differs"))
    return out


def save_checkpoint(folder: Path, payload: dict, finger: dict, step: int) -> None:
    """Write ``payload`` (tensors, numbers, lists and dicts of them) atomically, recording ``step``
    (a crash while saving keeps the previous checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE_FILE}.tmp-{os.getpid()}"
    tmp_info = folder / f".{INFO_FILE}.tmp-{os.getpid()}"
    info = dict(finger, format=FORMAT, version=VERSION, backend=__version__, step=int(step))
    try:
        torch.save(payload, tmp)
        tmp_info.write_text(json.dumps(info, indent=2))
        # the info file is replaced last: it names the step of the state file beside it
        os.replace(tmp, folder / STATE_FILE)
        os.replace(tmp_info, folder / INFO_FILE)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_info.unlink(missing_ok=True)


def inspect_checkpoint(folder: Path) -> tuple[str, dict | None, str]:
    """``("none", None, "")`` when ``folder`` holds no checkpoint (missing, or only the leftovers of a save
    that never completed), ``("ok", info, "")`` for a complete checkpoint of this format version, and
    ``("damaged", info or None, reason)`` for anything else that is there."""
    folder = Path(folder)
    info_path, state_path = folder / INFO_FILE, folder / STATE_FILE
    if not (info_path.exists() or state_path.exists()):
        return "none", None, ""
    if not info_path.is_file():
        return "damaged", None, f"{INFO_FILE} is missing"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return "damaged", None, f"{INFO_FILE} cannot be read ({e})"
    if isinstance(info, dict) and "format" not in info and {"config_sha256", "step"} <= set(info):
        return "damaged", info, ("it was written by an earlier version of the backend (checkpoint format 1); "
                                 f"this backend reads version {VERSION}")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return "damaged", None, f"{INFO_FILE} is not a GenMOJO checkpoint's"
    if info.get("version") != VERSION:
        return "damaged", info, (f"it was written by checkpoint format version {info.get('version')!r} "
                                 f"(backend {info.get('backend', 'before 0.1.0')}); this backend reads version {VERSION}")
    if not state_path.is_file():
        return "damaged", info, f"{STATE_FILE} is missing"
    return "ok", info, ""


def read_info(folder: Path) -> dict | None:
    """The checkpoint's fingerprint and step, or None when there is no complete, readable checkpoint."""
    status, info, _ = inspect_checkpoint(folder)
    return info if status == "ok" else None


def open_checkpoint(folder: Path, finger: dict) -> dict:
    """The payload of the checkpoint in ``folder`` after checking that it is complete, of this format
    version, made by the same run (``finger``) and readable; any failure is an ``InputError`` that names
    the folder and says how to start over."""
    status, info, reason = inspect_checkpoint(folder)
    if status == "none":
        raise InputError(f"{folder}: --resume was given but there is no checkpoint to resume",
                         "run without --resume to start from the beginning")
    if status == "damaged":
        raise InputError(f"{folder}: the checkpoint cannot be resumed: {reason}", START_OVER)
    diff = _differences(info, finger)
    if diff:
        raise InputError(f"{folder}: the checkpoint was made by a different run ({'; '.join(diff)})",
                         "resume with the same inputs, preset, options and --iters, or " + START_OVER)
    try:
        data = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, garbage or foreign bytes: torch raises several kinds
        raise InputError(f"{folder / STATE_FILE}: the checkpoint cannot be read ({type(e).__name__}: {e})",
                         START_OVER) from e
    if not isinstance(data, dict):
        raise InputError(f"{folder / STATE_FILE}: not a GenMOJO checkpoint's state", START_OVER)
    return data


def _require(ok: bool, folder: Path, what: str) -> None:
    if not ok:
        raise InputError(f"{folder / STATE_FILE}: the checkpoint does not fit this run ({what})", START_OVER)


CANONICAL_KEYS = {"means": 3, "quats": 4, "log_scales": 3, "color_logits": 3, "opacity_logits": None}


def check_method_payload(folder: Path, data: dict, num_objects: int, iterations: int) -> None:
    """Check the layout of a GenMOJO-method checkpoint (``pipeline._run_method`` writes it): ``stage1``,
    a list of the finished objects' canonical Gaussians (tensors ``CANONICAL_KEYS``, (N, width) or (N,)),
    ``ref_sides`` (one per finished object), ``generator1`` (a generator state); and, once stage 2 has
    started, ``model`` (a state dict) and ``fit`` (``FitState.state_dict``) at a step below ``iterations``."""
    _require(isinstance(data.get("stage1"), list) and isinstance(data.get("ref_sides"), list), folder,
             "no stage-1 objects")
    objs, sides = data["stage1"], data["ref_sides"]
    _require(len(objs) == len(sides) <= num_objects, folder,
             f"{len(objs)} finished objects for a clip of {num_objects}")
    for k, obj in enumerate(objs):
        _require(isinstance(obj, dict) and all(isinstance(obj.get(n), torch.Tensor) for n in CANONICAL_KEYS),
                 folder, f"object {k} lacks its Gaussians")
        n = obj["means"].shape[0]
        for name, width in CANONICAL_KEYS.items():
            shape = (n, width) if width else (n,)
            _require(tuple(obj[name].shape) == shape, folder, f"object {k}'s {name} has shape "
                     f"{tuple(obj[name].shape)}, expected {shape}")
        _require(n > 0 and bool(torch.isfinite(obj["means"]).all()), folder, f"object {k} has no finite Gaussians")
    _require(isinstance(data.get("generator1"), torch.Tensor), folder, "no random-stream state")
    if "fit" in data or "model" in data:
        _require(len(objs) == num_objects, folder, "stage 2 started before every object was fitted")
        _check_fit(folder, data, iterations)


def check_skeleton_payload(folder: Path, data: dict, iterations: int) -> None:
    """Check the layout of a skeleton-baseline checkpoint: ``model`` and ``fit`` at a step below ``iterations``."""
    _check_fit(folder, data, iterations)


def _check_fit(folder: Path, data: dict, iterations: int) -> None:
    _require(isinstance(data.get("model"), dict) and isinstance(data.get("fit"), dict), folder, "no fit state")
    step = data["fit"].get("step")
    _require(isinstance(step, int) and 0 <= step < iterations, folder, f"step {step!r} of {iterations}")


@contextmanager
def restoring(folder: Path) -> Iterator[None]:
    """Turn a failure to load a checked payload into the model (a shape or key that does not match the
    model this version builds) into an ``InputError`` naming the checkpoint."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError) as e:
        raise InputError(f"{folder / STATE_FILE}: the checkpoint does not fit the model of this run ({e})",
                         START_OVER) from e


def remove_checkpoint(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def tidy_checkpoints(out_dir: Path, own: Path, max_age_days: float, now: float | None = None) -> list[str]:
    """Report the checkpoints of other interrupted runs in ``out_dir`` and remove those older than
    ``max_age_days`` (by their files' last change); returns the log lines. Only complete checkpoints of
    this format are removed: anything else with a checkpoint's name is reported and left alone, and so
    is ``own`` (the current run's)."""
    now = time.time() if now is None else now
    lines, kept = [], []
    try:
        folders = sorted(p for p in Path(out_dir).iterdir()
                         if p.is_dir() and p.name.startswith(".") and p.name.endswith(SUFFIX))
    except OSError:
        return lines
    for folder in folders:
        if folder.resolve() == Path(own).resolve():
            continue
        name = folder.name[1:-len(SUFFIX)]
        status, _, reason = inspect_checkpoint(folder)
        if status == "none":
            continue
        try:
            age = (now - max(p.stat().st_mtime for p in (folder / INFO_FILE, folder / STATE_FILE) if p.exists())) / 86400
        except OSError:
            continue
        if status == "ok" and age > max_age_days:
            remove_checkpoint(folder)
            lines.append(f"removed {folder}: the checkpoint of '{name}', interrupted {age:.0f} days ago "
                         f"(checkpoints are kept {max_age_days:g} days)")
        elif status == "ok":
            kept.append(f"'{name}' ({age:.1f} days old)")
        else:
            lines.append(f"note: {folder} cannot be resumed ({reason}); it is left as it is")
    if kept:
        lines.append(f"note: {out_dir} holds checkpoints of interrupted runs: {', '.join(kept)}; continue one "
                     f"with the same command and --resume, or delete it; they are removed after "
                     f"{max_age_days:g} days")
    return lines
