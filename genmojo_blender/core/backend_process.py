"""Running the GenMOJO backend as a child process: command line, environment, progress and cancel.

Blender never imports torch. The backend runs in its own Python (chosen in the preferences), started
through ``BOOTSTRAP`` (what ``<python> -m backend ...`` does, minus the working folder on the import
path) in a private, empty working folder; it prints one JSON progress event per line on stdout (see
``protocol.py``) and human logs on stderr. This module is ``bpy``-free so the same code drives the
interactive modal operator, the blocking headless path and plain tests:

* ``RunRequest`` + ``build_argv`` turn the user's settings into an argument list (never a shell
  string, so paths with spaces or quotes are passed through untouched);
* ``BackendProcess`` starts the child in its own process group, reads stdout and stderr on two daemon
  threads into a queue of decoded events, keeps the tail of stderr for crash reports, and cancels by
  SIGTERM to the whole group followed by SIGKILL after a grace period;
* ``BackendRun`` folds events into a ``RunState`` and decides the final ``RunOutcome`` (done, failed,
  cancelled or crashed) from the events and the exit code;
* ``run_blocking`` drives a run to completion for headless use.

Exit codes of the backend: 0 success, 2 bad input, 1 internal error, 130 cancelled.
"""

from __future__ import annotations

import atexit
import collections
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .bundle import MANIFEST_NAME, RESULT_NAME
from .protocol import Event, RunState, parse_line
from .run_progress import RunProgress

DEFAULT_BACKEND_MODULE = "backend"
# How the backend module is started, on any Python 3. ``python -m`` puts the working folder first on
# sys.path, so a module planted there (plyfile.py, backend.py, runpy.py) would run instead of the real
# one. This drops the working folder before anything is imported (``sys`` is built in, ``os`` loaded
# at start-up), then runs the module named in argv[1] as ``-m`` would, with the remaining arguments.
DROP_WORKDIR = ("import sys; sys.path[:] = [p for p in sys.path if p]; import os; "
                "cwd = os.path.realpath(os.getcwd()); "
                "sys.path[:] = [p for p in sys.path if os.path.realpath(p) != cwd]; ")
BOOTSTRAP = DROP_WORKDIR + ("import runpy; module = sys.argv.pop(1); "
                            "runpy.run_module(module, run_name='__main__', alter_sys=True)")
WORKDIR_PREFIX = "genmojo-backend-"  # the private, empty working folder of one run (removed after it)
# Developer/test override of the module run with ``-m`` (the real backend is the ``backend`` package).
BACKEND_MODULE_ENV = "GENMOJO_BACKEND_MODULE"

PRESETS = ("cpu-tiny", "lite", "full")
DEVICES = ("auto", "cpu", "cuda")
CAMERA_SOURCES = ("auto", "virtual", "solve", "blender")  # the backend's --camera (megasam is auto with cam_path)
# Camera embedding of the guidance model (--guidance_variant); "auto" lets the backend pick by name.
GUIDANCE_VARIANTS = ("auto", "zero123-xl", "stable-zero123")
# What the backend needs in a local guidance model folder (diffusers layout; backend/priors/zero123.py)
# and in a local depth model folder (transformers save_pretrained; backend/priors/depth.py).
GUIDANCE_MODEL_PARTS = ("unet/config.json", "vae/config.json", "image_encoder/config.json",
                        "clip_camera_projection/config.json", "scheduler/scheduler_config.json")
DEPTH_MODEL_PARTS = ("config.json", "preprocessor_config.json")
DEPTH_BOTH_MESSAGE = "Give either a depth maps folder or a depth model, not both"
# A Hugging Face hub id ("owner/name"), as the backend recognises one; anything else is a folder.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130

# On SIGTERM the backend finishes its current step and saves a resumable checkpoint (normally well
# under 2 s); SIGKILL only follows when it has not exited after this long.
DEFAULT_CANCEL_GRACE_S = 10.0
STDERR_TAIL_LINES = 200


class BackendStartError(RuntimeError):
    """The backend could not be started at all (missing or non-executable interpreter, bad folder)."""


# --------------------------------------------------------------------------------------------
# what to run


@dataclass(frozen=True)
class RunRequest:
    """One backend run, in absolute paths. Empty strings mean "not given"."""

    data_dir: str
    mask_dir: str
    out_dir: str
    save_name: str
    preset: str = "lite"
    device: str = "auto"
    guidance: bool = False
    cam_path: str = ""
    bg_path: str = ""  # background mode's inpainted first frame; needs cam_path
    focal_px: float = 0.0  # the static camera's focal length in pixels (not with cam_path); 0 = not given
    # where the camera comes from (the backend's --camera): auto (MegaSAM with cam_path, else static),
    # virtual, solve (COLMAP on the footage), blender (camera_file, exported from Blender's camera solve)
    camera: str = "auto"
    camera_file: str = ""
    fps: float = 0.0  # frame rate of an image sequence; 0 = let the backend decide
    overwrite: bool = False
    resume: bool = False  # continue an interrupted run of the same result from its checkpoint
    # Guidance model (only with guidance on): a local folder (absolute path) or a hub id; "" = the
    # backend's default model. The variant picks the camera embedding; "auto" is not passed.
    guidance_model: str = ""
    guidance_variant: str = "auto"
    # Depth for the per-object depth factors: a folder of per-frame maps (optionally disparity), or a
    # local depth-estimation model folder. At most one of the two.
    depth_dir: str = ""
    depth_is_disparity: bool = False
    depth_model: str = ""
    # Backend config overrides, each "section.field=value" (or "field=value"), passed as --set in order:
    # what the backend's hints name (e.g. sds.compile=none where Triton is missing, kernels=torch)
    overrides: tuple[str, ...] = ()

    @property
    def result_dir(self) -> Path:
        """Where the backend will publish the bundle."""
        return Path(self.out_dir) / self.save_name


def check_python(path: str) -> str:
    """Why ``path`` cannot be used as the backend interpreter, or "" if it looks usable.

    Checks that it is set, exists, is a file (a virtual-environment folder is a common mistake) and
    is executable. It does not start it: that happens when a run starts.
    """
    if not path:
        return "No backend Python interpreter is set (Preferences > Add-ons > GenMOJO)"
    p = Path(path)
    if not p.exists():
        return f"Backend Python not found: {path}"
    if p.is_dir():
        exe = "Scripts\\python.exe" if os.name == "nt" else "bin/python"
        return f"Backend Python is a folder; choose the interpreter inside it (e.g. {p / exe})"
    if not os.access(p, os.X_OK):
        return f"Backend Python is not executable: {path}"
    return ""


def is_hub_id(spec: str) -> bool:
    """True when ``spec`` names a Hugging Face hub model ("owner/name") rather than a local folder.

    Same rule as the backend: a spec that exists on disk, or does not have the ``owner/name`` form,
    is a folder.
    """
    spec = (spec or "").strip()
    return bool(spec) and not os.path.exists(os.path.expanduser(spec)) and bool(_HUB_ID.match(spec))


def _missing_parts(folder: str, parts: tuple[str, ...]) -> list[str]:
    return [p for p in parts if not os.path.isfile(os.path.join(folder, *p.split("/")))]


def _folder_problem(path: str, folder_name: str, path_name: str) -> str:
    """"<folder_name> not found: path" or "<path_name> is a file, not a folder: path", or ""."""
    if not os.path.exists(path):
        return f"{folder_name} not found: {path}"
    if not os.path.isdir(path):
        return f"{path_name} is a file, not a folder: {path}"
    return ""


def check_guidance_model(spec: str) -> str:
    """Why the guidance model ``spec`` cannot be used, or "" (empty spec: the backend's default model).

    A hub id is only checked for its form: whether it is in the Hugging Face cache or can be
    downloaded is up to the backend. A folder must exist and hold a Zero123 model in the diffusers
    layout.
    """
    spec = (spec or "").strip()
    if not spec or is_hub_id(spec):
        return ""
    folder = os.path.expanduser(spec)
    problem = _folder_problem(folder, "Guidance model folder", "Guidance model")
    if problem:
        return problem
    missing = _missing_parts(folder, GUIDANCE_MODEL_PARTS)
    if missing:
        return (f"Guidance model folder {folder} is not a Zero123 model in the diffusers layout "
                f"(missing {', '.join(missing)})")
    return ""


def check_depth_dir(path: str) -> str:
    """Why the depth-maps folder cannot be used, or "" (also for an empty path: not given)."""
    if not path:
        return ""
    return _folder_problem(path, "Depth maps folder", "Depth maps path")


def check_depth_model(path: str) -> str:
    """Why the local depth model folder cannot be used, or "" (also for an empty path: not given)."""
    if not path:
        return ""
    problem = _folder_problem(path, "Depth model folder", "Depth model")
    if problem:
        return problem
    missing = _missing_parts(path, DEPTH_MODEL_PARTS)
    if missing:
        return (f"Depth model folder {path} is not a transformers depth model saved with "
                f"save_pretrained (missing {', '.join(missing)})")
    return ""


OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?=\S+$")


def split_overrides(text: str) -> list[str]:
    """The assignments in ``text``, separated by spaces, semicolons or new lines (values hold no spaces)."""
    return [t for t in re.split(r"[\s;]+", text or "") if t]


def check_overrides(overrides) -> list[str]:
    """Problems with config overrides that are not "section.field=value"; the backend checks the names
    and values themselves (and refuses unknown ones before any work)."""
    bad = [o for o in overrides if not OVERRIDE.match(o)]
    return [f"Config override {o!r} is not section.field=value (e.g. sds.compile=none)" for o in bad]


def validate_request(req: RunRequest) -> list[str]:
    """Human-readable problems with a request that would make the backend fail at once."""
    problems = []
    if not req.data_dir:
        problems.append("Choose the clip (an image-sequence folder or a movie file)")
    elif not os.path.exists(req.data_dir):
        problems.append(f"Clip not found: {req.data_dir}")
    if not req.mask_dir:
        problems.append("Choose the masks folder")
    elif not os.path.isdir(req.mask_dir):
        problems.append(f"Masks folder not found: {req.mask_dir}")
    if not req.out_dir:
        problems.append("Choose an output folder")
    elif os.path.exists(req.out_dir) and not os.path.isdir(req.out_dir):
        problems.append(f"Output path is a file, not a folder: {req.out_dir}")
    if not RESULT_NAME.match(req.save_name or ""):
        problems.append("Result name must be 1-128 letters, digits, '.', '_' or '-' "
                        "and start with a letter or digit")
    if req.preset not in PRESETS:
        problems.append(f"Unknown preset {req.preset!r} (choose one of {', '.join(PRESETS)})")
    if req.device not in DEVICES:
        problems.append(f"Unknown device {req.device!r} (choose one of {', '.join(DEVICES)})")
    if req.cam_path and not os.path.isfile(req.cam_path):
        problems.append(f"Camera file (MegaSAM npz) not found: {req.cam_path}")
    if req.bg_path and not os.path.isfile(req.bg_path):
        problems.append(f"Background image not found: {req.bg_path}")
    if req.bg_path and not req.cam_path:
        problems.append("A background image needs the camera file (MegaSAM npz): its depth places the background")
    if req.camera not in CAMERA_SOURCES:
        problems.append(f"Unknown camera source {req.camera!r} (choose one of {', '.join(CAMERA_SOURCES)})")
    elif req.camera != "auto" and req.cam_path:
        problems.append("A MegaSAM camera file is only used with the camera source Auto")
    if req.camera == "blender" and not os.path.isfile(req.camera_file):
        problems.append("Export the camera solve first (Export Camera Solve): no camera file at "
                        f"{req.camera_file or '(none)'}")
    if req.camera == "blender" and req.focal_px > 0:
        problems.append("Give a focal length or Blender's camera solve, not both (the solve has its own intrinsics)")
    if req.focal_px < 0:
        problems.append("Focal length must be positive (or 0 for the default 49.1 degree field of view)")
    elif req.focal_px > 0 and req.cam_path:
        problems.append("Give a focal length or a camera file, not both (the camera file has its own intrinsics)")
    if req.fps < 0:
        problems.append("Frame rate must be positive (or 0 to let the backend decide)")
    if req.guidance:
        if req.guidance_variant not in GUIDANCE_VARIANTS:
            problems.append(f"Unknown guidance variant {req.guidance_variant!r} "
                            f"(choose one of {', '.join(GUIDANCE_VARIANTS)})")
        problems += [p for p in (check_guidance_model(req.guidance_model),) if p]
    problems += [p for p in (check_depth_dir(req.depth_dir), check_depth_model(req.depth_model)) if p]
    if req.depth_dir and req.depth_model:
        problems.append(DEPTH_BOTH_MESSAGE)
    problems += check_overrides(req.overrides)
    if (not req.overwrite and req.out_dir and req.save_name
            and (Path(req.out_dir) / req.save_name).exists()):
        problems.append(f"{Path(req.out_dir) / req.save_name} already exists; "
                        "choose another result name or enable Overwrite")
    return problems


def backend_module() -> str:
    """The module run with ``-m``: ``backend`` unless overridden by $GENMOJO_BACKEND_MODULE."""
    return os.environ.get(BACKEND_MODULE_ENV, "").strip() or DEFAULT_BACKEND_MODULE


def build_argv(python: str, req: RunRequest, module: str | None = None) -> list[str]:
    """The backend command line as a list, in the order of the backend's documented interface.

    The interpreter runs ``BOOTSTRAP`` with the module name and then the backend's arguments
    (``backend_arguments`` gives those back), so the working folder is never on its import path.
    Guidance is off unless requested: ``--disable_guidance`` is passed by default because the
    guidance prior (a Zero123 model of several GB) is not shipped with the extension. With guidance
    on, ``--guidance_model`` and ``--guidance_variant`` are passed when set (the backend refuses them
    together with ``--disable_guidance``, so they are dropped when guidance is off). The depth
    options follow the camera; ``--depth_is_disparity`` only goes with ``--depth_dir``.
    """
    argv = [python, "-c", BOOTSTRAP, module or backend_module(),
            "--data_dir", req.data_dir, "--mask_dir", req.mask_dir,
            "--save_name", req.save_name, "--out_dir", req.out_dir,
            "--preset", req.preset, "--device", req.device]
    if not req.guidance:
        argv.append("--disable_guidance")
    else:
        if req.guidance_model.strip():
            argv += ["--guidance_model", req.guidance_model.strip()]
        if req.guidance_variant and req.guidance_variant != "auto":
            argv += ["--guidance_variant", req.guidance_variant]
    if req.cam_path:
        argv += ["--cam_path", req.cam_path]
    if req.bg_path:
        argv += ["--bg_path", req.bg_path]
    if req.focal_px and req.focal_px > 0:
        argv += ["--focal_px", format(float(req.focal_px), "g")]
    if req.camera != "auto":
        argv += ["--camera", req.camera]
    if req.camera == "blender":
        argv += ["--camera_file", req.camera_file]
    if req.depth_dir:
        argv += ["--depth_dir", req.depth_dir]
        if req.depth_is_disparity:
            argv.append("--depth_is_disparity")
    if req.depth_model:
        argv += ["--depth_model", req.depth_model]
    if req.fps and req.fps > 0:
        argv += ["--fps", format(float(req.fps), "g")]
    if req.overwrite:
        argv.append("--overwrite")
    if req.resume:
        argv.append("--resume")
    for o in req.overrides:
        argv += ["--set", o]
    return argv


def backend_arguments(argv: list[str]) -> list[str]:
    """The backend's own arguments in a command line from ``build_argv`` (what its argparse sees)."""
    return argv[4:]


def display_command(argv: list[str]) -> str:
    """A command line from ``build_argv`` as a person would type it, ``<python> -m backend ...`` quoted
    for a POSIX shell (the bootstrap that keeps the working folder off the import path is left out)."""
    return shlex.join([argv[0], "-m", argv[3], *backend_arguments(argv)])


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path)) if path else ""


def absolute_request(req: RunRequest) -> RunRequest:
    """``req`` with every path absolute (relative ones from this process's working folder), as the
    backend needs them: it runs in a working folder of its own. A hub id stays as it is."""
    model = req.guidance_model.strip()
    return replace(req, data_dir=_absolute(req.data_dir), mask_dir=_absolute(req.mask_dir),
                   out_dir=_absolute(req.out_dir), cam_path=_absolute(req.cam_path), bg_path=_absolute(req.bg_path),
                   camera_file=_absolute(req.camera_file),
                   depth_dir=_absolute(req.depth_dir), depth_model=_absolute(req.depth_model),
                   guidance_model=model if not model or is_hub_id(model) else _absolute(model))


def build_env(backend_path: str = "", base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the child: ``backend_path`` first on PYTHONPATH, unbuffered UTF-8 output.

    Variables that only make sense inside Blender's own interpreter (PYTHONHOME, PYTHONSTARTUP) are
    dropped so they cannot break a foreign Python.
    """
    env = dict(os.environ if base is None else base)
    for k in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):
        env.pop(k, None)
    if backend_path:
        parts = [backend_path] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


# --------------------------------------------------------------------------------------------
# the child process


_LIVE: "weakref.WeakSet[BackendProcess]" = weakref.WeakSet()


def _kill_all_at_exit() -> None:
    for p in list(_LIVE):
        p.kill()


atexit.register(_kill_all_at_exit)


class BackendProcess:
    """A started backend: reader threads turn its stdout into events, stderr is kept as a tail.

    Use ``poll()`` from a UI timer (never blocks) or ``wait()`` in scripts. ``request_cancel()``
    sends SIGTERM to the process group and returns at once; a later ``poll()`` escalates to SIGKILL
    after the grace period. ``cancel()`` does both and blocks until the group is gone.
    """

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                 cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S, tail_lines: int = STDERR_TAIL_LINES,
                 remove_cwd: bool = False):
        if not argv:
            raise ValueError("empty command line")
        self.argv = [str(a) for a in argv]
        self.env = env
        self.cwd = cwd
        self.remove_cwd = remove_cwd  # ``cwd`` is the run's private folder: delete it once the process is gone
        self.cancel_grace_s = cancel_grace_s
        self._queue: queue.Queue = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._stray_stdout: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._eof = 0
        self._exited_at: float | None = None
        self._cancel_requested = False
        self._cancel_deadline: float | None = None
        self._killed = False
        self._lock = threading.Lock()

    # ---- lifecycle

    def start(self) -> "BackendProcess":
        """Start the child. Raises BackendStartError if the interpreter cannot be executed."""
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        try:
            self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                          encoding="utf-8", errors="replace",
                                          env=self.env, cwd=self.cwd, **kwargs)
        except (OSError, ValueError) as e:
            self._remove_workdir()
            raise BackendStartError(f"Could not start the backend ({self.argv[0]}): {e}") from e
        _LIVE.add(self)
        for name, stream, handler in (("stdout", self._proc.stdout, self._on_stdout),
                                      ("stderr", self._proc.stderr, self._on_stderr)):
            t = threading.Thread(target=self._reader, args=(stream, handler),
                                 name=f"genmojo-{name}-{self._proc.pid}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    @property
    def finished(self) -> bool:
        """The process has exited and its output has been read (or the readers stopped waiting)."""
        if self._proc is None or self._proc.poll() is None:
            return False
        if self._exited_at is None:
            self._exited_at = time.monotonic()
            self._remove_workdir()
        # A grandchild that inherited the pipes can keep them open; give readers 2 s after exit.
        return self._eof >= 2 or time.monotonic() - self._exited_at > 2.0

    def _remove_workdir(self) -> None:
        if self.remove_cwd and self.cwd:
            shutil.rmtree(self.cwd, ignore_errors=True)

    # ---- reading

    def _reader(self, stream, handler) -> None:
        try:
            for line in stream:
                handler(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._eof += 1
            self._queue.put(("eof", None))

    def _on_stdout(self, line: str) -> None:
        if not line.strip():
            return
        parsed = parse_line(line)
        if isinstance(parsed, Event):
            self._queue.put(("event", parsed))
            return
        # Stray prints from libraries must not break the run; keep them for crash reports. A line that
        # looks like an event but is not one is shown with the reason.
        self._stray_stdout.append(parsed.line)
        self._stderr_tail.append(f"[stdout] {parsed.line}")
        why = f" (not a progress event: {parsed.reason})" if parsed.line.lstrip().startswith("{") else ""
        self._queue.put(("log", f"{parsed.line}{why}"))

    def _on_stderr(self, line: str) -> None:
        self._stderr_tail.append(line)
        self._queue.put(("log", line))

    def poll(self, on_log: Callable[[str], None] | None = None) -> list[Event]:
        """Decoded events received since the last call (never blocks); logs go to ``on_log``.

        Also escalates a pending cancel to SIGKILL once its grace period is over.
        """
        events = []
        while True:
            try:
                kind, item = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "event":
                events.append(item)
            elif kind == "log" and on_log is not None:
                on_log(item)
        self._escalate_cancel()
        return events

    def stderr_tail(self, n: int = 20) -> list[str]:
        """The last ``n`` lines of stderr (and of unparseable stdout), oldest first."""
        lines = list(self._stderr_tail)
        return lines[-n:] if n else lines

    # ---- stopping

    def _signal_group(self, sig: int) -> None:
        if self._proc is None:
            return
        if os.name == "nt":
            try:
                if sig == signal.SIGTERM:
                    self._proc.send_signal(signal.CTRL_BREAK_EVENT)
                else:
                    self._proc.kill()
            except OSError:
                pass
            return
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def request_cancel(self) -> None:
        """Ask the backend to stop (SIGTERM to its process group); returns immediately."""
        if self._proc is None or self._cancel_requested:
            return
        self._cancel_requested = True
        self._cancel_deadline = time.monotonic() + self.cancel_grace_s
        if self._proc.poll() is None:
            self._signal_group(signal.SIGTERM)

    def _escalate_cancel(self) -> None:
        if not self._cancel_requested or self._killed or self._proc is None:
            return
        if self._proc.poll() is not None:
            # The leader is gone; sweep any workers it left behind in its group.
            self._signal_group(signal.SIGKILL)
            self._killed = True
        elif self._cancel_deadline is not None and time.monotonic() >= self._cancel_deadline:
            self._signal_group(signal.SIGKILL)
            self._killed = True

    def cancel(self, grace_s: float | None = None) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace_s`` if needed, and wait; returns the exit code."""
        if self._proc is None:
            return None
        if grace_s is not None:
            self.cancel_grace_s = grace_s
        self.request_cancel()
        try:
            self._proc.wait(timeout=self.cancel_grace_s)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)
        self._killed = True
        rc = self._proc.wait()
        self._remove_workdir()
        self._join_readers(1.0)
        _LIVE.discard(self)
        return rc

    def kill(self) -> None:
        """SIGKILL the whole group now (used when Blender exits or the add-on is disabled)."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self._killed = True
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._remove_workdir()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for exit and for the output readers; returns the exit code (None on timeout)."""
        if self._proc is None:
            return None
        try:
            rc = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._remove_workdir()
        self._join_readers(2.0)
        return rc

    def _join_readers(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))


# --------------------------------------------------------------------------------------------
# a whole run: events -> state -> outcome


@dataclass
class RunOutcome:
    """How a run ended. ``status`` is one of done, failed, cancelled, crashed."""

    status: str
    bundle: str = ""
    error: str = ""
    hint: str = ""
    kind: str = ""
    exit_code: int | None = None
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def exit_status(self) -> int:
        """A process exit status for scripts: 0, 2 for bad input, 130 cancelled, else 1."""
        if self.ok:
            return EXIT_OK
        if self.status == "cancelled":
            return EXIT_CANCELLED
        if self.kind == "input" or self.exit_code == EXIT_BAD_INPUT:
            return EXIT_BAD_INPUT
        return EXIT_INTERNAL

    def message(self) -> str:
        """One line for a report or a log, with the hint if there is one."""
        text = self.error or self.status
        return f"{text} ({self.hint})" if self.hint else text


class BackendRun:
    """A backend process plus the state folded from its events.

    ``pump()`` is cheap and never blocks: call it from a timer. ``outcome`` is set once the process
    has finished; it is derived from the last ``done``/``failed`` event and the exit code.
    """

    def __init__(self, process: BackendProcess, result_dir: str | os.PathLike | None = None):
        self.process = process
        # where the result will be published, and which folder was there when the run started: a run
        # killed after its result was swapped in is a finished run, not a cancelled one
        self.result_dir = Path(result_dir) if result_dir is not None else None
        self._result_before = _folder_identity(self.result_dir)
        self.state = RunState()
        self.progress = RunProgress()  # the overall fraction and time left, weighted by the backend's plan
        self.outcome: RunOutcome | None = None
        self._done_event: Event | None = None
        self._failed_event: Event | None = None

    @classmethod
    def start(cls, python: str, req: RunRequest, *, backend_path: str = "", module: str | None = None,
              cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S) -> "BackendRun":
        """Check the interpreter, build argv and environment, and start the backend."""
        problem = check_python(python)
        if problem:
            raise BackendStartError(problem)
        if backend_path and not os.path.isdir(backend_path):
            raise BackendStartError(f"Backend source folder not found: {backend_path}")
        req = absolute_request(req)
        argv = build_argv(python, req, module)
        workdir = tempfile.mkdtemp(prefix=WORKDIR_PREFIX)  # private and empty: nothing there to import or run
        proc = BackendProcess(argv, env=build_env(backend_path), cwd=workdir, cancel_grace_s=cancel_grace_s,
                              remove_cwd=True)
        run = cls(proc, req.result_dir)  # notes the result folder that is there before the backend starts
        proc.start()
        return run

    def pump(self, on_log: Callable[[str], None] | None = None,
             on_event: Callable[[Event, RunState], None] | None = None) -> list[Event]:
        """Apply new events to ``state``; set ``outcome`` when the process has finished.

        ``on_event(event, state)`` is called after each event is applied, so it sees the state as
        of that event even when several arrived since the last call.
        """
        finished = self.outcome is None and self.process.finished  # checked before the last drain
        events = self.process.poll(on_log)
        for ev in events:
            self._apply(ev, on_event)
        if finished:
            self.outcome = self._decide()
        return events

    def _apply(self, ev: Event, on_event=None) -> None:
        self.state.apply(ev)
        self.progress.apply(ev)
        if ev.type == "done":
            self._done_event = ev
        elif ev.type == "failed":
            self._failed_event = ev
        if on_event is not None:
            on_event(ev, self.state)

    def cancel(self) -> None:
        """Non-blocking cancel: SIGTERM now, SIGKILL from a later ``pump()`` if it lingers."""
        self.process.request_cancel()

    def _decide(self) -> RunOutcome:
        rc = self.process.returncode
        tail = self.process.stderr_tail(20)
        cancelled = self.process.cancel_requested
        if self._done_event is not None and (rc == EXIT_OK or cancelled):
            # the result was committed: a cancel that came later (or a kill after it) does not undo it
            return RunOutcome(status="done", bundle=str(self._done_event.get("bundle")), exit_code=rc,
                              stderr_tail=tail)
        if self._failed_event is not None:
            ev = self._failed_event
            kind = str(ev.get("kind") or "")
            status = "cancelled" if kind == "cancelled" or cancelled else "failed"
            return RunOutcome(status=status, error=str(ev.get("error") or "Backend failed"),
                              hint=str(ev.get("hint") or ""), kind=kind, exit_code=rc, stderr_tail=tail)
        if cancelled:
            now = _folder_identity(self.result_dir)
            if now is not None and now != self._result_before and (self.result_dir / MANIFEST_NAME).is_file():
                return RunOutcome(status="done", bundle=str(self.result_dir), exit_code=rc, stderr_tail=tail,
                                  hint="the backend was stopped after it had put the new result in place")
            return RunOutcome(status="cancelled", error="Cancelled", kind="cancelled", exit_code=rc,
                              stderr_tail=tail)
        if rc is not None and rc < 0:
            try:
                signame = signal.Signals(-rc).name
            except ValueError:
                signame = str(-rc)
            error = f"Backend was killed by {signame} without reporting an error"
        elif rc == EXIT_OK:
            error = "Backend exited without reporting a result"
        else:
            error = f"Backend exited with code {rc} without reporting an error"
        hint = " | ".join(line.strip() for line in tail[-3:] if line.strip()) or "no output on stderr"
        kind = "input" if rc == EXIT_BAD_INPUT else "internal"
        return RunOutcome(status="crashed", error=error, hint=hint, kind=kind, exit_code=rc,
                          stderr_tail=tail)


def _folder_identity(path: Path | None) -> tuple[int, int] | None:
    """(device, inode) of a folder, or None when there is none: a result swapped in is a new folder."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def format_duration(seconds: float | None) -> str:
    """'1 h 02 m', '3 m 05 s', '42 s' or '' for unknown."""
    if seconds is None or seconds < 0 or seconds != seconds:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {(s % 3600) // 60:02d} m"
    if s >= 60:
        return f"{s // 60} m {s % 60:02d} s"
    return f"{s} s"


def describe_progress(state: RunState, progress: RunProgress | None = None) -> str:
    """One status line: stage (k/n), step/total, percent and ETA where known. With ``progress`` the
    percent and the ETA are the whole run's, weighted by the backend's work plan; without, the
    percent gives every stage the same share and the ETA is the current stage's."""
    parts = []
    if state.stage:
        n = len(state.stages)
        parts.append(f"{state.stage} ({state.stage_index + 1}/{n})" if n else state.stage)
    else:
        parts.append("starting")
    if state.total:
        parts.append(f"step {state.step}/{state.total}")
    parts.append(f"{100.0 * (progress.fraction if progress is not None else state.fraction):.0f}%")
    eta = format_duration(progress.eta_s if progress is not None else state.eta_s)
    if eta:
        parts.append(f"ETA {eta}")
    return " · ".join(parts)


def run_blocking(run: BackendRun, *, on_event: Callable[[Event, RunState], None] | None = None,
                 on_log: Callable[[str], None] | None = None, poll_interval_s: float = 0.1,
                 should_cancel: Callable[[], bool] | None = None) -> RunOutcome:
    """Drive ``run`` until it finishes; Ctrl+C (KeyboardInterrupt) cancels the backend cleanly."""
    try:
        while run.outcome is None:
            run.pump(on_log, on_event)
            if run.outcome is not None:
                break
            if should_cancel is not None and should_cancel():
                run.cancel()
            time.sleep(poll_interval_s)
    except KeyboardInterrupt:
        run.process.cancel()
        while run.outcome is None:
            run.pump(on_log, on_event)
            time.sleep(0.02)
    return run.outcome



_PROBE_CODE = DROP_WORKDIR + """
import importlib.util, json, sys
def where(name):
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return (spec.origin or (list(spec.submodule_search_locations or []) or [''])[0]) if spec else None
print(json.dumps({"python": sys.version.split()[0], "module": where(sys.argv[1]), "torch": where("torch")}))
"""


@dataclass(frozen=True)
class ProbeResult:
    """What a quick look into the backend environment found (without importing torch)."""

    ok: bool
    message: str
    python_version: str = ""
    module_path: str = ""
    torch_found: bool = False


def run_probe(python: str, code: str, args: tuple[str, ...] = (), *, backend_path: str = "", timeout_s: float,
              about: str = "", failed: str = "failed to run") -> tuple[dict | None, str]:
    """Run ``code`` in ``python`` (``python -c code *args``) with the environment a run would get, and
    return the last JSON object it printed, or None and why not: ``about`` completes "did not answer"
    (e.g. " whether it has CUDA"), ``failed`` says what a non-zero exit or no JSON line means."""
    import json

    try:
        cp = subprocess.run([python, "-c", code, *args], capture_output=True, text=True,
                            env=build_env(backend_path), timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"{python} did not answer{about} within {timeout_s:.0f} s"
    except OSError as e:
        return None, f"Could not run {python}: {e}"
    lines = [ln for ln in cp.stdout.splitlines() if ln.startswith("{")]
    if cp.returncode != 0 or not lines:
        err = (cp.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{python} {failed} ({err})"
    try:
        info = json.loads(lines[-1])
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, dict):
        return None, f"{python} gave an unreadable answer: {lines[-1][:80]!r}"
    return info, ""


def probe_backend(python: str, backend_path: str = "", module: str | None = None,
                  timeout_s: float = 30.0) -> ProbeResult:
    """Check that ``python`` runs and can find the backend module (and torch) on its path.

    Runs a tiny script in the backend interpreter with the same environment a run would get; it only
    locates modules, so it takes well under a second even for a CUDA environment.
    """
    problem = check_python(python)
    if problem:
        return ProbeResult(False, problem)
    module = module or backend_module()
    info, problem = run_probe(python, _PROBE_CODE, (module,), backend_path=backend_path, timeout_s=timeout_s)
    if info is None:
        return ProbeResult(False, problem)
    version, where, torch = info.get("python", ""), info.get("module"), info.get("torch")
    if not where:
        hint = " or set the Backend Source Folder" if not backend_path else ""
        return ProbeResult(False, f"Python {version} runs, but module '{module}' is not importable: "
                                  f"install the backend in that environment{hint}", version)
    if not torch:
        return ProbeResult(False, f"Python {version} finds '{module}' ({where}) but not PyTorch",
                           version, where)
    return ProbeResult(True, f"Python {version}, backend at {where}, PyTorch installed", version, where, True)
