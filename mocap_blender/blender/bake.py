"""Baking a capture into a NEW action: one F-curve per channel, written in bulk, in each bone's own rotation mode.

- Quaternion bones: `rotation_quaternion`, signs made continuous over time (no flips through the hemisphere).
- Euler bones (any order): `rotation_euler`, each frame the equivalent triple nearest the previous one (no 360
  degree jumps); the first frame nearest the bone's reference value.
- Axis-angle bones: `rotation_axis_angle` (angle, x, y, z) from sign-continuous quaternions, so the axis does not
  flip and the angle runs continuously (it may exceed 180 degrees).
- The root bone's `location` when root motion is on.
Keys are written with `keyframe_points.add` + `foreach_set("co", ...)`; Bezier handles are computed by
`FCurve.update()`. The previous action stays on the file with a fake user and is never modified; any failure
while baking removes the half-made action and restores the previous assignment.
"""
from __future__ import annotations

import bpy
import numpy as np

from ..core.smoothing import channel_values
from ..core.errors import MocapError
from . import anim
from .rig import RigInfo, bone_path, rotation_channel


def _write(fc, frames: np.ndarray, values: np.ndarray) -> None:
    n = len(frames)
    fc.keyframe_points.add(n)
    co = np.empty((n, 2), dtype=np.float32)
    co[:, 0] = frames
    co[:, 1] = values
    fc.keyframe_points.foreach_set("co", co.ravel())
    fc.update()


def bake(obj, rig: RigInfo, rotations: np.ndarray, frame_start: int, action_name: str,
         root_location: np.ndarray | None = None):
    """Write rotations (F, J, 3, 3) (skeleton joint order) [+ root location (F, 3)] into a new action on `obj`.

    Returns the new action, assigned to `obj`. On failure nothing is left behind.
    """
    rotations = np.asarray(rotations, dtype=np.float64)
    n_frames = rotations.shape[0]
    if rotations.shape[1:] != (rig.skeleton.n_joints, 3, 3):
        raise MocapError(f"Internal error: capture has {rotations.shape[1:]} rotations for a "
                         f"{rig.skeleton.n_joints}-bone rig. Please report this.")
    if not np.all(np.isfinite(rotations)) or (root_location is not None and not np.all(np.isfinite(root_location))):
        raise MocapError("The capture contains non-finite values, so nothing was keyed. Try again with "
                         "smoothing on, or report the clip.")
    frames = frame_start + np.arange(n_frames, dtype=np.float64)
    prev_action, prev_slot = anim.assigned(obj)
    had_anim_data = obj.animation_data is not None
    prev_fake = prev_action.use_fake_user if prev_action is not None else None
    action = bpy.data.actions.new(action_name or "Mocap")  # Blender makes the name unique (.001, ...)
    try:
        writer = anim.ChannelWriter(action, obj)
        names = rig.skeleton.names
        values = {}
        groups = {}
        for j, mode in enumerate(rig.rotation_modes):  # one vectorised conversion per kind of rotation mode
            groups.setdefault(mode if mode in ("QUATERNION", "AXIS_ANGLE") else "EULER", []).append(j)
        for kind, idx in groups.items():
            prop, _ = rotation_channel(rig.rotation_modes[idx[0]])
            ref = np.array([getattr(obj.pose.bones[names[j]], prop)[:] for j in idx], dtype=np.float64)
            vals = channel_values(rotations[:, idx], kind, ref, orders=[rig.rotation_modes[j] for j in idx])
            for k, j in enumerate(idx):
                values[j] = vals[:, k]
        for j, name in enumerate(names):
            prop, _ = rotation_channel(rig.rotation_modes[j])
            path = bone_path(name, prop)
            for i in range(values[j].shape[1]):
                _write(writer.new(path, i, name), frames, values[j][:, i])
            if j == rig.skeleton.root and root_location is not None:
                path = bone_path(name, "location")
                for i in range(3):
                    _write(writer.new(path, i, name), frames, root_location[:, i])
        if prev_action is not None:
            prev_action.use_fake_user = True
        anim.assign(obj, action, writer.slot)
    except BaseException:
        try:
            if prev_action is not None:
                prev_action.use_fake_user = prev_fake
                anim.assign(obj, prev_action, prev_slot)
            elif had_anim_data:
                anim.assign(obj, None)
            elif obj.animation_data is not None:
                obj.animation_data_clear()
        finally:
            bpy.data.actions.remove(action)
        raise
    return action
