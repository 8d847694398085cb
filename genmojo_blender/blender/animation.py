"""Fast keyframing through Blender's slotted-action API (Blender 4.4+; ``Action.fcurves`` is gone in 5.0).

Keys are written in bulk with ``foreach_set`` instead of ``keyframe_insert`` per key, which matters
when a result has hundreds of frames and objects.
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy_extras import anim_utils

# Integer values of the keyframe ``interpolation`` enum, as foreach_set needs them.
_INTERPOLATION = {"CONSTANT": 0, "LINEAR": 1, "BEZIER": 2}


def new_action(id_data: bpy.types.ID, name: str):
    """Create an action with one slot for ``id_data``, assign both, and return its channel bag."""
    action = bpy.data.actions.new(name)
    slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
    anim = id_data.animation_data_create()
    anim.action = action
    anim.action_slot = slot
    return anim_utils.action_ensure_channelbag_for_slot(action, slot)


def key_curve(channelbag, data_path: str, frames, values, *, index: int = 0,
              interpolation: str = "LINEAR") -> bpy.types.FCurve:
    """Add an F-curve with one key per (frame, value), all with the given interpolation."""
    frames = np.asarray(frames, np.float32).ravel()
    values = np.asarray(values, np.float32).ravel()
    if frames.shape != values.shape or frames.size == 0:
        raise ValueError(f"{data_path}[{index}]: need as many values as frames (at least one)")
    fc = channelbag.fcurves.new(data_path, index=index)
    kps = fc.keyframe_points
    kps.add(frames.size)
    co = np.empty(frames.size * 2, np.float32)
    co[0::2], co[1::2] = frames, values
    kps.foreach_set("co", co)
    kps.foreach_set("interpolation", np.full(frames.size, _INTERPOLATION[interpolation], np.int32))
    fc.update()
    return fc


def key_vector(channelbag, data_path: str, frames, values, *,
               interpolation: str = "LINEAR") -> list[bpy.types.FCurve]:
    """Key every component of a vector property: ``values`` has shape (frames, components)."""
    values = np.asarray(values, np.float32)
    return [key_curve(channelbag, data_path, frames, values[:, i], index=i,
                      interpolation=interpolation) for i in range(values.shape[1])]


def actions_of(id_data) -> list[bpy.types.Action]:
    """The action assigned to an ID (empty list if none), for clean removal on re-import."""
    anim = getattr(id_data, "animation_data", None)
    return [anim.action] if anim is not None and anim.action is not None else []


def fcurve_of(id_data, data_path: str, index: int = 0):
    """The F-curve animating ``data_path[index]`` of an ID through its assigned action, or None."""
    anim = getattr(id_data, "animation_data", None)
    if anim is None or anim.action is None or anim.action_slot is None:
        return None
    bag = anim_utils.action_get_channelbag_for_slot(anim.action, anim.action_slot)
    return None if bag is None else bag.fcurves.find(data_path, index=index)
