"""What an artist changed on an imported result, carried over when the same result is imported again.

Re-importing a result (by hand, or when a re-run writes into the same folder) rebuilds every object
from the bundle. Without this module that silently reset the artist's work; now ``take`` notes it
from the previous import before that is set aside, and ``apply`` puts it on the new objects, which
are matched by their object id:

* the root Empty's transform and parent (where the artist placed and levelled the whole result);
* per object: the name the artist gave it, its transform below the root, its material slots
  (materials and whether each is linked to the object or its data), the view-layer hide, select
  and, where visibility is not keyed from the masks, viewport/render visibility; extra collections
  it was linked to; the inputs of its display modifier (radius, size, detail); its representation;
* the result collection's place (the collections it was linked under) and visibility (its own and
  the view layer's exclude/hide flags);
* the scene's current frame.

``apply`` returns one line per kind of thing it kept, for the import's report. Importing with
``keep_edits=False`` (the operator's *Reset Edits*) skips all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy


COLLECTION_FLAGS = ("hide_viewport", "hide_render", "hide_select")
LAYER_FLAGS = ("exclude", "hide_viewport")


@dataclass
class ObjectEdits:
    """One object's state in the previous import."""

    name: str
    default_name: str  # the name the importer gives it; a different ``name`` is the artist's
    representation: str
    matrix_basis: object
    slots: list[tuple[str, object]]  # (link, material) per material slot
    default_slots: bool  # the slots are what the importer made (nothing for the artist to keep)
    hide: bool
    hide_select: bool
    hide_viewport: bool
    hide_render: bool
    visibility_keyed: bool
    extra_collections: list[object]
    modifier_inputs: dict[str, dict[str, object]]  # modifier name -> its input values


@dataclass
class ArtistEdits:
    """The previous import's root, objects (by id) and the scene frame."""

    root_matrix: object | None = None
    root_parent: object | None = None
    root_parent_inverse: object | None = None
    objects: dict[str, ObjectEdits] = field(default_factory=dict)
    frame: int | None = None
    parents: list = field(default_factory=list)  # the collections the result's collection was linked under
    collection_flags: dict[str, bool] = field(default_factory=dict)  # hide_viewport/hide_render/hide_select
    layer_flags: dict[str, bool] = field(default_factory=dict)  # the view layer's exclude/hide_viewport

    @property
    def representations(self) -> dict[str, str]:
        return {oid: e.representation for oid, e in self.objects.items() if e.representation}


def _modifier_inputs(ob) -> dict[str, dict[str, object]]:
    """The input values (ID properties) of each Geometry Nodes modifier: plain numbers, strings, lists."""
    out = {}
    for mod in ob.modifiers:
        if mod.type != "NODES":
            continue
        values = {}
        for k, v in mod.items():
            v = v.to_list() if hasattr(v, "to_list") else v
            if isinstance(v, (int, float, str, list)):
                values[k] = v
        out[mod.name] = values
    return out


def _visibility_keyed(ob) -> bool:
    anim = ob.animation_data
    if anim is None or anim.action is None:
        return False
    from bpy_extras import anim_utils

    bag = anim_utils.action_get_channelbag_for_slot(anim.action, anim.action_slot)
    return bag is not None and any(fc.data_path in ("hide_viewport", "hide_render") for fc in bag.fcurves)


def take(collection: bpy.types.Collection, scene: bpy.types.Scene, *, root_prop: str, id_prop: str,
         representation_prop: str, default_names: dict[str, str],
         default_materials: dict[str, list[str]]) -> ArtistEdits:
    """Note the artist-editable state of the import in ``collection``.

    ``default_names`` (object id -> the importer's name) and ``default_materials`` (representation
    -> the names of the importer's slot materials) tell the artist's changes from what an import
    makes anyway.
    """
    edits = ArtistEdits(frame=scene.frame_current)
    layer = bpy.context.view_layer
    edits.parents = [c for c in [scene.collection, *scene.collection.children_recursive]
                     if collection.name in c.children]
    edits.collection_flags = {k: getattr(collection, k) for k in COLLECTION_FLAGS}
    lc = _layer_collection(layer.layer_collection, collection)
    edits.layer_flags = {k: getattr(lc, k) for k in LAYER_FLAGS} if lc is not None else {}
    for ob in collection.all_objects:
        if ob.type == "EMPTY" and ob.get(root_prop) and not ob.get(id_prop):  # the root (one per import)
            edits.root_matrix = ob.matrix_basis.copy()
            edits.root_parent = ob.parent
            edits.root_parent_inverse = ob.matrix_parent_inverse.copy()
        oid = ob.get(id_prop)
        if not oid:
            continue
        rep = str(ob.get(representation_prop, ""))
        slots = [(s.link, s.material) for s in ob.material_slots]
        default = default_materials.get(rep, [])
        in_layer = ob.name in layer.objects
        edits.objects[str(oid)] = ObjectEdits(
            name=ob.name, default_name=default_names.get(str(oid), ob.name), representation=rep,
            matrix_basis=ob.matrix_basis.copy(), slots=slots,
            default_slots=[m.name if m else "" for _, m in slots] == default
            and all(link == "DATA" for link, _ in slots),
            hide=ob.hide_get() if in_layer else False, hide_select=ob.hide_select,
            hide_viewport=ob.hide_viewport, hide_render=ob.hide_render, visibility_keyed=_visibility_keyed(ob),
            extra_collections=[c for c in ob.users_collection if c != collection],
            modifier_inputs=_modifier_inputs(ob))
    return edits


def _layer_collection(lc, collection):
    if lc.collection == collection:
        return lc
    for child in lc.children:
        found = _layer_collection(child, collection)
        if found is not None:
            return found
    return None


def _apply_collection(edits: ArtistEdits, collection, scene: bpy.types.Scene) -> list[str]:
    """Link the new collection where the old one was and give it the old one's visibility."""
    kept = []
    parents = [c for c in edits.parents if c == scene.collection or c.name in bpy.data.collections]
    if parents and parents != [scene.collection]:
        for c in parents:
            if collection.name not in c.children:
                c.children.link(collection)
        if scene.collection not in parents and collection.name in scene.collection.children:
            scene.collection.children.unlink(collection)
        kept.append(f"the collection's place (in {', '.join(c.name for c in parents)})")
    changed = False
    for k, v in edits.collection_flags.items():
        if getattr(collection, k) != v:
            setattr(collection, k, v)
            changed = True
    lc = _layer_collection(bpy.context.view_layer.layer_collection, collection)
    for k, v in edits.layer_flags.items():
        if lc is not None and getattr(lc, k) != v:
            setattr(lc, k, v)
            changed = True
    if changed:
        kept.append("the collection's visibility")
    return kept


def apply(edits: ArtistEdits, root, objects: list, scene: bpy.types.Scene, *, id_prop: str,
          collection=None) -> list[str]:
    """Put ``edits`` on a new import (its ``collection``, ``root`` and ``objects``); returns what was
    kept, as report lines. Objects the new result no longer has are named; the scene frame is set last."""
    kept: list[str] = _apply_collection(edits, collection, scene) if collection is not None else []
    from mathutils import Matrix

    if edits.root_matrix is not None and (edits.root_matrix != root.matrix_basis or edits.root_parent is not None):
        if edits.root_parent is not None and edits.root_parent.name in bpy.data.objects:
            root.parent = edits.root_parent
            root.matrix_parent_inverse = edits.root_parent_inverse
        root.matrix_basis = Matrix(edits.root_matrix)
        kept.append("the root's transform")
    names, materials, moved, hidden, extra, inputs = [], [], [], [], [], []
    by_id = {str(ob.get(id_prop)): ob for ob in objects}
    layer = bpy.context.view_layer
    for oid, e in edits.objects.items():
        ob = by_id.get(oid)
        if ob is None:
            continue
        if e.name != e.default_name and e.name != ob.name:
            ob.name = e.name  # the previous object is parked under another name, so this one is free
            if ob.data is not None:
                ob.data.name = e.name
            names.append(e.name)
        if e.matrix_basis != ob.matrix_basis:
            ob.matrix_basis = e.matrix_basis
            moved.append(ob.name)
        if not e.default_slots and all(m is None or m.name in bpy.data.materials for _, m in e.slots):
            _set_slots(ob, e.slots)
            materials.append(ob.name)
        changed = False
        if ob.name in layer.objects and e.hide != ob.hide_get():
            ob.hide_set(e.hide)
            changed = True
        if e.hide_select != ob.hide_select:
            ob.hide_select, changed = e.hide_select, True
        if not e.visibility_keyed and (e.hide_viewport, e.hide_render) != (ob.hide_viewport, ob.hide_render):
            ob.hide_viewport, ob.hide_render, changed = e.hide_viewport, e.hide_render, True
        if changed:
            hidden.append(ob.name)
        linked = [c for c in e.extra_collections if c.name in bpy.data.collections and ob.name not in c.objects]
        for c in linked:
            c.objects.link(ob)
        if linked:
            extra.append(ob.name)
        if _set_modifier_inputs(ob, e.modifier_inputs):
            inputs.append(ob.name)
    for what, items in (("object names", names), ("object transforms", moved), ("materials", materials),
                        ("visibility", hidden), ("collection links", extra), ("display settings", inputs)):
        if items:
            kept.append(f"{what} ({', '.join(items)})")
    gone = sorted(set(edits.objects) - set(by_id))
    if gone:
        kept.append(f"nothing of object(s) {', '.join(gone)}: the new result does not have them")
    if edits.frame is not None and scene.frame_current != edits.frame:
        kept.append(f"frame {edits.frame}")
    return kept


def _set_slots(ob, slots: list[tuple[str, object]]) -> None:
    mesh = ob.data
    mesh.materials.clear()
    for _ in slots:
        mesh.materials.append(None)
    for slot, (link, mat) in zip(ob.material_slots, slots):
        slot.link = link
        slot.material = mat


def _set_modifier_inputs(ob, inputs: dict[str, dict[str, object]]) -> bool:
    changed = False
    for mod in ob.modifiers:
        values = inputs.get(mod.name)
        if mod.type != "NODES" or not values:
            continue
        for k, v in values.items():
            if k in mod.keys() and _differs(mod[k], v):
                try:
                    mod[k] = v
                except (TypeError, ValueError):
                    continue
                changed = True
    return changed


def _differs(current, value) -> bool:
    current = current.to_list() if hasattr(current, "to_list") else current
    return current != value


def hide_flags(ob) -> dict[str, bool]:
    """An object's hide flags that a rebuilt object should take over: view-layer hide and
    selectability always, viewport/render visibility unless the importer keys them from the masks."""
    flags = {"hide_select": ob.hide_select}
    if ob.name in bpy.context.view_layer.objects:
        flags["hide"] = ob.hide_get()
    if not _visibility_keyed(ob):
        flags.update(hide_viewport=ob.hide_viewport, hide_render=ob.hide_render)
    return flags


def set_hide_flags(ob, flags: dict[str, bool]) -> None:
    for k, v in flags.items():
        if k == "hide":
            if ob.name in bpy.context.view_layer.objects:
                ob.hide_set(v)
        else:
            setattr(ob, k, v)
