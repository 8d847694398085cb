"""The results imported into a scene, as ``Scene.genmojo_results`` (saved with the .blend).

The Result panel reads its list from here, not from the WindowManager's last-run state (which is
never saved), so a reopened file shows its results with their per-object controls. An entry points
at the result's collection; one whose collection is gone (deleted by the artist) is pruned on the
next import and never listed.
"""

from __future__ import annotations

import bpy


def _linked(scene: bpy.types.Scene, collection) -> bool:
    return collection is not None and any(c == collection for c in scene.collection.children_recursive)


def entries(scene: bpy.types.Scene) -> list:
    """The scene's imported results whose collection is still in the scene, in import order."""
    return [e for e in getattr(scene, "genmojo_results", ()) if _linked(scene, e.collection)]


def find(scene: bpy.types.Scene, bundle_root: str):
    """The entry of ``bundle_root`` (a resolved folder path), or None."""
    return next((e for e in entries(scene) if e.bundle_root == bundle_root), None)


def per_object_text(representations) -> str:
    """Per-object representations as the operator's text ("001=MESH, 002=SPLATS")."""
    if not representations:
        return ""
    if isinstance(representations, str):
        return representations
    return ", ".join(f"{k}={v.upper()}" for k, v in sorted(representations.items()))


def record(scene: bpy.types.Scene, bundle_root: str, collection, *, representation: str = "POINTS",
           representations=None, surface_resolution: int = 48, surface_threshold: float = 0.5,
           point_display: bool = True, set_scene: bool = True, load_plate: bool = True):
    """Add or update the entry of ``bundle_root`` after an import; drops entries whose collection
    is gone. Returns the entry."""
    store = scene.genmojo_results
    for i in reversed(range(len(store))):
        e = store[i]
        if e.bundle_root == bundle_root or not _linked(scene, e.collection):
            store.remove(i)
    e = store.add()
    e.name = collection.name
    e.bundle_root = bundle_root
    e.collection = collection
    e.representation = representation.upper()
    e.object_representations = per_object_text(representations)
    e.surface_resolution, e.surface_threshold = surface_resolution, surface_threshold
    e.point_display, e.set_scene, e.load_plate = point_display, set_scene, load_plate
    return e


def objects_of(entry) -> list[bpy.types.Object]:
    """The entry's per-object rows: the imported objects (with an object id), by object id."""
    from .importer import OBJECT_ID_PROP

    if entry.collection is None:
        return []
    return sorted((o for o in entry.collection.all_objects if o.get(OBJECT_ID_PROP)),
                  key=lambda o: str(o.get(OBJECT_ID_PROP)))


def rows(scene: bpy.types.Scene) -> list[tuple[object, list[bpy.types.Object]]]:
    """What the Result panel draws: each imported result with its objects."""
    return [(e, objects_of(e)) for e in entries(scene)]
