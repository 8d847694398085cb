"""Clip and mask validation: good input loads, bad input fails early with the file and the fix."""

import cv2
import numpy as np
import pytest

from backend.errors import InputError
from backend.io.clip import load_clip
from backend.model.tracks import track_objects


def _load(clip, **kw):
    return load_clip(clip / "JPEGImages", clip / "Annotations", **kw)


def test_sample_clip_loads_with_objects_and_background(sample_clip):
    c = _load(sample_clip)
    assert c.frames.shape == (8, 64, 64, 3) and c.frames.dtype == np.uint8
    assert c.masks.shape == (3, 8, 64, 64) and c.masks.dtype == bool
    assert c.object_ids == ["001", "002", "003"] and c.background is not None
    assert c.frame_names[0] == "00000.png" and c.frame_numbers == list(range(8))
    assert not (c.masks.sum(0) > 1).any()  # modal masks never overlap
    assert c.warnings == []


def test_frames_sorted_by_number_with_gaps(sample_clip):
    for sub in ["JPEGImages", *[f"Annotations/{d}" for d in ("000", "001", "002", "003")]]:
        folder = sample_clip / sub
        for p in sorted(folder.iterdir(), reverse=True):
            n = int(p.stem)
            p.rename(folder / f"frame_{n * 10}.png")
    c = _load(sample_clip)
    assert c.frame_numbers == [0, 10, 20, 30, 40, 50, 60, 70]
    assert c.frame_names[1] == "frame_10.png"


def test_video_input_matches_masks_by_order(sample_clip, tmp_path):
    frames = sorted((sample_clip / "JPEGImages").iterdir())
    video = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (64, 64))
    for p in frames:
        w.write(cv2.imread(str(p)))
    w.release()
    c = load_clip(video, sample_clip / "Annotations")
    assert c.num_frames == 8 and c.fps == pytest.approx(12.0) and c.frame_names[0] == "00000"


def test_large_frames_are_downscaled_with_a_note(sample_clip):
    c = _load(sample_clip, max_side=32)
    assert c.frames.shape[1:3] == (32, 32) and c.masks.shape[2:] == (32, 32)
    assert (c.width, c.height) == (64, 64)
    assert any("fitted at 32x32" in w for w in c.warnings)


def test_rgb_16bit_and_soft_masks_are_accepted_and_reported(sample_clip):
    folder = sample_clip / "Annotations" / "001"
    files = sorted(folder.iterdir())
    m = cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(files[0]), np.dstack([m, m, m]))
    cv2.imwrite(str(files[1]), cv2.imread(str(files[1]), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 257)
    soft = cv2.GaussianBlur(cv2.imread(str(files[2]), cv2.IMREAD_GRAYSCALE), (7, 7), 2)
    cv2.imwrite(str(files[2]), soft)
    ref = _load(sample_clip)
    assert ref.masks[0, 0].sum() == (m > 127).sum()
    notes = " ".join(ref.warnings)
    assert "RGB masks" in notes and "16-bit" in notes and "soft" in notes


def _expect(clip, match, **kw):
    with pytest.raises(InputError, match=match) as e:
        _load(clip, **kw)
    assert e.value.hint  # every input error says what to do
    return e.value


def test_missing_mask_names_the_folder_and_frame(sample_clip):
    (sample_clip / "Annotations/002/00005.png").unlink()
    err = _expect(sample_clip, r"Annotations/002: no mask for frame\(s\) 00005.png")
    assert "named like the frames" in err.hint


def test_mask_size_mismatch(sample_clip):
    p = sample_clip / "Annotations/001/00003.png"
    cv2.imwrite(str(p), np.zeros((10, 12), np.uint8))
    _expect(sample_clip, r"00003.png: mask size 12x10 differs")


def test_unnumbered_frame_name(sample_clip):
    (sample_clip / "JPEGImages/00004.png").rename(sample_clip / "JPEGImages/cover.png")
    _expect(sample_clip, r"cover.png: the file name does not end in a frame number")


def test_unreadable_frame(sample_clip):
    (sample_clip / "JPEGImages/00006.png").write_bytes(b"\x89PNG broken")
    _expect(sample_clip, r"00006.png: cannot be read as an image")


def test_frame_size_mismatch(sample_clip):
    cv2.imwrite(str(sample_clip / "JPEGImages/00002.png"), np.zeros((20, 20, 3), np.uint8))
    _expect(sample_clip, r"00002.png: size 20x20 differs from the first frame's 64x64")


def test_object_empty_everywhere(sample_clip):
    for p in (sample_clip / "Annotations/003").iterdir():
        cv2.imwrite(str(p), np.zeros((64, 64), np.uint8))
    _expect(sample_clip, r"Annotations/003: the object's mask is empty in every frame")


def test_bad_mask_folder_name_and_no_objects(sample_clip):
    (sample_clip / "Annotations/001").rename(sample_clip / "Annotations/person")
    _expect(sample_clip, r"person are not object ids")
    for d in ("person", "002", "003"):
        for p in (sample_clip / "Annotations" / d).iterdir():
            p.unlink()
        (sample_clip / "Annotations" / d).rmdir()
    _expect(sample_clip, r"no object mask folders")


def test_too_few_frames(sample_clip):
    _expect(sample_clip, r"8 frame\(s\); at least 9 are needed", min_frames=9)


def test_object_absent_from_frame_zero_gets_a_later_reference_frame(sample_clip):
    for i in range(3):
        cv2.imwrite(str(sample_clip / f"Annotations/002/{i:05d}.png"), np.zeros((64, 64), np.uint8))
    c = _load(sample_clip)
    tracks = track_objects(c.object_ids, c.masks)
    tr = tracks[1]
    assert not tr.visible[:3].any() and tr.reference >= 3
    # hidden frames hold the first seen position instead of jumping to (0, 0)
    np.testing.assert_allclose(tr.centroid[0], tr.centroid[3])
