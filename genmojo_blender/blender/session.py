"""The one backend run of this Blender session, shared by the modal and the blocking operator paths.

Blender properties cannot hold a process, so the running ``BackendRun`` lives here at module level
(there is at most one per Blender instance). Both operator paths call the same functions: ``start``
(validate settings, start the child), ``update`` (pump events into the WindowManager state) and
``finish`` (store the outcome, import the result, return what to report).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import bpy

from .. import preferences, props
from ..core import backend_process as bp
from ..core import machine
from ..core.bundle import BundleError
from ..core.import_plan import ImportOptionError, parse_representations
from . import importer, masks, result_store

_active: bp.BackendRun | None = None


class RunSetupError(Exception):
    """The run cannot start: settings or preferences are incomplete or wrong."""


@dataclass
class Finish:
    """What to tell the user when a run ends: (level, message) pairs and the operator result."""

    ok: bool
    reports: list[tuple[str, str]] = field(default_factory=list)
    imported: importer.ImportResult | None = None


def active() -> bp.BackendRun | None:
    """The run in flight, if any."""
    return _active if _active is not None and _active.outcome is None else None


def run_state(context=None) -> props.GENMOJO_PG_run:
    return (context or bpy.context).window_manager.genmojo_run


def start(context, *, python: str = "", backend_path: str = "") -> bp.BackendRun:
    """Validate the scene's settings and start the backend; raises RunSetupError with every problem.

    ``python``/``backend_path`` override the preferences (used by the headless script).
    """
    global _active
    if active() is not None:
        raise RunSetupError("A GenMOJO run is already in progress")
    settings = context.scene.genmojo
    req = props.make_request(settings, context)
    if settings.mask_source == "MASK":
        req = _masks_from_datablock(settings, req)
    python = python or preferences.backend_python(context)
    backend_path = backend_path or preferences.backend_path(context)
    problems = []
    py_problem = bp.check_python(python)
    if py_problem:
        problems.append(py_problem)
    preset_note = ""
    if req.preset == machine.AUTO_PRESET and not py_problem:  # the machine decides (core/machine.py)
        preset, preset_note = machine.resolve_preset(req.preset, req.device, python, backend_path)
        req = replace(req, preset=preset)
    elif req.preset == machine.AUTO_PRESET:
        req = replace(req, preset=machine.auto_preset(req.device, None))
    if not req.out_dir:
        problems.append("Choose an output folder (or a default one in the preferences, "
                        "or save the .blend file first)")
    problems += [p for p in bp.validate_request(req) if not p.startswith("Choose an output folder")]
    if problems:
        raise RunSetupError("; ".join(problems))
    try:
        os.makedirs(req.out_dir, exist_ok=True)
    except OSError as e:
        raise RunSetupError(f"Cannot create the output folder {req.out_dir}: {e}") from e
    try:
        run = bp.BackendRun.start(python, req, backend_path=backend_path)
    except bp.BackendStartError as e:
        raise RunSetupError(str(e)) from e
    _active = run
    state = run_state(context)
    state.reset_for_run()
    state.preset_note = preset_note
    return run


def _masks_from_datablock(settings, req: bp.RunRequest) -> bp.RunRequest:
    """Rasterise the chosen Mask datablock into ``<output>/<name>_masks`` and run on that folder."""
    from dataclasses import replace

    if settings.mask is None:
        raise RunSetupError("Choose the Mask datablock (Movie Clip editor) to use as object masks")
    if not req.data_dir or not os.path.exists(req.data_dir):
        raise RunSetupError("Choose the clip first: the masks are rasterised at its size and frames")
    if not req.out_dir:
        raise RunSetupError("Choose an output folder (the rasterised masks are written there)")
    folder = os.path.join(req.out_dir, f"{req.save_name}_masks")
    try:
        width, height, frames = masks.clip_frames(req.data_dir)
        masks.rasterize_mask(settings.mask, folder, width, height, frames)
    except (ValueError, RuntimeError, OSError) as e:
        raise RunSetupError(f"Cannot rasterise the mask {settings.mask.name!r}: {e}") from e
    return replace(req, mask_dir=folder)


def request_cancel(context=None) -> bool:
    """Ask the running backend to stop (non-blocking). Returns False if nothing is running."""
    run = active()
    if run is None:
        return False
    run.cancel()
    state = run_state(context)
    state.cancelling = True
    state.status = "Cancelling"
    return True


def update(context, run: bp.BackendRun, on_log=None) -> list:
    """Pump the run's events into the WindowManager state; returns the new events."""
    events = run.pump(on_log)
    if events:
        run_state(context).show_state(run.state, run.progress)
    return events


def finish(context, run: bp.BackendRun, *, import_result: bool | None = None) -> Finish:
    """Record how ``run`` ended, import its bundle on success, and say what to report."""
    global _active
    if run is _active:
        _active = None
    outcome = run.outcome
    state = run_state(context)
    state.show_state(run.state, run.progress)
    state.running = state.cancelling = False
    state.exit_status = outcome.exit_status()
    if outcome.status == "cancelled":
        state.status = "Cancelled"
        state.error, state.hint, state.log_tail = "Cancelled by the user", "", ""
        return Finish(ok=False, reports=[("WARNING", "GenMOJO run cancelled")])
    if not outcome.ok:
        state.show_failure(outcome.error, outcome.hint, outcome.stderr_tail, outcome.exit_status())
        return Finish(ok=False, reports=[("ERROR", f"GenMOJO failed: {outcome.message()}")])

    state.result_path = outcome.bundle
    state.status = "Finished"
    state.fraction = 1.0
    settings = context.scene.genmojo
    if import_result is None:
        import_result = settings.import_when_done
    if not import_result:
        return Finish(ok=True, reports=[("INFO", f"GenMOJO result written to {outcome.bundle}")])
    return import_into_scene(context, outcome.bundle, point_display=settings.point_display,
                             **props.import_options(settings))


def import_into_scene(context, path: str, *, point_display: bool = True, set_scene: bool = True,
                      load_plate: bool = True, representation: str = "POINTS",
                      representations: dict[str, str] | str | None = None,
                      surface_resolution: int = 48, surface_threshold: float = 0.5,
                      keep_edits: bool = True) -> Finish:
    """Import a bundle and phrase the outcome as reports. A bad bundle, a bad option or any
    failure while building becomes an ERROR report; the scene is left as it was in every case.

    A successful import is recorded in ``Scene.genmojo_results`` with its options (``result_store``);
    what a re-import kept of the artist's edits, and scene settings it changed, are INFO reports."""
    state = run_state(context)
    try:
        if isinstance(representations, str):
            representations = parse_representations(representations)
        res = importer.import_bundle(path, context.scene, point_display=point_display,
                                     set_scene=set_scene, load_plate=load_plate,
                                     representation=representation, representations=representations,
                                     surface_resolution=surface_resolution,
                                     surface_threshold=surface_threshold, keep_edits=keep_edits)
    except (BundleError, ImportOptionError) as e:
        state.error, state.hint = f"Cannot import the result: {e}", "Re-run the backend or pick another result"
        return Finish(ok=False, reports=[("ERROR", f"Cannot import the GenMOJO result: {e}")])
    except Exception as e:  # noqa: BLE001 - anything else from Blender; the import was rolled back
        state.error = f"Import failed, the scene is unchanged: {type(e).__name__}: {e}"
        state.hint = "Please report this with the result folder"
        return Finish(ok=False, reports=[("ERROR", state.error)])
    state.result_path = res.bundle_root
    result_store.record(context.scene, res.bundle_root, res.collection, representation=representation,
                        representations=representations, surface_resolution=surface_resolution,
                        surface_threshold=surface_threshold, point_display=point_display,
                        set_scene=set_scene, load_plate=load_plate)
    reports = [("WARNING", w) for w in res.warnings]
    reports += [("INFO", n) for n in res.notes]
    if res.kept:
        reports.append(("INFO", "Kept from the previous import: " + "; ".join(res.kept)
                        + " (import with Keep Edits off to reset them)"))
    reports.append(("INFO", f"Imported {len(res.objects)} object(s) into '{res.collection.name}'"))
    return Finish(ok=True, reports=reports, imported=res)


def kill_active() -> None:
    """Stop the backend at once (the add-on is being disabled or Blender is quitting)."""
    global _active
    if _active is not None:
        _active.process.kill()
        _active = None
