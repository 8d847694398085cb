"""The bpy-free splat writers: 3DGS PLY read back with plyfile, glTF KHR_gaussian_splatting parsed
from the .glb, USD ParticleField3DGaussianSplat opened with OpenUSD, and the space transform."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from genmojo_blender.core import export_files, gltf_splats, splat_ply, splats, usd_splats
from genmojo_blender.core.camera import quaternion_to_rotation


def _frame(n: int, seed: int = 0) -> splats.SplatFrame:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return splats.SplatFrame(means=rng.normal(size=(n, 3)).astype(np.float32),
                             quats=q.astype(np.float32),
                             log_scales=(rng.normal(size=(n, 3)) * 0.3 - 3).astype(np.float32),
                             colors=rng.uniform(size=(n, 3)).astype(np.float32),
                             opacities=rng.uniform(0.01, 0.99, size=n).astype(np.float32))


def _covariances(f: splats.SplatFrame) -> np.ndarray:
    R = quaternion_to_rotation(f.quats)
    S2 = np.exp(2 * f.log_scales.astype(np.float64))
    return np.einsum("nij,nj,nkj->nik", R, S2, R)


# ---------------------------------------------------------------------------------------- PLY

@pytest.mark.parametrize("sh_degree", [0, 3])
def test_ply_reads_back_with_plyfile_in_the_3dgs_layout(tmp_path, sh_degree):
    from plyfile import PlyData

    f = _frame(40)
    path = tmp_path / "a.ply"
    path.write_bytes(splat_ply.ply_bytes(f, sh_degree=sh_degree, comment="GenMOJO\nframe 3"))
    ply = PlyData.read(str(path))
    assert ply.header.count("comment GenMOJO frame 3") == 1
    assert not ply.text and ply.byte_order == "<"
    v = ply["vertex"]
    rest = 45 if sh_degree == 3 else 0
    names = [p.name for p in v.properties]
    assert names == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(rest)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert all(p.val_dtype in ("f4", "<f4", "float32") for p in v.properties)
    assert v.count == 40
    col = lambda *ks: np.stack([np.asarray(v[k]) for k in ks], 1)
    # exact: the file holds the conversions bit for bit
    assert np.array_equal(col("x", "y", "z"), f.means)
    assert np.array_equal(col("scale_0", "scale_1", "scale_2"), f.log_scales)
    assert np.array_equal(col("rot_0", "rot_1", "rot_2", "rot_3"), f.quats)
    assert np.array_equal(col("f_dc_0", "f_dc_1", "f_dc_2"), splats.sh_dc(f.colors))
    assert np.array_equal(np.asarray(v["opacity"]), splats.logit(f.opacities))
    assert not col("nx", "ny", "nz").any()
    if rest:
        assert not col(*[f"f_rest_{i}" for i in range(rest)]).any()
    # and the conventions invert to the bundle's values
    assert np.allclose(0.5 + splats.SH_C0 * col("f_dc_0", "f_dc_1", "f_dc_2"), f.colors, atol=1e-6)
    assert np.allclose(1 / (1 + np.exp(-np.asarray(v["opacity"], np.float64))), f.opacities, atol=1e-6)


def test_ply_matches_the_backends_canonical_reader(tmp_path):
    """The backend's reader of canonical.ply (plyfile, the same layout) gets the Gaussians back."""
    from backend.io.bundle_writer import read_canonical_ply

    f = _frame(25, seed=3)
    path = tmp_path / "b.ply"
    path.write_bytes(splat_ply.ply_bytes(f))
    g = read_canonical_ply(path)
    assert np.array_equal(g.means, f.means) and np.array_equal(g.log_scales, f.log_scales)
    assert np.allclose(g.colors, f.colors, atol=1e-6) and np.allclose(g.opacities, f.opacities, atol=1e-6)


def test_logit_stays_finite_at_zero_and_one():
    assert np.isfinite(splats.logit(np.array([0.0, 1.0]))).all()


def test_sh_degree_out_of_range_is_refused():
    with pytest.raises(ValueError, match="SH degree"):
        splat_ply.rest_count(4)


# ---------------------------------------------------------------------------------- transform

def test_similarity_transform_keeps_the_axes_and_moves_the_covariance():
    f = _frame(30, seed=1)
    R = quaternion_to_rotation(np.array([0.9, 0.1, -0.3, 0.2]))[0]
    M = np.eye(4)
    M[:3, :3] = 2.5 * R
    M[:3, 3] = [1.0, -2.0, 0.5]
    g = splats.transform(f, M)
    assert np.allclose(g.means, f.means @ (2.5 * R).T + [1.0, -2.0, 0.5], atol=1e-5)
    assert np.allclose(g.log_scales, f.log_scales + np.log(2.5), atol=1e-6)  # same axis order
    A = M[:3, :3]
    assert np.allclose(_covariances(g), A @ _covariances(f) @ A.T, atol=1e-8)
    assert np.allclose(np.linalg.norm(g.quats, axis=1), 1, atol=1e-6)
    assert np.array_equal(g.colors, f.colors) and np.array_equal(g.opacities, f.opacities)


@pytest.mark.parametrize("A", [np.diag([1.0, -1.0, 1.0]),  # a mirror
                               np.array([[2.0, 0.3, 0.0], [0.0, 0.5, 0.0], [0.1, 0.0, 1.2]])])  # a shear
def test_reflections_and_non_uniform_maps_give_the_mapped_covariance(A):
    f = _frame(30, seed=2)
    M = np.eye(4)
    M[:3, :3] = A
    g = splats.transform(f, M)
    assert np.allclose(_covariances(g), A @ _covariances(f) @ A.T, rtol=1e-5, atol=1e-9)


def test_blender_axes_then_gltf_axes():
    """Bundle (OpenCV: y down, z forward) -> Blender (Z up) -> glTF (Y up): forward becomes -Z."""
    f = splats.SplatFrame(means=np.array([[0.0, -1.0, 2.0]], np.float32), quats=np.array([[1, 0, 0, 0]], np.float32),
                          log_scales=np.zeros((1, 3), np.float32), colors=np.zeros((1, 3), np.float32),
                          opacities=np.ones(1, np.float32))
    b = splats.transform(f, splats.BUNDLE_TO_BLENDER)
    assert np.allclose(b.means, [[0, 2, 1]])  # up in the image is +Z in Blender, forward is +Y
    g = splats.transform(b, splats.BLENDER_TO_GLTF)
    assert np.allclose(g.means, [[0, 1, -2]])


# --------------------------------------------------------------------------------------- glTF

def test_glb_follows_khr_gaussian_splatting(tmp_path):
    a, b = _frame(20, seed=4), _frame(13, seed=5)
    data = gltf_splats.glb_bytes([("shot_object_001", a), ("shot_object_002", b)], extras={"frame": 3})
    assert len(data) % 4 == 0
    doc, binary = gltf_splats.read_glb(data)
    assert doc["asset"]["version"] == "2.0" and doc["asset"]["extras"] == {"frame": 3}
    assert doc["extensionsUsed"] == ["KHR_gaussian_splatting"]
    assert "extensionsRequired" not in doc  # viewers without it fall back to points
    assert [n["name"] for n in doc["nodes"]] == ["shot_object_001", "shot_object_002"]
    assert doc["scenes"][doc["scene"]]["nodes"] == [0, 1]
    size = sum(v["byteLength"] for v in doc["bufferViews"])
    assert doc["buffers"] == [{"byteLength": size}] and len(binary) == size + (-size % 4)
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= doc["buffers"][0]["byteLength"]
    for node, f in zip(doc["nodes"], (a, b)):
        prim, = doc["meshes"][node["mesh"]]["primitives"]
        assert prim["mode"] == 0
        assert prim["extensions"]["KHR_gaussian_splatting"] == {
            "kernel": "ellipse", "colorSpace": "srgb_rec709_display", "projection": "perspective",
            "sortingMethod": "cameraDistance"}
        at = prim["attributes"]
        expected = {"POSITION": "VEC3", "COLOR_0": "VEC4", "KHR_gaussian_splatting:ROTATION": "VEC4",
                    "KHR_gaussian_splatting:SCALE": "VEC3", "KHR_gaussian_splatting:OPACITY": "SCALAR",
                    "KHR_gaussian_splatting:SH_DEGREE_0_COEF_0": "VEC3"}
        assert set(at) == set(expected)
        for sem, typ in expected.items():
            acc = doc["accessors"][at[sem]]
            assert acc["type"] == typ and acc["componentType"] == 5126 and acc["count"] == f.count
        pos = doc["accessors"][at["POSITION"]]
        arr = lambda sem: gltf_splats.accessor_array(doc, binary, at[sem])
        assert np.array_equal(arr("POSITION"), f.means)
        assert pos["min"] == [float(v) for v in f.means.min(0)] and pos["max"] == [float(v) for v in f.means.max(0)]
        rot = arr("KHR_gaussian_splatting:ROTATION")
        assert np.allclose(rot, f.quats[:, [1, 2, 3, 0]], atol=1e-7)  # x y z w
        assert np.allclose(arr("KHR_gaussian_splatting:SCALE"), np.exp(f.log_scales), rtol=1e-6)  # linear
        assert (arr("KHR_gaussian_splatting:SCALE") >= 0).all()
        op = arr("KHR_gaussian_splatting:OPACITY")[:, 0]
        assert np.allclose(op, f.opacities) and ((op >= 0) & (op <= 1)).all()
        assert np.allclose(0.5 + splats.SH_C0 * arr("KHR_gaussian_splatting:SH_DEGREE_0_COEF_0"), f.colors, atol=1e-6)
        color = arr("COLOR_0")
        assert np.allclose(color[:, 3], f.opacities)
        assert np.allclose(color[:, :3], splats.srgb_to_linear(f.colors))


# Khronos' glTF validator (npm package gltf-validator) is not a Python package: point
# GLTF_VALIDATOR_DIR at a folder where `npm install gltf-validator` ran to include it.
_VALIDATOR_DIR = os.environ.get("GLTF_VALIDATOR_DIR", "")
_VALIDATE_JS = """
const v = require(process.argv[1] + '/node_modules/gltf-validator');
const data = new Uint8Array(require('fs').readFileSync(process.argv[2]));
v.validateBytes(data).then(r => console.log(JSON.stringify(r.issues)));
"""


@pytest.mark.skipif(not (_VALIDATOR_DIR and shutil.which("node")),
                    reason="set GLTF_VALIDATOR_DIR to a folder with node_modules/gltf-validator")
def test_khronos_validator_finds_only_the_extension_semantics_it_predates(tmp_path):
    """gltf-validator 2.0.0-dev.3.10 does not know KHR_gaussian_splatting (an info) and so calls its
    attribute semantics invalid names; anything else (views, accessors, bounds, framing) is clean."""
    path = tmp_path / "v.glb"
    path.write_bytes(gltf_splats.glb_bytes([("a", _frame(20)), ("b", _frame(7, seed=1))]))
    cp = subprocess.run(["node", "-e", _VALIDATE_JS, _VALIDATOR_DIR, str(path)], capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    issues = json.loads(cp.stdout)
    assert issues["numWarnings"] == 0
    others = [m for m in issues["messages"]
              if not (m["code"] == "UNSUPPORTED_EXTENSION"
                      or (m["code"] == "MESH_PRIMITIVE_INVALID_ATTRIBUTE"
                          and m["pointer"].split("/")[-1].startswith("KHR_gaussian_splatting:")))]
    assert others == []
    assert issues["numErrors"] == 2 * 4  # ROTATION, SCALE, OPACITY, SH_DEGREE_0_COEF_0 per primitive


def test_glb_with_nothing_is_refused():
    with pytest.raises(ValueError, match="at least one object"):
        gltf_splats.glb_bytes([])


# ---------------------------------------------------------------------------------------- USD

def test_usda_opens_in_openusd_as_time_sampled_gaussian_splats(tmp_path):
    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom, UsdVol

    seqs = {"shot_object_001": [_frame(9, seed=s) for s in (6, 7)],
            "shot object 002": [_frame(4, seed=s) for s in (8, 9)]}
    path = tmp_path / "s.usda"
    path.write_text(usd_splats.usda_text("shot", list(seqs.items()), [1, 2], fps=12.0), encoding="utf-8")
    stage = Usd.Stage.Open(str(path))
    assert stage.GetDefaultPrim().GetPath() == "/shot"
    assert UsdGeom.GetStageUpAxis(stage) == "Z" and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert (stage.GetStartTimeCode(), stage.GetEndTimeCode(), stage.GetTimeCodesPerSecond()) == (1, 2, 12)
    prims = {p.GetName(): p for p in stage.GetDefaultPrim().GetChildren()}
    assert sorted(prims) == ["shot_object_001", "shot_object_002"]
    for prim, (name, seq) in zip((prims["shot_object_001"], prims["shot_object_002"]), seqs.items()):
        assert prim.IsA(UsdVol.ParticleField3DGaussianSplat)
        assert prim.GetAttribute("positions").GetTimeSamples() == [1.0, 2.0]
        assert prim.GetAttribute("radiance:sphericalHarmonicsDegree").Get() == 0
        for t, f in zip((1, 2), seq):
            get = lambda a: prim.GetAttribute(a).Get(t)
            assert np.array_equal(np.array(get("positions"), np.float32), f.means)
            quats = np.array([[q.GetReal(), *q.GetImaginary()] for q in get("orientations")])
            assert np.allclose(quats, f.quats, atol=1e-7)  # w x y z
            assert np.allclose(np.array(get("scales")), np.exp(f.log_scales), rtol=1e-6)
            assert np.allclose(np.array(get("opacities")), f.opacities)
            dc = np.array(get("radiance:sphericalHarmonicsCoefficients"))
            assert dc.shape == (f.count, 3) and np.allclose(0.5 + splats.SH_C0 * dc, f.colors, atol=1e-6)
            color = UsdGeom.PrimvarsAPI(prim).GetPrimvar("displayColor")
            assert color.GetInterpolation() == "vertex"
            assert np.allclose(np.array(color.Get(t)), splats.srgb_to_linear(f.colors), atol=1e-6)
            assert np.allclose(np.array(get("extent")), [f.means.min(0), f.means.max(0)])


def test_usda_hides_an_object_at_its_hidden_frames(tmp_path):
    """A hidden object is invisible there (the visibility time samples every USD reader honours) and
    has zero opacities there; the other object, always visible, gets no visibility opinion."""
    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom

    frames = [1, 2, 3, 4]
    seqs = [("a", [_frame(5, seed=s) for s in range(4)]), ("b", [_frame(3, seed=s) for s in range(4, 8)])]
    shown = [[True, False, False, True], [True] * 4]
    path = tmp_path / "v.usda"
    path.write_text(usd_splats.usda_text("shot", seqs, frames, fps=24.0, visible=shown), encoding="utf-8")
    stage = Usd.Stage.Open(str(path))
    a, b = (UsdGeom.Imageable(stage.GetPrimAtPath(f"/shot/{n}")) for n in "ab")
    assert [a.ComputeVisibility(t) for t in frames] == ["inherited", "invisible", "invisible", "inherited"]
    assert a.GetVisibilityAttr().GetTimeSamples() == [1.0, 2.0, 4.0]  # held between changes
    assert not b.GetVisibilityAttr().HasAuthoredValue() and b.ComputeVisibility(2) == "inherited"
    for t, (f, v) in enumerate(zip(seqs[0][1], shown[0]), start=1):
        opac = np.array(a.GetPrim().GetAttribute("opacities").Get(t))
        display = np.array(UsdGeom.PrimvarsAPI(a.GetPrim()).GetPrimvar("displayOpacity").Get(t))
        assert np.allclose(opac, f.opacities if v else 0.0) and np.allclose(display, opac)
        assert np.array_equal(np.array(a.GetPrim().GetAttribute("positions").Get(t), np.float32), f.means)
    assert usd_splats.visibility_samples([5, 6, 7], [False, False, True]) == [(5, "invisible"), (7, "inherited")]
    with pytest.raises(ValueError, match="one flag per frame"):
        usd_splats.usda_text("r", seqs, frames, fps=24, visible=[[True] * 3, [True] * 4])


def test_usda_refuses_a_frame_count_mismatch():
    with pytest.raises(ValueError, match="2 time codes"):
        usd_splats.usda_text("r", [("a", [_frame(3)])], [1, 2], fps=24)


# -------------------------------------------------------------------------------------- files

def test_existing_files_are_never_replaced_without_overwrite(tmp_path):
    a, b = tmp_path / "a.ply", tmp_path / "b.ply"
    a.write_bytes(b"mine")
    with pytest.raises(export_files.ExportError, match="a.ply already exists.*Overwrite"):
        export_files.check_targets([a, b], overwrite=False)
    export_files.check_targets([a, b], overwrite=True)
    export_files.write_atomic(a, b"new")
    assert a.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.ply"]
    with pytest.raises(export_files.ExportError, match="folder"):
        export_files.check_targets([tmp_path], overwrite=True)
    with pytest.raises(export_files.ExportError, match="both be called"):
        export_files.check_targets([b, b], overwrite=True)
