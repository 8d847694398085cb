"""Mask datablocks from the Movie Clip editor rasterised into the backend's mask folders."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from test_blender_import import run_bpy, write_plate

pytestmark = pytest.mark.blender


def test_mask_layers_become_object_folders_named_like_the_frames(tmp_path):
    W, H, T = 64, 48, 3
    write_plate(tmp_path / "clip", T, W, H)
    out = run_bpy(f"""
    enable()
    from genmojo_blender.blender import masks
    m = bpy.data.masks.new("shot")
    def square(layer, x0, y0, x1, y1, invert=False):
        sp = layer.splines.new()
        sp.points.add(4 - len(sp.points))
        for p, co in zip(sp.points, ((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            p.co = co
            p.handle_left_type = p.handle_right_type = "VECTOR"
            p.handle_left = co
            p.handle_right = co
        sp.use_cyclic = True
        layer.invert = invert
    square(m.layers.new(name="car"), 0.25, 0.5, 0.5, 0.75)      # mask space: longer side spans 0..1
    square(m.layers.new(name="person"), 0.6, 0.4, 0.9, 0.6)
    w, h, frames = masks.clip_frames({str(tmp_path / 'clip')!r})
    folders = masks.rasterize_mask(m, {str(tmp_path / 'masks')!r}, w, h, frames)
    emit(size=[w, h], frames=frames, folders=[f.split("/")[-1] for f in folders],
         clips=len(bpy.data.movieclips))
    """)
    assert out["size"] == [W, H] and out["frames"] == [[1, "00000"], [2, "00001"], [3, "00002"]]
    assert out["folders"] == ["001", "002"] and out["clips"] == 0
    car = cv2.imread(str(tmp_path / "masks" / "001" / "00001.png"), cv2.IMREAD_UNCHANGED)
    assert car.shape == (H, W)
    ys, xs = np.nonzero(car)
    # x: 0.25..0.5 of 64 px; y: mask 0.5..0.75 -> 24 - (0..0.25)*64 -> rows 8..24
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (16, 31, 8, 23)
    assert set(np.unique(car)) == {0, 255}
    person = cv2.imread(str(tmp_path / "masks" / "002" / "00002.png"), cv2.IMREAD_UNCHANGED)
    assert person.sum() > 0 and not (person & car).any()


def test_a_second_export_replaces_the_first_whole_and_refuses_edited_masks(tmp_path):
    W, H, T = 32, 24, 2
    write_plate(tmp_path / "clip", T, W, H)
    out = run_bpy(f"""
    enable()
    import os
    from genmojo_blender.blender import masks
    from genmojo_blender.core.mask_export import MaskFolderError
    m = bpy.data.masks.new("shot")
    for name in ("car", "person"):
        sp = m.layers.new(name=name).splines.new()
        sp.points.add(4 - len(sp.points))
        for p, co in zip(sp.points, ((0.2, 0.3), (0.6, 0.3), (0.6, 0.6), (0.2, 0.6))):
            p.co = p.handle_left = p.handle_right = co
        sp.use_cyclic = True
    w, h, frames = masks.clip_frames({str(tmp_path / 'clip')!r})
    folder = {str(tmp_path / 'masks')!r}
    masks.rasterize_mask(m, folder, w, h, frames)
    m.layers.remove(m.layers["person"])
    masks.rasterize_mask(m, folder, w, h, frames)
    second = sorted(os.listdir(folder))
    with open(os.path.join(folder, "001", "00000.png"), "ab") as fh:
        fh.write(b"edited")
    try:
        masks.rasterize_mask(m, folder, w, h, frames)
        refused = ""
    except MaskFolderError as e:
        refused = str(e)
    emit(second=second, refused=refused)
    """)
    assert out["second"] == [".genmojo-masks.json", "001"]  # the removed layer's folder is gone
    assert "001/00000.png was edited" in out["refused"]
