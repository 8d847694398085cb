"""Result bundle: round trip, atomic publication, and the reader's refusal of malformed bundles."""

import json
import shutil

import numpy as np
import pytest

from backend.io.bundle_writer import BundleExistsError, read_canonical_ply
from bundle_factory import make_bundle
from genmojo_blender.core.bundle import BundleError, open_bundle


def test_round_trip_preserves_every_array(tmp_path):
    path = make_bundle(tmp_path, frames=5, objects=2, gaussians=40)
    b = open_bundle(path)
    m = b.manifest
    assert m.clip.frame_count == 5 and [o.id for o in m.objects] == ["001", "002"]
    assert m.previews == {"input_view": "preview/input_view.mp4"}
    f0 = b.load_frames(m.objects[0])
    assert f0.means.shape == (5, 40, 3) and f0.quats.shape == (5, 40, 4) and f0.opacities.shape == (5, 40)
    # factory objects move +0.1 in x per frame
    np.testing.assert_allclose(f0.means[3] - f0.means[0], np.tile([0.3, 0, 0], (40, 1)), atol=1e-6)
    cam = b.load_camera()
    assert cam.K.shape == (5, 3, 3) and np.allclose(cam.c2w, np.eye(4))
    # the canonical PLY carries the standard 3DGS fields and decodes to the same Gaussians
    canon = read_canonical_ply(b.path(m.objects[1].canonical_ply))
    f1 = b.load_frames(m.objects[1])
    np.testing.assert_allclose(canon.means, f1.means[0], atol=1e-6)
    np.testing.assert_allclose(canon.colors, f1.colors[0], atol=1e-5)
    np.testing.assert_allclose(canon.opacities, f1.opacities[0], atol=1e-5)
    assert json.loads((path / "manifest.json").read_text())["schema_version"] == 1


def test_existing_result_is_never_overwritten_without_permission(tmp_path):
    path = make_bundle(tmp_path, seed=1)
    before = (path / "objects/001/frames.npz").read_bytes()
    with pytest.raises(BundleExistsError):
        make_bundle(tmp_path, seed=2)
    assert (path / "objects/001/frames.npz").read_bytes() == before
    make_bundle(tmp_path, seed=2, overwrite=True)
    assert (path / "objects/001/frames.npz").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]  # no temp or old folders left


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import backend.io.bundle_writer as bw

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(bw, "write_preview", boom)
    with pytest.raises(OSError, match="disk full"):
        make_bundle(tmp_path)
    assert list(tmp_path.iterdir()) == []


def _edit_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(schema_version=2), "schema version 2"),
    (lambda m: m.update(format="something-else"), "not a GenMOJO bundle"),
    (lambda m: m["objects"][0].update(frames="../outside.npz"), "must not leave the bundle"),
    (lambda m: m["objects"][0].update(frames="/etc/passwd"), "must be relative"),
    (lambda m: m["objects"][0].update(visible=[True]), "one per frame"),
    (lambda m: m["objects"][0].update(id="1"), "three digits"),
    (lambda m: m["clip"].update(fps="fast"), "expected float"),
    (lambda m: m.pop("camera"), "missing key 'camera'"),
    (lambda m: m["objects"][1].update(id="001"), "duplicate object id"),
])
def test_reader_rejects_malformed_manifests(tmp_path, edit, message):
    path = make_bundle(tmp_path)
    _edit_manifest(path, edit)
    with pytest.raises(BundleError, match=message):
        open_bundle(path)


def test_reader_checks_array_shapes_and_values(tmp_path):
    path = make_bundle(tmp_path, frames=4, gaussians=30)
    b = open_bundle(path)
    z = dict(np.load(path / "objects/001/frames.npz"))
    z["means"] = z["means"][:3]
    np.savez(path / "objects/001/frames.npz", **z)
    with pytest.raises(BundleError, match="means has shape"):
        b.load_frames(b.manifest.objects[0])
    z = dict(np.load(path / "objects/002/frames.npz"))
    z["colors"][0, 0, 0] = np.nan
    np.savez(path / "objects/002/frames.npz", **z)
    with pytest.raises(BundleError, match="NaN"):
        b.load_frames(b.manifest.objects[1])
    (path / "camera.npz").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="unreadable npz"):
        b.load_camera()


def test_missing_member_file_is_reported(tmp_path):
    path = make_bundle(tmp_path)
    shutil.rmtree(path / "preview")
    with pytest.raises(BundleError, match="missing from the bundle"):
        open_bundle(path)
