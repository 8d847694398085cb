"""Resumable checkpoints of a fit, so that a killed or cancelled run loses at most a few steps.

A checkpoint lives beside the result it will become, in ``<out_dir>/.<save_name>.checkpoint/``,
and holds the model's parameters, the optimizer, schedule and random-stream state, and a
fingerprint of the run (inputs, configuration, iteration count). ``--resume`` refuses a checkpoint
whose fingerprint differs from the command it is asked to continue. Files are written atomically
and read with ``torch.load(weights_only=True)``: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from .config import Config
from .errors import InputError

STATE_FILE = "state.pt"
INFO_FILE = "checkpoint.json"


def checkpoint_dir(out_dir: Path, save_name: str) -> Path:
    return Path(out_dir) / f".{save_name}.checkpoint"


def fingerprint(data_dir: Path, mask_dir: Path, cam_path: Path | None, cfg: Config, iterations: int,
                holdout: int = 0) -> dict:
    """What must match for a checkpoint to be continued: the inputs, the configuration, the budget."""
    return {
        "data_dir": str(Path(data_dir).resolve()),
        "mask_dir": str(Path(mask_dir).resolve()),
        "cam_path": str(Path(cam_path).resolve()) if cam_path else None,
        "config_sha256": hashlib.sha256(cfg.to_json().encode()).hexdigest(),
        "preset": cfg.preset,
        "iterations": int(iterations),
        "holdout": int(holdout),
    }


def save_checkpoint(folder: Path, payload: dict, finger: dict, step: int) -> None:
    """Write ``payload`` (tensors, numbers, lists and dicts of them) atomically, recording ``step``
    (a crash while saving keeps the previous checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE_FILE}.tmp-{os.getpid()}"
    tmp_info = folder / f".{INFO_FILE}.tmp-{os.getpid()}"
    try:
        torch.save(payload, tmp)
        tmp_info.write_text(json.dumps(dict(finger, step=int(step)), indent=2))
        # the info file is replaced last: it names the step of the state file beside it
        os.replace(tmp, folder / STATE_FILE)
        os.replace(tmp_info, folder / INFO_FILE)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_info.unlink(missing_ok=True)


def read_info(folder: Path) -> dict | None:
    """The checkpoint's fingerprint and step, or None when there is no complete checkpoint."""
    try:
        info = json.loads((folder / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if (folder / STATE_FILE).is_file() and isinstance(info, dict) else None


def load_checkpoint(folder: Path, finger: dict, restore) -> None:
    """Read the payload saved in ``folder`` and hand it to ``restore`` (which loads it into the
    model and optimizer); any mismatch becomes an input error that says to start over."""
    info = read_info(folder)
    if info is None:
        raise InputError(f"{folder}: no checkpoint to resume",
                         "run without --resume to start from the beginning")
    diff = [k for k in finger if info.get(k) != finger[k]]
    if diff:
        raise InputError(f"{folder}: the checkpoint was made by a different run ({', '.join(diff)} differ)",
                         "resume with the same inputs, preset and --iters, or pass --overwrite to start over")
    try:
        data = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        restore(data)
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError, OSError) as e:
        raise InputError(f"{folder / STATE_FILE}: the checkpoint cannot be read ({e})",
                         "pass --overwrite to start over") from e


def remove_checkpoint(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
