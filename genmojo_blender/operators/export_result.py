"""Export operators with the settings that keep GenMOJO's per-frame point animation.

``genmojo.export_glb`` writes glTF binary with morph-target animation, point attributes and the
camera; ``genmojo.export_fbx`` writes FBX with baked blend-shape animation. Both are listed under
File > Export; the flags live in ``blender/export.py``. Both offer "Rigid Transforms", which
bakes each object's motion into per-frame transforms for engines without morph targets.

Baked caches: ``genmojo.export_usd`` and ``genmojo.export_alembic`` (Blender's exporters, with the
points written as vertices at every frame). Splats: ``genmojo.export_ply_sequence`` (3DGS PLY per
object and frame), ``genmojo.export_gltf_splats`` (``KHR_gaussian_splatting`` .glb per frame) and
``genmojo.export_usd_splats`` (animated USD particle fields); logic in ``blender/splat_export.py``.
Every one of these (glTF and FBX included) is greyed out until a result is imported and never replaces an existing file
unless its Overwrite option is on.
"""

from __future__ import annotations

from pathlib import Path

from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy.types import Operator
from bpy_extras.io_utils import ExportHelper

from ..blender import export, splat_export
from .result_poll import NeedsImport


_OVERWRITE = dict(name="Overwrite", default=False,
                  description="Replace files of the same name; without it an export never touches an existing file")


class _NeedsImport(NeedsImport):
    needs_import_message = "Import a GenMOJO result first: there is nothing of GenMOJO's in this scene to export"


class _ExportBase(_NeedsImport, ExportHelper):

    selected_only: BoolProperty(name="Selected Only", default=False,
                                description="Export only the selected objects")
    rigid: BoolProperty(
        name="Rigid Transforms", default=False,
        description=("Bake each object's motion into one rotation and translation per frame (a "
                     "least-squares fit) instead of per-frame shape keys, for engines without morph targets"))
    overwrite: BoolProperty(**_OVERWRITE)

    def _export(self, fn):
        warnings: list[str] = []
        try:
            path = fn(self.filepath, selected_only=self.selected_only, rigid=self.rigid, warnings=warnings,
                      overwrite=self.overwrite)
        except (RuntimeError, OSError, ValueError) as e:
            self.report({"ERROR"}, f"Export failed: {e}")
            return {"CANCELLED"}
        for w in warnings:
            self.report({"WARNING"}, w)
        self.report({"INFO"}, f"Exported {path}")
        return {"FINISHED"}


class GENMOJO_OT_export_glb(Operator, _ExportBase):
    """Export the scene as glTF binary with per-frame morph targets, point colours and the camera"""

    bl_idname = "genmojo.export_glb"
    bl_label = "Export GenMOJO glTF"
    bl_options = {"REGISTER"}

    filename_ext = ".glb"
    filter_glob: StringProperty(default="*.glb", options={"HIDDEN"})

    def execute(self, context):
        return self._export(export.export_glb)


class GENMOJO_OT_export_fbx(Operator, _ExportBase):
    """Export the scene as FBX with per-frame blend shapes baked and the camera"""

    bl_idname = "genmojo.export_fbx"
    bl_label = "Export GenMOJO FBX"
    bl_options = {"REGISTER"}

    filename_ext = ".fbx"
    filter_glob: StringProperty(default="*.fbx", options={"HIDDEN"})

    def execute(self, context):
        return self._export(export.export_fbx)


_SELECTED = dict(name="Selected Only", default=False, description="Export only the selected objects")


class _WritesFiles(_NeedsImport):
    """Runs an export function and reports what it wrote (or why it wrote nothing)."""

    def _run(self, fn, target, **options):
        try:
            written = fn(target, **options)
        except (ValueError, RuntimeError, OSError) as e:  # ExportError is a ValueError
            self.report({"ERROR"}, f"Export failed: {e}")
            return {"CANCELLED"}
        if isinstance(written, (list, tuple)):
            folders = sorted({str(Path(p).parent) for p in written})
            where = folders[0] if len(folders) == 1 else f"{len(folders)} folders under {Path(folders[0]).parent}"
            self.report({"INFO"}, f"Wrote {len(written)} files in {where}")
        else:
            self.report({"INFO"}, f"Exported {written}")
        return {"FINISHED"}


class GENMOJO_OT_export_ply_sequence(Operator, _WritesFiles):
    """Write each object's Gaussians as one standard 3DGS PLY per frame (splat viewers open them)"""

    bl_idname = "genmojo.export_ply_sequence"
    bl_label = "Export GenMOJO PLY Sequence"
    bl_options = {"REGISTER"}

    directory: StringProperty(name="Folder", subtype="DIR_PATH",
                              description="Folder that receives one sub-folder of PLY files per object")
    filter_folder: BoolProperty(default=True, options={"HIDDEN"})
    space: EnumProperty(name="Space", default="BLENDER",
                        items=[(k, k.title(), v) for k, v in splat_export.SPACES.items()],
                        description="Coordinates of the written Gaussians")
    per_object: BoolProperty(name="Per Object", default=True, description="One sequence per object")
    merged: BoolProperty(name="All Objects Merged", default=False,
                         description="Also one sequence with every object in each frame's file")
    sh_degree: EnumProperty(name="SH Degree", default="0",
                            items=[("0", "0", "No f_rest properties (the colours are not view-dependent)"),
                                   ("3", "3", "45 zero f_rest properties, for loaders that expect degree 3")])
    selected_only: BoolProperty(**_SELECTED)
    overwrite: BoolProperty(**_OVERWRITE)

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self.directory:
            self.report({"ERROR"}, "Choose a folder for the PLY sequence")
            return {"CANCELLED"}
        return self._run(splat_export.export_ply_sequence, self.directory, selected_only=self.selected_only,
                         space=self.space, per_object=self.per_object, merged=self.merged,
                         sh_degree=int(self.sh_degree), overwrite=self.overwrite)


class GENMOJO_OT_export_gltf_splats(Operator, _WritesFiles, ExportHelper):
    """Write one glTF binary per frame with the Gaussians as KHR_gaussian_splatting splats"""

    bl_idname = "genmojo.export_gltf_splats"
    bl_label = "Export GenMOJO glTF Splats"
    bl_options = {"REGISTER"}

    filename_ext = ".glb"
    filter_glob: StringProperty(default="*.glb", options={"HIDDEN"})
    selected_only: BoolProperty(**_SELECTED)
    overwrite: BoolProperty(**_OVERWRITE)

    def execute(self, context):
        return self._run(splat_export.export_gltf_splats, self.filepath, selected_only=self.selected_only,
                         overwrite=self.overwrite)


class GENMOJO_OT_export_usd_splats(Operator, _WritesFiles, ExportHelper):
    """Write the Gaussians as an animated USD layer of 3D Gaussian splat particle fields"""

    bl_idname = "genmojo.export_usd_splats"
    bl_label = "Export GenMOJO USD Splats"
    bl_options = {"REGISTER"}

    filename_ext = ".usda"
    filter_glob: StringProperty(default="*.usda", options={"HIDDEN"})
    selected_only: BoolProperty(**_SELECTED)
    overwrite: BoolProperty(**_OVERWRITE)

    def execute(self, context):
        return self._run(splat_export.export_usd_splats, self.filepath, selected_only=self.selected_only,
                         overwrite=self.overwrite)


class GENMOJO_OT_export_usd(Operator, _WritesFiles, ExportHelper):
    """Write the scene as a USD cache with every object's points or surface at every frame"""

    bl_idname = "genmojo.export_usd"
    bl_label = "Export GenMOJO USD Cache"
    bl_options = {"REGISTER"}

    filename_ext = ".usdc"
    filter_glob: StringProperty(default="*.usd;*.usda;*.usdc", options={"HIDDEN"})
    selected_only: BoolProperty(**_SELECTED)
    overwrite: BoolProperty(**_OVERWRITE)

    def execute(self, context):
        return self._run(export.export_usd, self.filepath, selected_only=self.selected_only,
                         overwrite=self.overwrite)


class GENMOJO_OT_export_alembic(Operator, _WritesFiles, ExportHelper):
    """Write the scene as an Alembic cache with every object's points or surface at every frame"""

    bl_idname = "genmojo.export_alembic"
    bl_label = "Export GenMOJO Alembic Cache"
    bl_options = {"REGISTER"}

    filename_ext = ".abc"
    filter_glob: StringProperty(default="*.abc", options={"HIDDEN"})
    selected_only: BoolProperty(**_SELECTED)
    overwrite: BoolProperty(**_OVERWRITE)

    def execute(self, context):
        return self._run(export.export_alembic, self.filepath, selected_only=self.selected_only,
                         overwrite=self.overwrite)


def menu_export(self, context):
    self.layout.operator(GENMOJO_OT_export_glb.bl_idname, text="GenMOJO animated points (.glb)")
    self.layout.operator(GENMOJO_OT_export_fbx.bl_idname, text="GenMOJO animated points (.fbx)")
    self.layout.operator(GENMOJO_OT_export_usd.bl_idname, text="GenMOJO point cache (.usd)")
    self.layout.operator(GENMOJO_OT_export_alembic.bl_idname, text="GenMOJO point cache (.abc)")
    self.layout.operator(GENMOJO_OT_export_ply_sequence.bl_idname, text="GenMOJO 3DGS PLY sequence (.ply)")
    self.layout.operator(GENMOJO_OT_export_gltf_splats.bl_idname, text="GenMOJO glTF splats per frame (.glb)")
    self.layout.operator(GENMOJO_OT_export_usd_splats.bl_idname, text="GenMOJO USD splats (.usda)")


CLASSES = (GENMOJO_OT_export_glb, GENMOJO_OT_export_fbx, GENMOJO_OT_export_usd, GENMOJO_OT_export_alembic,
           GENMOJO_OT_export_ply_sequence, GENMOJO_OT_export_gltf_splats, GENMOJO_OT_export_usd_splats)
