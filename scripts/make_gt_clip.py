"""Ground-truth clips rendered with Blender (bpy + Cycles on the CPU): multi-object scenes with real
occlusion, a moving camera, depth, 3D surface tracks and held-out views, to measure the backend against.

Why it exists
    ``make_synthetic_clip.py`` draws flat cards under a static camera: enough for the pipeline's tests,
    but it has no depth maps, no camera motion, no 3D and no view the fit did not see. This generator
    builds a small 3D world in Blender, renders it with Cycles and records everything a reconstruction
    can be scored on: the cameras and depth (as a MegaSAM-format npz the backend reads with
    ``--cam_path``), points on each object's surface carried by its motion (true 3D tracks, with
    per-frame visibility), each object's amodal depth (where objects overlap, which one is in front),
    and renders from extra cameras that the fit never sees. ``python -m backend.evaluate_gt`` scores a
    result bundle against it.

The scene (Blender world: Z up, units are scene units, roughly metres)
    * A textured ground plane (z = 0) and a textured back wall, so that every pixel has a finite depth.
    * A camera that swings around the scene centre (seeded azimuth sweep, slight dolly and rise) and
      always looks at it, with a pinhole of the given vertical field of view.
    * K objects (1..4), each with its own procedural texture carried by the surface (a ``rest``
      attribute holds the undeformed position, so textures never swim):
        0  a tumbling checkered cube                      rigid
        1  a striped tube bent by a 3-bone armature       non-rigid (armature)
        2  a spotted blob that squashes and bulges        non-rigid (shape keys)
        3  a spinning torus with bricks                   rigid
      Each object moves along a straight path in image space at its own depth layer, so paths cross
      and nearer objects pass in front of farther ones. ``--occlusion`` (0..1) is how closely the
      paths line up vertically where they cross: 1 = centres pass through each other, 0 = objects
      just touch. The layout is drawn from ``--seed`` and re-drawn (deterministically) until every
      object is at least 60 % visible in frame 0 and never fully hidden, at most 30 % of an object's
      surface points lie outside the frame, every object stays above the ground (which
      is lowered where paths come near it), and (with two or
      more objects and occlusion > 0) some object is at least 20 % hidden by another in
      min(3, frames // 4) frames or more.

How the ground truth is made
    Images: Cycles (CPU, ``--samples`` per pixel, OpenImageDenoise, 'Standard' view transform),
    8-bit PNG. Everything else comes from ray casting the evaluated (deformed) meshes with
    ``mathutils.bvhtree`` through the same pinhole: depth is the camera z of the first hit through the
    pixel centre; the modal (visible) label of a pixel is the majority over ``--mask_ss``² sub-pixel
    rays (ties go to the nearer surface), so object masks never overlap and ``000`` is exactly the
    pixels no object claims. Surface points are sampled once, area-weighted, on the triangles of each
    object's frame-0 mesh; at every frame the same triangle and barycentric weights give the point on
    the deformed mesh (topology never changes), so they are true tracks. A point is visible at a frame
    when it projects inside the image in front of the camera and the ray from the camera to it hits
    nothing closer (tolerance 0.2 % of the distance); otherwise the first thing the ray hits is
    recorded as its occluder (itself for back faces).

Output layout (the backend's input layout, plus ``ground_truth/``)::

    OUT/JPEGImages/00000.png ...             RGB frames
    OUT/Annotations/000/00000.png ...        background mask (255 where no object is visible)
    OUT/Annotations/001/00000.png ...        modal mask of each object, 0/255
    OUT/InpaintedBackgrounds/00000.png       the frame-0 view rendered without the objects
    OUT/MegaSAM_Outputs/ground_truth.npz     images (T,H,W,3) uint8, depths (T,H,W) float32 camera z,
                                             intrinsic (3,3) float32, cam_c2w (T,4,4) float32,
                                             camera-to-world with OpenCV camera axes (x right, y down,
                                             z forward), in the Blender world
    OUT/ground_truth/scene.json              what was generated (objects, kinds, parameters, occlusion
                                             per frame, file list); ``format`` = "genmojo-gt-clip"
    OUT/ground_truth/tracks.npz              points (T,M,3) float32 world; uv (T,M,2) float32 pixels
                                             (pixel centres at +0.5); depth (T,M) float32 camera z;
                                             in_frame, visible (T,M) bool; occluder (T,M) int8 (label of
                                             the first hit: 0 background, k object k, -1 out of frame
                                             or visible); object_index (M,) int64 (0 = object 001)
    OUT/ground_truth/amodal_depth.npz        depth (T,K,H,W) float16: camera z of each object alone
                                             through each pixel centre, 0 where it is absent
    OUT/ground_truth/novel.npz               held-out cameras: K (C,3,3), c2w (C,4,4) OpenCV axes,
                                             frames (F,) int64, labels (C,F,H,W) uint8 modal labels
                                             (0 background, k object k), depths (C,F,H,W) float32
    OUT/ground_truth/novel/cC/00000.png      the held-out views' images: camera C at frame 00000

Usage::

    python scripts/make_gt_clip.py OUT [--preset tiny|medium] [--width W] [--height H] [--frames T]
        [--objects K] [--seed S] [--occlusion 0.8] [--samples N] [--points M] [--novel_cameras C]
        [--novel_every E] [--mask_ss S] [--threads N]

``tiny`` (64x64, 8 frames, 3 objects, 16 samples) feeds the CPU tests; ``medium`` (256x256, 24
frames, 3 objects, 64 samples) is the benchmark. Needs bpy (Blender as a Python module), numpy and
OpenCV; the same arguments give the same geometry, masks and tracks (the images are Cycles' output
with a fixed seed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

FORMAT = "genmojo-gt-clip"
FORMAT_VERSION = 1
FPS = 12
MAX_OBJECTS = 4
MIN_SIZE = 32
MAX_ATTEMPTS = 50

PRESETS = {
    "tiny": dict(width=64, height=64, frames=8, objects=3, samples=16, points=256, novel_cameras=2,
                 novel_every=1),
    "medium": dict(width=256, height=256, frames=24, objects=3, samples=64, points=1024, novel_cameras=2,
                   novel_every=2),
}
DEFAULTS = dict(seed=0, occlusion=0.8, mask_ss=2, threads=0, fovy_deg=45.0)

OCCLUSION_THRESHOLD = 0.2  # a frame counts as an occlusion frame when some object is >= 20 % hidden
MAX_OCCLUDED = 0.9  # no object is ever hidden more than this
MIN_VISIBLE_FRAME0 = 0.6  # every object shows at least this fraction of its amodal area in frame 0
MAX_TRUNCATED = 0.3  # at most this fraction of an object's surface points may lie outside the frame
VISIBILITY_TOLERANCE = 2e-3  # a point is visible when nothing is hit closer than (1 - this) x its distance

TARGET = np.array([0.0, 0.0, 2.0])  # the point the camera looks at
CAMERA_DISTANCE = 7.0
WALL_Y = 12.0

KINDS = (  # (shape, deformation, texture, colour name, RGB, second RGB)
    ("cube", "rigid", "checker", "red", (0.85, 0.10, 0.08), (0.95, 0.85, 0.75)),
    ("tube", "armature", "stripes", "green", (0.10, 0.65, 0.15), (0.02, 0.15, 0.05)),
    ("blob", "shape keys", "spots", "blue", (0.12, 0.28, 0.90), (0.95, 0.95, 0.30)),
    ("torus", "rigid", "bricks", "orange", (0.95, 0.55, 0.05), (0.35, 0.10, 0.02)),
)
OPENCV_FROM_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])


class GenerationError(RuntimeError):
    """The requested clip cannot be made (no acceptable layout, or a renderer problem)."""


@dataclass(frozen=True)
class Settings:
    """Everything that determines a clip; written into scene.json."""

    width: int
    height: int
    frames: int
    objects: int
    seed: int
    occlusion: float
    samples: int
    points: int
    novel_cameras: int
    novel_every: int
    mask_ss: int
    threads: int
    fovy_deg: float
    preset: str | None = None


# --------------------------------------------------------------------------------------------------
# Meshes (numpy, then bpy). Every mesh is centred on its origin and fits in a ball of radius 1.


def _grid_faces(nu: int, nv: int, wrap_u: bool, wrap_v: bool, offset: int = 0) -> list[tuple[int, ...]]:
    """Quads of an nu x nv vertex grid (u major), optionally wrapping around in u and/or v."""
    faces = []
    for i in range(nu if wrap_u else nu - 1):
        for j in range(nv if wrap_v else nv - 1):
            a, b = i * nv + j, ((i + 1) % nu) * nv + j
            c, d = ((i + 1) % nu) * nv + (j + 1) % nv, i * nv + (j + 1) % nv
            faces.append((offset + a, offset + b, offset + c, offset + d))
    return faces


def _cube(n: int = 6) -> tuple[np.ndarray, list]:
    s = np.linspace(-1.0, 1.0, n + 1)
    verts, faces = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            a, b = np.meshgrid(s, s, indexing="ij")
            p = np.zeros(a.shape + (3,))
            p[..., axis] = sign
            p[..., (axis + 1) % 3] = a * sign
            p[..., (axis + 2) % 3] = b
            faces += _grid_faces(n + 1, n + 1, False, False, offset=len(verts) * (n + 1) ** 2)
            verts.append(p.reshape(-1, 3))
    return np.concatenate(verts) / math.sqrt(3.0), faces


def _tube(around: int = 20, rings: int = 16, radius: float = 0.32) -> tuple[np.ndarray, list]:
    a = np.linspace(0, 2 * math.pi, around, endpoint=False)
    z = np.linspace(-0.92, 0.92, rings)
    zz, aa = np.meshgrid(z, a, indexing="ij")  # ring major
    side = np.stack([radius * np.cos(aa), radius * np.sin(aa), zz], -1).reshape(-1, 3)
    faces = _grid_faces(rings, around, False, True)
    n = len(side)
    verts = np.concatenate([side, [[0, 0, z[0]], [0, 0, z[-1]]]])
    for j in range(around):  # caps
        faces.append((n, (j + 1) % around, j))
        top = (rings - 1) * around
        faces.append((n + 1, top + j, top + (j + 1) % around))
    return verts, faces


def _sphere(lat: int = 14, lon: int = 28, radius: float = 0.85) -> tuple[np.ndarray, list]:
    th = np.linspace(0, math.pi, lat + 2)[1:-1]
    ph = np.linspace(0, 2 * math.pi, lon, endpoint=False)
    tt, pp = np.meshgrid(th, ph, indexing="ij")
    ring = np.stack([np.sin(tt) * np.cos(pp), np.sin(tt) * np.sin(pp), np.cos(tt)], -1).reshape(-1, 3)
    faces = _grid_faces(lat, lon, False, True)
    n = len(ring)
    verts = np.concatenate([ring, [[0, 0, 1.0], [0, 0, -1.0]]]) * radius
    for j in range(lon):
        faces.append((n, j, (j + 1) % lon))
        bot = (lat - 1) * lon
        faces.append((n + 1, bot + (j + 1) % lon, bot + j))
    return verts, faces


def _torus(major: int = 32, minor: int = 12, r_major: float = 0.7, r_minor: float = 0.28) -> tuple[np.ndarray, list]:
    u = np.linspace(0, 2 * math.pi, major, endpoint=False)
    v = np.linspace(0, 2 * math.pi, minor, endpoint=False)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    r = r_major + r_minor * np.cos(vv)
    verts = np.stack([r * np.cos(uu), r * np.sin(uu), r_minor * np.sin(vv)], -1).reshape(-1, 3)
    return verts, _grid_faces(major, minor, True, True)


SHAPES = {"cube": _cube, "tube": _tube, "blob": _sphere, "torus": _torus}


# --------------------------------------------------------------------------------------------------
# Layout: per object an image-space path at a depth layer, per clip a camera swing.


@dataclass(frozen=True)
class ObjectPath:
    kind: int  # index into KINDS
    radius: float  # bounding radius, scene units
    depth: float  # camera z at mid-clip
    depth_drift: float  # relative change of depth over the clip
    u_speed: float  # image-space x velocity, in half-widths per clip
    t_cross: float  # normalised time at which it passes the image centre column
    v0: float  # image-space y, in half-heights (positive is down)
    bob: float  # vertical bob amplitude, half-heights
    phase: float
    spin_axis: tuple[float, float, float]
    spin: float  # radians over the clip (rigid objects and the tube's yaw)
    wiggle: float  # deformation amplitude (armature: radians; shape keys: key value)


@dataclass(frozen=True)
class CameraPath:
    azimuth0: float  # radians, 0 = looking along +y
    sweep: float  # azimuth change over the clip, radians
    elevation0: float
    rise: float
    dolly: float  # relative change of distance over the clip


def _draw_layout(rng: np.random.Generator, s: Settings) -> tuple[CameraPath, list[ObjectPath]]:
    cam = CameraPath(azimuth0=rng.uniform(-0.15, 0.15), sweep=math.radians(rng.uniform(12, 22)) * rng.choice([-1, 1]),
                     elevation0=math.radians(rng.uniform(4, 8)), rise=math.radians(rng.uniform(2, 4)),
                     dolly=rng.uniform(-0.12, 0.12))
    f = (s.height / 2) / math.tan(math.radians(s.fovy_deg) / 2)
    ranks = rng.permutation(s.objects)
    centre = 0.5 + rng.uniform(-0.05, 0.05)
    spread = 0.28 if s.objects > 1 else 0.0
    rows, offsets = _rows(s.objects, s.occlusion)
    out = []
    for k in range(s.objects):
        depth = CAMERA_DISTANCE * (0.72 + 0.26 * ranks[k])
        r_px = min(s.width, s.height) * rng.uniform(0.15, 0.19)
        direction = 1.0 if k % 2 == 0 else -1.0
        t_cross = centre + spread * (k - (s.objects - 1) / 2) / max(s.objects - 1, 1) + rng.uniform(-0.04, 0.04)
        axis = rng.normal(size=3)
        out.append(ObjectPath(
            kind=k, radius=r_px * depth / f, depth=depth, depth_drift=rng.uniform(-0.08, 0.08),
            u_speed=direction * rng.uniform(1.0, 1.25) * s.height / s.width, t_cross=t_cross,
            v0=rows[k] + offsets[k] + rng.uniform(-0.03, 0.03), bob=rng.uniform(0.02, 0.05),
            phase=rng.uniform(0, 2 * math.pi), spin_axis=tuple(axis / np.linalg.norm(axis)),
            spin=rng.uniform(0.8, 1.6) * rng.choice([-1, 1]), wiggle=rng.uniform(0.45, 0.7)))
    return cam, out


def _rows(objects: int, occlusion: float) -> tuple[list[float], list[float]]:
    """Image rows (half-heights, + is down) of the objects' paths, and each one's offset from its row.

    Even objects move right, odd ones left. Objects that share a row cross each other head-on; those in
    neighbouring rows overlap partly. ``occlusion`` pulls crossing paths together: at 1 the centres
    of objects in one row meet, at 0 they pass 0.35 half-heights apart, about touching.
    """
    apart = 0.35 * (1.0 - occlusion)
    if objects == 1:
        return [0.0], [0.0]
    if objects == 2:
        return [0.0, 0.0], [-apart / 2, apart / 2]
    if objects == 3:  # the left-mover crosses both right-movers, which keep to rows above and below
        row = 0.18 + 0.5 * apart
        return [-row, 0.0, row], [0.0, 0.0, 0.0]
    rows = [-0.3, -0.3, 0.3, 0.3]
    return rows, [-apart / 2, apart / 2, -apart / 2, apart / 2]


def camera_c2w(cam: CameraPath, t: float) -> np.ndarray:
    """OpenCV camera-to-world (x right, y down, z forward) at normalised time t, looking at TARGET."""
    az = cam.azimuth0 + cam.sweep * (t - 0.5)
    el = cam.elevation0 + cam.rise * t
    dist = CAMERA_DISTANCE * (1.0 + cam.dolly * (t - 0.5))
    eye = TARGET + dist * np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    return look_at(eye, TARGET)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world at ``eye`` looking at ``target`` with world +Z up on screen."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def intrinsics(s: Settings) -> np.ndarray:
    f = (s.height / 2) / math.tan(math.radians(s.fovy_deg) / 2)
    return np.array([[f, 0, s.width / 2], [0, f, s.height / 2], [0, 0, 1.0]])


def object_position(p: ObjectPath, t: float, c2w: np.ndarray, s: Settings) -> np.ndarray:
    """World position of an object's centre at normalised time t (unprojected from its image path)."""
    u = p.u_speed * (t - p.t_cross)  # half-widths from the centre
    v = p.v0 + p.bob * math.sin(2 * math.pi * t + p.phase)
    z = p.depth * (1.0 + p.depth_drift * (t - 0.5))
    K = intrinsics(s)
    x_cam = np.array([u * (s.width / 2) / K[0, 0] * z, v * (s.height / 2) / K[1, 1] * z, z])
    return c2w[:3, :3] @ x_cam + c2w[:3, 3]


def ground_level(cam: CameraPath, paths: list[ObjectPath], s: Settings) -> float:
    """Height of the ground: 0, or lower where an object's path comes near it (objects float above it)."""
    lowest = min(object_position(p, t, camera_c2w(cam, t), s)[2] - 1.5 * p.radius
                 for p in paths for t in _times(s.frames))
    return min(0.0, lowest - 0.1)


def _rotation(axis, angle: float) -> np.ndarray:
    x, y, z = axis
    c, s_, C = math.cos(angle), math.sin(angle), 1 - math.cos(angle)
    return np.array([[c + x * x * C, x * y * C - z * s_, x * z * C + y * s_],
                     [y * x * C + z * s_, c + y * y * C, y * z * C - x * s_],
                     [z * x * C - y * s_, z * y * C + x * s_, c + z * z * C]])


# --------------------------------------------------------------------------------------------------
# The Blender scene


@contextlib.contextmanager
def _quiet_stdout():
    """Blender's renderer writes progress lines to the C-level stdout; send them to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class Scene:
    """The bpy scene: background, camera, light and the objects, with per-frame state setters."""

    def __init__(self, s: Settings, ground_z: float = 0.0):
        import bpy  # imported here so that the module's pure helpers work without Blender

        self.bpy, self.s = bpy, s
        bpy.ops.wm.read_factory_settings(use_empty=True)
        sc = bpy.context.scene
        self.sc = sc
        sc.render.engine = "CYCLES"
        sc.cycles.device = "CPU"
        sc.cycles.samples = s.samples
        sc.cycles.use_adaptive_sampling = False
        sc.cycles.seed = s.seed
        sc.cycles.max_bounces = 3
        sc.cycles.diffuse_bounces = 2
        sc.cycles.glossy_bounces = 1
        sc.cycles.transparent_max_bounces = 2
        sc.cycles.caustics_reflective = False
        sc.cycles.caustics_refractive = False
        sc.cycles.use_denoising = True
        sc.cycles.denoiser = "OPENIMAGEDENOISE"
        sc.cycles.filter_width = 1.0
        sc.render.resolution_x, sc.render.resolution_y = s.width, s.height
        sc.render.resolution_percentage = 100
        sc.render.pixel_aspect_x = sc.render.pixel_aspect_y = 1.0
        sc.render.film_transparent = False
        sc.render.image_settings.file_format = "PNG"
        sc.render.image_settings.color_mode = "RGB"
        sc.render.image_settings.color_depth = "8"
        sc.view_settings.view_transform = "Standard"
        sc.view_settings.look = "None"
        if s.threads > 0:
            sc.render.threads_mode = "FIXED"
            sc.render.threads = s.threads

        world = bpy.data.worlds.new("world")
        sc.world = world
        world.use_nodes = True
        bg = world.node_tree.nodes["Background"]
        bg.inputs["Color"].default_value = (0.55, 0.62, 0.75, 1.0)
        bg.inputs["Strength"].default_value = 0.7
        sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
        sun.data.energy = 3.0
        sun.data.angle = math.radians(6)
        sun.rotation_euler = (math.radians(40), math.radians(-25), math.radians(20))
        sc.collection.objects.link(sun)

        cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
        cam.data.sensor_fit = "VERTICAL"
        cam.data.sensor_height = 24.0
        K = intrinsics(s)
        cam.data.lens = K[1, 1] * cam.data.sensor_height / s.height
        cam.data.clip_start, cam.data.clip_end = 0.05, 500.0
        sc.collection.objects.link(cam)
        sc.camera = cam
        self.camera = cam

        g = ground_z
        ground = np.array([[-40, -40, g], [40, -40, g], [40, 40, g], [-40, 40, g]], float)
        wall = np.array([[-40, WALL_Y, g], [40, WALL_Y, g], [40, WALL_Y, 30], [-40, WALL_Y, 30]], float)
        self.background = [self._mesh_object("ground", ground, [(0, 1, 2, 3)], self._material_ground()),
                           self._mesh_object("wall", wall, [(0, 1, 2, 3)], self._material_wall())]
        self.objects = []
        self.armature = None

    # materials -----------------------------------------------------------------------------------
    def _material(self, name: str, texture: str, c1, c2, scale: float):
        bpy = self.bpy
        m = bpy.data.materials.new(name)
        m.use_nodes = True
        nt = m.node_tree
        bsdf = nt.nodes["Principled BSDF"]
        bsdf.inputs["Roughness"].default_value = 0.6
        attr = nt.nodes.new("ShaderNodeAttribute")
        attr.attribute_name = "rest"
        ramp = nt.nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.interpolation = "CONSTANT"
        ramp.color_ramp.elements[0].color = (*c1, 1.0)
        ramp.color_ramp.elements[1].position = 0.5
        ramp.color_ramp.elements[1].color = (*c2, 1.0)
        if texture == "checker":
            tex = nt.nodes.new("ShaderNodeTexChecker")
            tex.inputs["Color1"].default_value = (0, 0, 0, 1)
            tex.inputs["Color2"].default_value = (1, 1, 1, 1)
            out = tex.outputs["Fac"]
        elif texture == "stripes":
            tex = nt.nodes.new("ShaderNodeTexWave")
            tex.wave_type = "BANDS"
            tex.bands_direction = "Z"
            out = tex.outputs["Fac"]
        elif texture == "spots":
            tex = nt.nodes.new("ShaderNodeTexVoronoi")
            tex.feature = "DISTANCE_TO_EDGE"
            ramp.color_ramp.elements[1].position = 0.12
            ramp.color_ramp.elements[0].color = (*c2, 1.0)
            ramp.color_ramp.elements[1].color = (*c1, 1.0)
            out = tex.outputs["Distance"]
        elif texture == "bricks":
            tex = nt.nodes.new("ShaderNodeTexBrick")
            tex.inputs["Color1"].default_value = (1, 1, 1, 1)
            tex.inputs["Color2"].default_value = (1, 1, 1, 1)
            tex.inputs["Mortar"].default_value = (0, 0, 0, 1)
            ramp.color_ramp.elements[1].position = 0.5
            ramp.color_ramp.elements[0].color = (*c2, 1.0)
            ramp.color_ramp.elements[1].color = (*c1, 1.0)
            out = tex.outputs["Color"]
        else:
            raise ValueError(f"unknown texture {texture!r}")
        tex.inputs["Scale"].default_value = scale
        nt.links.new(attr.outputs["Vector"], tex.inputs["Vector"])
        nt.links.new(out, ramp.inputs["Fac"])
        nt.links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
        return m

    def _material_ground(self):
        return self._material("ground", "checker", (0.42, 0.40, 0.36), (0.62, 0.60, 0.55), 0.5)

    def _material_wall(self):
        return self._material("wall", "bricks", (0.70, 0.66, 0.60), (0.45, 0.40, 0.38), 0.25)

    def _mesh_object(self, name: str, verts: np.ndarray, faces: list, material):
        bpy = self.bpy
        me = bpy.data.meshes.new(name)
        me.from_pydata(verts.tolist(), [], [tuple(int(i) for i in f) for f in faces])
        me.update()
        rest = me.attributes.new("rest", "FLOAT_VECTOR", "POINT")
        rest.data.foreach_set("vector", np.asarray(verts, np.float32).ravel())
        me.materials.append(material)
        ob = bpy.data.objects.new(name, me)
        self.sc.collection.objects.link(ob)
        return ob

    # objects -------------------------------------------------------------------------------------
    def add_object(self, k: int, radius: float):
        """Object k of KINDS, scaled to bounding radius ``radius``; returns its bpy object."""
        bpy = self.bpy
        shape, deform, texture, _name, c1, c2 = KINDS[k]
        verts, faces = SHAPES[shape]()
        verts = verts * radius
        scale = {"checker": 1.6, "stripes": 1.2, "spots": 2.2, "bricks": 1.5}[texture] / radius
        ob = self._mesh_object(f"object_{k + 1:03d}", verts, faces, self._material(f"m{k}", texture, c1, c2, scale))
        if shape != "cube":
            ob.data.shade_smooth()
        ob.rotation_mode = "QUATERNION"
        if deform == "armature":
            arm = bpy.data.objects.new("armature", bpy.data.armatures.new("armature"))
            self.sc.collection.objects.link(arm)
            bpy.context.view_layer.objects.active = arm
            bpy.ops.object.mode_set(mode="EDIT")
            prev, z = None, np.linspace(-0.92, 0.92, 4) * radius
            for i in range(3):
                b = arm.data.edit_bones.new(f"bone{i}")
                b.head, b.tail = (0, 0, z[i]), (0, 0, z[i + 1])
                if prev is not None:
                    b.parent, b.use_connect = prev, True
                prev = b
            bpy.ops.object.mode_set(mode="OBJECT")
            for i in range(3):
                g = ob.vertex_groups.new(name=f"bone{i}")
                centre = (z[i] + z[i + 1]) / 2
                half = (z[1] - z[0])
                for vi, v in enumerate(verts):
                    w = max(0.0, 1.0 - abs(v[2] - centre) / half)
                    if w > 0:
                        g.add([vi], float(w), "REPLACE")
            ob.modifiers.new("armature", "ARMATURE").object = arm
            ob.parent = arm
            arm.rotation_mode = "QUATERNION"
            for pb in arm.pose.bones:
                pb.rotation_mode = "XYZ"
            self.armature = arm
        elif deform == "shape keys":
            ob.shape_key_add(name="Basis")
            squash = ob.shape_key_add(name="squash")
            co = verts.copy()
            co[:, :2] *= 1.22
            co[:, 2] *= 0.68
            squash.data.foreach_set("co", co.astype(np.float32).ravel())
            bulge = ob.shape_key_add(name="bulge")
            d = verts / np.linalg.norm(verts, axis=1, keepdims=True)
            co = verts * (1.0 + 0.22 * np.sin(3 * np.arctan2(d[:, 1], d[:, 0])) * (1 - d[:, 2] ** 2))[:, None]
            bulge.data.foreach_set("co", co.astype(np.float32).ravel())
        self.objects.append(ob)
        return ob

    def set_state(self, paths: list[ObjectPath], cam: CameraPath, t: float) -> np.ndarray:
        """Pose camera and objects at normalised time t; returns the OpenCV camera-to-world."""
        import mathutils

        c2w = camera_c2w(cam, t)
        self.camera.matrix_world = mathutils.Matrix((c2w @ OPENCV_FROM_BLENDER_CAMERA).tolist())
        for p, ob in zip(paths, self.objects):
            pos = object_position(p, t, c2w, self.s)
            deform = KINDS[p.kind][1]
            R = _rotation(p.spin_axis, p.spin * t) if deform != "armature" else _rotation((0, 0, 1), p.spin * t)
            q = mathutils.Matrix(R.tolist()).to_quaternion()
            holder = self.armature if deform == "armature" else ob
            holder.location = pos.tolist()
            holder.rotation_quaternion = q
            if deform == "armature":
                for i, pb in enumerate(self.armature.pose.bones):
                    a = p.wiggle * math.sin(2 * math.pi * 1.1 * t + p.phase + 0.9 * i)
                    pb.rotation_euler = (a, 0.5 * a, 0.0)
            elif deform == "shape keys":
                keys = ob.data.shape_keys.key_blocks
                keys["squash"].value = 0.5 + 0.5 * math.sin(2 * math.pi * 1.0 * t + p.phase)
                keys["bulge"].value = p.wiggle * (0.5 + 0.5 * math.sin(2 * math.pi * 1.5 * t + 1.0 + p.phase))
        self.bpy.context.view_layer.update()
        return c2w

    def object_meshes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each object's evaluated mesh now: world vertices (V,3) and triangles (F,3)."""
        dg = self.bpy.context.evaluated_depsgraph_get()
        out = []
        for ob in self.objects:
            ev = ob.evaluated_get(dg)
            me = ev.to_mesh()
            me.calc_loop_triangles()
            v = np.zeros(len(me.vertices) * 3, np.float64)
            me.vertices.foreach_get("co", v)
            tri = np.zeros(len(me.loop_triangles) * 3, np.int64)
            me.loop_triangles.foreach_get("vertices", tri)
            M = np.array(ev.matrix_world)
            v = v.reshape(-1, 3) @ M[:3, :3].T + M[:3, 3]
            out.append((v, tri.reshape(-1, 3)))
            ev.to_mesh_clear()
        return out

    def background_mesh(self) -> tuple[np.ndarray, np.ndarray]:
        verts, tris = [], []
        for ob in self.background:
            M = np.array(ob.matrix_world)
            v = np.array([list(x.co) for x in ob.data.vertices]) @ M[:3, :3].T + M[:3, 3]
            tris += [[len(verts) * 4 + 0, len(verts) * 4 + 1, len(verts) * 4 + 2],
                     [len(verts) * 4 + 0, len(verts) * 4 + 2, len(verts) * 4 + 3]]
            verts.append(v)
        return np.concatenate(verts), np.array(tris)

    def render(self, path: Path, hide_objects: bool = False) -> np.ndarray:
        """Render the current state to ``path`` (PNG) and return it as (H, W, 3) uint8 RGB."""
        for ob in self.objects:
            ob.hide_render = hide_objects
        self.sc.render.filepath = str(path)
        with _quiet_stdout():
            self.bpy.ops.render.render(write_still=True)
        for ob in self.objects:
            ob.hide_render = False
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None or img.shape[:2] != (self.s.height, self.s.width):
            raise GenerationError(f"{path}: Cycles did not write a {self.s.width}x{self.s.height} image")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------------
# Ray casting (geometry ground truth)


class RayCaster:
    """Scene and per-object BVH trees of one moment, with labels: 0 background, k object k."""

    def __init__(self, background: tuple[np.ndarray, np.ndarray], objects: list[tuple[np.ndarray, np.ndarray]]):
        from mathutils.bvhtree import BVHTree

        parts = [background] + objects
        verts, tris, labels, off = [], [], [], 0
        for k, (v, f) in enumerate(parts):
            verts.append(v)
            tris.append(f + off)
            labels.append(np.full(len(f), k, np.int64))
            off += len(v)
        self.scene = BVHTree.FromPolygons(np.concatenate(verts).tolist(), np.concatenate(tris).tolist())
        self.tri_label = np.concatenate(labels)
        self.objects = [BVHTree.FromPolygons(v.tolist(), f.tolist()) for v, f in objects]
        self.object_verts = [v for v, _ in objects]

    def cast(self, origin: np.ndarray, dirs: np.ndarray, tree=None) -> tuple[np.ndarray, np.ndarray]:
        """First hit along each unit direction: distance (N,), inf on a miss, and label (N,): on the scene
        tree the hit's label (0 background, k object k), on an object's own tree 0; -1 on a miss."""
        from mathutils import Vector

        tree = self.scene if tree is None else tree
        o = Vector(origin.tolist())
        dist = np.full(len(dirs), np.inf)
        idx = np.full(len(dirs), -1, np.int64)
        for i, d in enumerate(dirs.tolist()):
            _loc, _n, j, h = tree.ray_cast(o, Vector(d))
            if j is not None:
                dist[i], idx[i] = h, j
        label = np.where(idx >= 0, self.tri_label[np.maximum(idx, 0)], -1) if tree is self.scene else (idx >= 0) - 1
        return dist, label


def pixel_rays(c2w: np.ndarray, K: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit world directions through image points (xs, ys) (pixel centres at +0.5) and their z per unit length."""
    d = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    return (d / n) @ c2w[:3, :3].T, 1.0 / n[..., 0]


def render_geometry(rc: RayCaster, c2w: np.ndarray, K: np.ndarray, w: int, h: int, ss: int,
                    amodal: bool) -> dict:
    """Depth (camera z) and label through pixel centres, modal labels from ss x ss sub-pixel rays, and
    optionally each object's amodal depth (0 where absent)."""
    origin = c2w[:3, 3]
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    dirs, zscale = pixel_rays(c2w, K, jj.ravel(), ii.ravel())
    dist, label = rc.cast(origin, dirs)
    if not np.isfinite(dist).all():
        raise GenerationError("some pixel sees no surface (the camera looks past the ground and wall)")
    depth = (dist * zscale).reshape(h, w)
    centre = label.reshape(h, w)
    if ss > 1:
        offs = (np.arange(ss) + 0.5) / ss - 0.5
        n_lab = len(rc.objects) + 1
        counts = np.zeros((h, w, n_lab))
        nearest = np.full((h, w, n_lab), np.inf)
        for oy in offs:
            for ox in offs:
                d, zs = pixel_rays(c2w, K, jj.ravel() + ox, ii.ravel() + oy)
                dd, ll = rc.cast(origin, d)
                ll = ll.reshape(h, w)
                zz = (dd * zs).reshape(h, w)
                for lab in range(n_lab):
                    m = ll == lab
                    counts[..., lab] += m
                    nearest[..., lab] = np.where(m, np.minimum(nearest[..., lab], zz), nearest[..., lab])
        best = counts.max(-1, keepdims=True)
        tie_depth = np.where(counts == best, nearest, np.inf)
        modal = np.argmin(tie_depth, -1)
    else:
        modal = centre
    out = {"depth": depth.astype(np.float32), "labels": modal.astype(np.uint8)}
    if amodal:
        am = np.zeros((len(rc.objects), h, w), np.float32)
        for k, tree in enumerate(rc.objects):
            uv, z = project(rc.object_verts[k], c2w, K)
            if (z <= 0).any():
                continue
            x0, y0 = np.clip(np.floor(uv.min(0)).astype(int) - 1, 0, [w, h])
            x1, y1 = np.clip(np.ceil(uv.max(0)).astype(int) + 1, 0, [w, h])
            if x0 >= x1 or y0 >= y1:
                continue
            sub = (slice(y0, y1), slice(x0, x1))
            d, _ = rc.cast(origin, dirs.reshape(h, w, 3)[sub].reshape(-1, 3), tree)
            zk = (d * zscale.reshape(h, w)[sub].ravel()).reshape(y1 - y0, x1 - x0)
            am[k][sub] = np.where(np.isfinite(zk), zk, 0.0)
        out["amodal"] = am
    return out


def project(points: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N,2) and camera z (N,) of world points."""
    w2c = np.linalg.inv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([K[0, 0] * pc[:, 0] / z + K[0, 2], K[1, 1] * pc[:, 1] / z + K[1, 2]], -1)
    return uv, z


def sample_surface(verts: np.ndarray, tris: np.ndarray, n: int, rng: np.random.Generator):
    """n points on a triangle mesh, uniform by area: (triangle index (n,), barycentric weights (n,3))."""
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    tri = rng.choice(len(tris), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s1 = np.sqrt(r1)
    bary = np.stack([1 - s1, s1 * (1 - r2), s1 * r2], -1)
    return tri, bary


def track_visibility(rc: RayCaster, points: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                     w: int, h: int) -> dict:
    """Projection, in-frame flag, visibility and occluder label of world points at one moment."""
    uv, z = project(points, c2w, K)
    in_frame = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    origin = c2w[:3, 3]
    vec = points - origin
    dist = np.linalg.norm(vec, axis=1)
    occluder = np.full(len(points), -1, np.int64)
    visible = np.zeros(len(points), bool)
    sel = np.flatnonzero(in_frame)
    if sel.size:
        hit, lab = rc.cast(origin, vec[sel] / dist[sel, None])
        vis = hit >= dist[sel] * (1 - VISIBILITY_TOLERANCE)
        visible[sel] = vis
        occluder[sel[~vis]] = lab[~vis]
    return {"uv": uv, "depth": z, "in_frame": in_frame, "visible": visible, "occluder": occluder}


# --------------------------------------------------------------------------------------------------
# Generation


def _times(frames: int) -> list[float]:
    return [fi / (frames - 1) if frames > 1 else 0.0 for fi in range(frames)]


def _simulate(scene: Scene, cam: CameraPath, paths: list[ObjectPath], s: Settings, rng: np.random.Generator,
              ss: int) -> dict:
    """Geometry of every frame: cameras, depth, labels, amodal depth, tracks and their visibility."""
    K = intrinsics(s)
    bg = scene.background_mesh()
    c2ws, depths, labels, amodal, tracks = [], [], [], [], []
    samples = None
    for fi, t in enumerate(_times(s.frames)):
        c2w = scene.set_state(paths, cam, t)
        meshes = scene.object_meshes()
        if samples is None:  # surface points, once, on the frame-0 meshes
            per = [s.points // s.objects + (1 if k < s.points % s.objects else 0) for k in range(s.objects)]
            samples = [sample_surface(v, f, n, rng) for (v, f), n in zip(meshes, per)]
        pts = np.concatenate([np.einsum("nij,ni->nj", v[f[tri]], bary)
                              for (v, f), (tri, bary) in zip(meshes, samples)])
        rc = RayCaster(bg, meshes)
        g = render_geometry(rc, c2w, K, s.width, s.height, ss, amodal=True)
        tv = track_visibility(rc, pts, c2w, K, s.width, s.height)
        tv["points"] = pts
        c2ws.append(c2w)
        depths.append(g["depth"])
        labels.append(g["labels"])
        amodal.append(g["amodal"])
        tracks.append(tv)
    object_index = np.concatenate([np.full(len(tri), k) for k, (tri, _b) in enumerate(samples)])
    return {"ground_z": float(bg[0][:, 2].min()), "c2w": np.stack(c2ws), "depth": np.stack(depths),
            "labels": np.stack(labels), "amodal": np.stack(amodal), "object_index": object_index,
            "tracks": {k: np.stack([tv[k] for tv in tracks]) for k in tracks[0]}}


def occlusion_stats(sim: dict, objects: int) -> dict:
    """Per frame and object: amodal area, visible fraction, hidden-by-others fraction, truncation."""
    T = sim["labels"].shape[0]
    am = sim["amodal"] > 0  # (T,K,H,W)
    area = am.sum((2, 3)).astype(float)
    vis_px = np.stack([[(sim["labels"][t] == k + 1).sum() for k in range(objects)] for t in range(T)]).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        visible = np.where(area > 0, vis_px / area, 0.0)
    oi = sim["object_index"]
    inf = sim["tracks"]["in_frame"]
    truncated = np.stack([1.0 - inf[:, oi == k].mean(1) for k in range(objects)], 1)
    lowest = np.stack([sim["tracks"]["points"][:, oi == k, 2].min(1) for k in range(objects)], 1) - sim["ground_z"]
    return {"area_px": area, "visible_px": vis_px, "visible_fraction": visible,
            "occluded_fraction": np.clip(1.0 - visible, 0, 1) * (area > 0), "truncated_fraction": truncated,
            "lowest_z": lowest}


def _acceptable(st: dict, s: Settings) -> str | None:
    """None when the layout meets the module docstring's conditions, else the first failed one."""
    if (st["visible_fraction"][0] < MIN_VISIBLE_FRAME0).any():
        return "an object is less than 60% visible in frame 0"
    if (st["visible_px"] < 1).any() or (st["occluded_fraction"] > MAX_OCCLUDED).any():
        return "an object is (nearly) hidden in some frame"
    if (st["truncated_fraction"] > MAX_TRUNCATED).any():
        return "an object leaves the frame"
    if (st["lowest_z"] < 0.02).any():
        return "an object goes below the ground"  # cannot happen with ground_level(); a guard
    if s.objects >= 2 and s.occlusion > 0:
        needed = min(3, s.frames // 4)
        if int((st["occluded_fraction"].max(1) >= OCCLUSION_THRESHOLD).sum()) < needed:
            return f"fewer than {needed} frames with an object >= 20% hidden"
    return None


def _novel_cameras(cam: CameraPath, s: Settings, rng: np.random.Generator) -> np.ndarray:
    """Static held-out cameras looking at the scene centre from well outside the clip's swing."""
    out = []
    for c in range(s.novel_cameras):
        side = 1.0 if c % 2 == 0 else -1.0
        az = cam.azimuth0 + side * (abs(cam.sweep) / 2 + math.radians(rng.uniform(18, 30)))
        el = cam.elevation0 + math.radians(rng.uniform(6, 16))
        dist = CAMERA_DISTANCE * rng.uniform(0.95, 1.1)
        eye = TARGET + dist * np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
        out.append(look_at(eye, TARGET))
    return np.stack(out) if out else np.zeros((0, 4, 4))


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), img):
        raise GenerationError(f"{path}: could not be written")


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise GenerationError(f"{out} exists and is not a folder; pass a new or existing folder")
    if out.is_dir():
        own = {"JPEGImages", "Annotations", "InpaintedBackgrounds", "MegaSAM_Outputs", "ground_truth"}
        other = [p.name for p in out.iterdir() if p.name not in own]
        if other:
            raise GenerationError(f"{out} holds files this generator did not write ({', '.join(sorted(other)[:5])}); "
                                  "pass an empty or new folder")


def make_gt_clip(out_dir: str | os.PathLike, *, preset: str | None = "tiny", **overrides) -> dict:
    """Generate a ground-truth clip into ``out_dir``; returns the contents of ground_truth/scene.json.

    ``preset`` ("tiny", "medium" or None) gives the defaults; keyword arguments named like
    ``Settings`` fields override them. Raises ValueError for bad parameters and GenerationError when
    no acceptable layout exists or Blender fails.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    params = dict(DEFAULTS, **(PRESETS[preset] if preset else {}))
    unknown = set(overrides) - set(Settings.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    missing = [k for k in Settings.__dataclass_fields__ if k not in params and k != "preset"]
    if missing:
        raise ValueError(f"without a preset these settings are required: {missing}")
    s = Settings(preset=preset, **params)
    if min(s.width, s.height) < MIN_SIZE:
        raise ValueError(f"width and height must be >= {MIN_SIZE}, got {s.width}x{s.height}")
    if s.frames < 2:
        raise ValueError(f"frames must be >= 2, got {s.frames}")
    if not 1 <= s.objects <= MAX_OBJECTS:
        raise ValueError(f"objects must be in 1..{MAX_OBJECTS}, got {s.objects}")
    if not 0.0 <= s.occlusion <= 1.0:
        raise ValueError(f"occlusion must be in [0, 1], got {s.occlusion}")
    if s.samples < 1 or s.points < s.objects or s.mask_ss < 1 or s.novel_every < 1 or s.novel_cameras < 0:
        raise ValueError("samples, mask_ss and novel_every must be >= 1, points >= objects, novel_cameras >= 0")
    if s.seed < 0:
        raise ValueError(f"seed must be non-negative, got {s.seed}")
    out = Path(out_dir)
    _check_out_dir(out)
    timing = {}
    t0 = time.perf_counter()

    rng = np.random.default_rng(s.seed)
    reasons = []
    for _attempt in range(MAX_ATTEMPTS):
        cam, paths = _draw_layout(rng, s)
        scene = Scene(s, ground_level(cam, paths, s))  # a fresh scene per draw: sizes depend on the draw
        for p in paths:
            scene.add_object(p.kind, p.radius)
        sim = _simulate(scene, cam, paths, s, np.random.default_rng(s.seed + 1), ss=1)
        stats = occlusion_stats(sim, s.objects)
        why = _acceptable(stats, s)
        if why is None:
            break
        reasons.append(why)
    else:
        raise GenerationError(f"no acceptable layout in {MAX_ATTEMPTS} draws for {s.width}x{s.height}, "
                              f"{s.frames} frames, {s.objects} objects, occlusion {s.occlusion}, seed {s.seed} "
                              f"(last reason: {reasons[-1]}); try another --seed or a lower --occlusion")
    if s.mask_ss > 1:  # the final masks; the statistics stay those of the pixel centres (like amodal)
        sim = _simulate(scene, cam, paths, s, np.random.default_rng(s.seed + 1), ss=s.mask_ss)
    timing["geometry_s"] = time.perf_counter() - t0

    # --- renders
    t1 = time.perf_counter()
    K = intrinsics(s)
    T = s.frames
    frames_dir, ann_dir = out / "JPEGImages", out / "Annotations"
    images = []
    for fi, t in enumerate(_times(T)):
        scene.set_state(paths, cam, t)
        images.append(scene.render(frames_dir / f"{fi:05d}.png"))
        lab = sim["labels"][fi]
        for k in range(s.objects + 1):
            _write_png(ann_dir / f"{k:03d}" / f"{fi:05d}.png", ((lab == k) * 255).astype(np.uint8))
    scene.set_state(paths, cam, 0.0)
    bg_path = out / "InpaintedBackgrounds" / "00000.png"
    bg_path.parent.mkdir(parents=True, exist_ok=True)
    scene.render(bg_path, hide_objects=True)
    timing["render_s"] = time.perf_counter() - t1

    # --- held-out views
    t2 = time.perf_counter()
    novel_c2w = _novel_cameras(cam, s, np.random.default_rng(s.seed + 2))
    novel_frames = np.arange(0, T, s.novel_every, dtype=np.int64)
    C, F = len(novel_c2w), len(novel_frames)
    n_lab = np.zeros((C, F, s.height, s.width), np.uint8)
    n_dep = np.zeros((C, F, s.height, s.width), np.float32)
    bg = scene.background_mesh()
    import mathutils

    for j, fi in enumerate(novel_frames):
        scene.set_state(paths, cam, _times(T)[fi])
        rc = RayCaster(bg, scene.object_meshes())
        for c in range(C):
            scene.camera.matrix_world = mathutils.Matrix((novel_c2w[c] @ OPENCV_FROM_BLENDER_CAMERA).tolist())
            scene.bpy.context.view_layer.update()
            scene.render(out / "ground_truth" / "novel" / f"c{c}" / f"{fi:05d}.png")
            g = render_geometry(rc, novel_c2w[c], K, s.width, s.height, s.mask_ss, amodal=False)
            n_lab[c, j], n_dep[c, j] = g["labels"], g["depth"]
    timing["novel_s"] = time.perf_counter() - t2

    # --- arrays
    gt_dir = out / "ground_truth"
    gt_dir.mkdir(parents=True, exist_ok=True)
    (out / "MegaSAM_Outputs").mkdir(exist_ok=True)
    np.savez_compressed(out / "MegaSAM_Outputs" / "ground_truth.npz", images=np.stack(images),
                        depths=sim["depth"].astype(np.float32), intrinsic=K.astype(np.float32),
                        cam_c2w=sim["c2w"].astype(np.float32))
    tr = sim["tracks"]
    np.savez_compressed(gt_dir / "tracks.npz", points=tr["points"].astype(np.float32), uv=tr["uv"].astype(np.float32),
                        depth=tr["depth"].astype(np.float32), in_frame=tr["in_frame"], visible=tr["visible"],
                        occluder=tr["occluder"].astype(np.int8), object_index=sim["object_index"].astype(np.int64))
    np.savez_compressed(gt_dir / "amodal_depth.npz", depth=sim["amodal"].astype(np.float16))
    np.savez_compressed(gt_dir / "novel.npz", K=np.repeat(K[None], C, 0), c2w=novel_c2w, frames=novel_frames,
                        labels=n_lab, depths=n_dep)

    import bpy

    objects = []
    for k, p in enumerate(paths):
        shape, deform, texture, colour, _c1, _c2 = KINDS[p.kind]
        oi = sim["object_index"] == k
        objects.append({
            "id": f"{k + 1:03d}", "name": f"{colour} {texture} {shape}", "shape": shape,
            "deformation": deform, "rigid": deform == "rigid", "radius": round(p.radius, 5),
            "points": int(oi.sum()),
            "visible_fraction": [round(float(x), 4) for x in stats["visible_fraction"][:, k]],
            "occluded_fraction": [round(float(x), 4) for x in stats["occluded_fraction"][:, k]],
            "truncated_fraction": [round(float(x), 4) for x in stats["truncated_fraction"][:, k]],
            "track_visible_fraction": [round(float(x), 4) for x in tr["visible"][:, oi].mean(1)],
        })
    timing["total_s"] = time.perf_counter() - t0
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "generator": "scripts/make_gt_clip.py",
        "blender": bpy.app.version_string, "settings": asdict(s), "width": s.width, "height": s.height,
        "frames": T, "fps": FPS,
        "camera": {"K": K.tolist(), "convention": "opencv", "fovy_deg": s.fovy_deg,
                   "world": "Blender world: Z up", "ground_z": sim["ground_z"],
                   "path": asdict(cam)},
        "objects": objects,
        "occlusion_frames": [int(t) for t in np.flatnonzero(stats["occluded_fraction"].max(1) >= OCCLUSION_THRESHOLD)]
        if s.objects >= 2 else [],
        "novel": {"cameras": C, "frames": novel_frames.tolist()},
        "files": {"frames": "JPEGImages", "masks": "Annotations", "background": "InpaintedBackgrounds/00000.png",
                  "cameras": "MegaSAM_Outputs/ground_truth.npz", "tracks": "ground_truth/tracks.npz",
                  "amodal_depth": "ground_truth/amodal_depth.npz", "novel": "ground_truth/novel.npz"},
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
    }
    (gt_dir / "scene.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render a ground-truth multi-object clip with Blender (Cycles, CPU): "
                                            "frames, modal masks, cameras and depth, 3D tracks, held-out views.")
    p.add_argument("out_dir", type=Path, help="folder to write into (new, or one this generator wrote)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="defaults: tiny (64x64, 8 frames, CI) or medium (256x256, 24 frames, benchmark)")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--frames", type=int)
    p.add_argument("--objects", type=int, help=f"1..{MAX_OBJECTS}")
    p.add_argument("--seed", type=int)
    p.add_argument("--occlusion", type=float, help="0..1, how squarely paths cross (default 0.8)")
    p.add_argument("--samples", type=int, help="Cycles samples per pixel")
    p.add_argument("--points", type=int, help="surface points tracked, over all objects")
    p.add_argument("--novel_cameras", type=int, help="held-out cameras")
    p.add_argument("--novel_every", type=int, help="render the held-out cameras at every N-th frame")
    p.add_argument("--mask_ss", type=int, help="sub-pixel rays per side for the masks (default 2)")
    p.add_argument("--threads", type=int, help="Cycles render threads (0 = all cores)")
    a = vars(p.parse_args(argv))
    out, preset = a.pop("out_dir"), a.pop("preset")
    try:
        meta = make_gt_clip(out, preset=preset, **a)
    except (ValueError, GenerationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {meta['frames']} frames of {meta['width']}x{meta['height']} to {out} "
          f"in {meta['timing_s']['total_s']} s")
    print("objects: " + ", ".join(f"{o['id']} {o['name']} ({o['deformation']})" for o in meta["objects"]))
    print(f"occlusion frames (some object >= {OCCLUSION_THRESHOLD:.0%} hidden): {meta['occlusion_frames']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
