"""Mask export never overwrites the user's masks and never leaves a previous export's folders behind."""

import hashlib

import cv2
import numpy as np
import pytest

from genmojo_blender.core import mask_export as me

H, W = 6, 8
FRAMES = [(1, "00000"), (2, "00001"), (3, "00002")]


def squares(k: int):
    """masks_at for k objects: object i fills column block i, shifted by the frame number."""
    def masks_at(frame):
        out = []
        for i in range(k):
            img = np.zeros((H, W), bool)
            img[:, (i + frame) % W] = True
            out.append(img)
        return out
    return masks_at


def tree(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_writes_object_folders_and_its_record(tmp_path):
    out = tmp_path / "shot_masks"
    folders = me.write_mask_folders(out, FRAMES, 2, squares(2))
    assert [f.split("/")[-1] for f in folders] == ["001", "002"]
    assert sorted(tree(out)) == [me.EXPORT_MARKER] + [f"{o}/{s}.png" for o in ("001", "002") for _, s in FRAMES]
    img = cv2.imread(str(out / "002" / "00001.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (H, W) and (np.nonzero(img[0])[0] == [(1 + 2) % W]).all()
    assert [p.name for p in tmp_path.iterdir()] == ["shot_masks"]  # no staging folder left


def test_a_new_export_replaces_an_unmodified_one_whole(tmp_path):
    out = tmp_path / "shot_masks"
    me.write_mask_folders(out, FRAMES, 3, squares(3))
    me.write_mask_folders(out, FRAMES[:2], 1, squares(1))  # a layer removed, fewer frames
    assert sorted(tree(out)) == [me.EXPORT_MARKER, "001/00000.png", "001/00001.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["shot_masks"]


@pytest.mark.parametrize("change", ["own-folder", "added", "edited", "bad-marker", "a-file"])
def test_anything_but_an_unmodified_export_is_refused_and_kept(tmp_path, change):
    out = tmp_path / "shot_masks"
    if change == "own-folder":  # the user's own masks, in the layout the backend reads
        (out / "001").mkdir(parents=True)
        (out / "001" / "00000.png").write_bytes(b"user's mask")
    elif change == "a-file":
        out.write_bytes(b"not a folder")
    else:
        me.write_mask_folders(out, FRAMES, 2, squares(2))
        if change == "added":
            (out / "003").mkdir()
            (out / "003" / "00000.png").write_bytes(b"hand-made")
        elif change == "edited":
            (out / "002" / "00001.png").write_bytes(b"touched up")
        else:
            (out / me.EXPORT_MARKER).write_text("{not json")
    before = tree(out) if out.is_dir() else out.read_bytes()
    with pytest.raises(me.MaskFolderError) as e:
        me.write_mask_folders(out, FRAMES, 1, squares(1))
    assert str(out) in str(e.value)
    assert {"added": "003/00000.png", "edited": "002/00001.png"}.get(change, "") in str(e.value)
    assert (tree(out) if out.is_dir() else out.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shot_masks"]


def test_a_failure_while_rasterising_keeps_the_previous_export(tmp_path):
    out = tmp_path / "shot_masks"
    me.write_mask_folders(out, FRAMES, 2, squares(2))
    before = tree(out)

    def broken(frame):
        if frame == 2:
            raise RuntimeError("frame_set failed")
        return squares(2)(frame)

    with pytest.raises(RuntimeError):
        me.write_mask_folders(out, FRAMES, 2, broken)
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["shot_masks"]
