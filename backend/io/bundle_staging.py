"""The hidden folders a bundle write leaves beside its result, and what the next run does with them.

``write_bundle`` stages a result in ``.<name>.partial-<host>-<pid>-<random>`` and, when it replaces
an existing result, moves the old one aside to ``.<name>.old-<host>-<pid>`` for the instant of the
swap. Both names carry the writing process's host and pid, so they are recorded atomically with the
folder itself (there is no moment when a folder exists without its owner). A partial folder also holds
``OWNER_FILE`` with when that process started (where the system tells: Linux), so a pid that was
reused by an unrelated process after a crash or a reboot is not taken for the writer. The file is
removed before the result is published.

A run that crashes or is killed can leave either behind. ``recover_staging`` runs at the start of the
next run of the same name, before any heavy work:

* a partial folder whose process is gone is deleted (it never was a result);
* an old folder whose process is gone means the swap was interrupted: if the result folder is
  missing the old result is put back, otherwise the swap had finished and the old copy is deleted;
* a folder whose process is alive, or that was written on another host (whose processes cannot be
  checked from here), is refused: another run may be writing that result right now.

Every action is returned as a log line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from genmojo_blender.core import bundle as fmt

from ..errors import InputError

PARTIAL_TAG = "partial"
OLD_TAG = "old"
HOST_TAG_CHARS = 32  # longest host tag kept in a folder name
OWNER_FILE = ".genmojo-writer.json"  # inside a partial folder: pid, host and start of the writing process


def host_tag() -> str:
    """This machine's name as it goes into a staging folder's name (letters, digits and '-')."""
    tag = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:HOST_TAG_CHARS].strip("-")
    return tag or "localhost"


def partial_prefix(save_name: str) -> str:
    """The name prefix of this process's staging folder for ``save_name`` (mkdtemp adds the random part)."""
    return f".{save_name}.{PARTIAL_TAG}-{host_tag()}-{os.getpid()}-"


def old_name(save_name: str) -> str:
    """Where this process moves an existing result aside while it swaps the new one in."""
    return f".{save_name}.{OLD_TAG}-{host_tag()}-{os.getpid()}"


@dataclass(frozen=True)
class StagingFolder:
    """A hidden folder of one result name found beside it. ``host``/``pid`` are None when its name
    does not record them (folders left by writers before the owner was recorded)."""

    path: Path
    kind: str  # PARTIAL_TAG or OLD_TAG
    host: str | None
    pid: int | None


def _patterns(save_name: str) -> list[tuple[str, re.Pattern]]:
    n = re.escape(save_name)
    return [
        (PARTIAL_TAG, re.compile(rf"^\.{n}\.{PARTIAL_TAG}-(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")),
        (PARTIAL_TAG, re.compile(rf"^\.{n}\.{PARTIAL_TAG}-[A-Za-z0-9_]+$")),  # no owner recorded
        (OLD_TAG, re.compile(rf"^\.{n}\.{OLD_TAG}-(?:(?P<host>[A-Za-z0-9-]+)-)?(?P<pid>\d+)$")),
    ]


def find_staging(out_dir: Path, save_name: str) -> list[StagingFolder]:
    """The partial and old folders of ``save_name`` in ``out_dir`` (none when the folder is missing)."""
    if not out_dir.is_dir():
        return []
    found = []
    patterns = _patterns(save_name)
    for entry in sorted(out_dir.iterdir()):
        for kind, pat in patterns:
            m = pat.match(entry.name)
            if m is None:
                continue
            groups = m.groupdict()
            pid = int(groups["pid"]) if groups.get("pid") else None
            found.append(StagingFolder(path=entry, kind=kind, host=groups.get("host"), pid=pid))
            break
    return found


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque string (Linux: boot id and start tick), or None where
    the system does not tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name in parentheses may hold spaces
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None  # field 22: start time in clock ticks


def write_owner(folder: Path) -> None:
    """Record this process as the writer of the partial folder ``folder``."""
    owner = {"pid": os.getpid(), "host": host_tag(), "start": process_start(os.getpid())}
    (folder / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")


def _recorded_start(folder: Path) -> str | None:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    start = owner.get("start") if isinstance(owner, dict) else None
    return start if isinstance(start, str) else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a process of another user counts)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists
        try:
            code = ctypes.c_ulong()
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_alive(f: StagingFolder) -> bool | None:
    """True/False for a folder of this host, None when it was written on another host."""
    if f.pid is None:
        return False  # written before owners were recorded, by a writer that is not running any more
    if f.host is not None and f.host != host_tag():
        return None
    if f.pid == os.getpid():
        return False  # our id, reused from a process that died: we have not started writing yet
    if not pid_alive(f.pid):
        return False
    if f.kind == PARTIAL_TAG:
        recorded, now = _recorded_start(f.path), process_start(f.pid)
        if recorded is not None and now is not None and recorded != now:
            return False  # the id now belongs to another process: the writer is gone
    return True


def recover_staging(out_dir: str | os.PathLike, save_name: str) -> list[str]:
    """Clean up after earlier runs of ``save_name`` that died while writing; returns what was done.

    Raises InputError (before touching anything) when a folder belongs to a live process or to
    another host. Does nothing for a name the writer would refuse anyway.
    """
    out_dir = Path(out_dir)
    if not fmt.RESULT_NAME.match(save_name):
        return []
    found = find_staging(out_dir, save_name)
    busy = [(f, _owner_alive(f)) for f in found]
    busy = [(f, alive) for f, alive in busy if alive is not False]
    if busy:
        f, alive = busy[0]
        who = (f"process {f.pid}, which is still running" if alive else
               f"process {f.pid} on host {f.host!r}, which cannot be checked from here")
        raise InputError(f"{f.path}: another run may be writing '{save_name}' right now ({who})",
                         "wait for it to finish or stop it; if no run is writing there, delete that folder "
                         "and start again")
    log = []
    for f in found:
        if f.kind == PARTIAL_TAG:
            shutil.rmtree(f.path, ignore_errors=True)
            log.append(f"removed {f.path}, the unfinished result of an earlier run that stopped while writing "
                       f"({_describe(f)})")
    olds = sorted((f for f in found if f.kind == OLD_TAG), key=lambda f: f.path.stat().st_mtime, reverse=True)
    target = out_dir / save_name
    for i, f in enumerate(olds):
        if i == 0 and not target.exists():
            os.replace(f.path, target)
            log.append(f"restored {target} from {f.path.name}: an earlier run ({_describe(f)}) stopped while "
                       "replacing it")
        else:
            shutil.rmtree(f.path, ignore_errors=True)
            log.append(f"removed {f.path}, a replaced result that an earlier run ({_describe(f)}) stopped "
                       "before deleting")
    return log


def _describe(f: StagingFolder) -> str:
    if f.pid is None:
        return "its process is not recorded"
    return f"process {f.pid}" + (f" on {f.host}" if f.host else "") + ", no longer running"
