"""The GenMOJO sidebar (3D View > N panel > GenMOJO): inputs, run/cancel with progress, result.

Panels only draw; buttons that cannot run are greyed out by their operators' poll(), which also
explains why in the tooltip (poll_message_set).
"""

from __future__ import annotations

import textwrap

import bpy
from bpy.types import Panel

from .. import preferences, props
from ..blender import result_store, session
from ..core import backend_process as bp
from ..core import machine


def _wrapped(layout, text: str, context, icon: str = "NONE", alert: bool = False) -> None:
    """Draw a long message as several labels that fit the sidebar's width."""
    width = max(20, int((context.region.width if context.region else 300) / 7.5))
    col = layout.column(align=True)
    col.alert = alert
    for i, line in enumerate(textwrap.wrap(text, width) or [""]):
        col.label(text=line, icon=icon if i == 0 else "BLANK1")


def auto_preset_label(device: str, python: str, backend_path: str) -> str:
    """What the Auto preset will run, as far as is known without starting anything."""
    if device in ("cpu", "cuda"):
        return f"Runs {machine.auto_preset(device, None)} (device {device})"
    probe = machine.cached_cuda(python, backend_path)
    if probe is None:
        return "Lite with CUDA, else CPU Tiny: found out at the run (or Check Backend)"
    return f"Runs {machine.auto_preset(device, probe.cuda)} ({'CUDA' if probe.cuda else 'no CUDA'})"


class _GenMojoPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "GenMOJO"


class GENMOJO_PT_main(_GenMojoPanel, Panel):
    """Inputs of a reconstruction."""

    bl_label = "GenMOJO"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        s = context.scene.genmojo

        problem = bp.check_python(preferences.backend_python(context))
        if problem:
            box = layout.box()
            _wrapped(box, problem, context, icon="ERROR", alert=True)
            box.operator("preferences.addon_show", text="Open Preferences",
                         icon="PREFERENCES").module = preferences.ADDON_ID

        col = layout.column()
        col.prop(s, "clip_path")
        col.prop(s, "mask_source")
        if s.mask_source == "MASK":
            col.prop(s, "mask")
        else:
            col.prop(s, "mask_dir")
        row = col.row()
        row.prop(s, "output_dir")
        out = props.output_dir(s, context)
        if not s.output_dir:
            sub = col.row()
            sub.enabled = False
            sub.label(text=f"Default: {out}" if out else "Default: none (set one or save the file)")
        col.prop(s, "result_name")
        col.separator()
        col.prop(s, "preset")
        if s.preset == machine.AUTO_PRESET:
            sub = col.row()
            sub.enabled = False
            sub.label(text=auto_preset_label(s.device, preferences.backend_python(context),
                                             preferences.backend_path(context)), icon="INFO")
        col.prop(s, "device")
        col.prop(s, "use_guidance")
        if s.use_guidance:
            sub = col.column()
            sub.prop(s, "guidance_model")
            spec = props.guidance_model_spec(s.guidance_model)
            problem = bp.check_guidance_model(spec)
            if problem:
                _wrapped(sub, problem, context, icon="ERROR", alert=True)
            elif not spec:
                sub.label(text="Default: the backend's Zero123-XL (hub)", icon="INFO")
            elif bp.is_hub_id(spec):
                sub.label(text="Hub id: cache, else download", icon="URL")
            sub.prop(s, "guidance_variant")


class GENMOJO_PT_options(_GenMojoPanel, Panel):
    """Optional inputs: camera, background, frame rate, overwrite, config overrides and import options."""

    bl_label = "Options"
    bl_parent_id = "GENMOJO_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        s = context.scene.genmojo
        col = layout.column()
        col.prop(s, "camera_source")
        if s.camera_source == "BLENDER":
            col.prop(s, "camera_solve_file")
            col.operator("genmojo.export_camera_solve", icon="TRACKING")
        sub = col.column()
        sub.active = s.camera_source == "AUTO"
        sub.prop(s, "camera_path")
        sub = col.column()
        sub.active = not s.camera_path.strip() and s.camera_source != "BLENDER"
        sub.prop(s, "focal_px")
        col.prop(s, "background_path")
        col.prop(s, "depth_dir")
        sub = col.column()
        sub.active = bool(s.depth_dir.strip())
        sub.prop(s, "depth_is_disparity")
        col.prop(s, "depth_model")
        depth_dir, depth_model = props.abs_folder(s.depth_dir), props.abs_folder(s.depth_model)
        for problem in (bp.check_depth_dir(depth_dir), bp.check_depth_model(depth_model),
                        bp.DEPTH_BOTH_MESSAGE if depth_dir and depth_model else ""):
            if problem:
                _wrapped(col, problem, context, icon="ERROR", alert=True)
        col.prop(s, "fps")
        col.prop(s, "overwrite")
        col.prop(s, "resume")
        col.prop(s, "overrides")
        for problem in bp.check_overrides(bp.split_overrides(s.overrides)):
            _wrapped(col, problem, context, icon="ERROR", alert=True)
        col.prop(s, "import_when_done")
        col.prop(s, "keep_edits")
        col.prop(s, "representation")
        sub = col.column(align=True)
        sub.active = s.representation == "MESH"
        sub.prop(s, "surface_resolution")
        sub.prop(s, "surface_threshold")
        col.prop(s, "point_display")


class GENMOJO_PT_run(_GenMojoPanel, Panel):
    """Run/Cancel, progress and the last error."""

    bl_label = "Run"
    bl_parent_id = "GENMOJO_PT_main"
    bl_options = {"HIDE_HEADER"}

    def draw(self, context):
        layout = self.layout
        state = context.window_manager.genmojo_run
        # Only a run of this session counts: a saved "running" flag from an old file is stale.
        if session.active() is not None:
            text = state.stage or "Starting"
            if state.stage_count:
                text = f"{text} ({state.stage_index + 1}/{state.stage_count})"
            layout.progress(factor=state.fraction, type="BAR", text=f"{text}  {100 * state.fraction:.0f}%")
            col = layout.column(align=True)
            if state.total:
                col.label(text=f"Step {state.step} / {state.total}")
            eta = bp.format_duration(state.eta_s if state.eta_s >= 0 else None)
            if eta:
                col.label(text=f"About {eta} left", icon="TIME")
            row = layout.row()
            row.scale_y = 1.3
            row.operator("genmojo.cancel_backend", text="Cancelling..." if state.cancelling else "Cancel",
                         icon="CANCEL")
            return
        row = layout.row()
        row.scale_y = 1.5
        row.operator("genmojo.run_backend", icon="PLAY")
        if state.error:
            box = layout.box()
            _wrapped(box, state.error, context, icon="ERROR", alert=True)
            if state.hint:
                _wrapped(box, state.hint, context, icon="INFO")
            if state.log_tail:
                sub = box.column(align=True)
                sub.scale_y = 0.8
                sub.label(text="Backend output:")
                for line in state.log_tail.splitlines()[-8:]:
                    sub.label(text=line[-120:])
        elif state.status:
            layout.label(text=state.status, icon="CHECKMARK" if state.status == "Finished" else "INFO")


class GENMOJO_PT_result(_GenMojoPanel, Panel):
    """The last run's result, the results imported into this scene (saved with the file: each with a
    re-import button and one row per object to rename it or switch its representation), export."""

    bl_label = "Result"
    bl_parent_id = "GENMOJO_PT_main"

    def draw(self, context):
        layout = self.layout
        state = context.window_manager.genmojo_run
        col = layout.column(align=True)
        if state.result_path:
            col.label(text=bpy.path.basename(state.result_path.rstrip("/\\")), icon="FILE_FOLDER")
            direct = col.column(align=True)
            direct.operator_context = "EXEC_DEFAULT"  # import this result without a file browser
            op = direct.operator("genmojo.import_result", text="Import Result", icon="IMPORT")
            op.filepath = state.result_path
            op.representation = context.scene.genmojo.representation
            op.keep_edits = context.scene.genmojo.keep_edits
        col.operator("genmojo.import_result", text="Import Other Result...", icon="FILEBROWSER")
        for entry, objects in result_store.rows(context.scene):
            _draw_imported_result(layout, entry, objects, context.scene.genmojo.keep_edits)
        row = layout.row(align=True)
        row.operator("genmojo.export_glb", text="Export .glb", icon="EXPORT")
        row.operator("genmojo.export_fbx", text="Export .fbx", icon="EXPORT")
        row = layout.row(align=True)
        op = row.operator("genmojo.export_glb", text="Rigid .glb", icon="OBJECT_ORIGIN")
        op.rigid = True
        op = row.operator("genmojo.export_fbx", text="Rigid .fbx", icon="OBJECT_ORIGIN")
        op.rigid = True
        row = layout.row(align=True)  # baked caches: the points as vertices at every frame
        row.operator("genmojo.export_usd", text="USD Cache", icon="EXPORT")
        row.operator("genmojo.export_alembic", text="Alembic Cache", icon="EXPORT")
        row = layout.row(align=True)  # the Gaussians themselves, every per-frame value
        row.operator("genmojo.export_ply_sequence", text="PLY Splats", icon="EXPORT")
        row.operator("genmojo.export_gltf_splats", text="glTF Splats", icon="EXPORT")
        row.operator("genmojo.export_usd_splats", text="USD Splats", icon="EXPORT")


def _draw_imported_result(layout, entry, objects, keep_edits: bool) -> None:
    """One imported result: its collection with a re-import button (the options it was imported
    with), then one row per object: its name (editable: the name survives re-imports and is what
    exports write) and a button per representation (the current one pressed) that rebuilds it."""
    from ..blender import importer
    from ..core.import_plan import REPRESENTATIONS
    box = layout.box()
    row = box.row(align=True)
    row.label(text=entry.collection.name, icon="OUTLINER_COLLECTION")
    row.operator_context = "EXEC_DEFAULT"
    op = row.operator("genmojo.import_result", text="", icon="FILE_REFRESH")
    op.filepath = entry.bundle_root
    for key in ("representation", "object_representations", "surface_resolution", "surface_threshold",
                "point_display", "set_scene", "load_plate"):
        setattr(op, key, getattr(entry, key))
    op.keep_edits = keep_edits
    _draw_camera_solve(box, entry.collection)
    for ob in objects:
        row = box.row(align=True)
        row.prop(ob, "name", text="", icon="MESH_DATA")
        current = ob.get(importer.REPRESENTATION_PROP, "")
        for rep, icon in zip(REPRESENTATIONS, ("POINTCLOUD_DATA", "SHADING_RENDERED", "MESH_DATA")):
            op = row.operator("genmojo.set_representation", text="", icon=icon, depress=rep == current)
            op.representation = rep
            op.object_name = ob.name


def _draw_camera_solve(box, collection) -> None:
    """A solved camera's error (min / mean / max, the worst frames); its F-curve is on the camera."""
    from ..core import solve_report
    for ob in collection.all_objects:
        text = ob.get(solve_report.SUMMARY_PROP)
        if isinstance(text, str) and text:
            col = box.column(align=True)
            for i, line in enumerate(text.splitlines()):
                col.label(text=line, icon="TRACKING" if i == 0 else "BLANK1")
            col.label(text=f"Per frame: {ob.name} › {solve_report.ERROR_PROP} (Graph Editor)", icon="GRAPH")
            return


CLASSES = (GENMOJO_PT_main, GENMOJO_PT_options, GENMOJO_PT_run, GENMOJO_PT_result)
