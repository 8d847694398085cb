"""Operators that run, cancel and check the backend. Thin: the work is in ``blender/session.py`` and
``core/backend_process.py``.

``genmojo.run_backend`` has two paths. With a window (``invoke``) it is modal: a timer pumps the
backend's events into the panel and the status bar, Esc or the Cancel button stops the backend, and
the UI stays usable. Without a window (``blender -b``, the bpy module, or ``execute`` called from a
script) it blocks, prints progress lines to stdout and the backend's log to stderr, and returns when
the backend has finished; Ctrl+C cancels the backend cleanly.
"""

from __future__ import annotations

import sys
import time

import bpy
from bpy.props import StringProperty
from bpy.types import Operator

from .. import preferences
from ..blender import session
from ..core import backend_process as bp
from ..core import machine

_LOG_PREFIX = "[GenMOJO]"


def _report_all(op: Operator, reports) -> None:
    for level, msg in reports:
        op.report({level}, msg)


def _redraw(context) -> None:
    wm = context.window_manager
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PROPERTIES", "STATUSBAR"}:
                area.tag_redraw()


class GENMOJO_OT_run_backend(Operator):
    """Reconstruct the clip's masked objects as animated Gaussians with the GenMOJO backend"""

    bl_idname = "genmojo.run_backend"
    bl_label = "Run GenMOJO"
    bl_options = {"REGISTER"}

    backend_python: StringProperty(
        name="Backend Python", options={"SKIP_SAVE", "HIDDEN"},
        description="Interpreter to use instead of the one in the preferences (for scripts)")
    backend_path: StringProperty(
        name="Backend Source Folder", options={"SKIP_SAVE", "HIDDEN"},
        description="Folder to add to PYTHONPATH instead of the one in the preferences (for scripts)")

    _run: bp.BackendRun | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        if session.active() is not None:
            cls.poll_message_set("A GenMOJO run is already in progress")
            return False
        settings = getattr(context.scene, "genmojo", None)
        if settings is None:
            return False
        if not settings.clip_path:
            cls.poll_message_set("Choose the clip first")
            return False
        if settings.mask_source == "MASK":
            if settings.mask is None:
                cls.poll_message_set("Choose the Mask datablock first")
                return False
        elif not settings.mask_dir:
            cls.poll_message_set("Choose the masks folder first")
            return False
        if not preferences.backend_python(context):
            # Scripts may still pass backend_python explicitly; the panel needs the preference.
            cls.poll_message_set("Set the backend Python in Preferences > Add-ons > GenMOJO")
            return bpy.app.background
        return True

    # ---- shared

    def _start(self, context) -> bp.BackendRun | None:
        try:
            run = session.start(context, python=self.backend_python, backend_path=self.backend_path)
            note = session.run_state(context).preset_note
            if note:
                self.report({"INFO"}, note)
            return run
        except session.RunSetupError as e:
            state = session.run_state(context)
            state.show_failure(str(e), "Check the GenMOJO panel inputs and the add-on preferences",
                               exit_status=bp.EXIT_BAD_INPUT)
            self.report({"ERROR"}, str(e))
            return None

    def _finish(self, context, run: bp.BackendRun) -> set[str]:
        result = session.finish(context, run)
        _report_all(self, result.reports)
        if result.imported is not None and not bpy.app.background:
            # The operator itself has no UNDO flag (redo would re-run the backend), so the import
            # gets its own undo step.
            bpy.ops.ed.undo_push(message="Import GenMOJO Result")
        return {"FINISHED"} if result.ok else {"CANCELLED"}

    # ---- blocking path (no window)

    def execute(self, context):
        run = self._start(context)
        if run is None:
            return {"CANCELLED"}
        print(f"{_LOG_PREFIX} started: {bp.display_command(run.process.argv)}", flush=True)
        if session.run_state(context).preset_note:
            print(f"{_LOG_PREFIX} {session.run_state(context).preset_note}", flush=True)
        last = {"line": "", "t": 0.0}

        def on_event(ev, state):
            line = bp.describe_progress(state, run.progress)
            now = time.monotonic()
            if ev.type in ("stage", "done", "failed") or (line != last["line"] and now - last["t"] >= 2.0):
                print(f"{_LOG_PREFIX} {line}", flush=True)
                last.update(line=line, t=now)
            session.run_state(context).show_state(state, run.progress)

        def on_log(line):
            print(f"[backend] {line}", file=sys.stderr, flush=True)

        outcome = bp.run_blocking(run, on_event=on_event, on_log=on_log)
        print(f"{_LOG_PREFIX} {outcome.status}: {outcome.bundle or outcome.message()}", flush=True)
        return self._finish(context, run)

    # ---- modal path (a window exists)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        self._run = self._start(context)
        if self._run is None:
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(self)
        self._show_status(context)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        run = self._run
        if event.type == "ESC" and event.value == "PRESS":
            session.request_cancel(context)
            self._show_status(context)
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        session.update(context, run)
        if run.outcome is None:
            self._show_status(context)
            _redraw(context)
            return {"PASS_THROUGH"}
        self._cleanup(context)
        result = self._finish(context, run)
        _redraw(context)
        return result

    def cancel(self, context):
        # Called when Blender drops the modal handler (new file loaded, window closed).
        if self._run is not None and self._run.outcome is None:
            self._run.process.cancel()
            self._run.pump()
            session.finish(context, self._run)
        self._cleanup(context)

    def _show_status(self, context) -> None:
        state = session.run_state(context)
        text = "Cancelling GenMOJO..." if state.cancelling else f"GenMOJO: {state.status}  (Esc to cancel)"
        if context.workspace is not None:
            context.workspace.status_text_set(text)

    def _cleanup(self, context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)


class GENMOJO_OT_cancel_backend(Operator):
    """Stop the running GenMOJO backend (its whole process group)"""

    bl_idname = "genmojo.cancel_backend"
    bl_label = "Cancel GenMOJO"
    bl_options = {"REGISTER", "INTERNAL"}

    @classmethod
    def poll(cls, context):
        if session.active() is None:
            cls.poll_message_set("No GenMOJO run in progress")
            return False
        return True

    def execute(self, context):
        session.request_cancel(context)
        self.report({"INFO"}, "Cancelling the GenMOJO backend")
        return {"FINISHED"}


class GENMOJO_OT_check_backend(Operator):
    """Check that the backend Python runs and can find the GenMOJO backend and PyTorch"""

    bl_idname = "genmojo.check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER", "INTERNAL"}

    @classmethod
    def poll(cls, context):
        problem = bp.check_python(preferences.backend_python(context))
        if problem:
            cls.poll_message_set(problem)
            return False
        return True

    def execute(self, context):
        python, backend_path = preferences.backend_python(context), preferences.backend_path(context)
        result = bp.probe_backend(python, backend_path)
        self.report({"INFO"} if result.ok else {"ERROR"}, result.message)
        if not result.ok:
            return {"CANCELLED"}
        # with torch found, ask it about CUDA (in the backend's Python): the Auto preset's answer
        cuda = machine.probe_cuda(python, backend_path, refresh=True)
        self.report({"INFO"} if cuda.cuda is not None else {"WARNING"},
                    f"{cuda.message}: the Auto preset runs {machine.auto_preset('auto', cuda.cuda)}")
        return {"FINISHED"}


CLASSES = (GENMOJO_OT_run_backend, GENMOJO_OT_cancel_backend, GENMOJO_OT_check_backend)
