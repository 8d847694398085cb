"""The one-click render set-up (blender/render_setup.py), rendered with Cycles at a tiny size: the
objects are lit, the footage shows where there is no object, the shadow catcher darkens it, a
holdout leaves the footage visible but keeps its shadow, and running it twice duplicates nothing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bundle_factory import make_bundle
from test_blender_import import run_bpy

pytestmark = pytest.mark.blender

T, W, H = 4, 64, 48
PLATE_BGR = [(60, 140 + 20 * i, 200) for i in range(T)]  # a different colour on every frame


def _plate(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(T):
        cv2.imwrite(str(folder / f"{i:05d}.png"), np.full((H, W, 3), PLATE_BGR[i], np.uint8))


def _read(path: str) -> np.ndarray:
    im = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert im is not None and im.shape == (H, W, 4), path
    return im.astype(np.float64) / 255.0  # B, G, R, A


def _linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values (the PNGs, view transform Standard) to linear light."""
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


RENDER = """
def render(name, *, compositing):
    scene = bpy.context.scene
    scene.render.use_compositing = compositing
    scene.render.filepath = os.path.join(OUT, name + ".png")
    bpy.ops.render.render(write_still=True)
    return scene.render.filepath
"""


def test_render_setup_lights_objects_shows_the_plate_and_catches_shadows(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=2, gaussians=300, width=W, height=H,
                    preview=False)
    _plate(tmp_path / "JPEGImages")
    out = run_bpy(helpers=RENDER, code=f"""
    import os
    OUT = {str(tmp_path)!r}
    enable()
    from genmojo_blender.blender import floor_scale, importer, render_setup
    from genmojo_blender.core.render_scene import RenderSceneSettings
    res = importer.import_bundle({str(b)!r}, representations={{"001": "MESH"}}, surface_resolution=24)
    scene = bpy.context.scene
    mesh, points = bpy.data.objects["shot_object_001"], bpy.data.objects["shot_object_002"]
    points.location.x -= 1.2  # side by side in the frame (the root's x is the image's x)
    # the user's own compositor tree and light: kept
    mine = bpy.data.node_groups.new("my comp", "CompositorNodeTree")
    scene.compositing_node_group = mine
    lamp = bpy.data.objects.new("my lamp", bpy.data.lights.new("my lamp", "POINT"))
    scene.collection.objects.link(lamp)
    lamp.hide_render = True

    bpy.context.view_layer.objects.active = mesh
    # the sun from the side, so the shadows fall beside the objects where the camera sees them
    settings = RenderSceneSettings(sun_azimuth_deg=80.0)
    rig = floor_scale.target_rig(bpy.context)
    rep = render_setup.setup_render_scene(scene, rig, settings=settings)
    ids = lambda: {{k: len(getattr(bpy.data, k)) for k in ("objects", "lights", "worlds", "node_groups",
                                                          "collections", "meshes")}}
    before = ids()
    rep2 = render_setup.setup_render_scene(scene, rig, settings=settings)
    after = ids()
    op = bpy.ops.genmojo.setup_render_scene()

    c = scene.cycles
    c.device, c.samples, c.use_adaptive_sampling, c.use_denoising = "CPU", 16, False, False
    scene.render.use_motion_blur = False  # one exact frame to compare pixels with
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.frame_set(2)
    ground = bpy.data.objects["shot_shadow_catcher"]
    files = dict(raw=render("raw", compositing=False), comp=render("comp", compositing=True))
    ground.hide_render = True
    files["objects"] = render("objects", compositing=False)
    points.hide_render = True
    files["mesh"] = render("mesh", compositing=False)
    points.hide_render = False
    mesh.hide_render = True
    files["points"] = render("points", compositing=False)
    mesh.hide_render = False
    ground.hide_render = False
    rep3 = render_setup.setup_render_scene(scene, rig, holdouts={{"002": True}}, settings=settings)
    scene.render.use_motion_blur = False  # turned on again by the set-up
    files["holdout_raw"] = render("holdout_raw", compositing=False)
    files["holdout_comp"] = render("holdout_comp", compositing=True)
    tree = scene.compositing_node_group
    emit(files=files, created=rep.created, changed=rep.changed, kept=rep.kept, warnings=rep.warnings,
         created2=rep2.created, changed2=rep2.changed, before=before, after=after, op=sorted(op),
         engine=scene.render.engine, film=scene.render.film_transparent, catcher=ground.is_shadow_catcher,
         tree=tree.name, nodes=sorted(n.bl_idname for n in tree.nodes), mine=mine.name in bpy.data.node_groups,
         mine_fake=mine.use_fake_user, lamp="my lamp" in bpy.data.objects, holdout=points.is_holdout,
         changed3=rep3.changed, view=scene.view_settings.view_transform,
         outputs=[s.name for s in tree.interface.items_tree if s.item_type == "SOCKET" and s.in_out == "OUTPUT"])
    """)
    assert out["engine"] == "CYCLES" and out["film"] and out["catcher"] and out["view"] == "Standard"
    assert out["created"] == ["collection GenMOJO shot render", "world GenMOJO shot world", "sun shot_sun",
                              "shadow catcher shot_shadow_catcher", "compositor node tree GenMOJO shot plate"]
    assert out["warnings"] == []
    assert any("my comp" in k for k in out["kept"]) and out["mine"] and out["mine_fake"] and out["lamp"]
    # idempotent: the second run creates and changes nothing, and no datablock was added
    assert out["created2"] == [] and out["changed2"] == [] and out["before"] == out["after"]
    assert out["op"] == ["FINISHED"]
    assert out["tree"] == "GenMOJO shot plate" and out["outputs"] == ["Image"]  # rebuilt three times, one output
    assert out["nodes"] == sorted(["CompositorNodeRLayers", "CompositorNodeMovieClip", "CompositorNodeScale",
                                   "CompositorNodeAlphaOver", "NodeGroupOutput", "CompositorNodeViewer"])
    assert out["holdout"] and "shot_object_002 is now a holdout" in out["changed3"]

    f = out["files"]
    raw, comp, objs = _read(f["raw"]), _read(f["comp"]), _read(f["objects"])
    mesh, points = _read(f["mesh"]), _read(f["points"])
    plate = np.array(PLATE_BGR[1]) / 255.0  # Blender frame 2 shows clip frame 1
    covered = objs[..., 3] > 0.0  # any pixel an object touches, however faintly
    assert covered.sum() > 30
    # lit: the mesh (a Principled surface) and the points (translucent emission) are far from black
    # where they cover (straight alpha: the colour is the object's own)
    for im, cover in ((mesh, 0.95), (points, 0.5)):
        solid = im[..., 3] > cover
        assert solid.sum() > 10
        assert im[solid, :3].mean() > 0.15
    # the plate where nothing was rendered: every pixel above the horizon that no object covers
    sky = np.zeros((H, W), bool)
    sky[: H // 2 - 2] = True
    sky &= ~covered
    assert sky.sum() > 200
    assert np.abs(comp[sky, :3] - plate).max() < 2.5 / 255
    assert raw[sky, 3].max() == 0.0
    # shadows: alpha from the catcher outside the objects, black in the render, darkening the plate
    shadow = (raw[..., 3] > 0.3) & ~covered
    assert shadow.sum() >= 5
    assert raw[shadow, :3].max() < 0.05
    # the Alpha Over darkens the footage by the shadow's alpha, in linear light
    expected = _linear(plate)[None] * (1.0 - raw[shadow, 3:4])
    assert np.abs(_linear(comp[shadow, :3]) - expected).max() < 0.02
    assert (comp[shadow, :3].mean(1) < plate.mean() - 0.03).all()

    # a holdout: where only it covered, the footage shows; its shadow stays
    hraw, hcomp = _read(f["holdout_raw"]), _read(f["holdout_comp"])
    only_points = (points[..., 3] > 0.5) & (mesh[..., 3] < 0.05)
    assert only_points.sum() > 5
    # (the translucent points let the ground behind them through: a little shadow alpha may remain)
    assert hraw[only_points, 3].mean() < 0.05
    assert (hraw[only_points, 3] < 0.5 * raw[only_points, 3]).all()
    assert np.abs(hcomp[only_points, :3] - plate).mean() < 0.02
    assert (hraw[shadow, 3] > 0.3).mean() > 0.8


def test_render_setup_without_footage_warns_and_builds_no_plate(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=1, gaussians=100, width=W, height=H,
                    preview=False)
    out = run_bpy(f"""
    from genmojo_blender.blender import floor_scale, importer, render_setup
    res = importer.import_bundle({str(b)!r})
    scene = bpy.context.scene
    rep = render_setup.setup_render_scene(scene, floor_scale.rig_of(res.collection))
    emit(warnings=rep.warnings, tree=scene.compositing_node_group is not None, created=rep.created)
    """)
    assert len(out["warnings"]) == 1 and "no footage" in out["warnings"][0]
    assert not out["tree"] and "shadow catcher shot_shadow_catcher" in out["created"]


def test_render_panel_offers_the_buttons_and_a_holdout_toggle_per_object(tmp_path):
    """Draw the Render sub-panel into a recording layout (the bpy module has no window to draw in)."""
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=2, gaussians=50, preview=False)
    out = run_bpy(f"""
    from types import SimpleNamespace
    enable()
    from genmojo_blender.blender import importer
    from genmojo_blender.ui import render_panel
    importer.import_bundle({str(b)!r})
    bpy.data.objects["shot_object_002"].is_holdout = True

    class Layout:
        def __init__(self, log):
            self.log = log
            self.operator_context = "EXEC_DEFAULT"
        def _sub(self, *a, **k):
            return Layout(self.log)
        column = row = box = _sub
        def prop(self, data, name, **k):
            self.log.append(("prop", f"{{data.name}}.{{name}}", k.get("icon")))
        def label(self, text="", **k):
            self.log.append(("label", text, None))
        def operator(self, idname, **k):
            self.log.append(("operator", idname, self.operator_context))
            return SimpleNamespace()

    log = []
    render_panel.GENMOJO_PT_render.draw(SimpleNamespace(layout=Layout(log)), bpy.context)
    emit(log=log, parent=render_panel.GENMOJO_PT_render.bl_parent_id,
         registered=hasattr(bpy.types, "GENMOJO_PT_render"))
    """)
    log = [tuple(x) for x in out["log"]]
    assert out["registered"] and out["parent"] == "GENMOJO_PT_result"
    ops = [(n, c) for kind, n, c in log if kind == "operator"]
    assert ops == [("genmojo.setup_render_scene", "EXEC_DEFAULT"), ("genmojo.set_floor", "EXEC_DEFAULT"),
                   ("genmojo.set_scale", "INVOKE_DEFAULT")]
    assert [(n, i) for kind, n, i in log if kind == "prop"] == [
        ("shot_object_001.is_holdout", "HOLDOUT_OFF"), ("shot_object_002.is_holdout", "HOLDOUT_ON")]


def test_a_reimport_keeps_the_set_up_and_running_it_again_picks_up_the_new_footage(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=1, gaussians=100, width=W, height=H,
                    preview=False)
    _plate(tmp_path / "JPEGImages")
    out = run_bpy(f"""
    from genmojo_blender.blender import floor_scale, importer, render_setup
    scene = bpy.context.scene
    res = importer.import_bundle({str(b)!r})
    render_setup.setup_render_scene(scene, floor_scale.rig_of(res.collection))
    res = importer.import_bundle({str(b)!r})  # replaces the import (and its movie clip)
    tree = scene.compositing_node_group
    stale = tree.nodes["Movie Clip"].clip
    kept = sorted(o.name for o in bpy.data.collections["GenMOJO shot render"].objects)
    rep = render_setup.setup_render_scene(scene, floor_scale.rig_of(res.collection))
    clip = scene.compositing_node_group.nodes["Movie Clip"].clip
    emit(stale=stale is None, kept=kept, created=rep.created, same_tree=scene.compositing_node_group == tree,
         clip=clip.name if clip else None, plate=res.camera.data.background_images[0].clip.name,
         suns=len([o for o in bpy.data.objects if o.type == "LIGHT"]))
    """)
    assert out["stale"]  # the old clip went with the old import
    assert out["kept"] == ["shot_shadow_catcher", "shot_sun"] and out["created"] == []
    assert out["same_tree"] and out["clip"] == out["plate"] and out["suns"] == 1
