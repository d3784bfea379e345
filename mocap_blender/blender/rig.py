"""Reading the user's armature: validation, rest pose, the reference pose and the camera. Reads only, never writes.

Which bones are captured:
- Every bone of the main bone tree. When the armature has several root bones, the tree with the most deforming
  bones is captured; bones of the other trees (control roots, props, IK targets) are left untouched and listed
  in `RigInfo.skipped`.
- Non-deforming helper bones (Deform off) that have no deforming bone below them are skipped too (IK targets,
  poles, mechanism leaves). A non-deforming bone between deforming bones is kept, so chains stay whole. A rig
  with no deforming bones at all is captured whole.

Reference pose: each captured bone's local rotation (the rotation part of `matrix_basis`) at the reference frame,
whatever its rotation mode. At the current frame this is the pose as it is on screen (un-keyed posing included);
at another frame the bone's channels are evaluated from the assigned action's F-curves (channels without
F-curves keep their current value), so the scene's current frame is never changed.

Scale: bone rest matrices (`bone.matrix_local`) are in armature space and carry no scale; the object's scale does
not matter because the model works in armature space divided by the rig's height. Pose-bone scale is neither read
nor keyed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import rotations as R
from ..core.errors import MocapError
from ..core.skeleton import Skeleton
from . import anim

# Camera frame <- armature frame for the default camera: on the armature's -Y side looking along +Y, Z up.
# Blender camera axes: looks along local -Z, +Y up; so camera X = +X, camera Y = +Z, camera Z = -Y.
DEFAULT_CAM_FROM_ARMATURE = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

ROTATION_CHANNELS = {"QUATERNION": ("rotation_quaternion", 4), "AXIS_ANGLE": ("rotation_axis_angle", 4)}


def rotation_channel(mode: str) -> tuple[str, int]:
    return ROTATION_CHANNELS.get(mode, ("rotation_euler", 3))


def bone_path(name: str, prop: str) -> str:
    return 'pose.bones["%s"].%s' % (name.replace("\\", "\\\\").replace('"', '\\"'), prop)


@dataclass
class RigInfo:
    skeleton: Skeleton
    rotation_modes: tuple[str, ...]  # per skeleton joint
    ref_rot: np.ndarray  # (J, 3, 3) reference local rotations (matrix_basis rotation)
    ref_location: np.ndarray  # (3,) root bone's location channel at the reference frame
    skipped: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> tuple[str, ...]:
        return self.skeleton.names


def check_armature(obj) -> None:
    """Raise MocapError unless `obj` is a local, editable armature object in Object or Pose Mode."""
    try:
        if obj is None:
            raise MocapError("No armature given. Select an armature (click it in the viewport) and try again.")
        kind = getattr(obj, "type", None)
        name = getattr(obj, "name", "?")
    except ReferenceError:
        raise MocapError("The armature was deleted. Select an armature and try again.") from None
    if kind is None:
        raise MocapError(f"Expected a Blender armature object, got {type(obj).__name__}. Pass "
                         "bpy.data.objects['<name>'] of an armature.")
    if kind != 'ARMATURE':
        raise MocapError(f"{name!r} is a {kind.lower()} object, not an armature. Select the armature of the rig "
                         "to animate (in Pose or Object Mode) and try again.")
    if obj.library is not None:
        raise MocapError(f"Armature {name!r} is linked from the library {obj.library.filepath!r} and cannot be "
                         "animated here. Make a library override first (Object > Library Override > Make), then "
                         "capture onto the override.")
    ov = getattr(obj, "override_library", None)
    if ov is not None and getattr(ov, "is_system_override", False):
        raise MocapError(f"Armature {name!r} is a non-editable library override. Make it editable (Outliner: "
                         "right-click > Library Override > Make Editable) and try again.")
    if obj.mode not in {'OBJECT', 'POSE'}:
        raise MocapError(f"Armature {name!r} is in {obj.mode.replace('_', ' ').title()} Mode. Switch to Pose "
                         "Mode or Object Mode and try again.")
    ad = obj.animation_data
    if ad is not None and getattr(ad, "use_tweak_mode", False):
        raise MocapError(f"Armature {name!r} is in NLA tweak mode. Exit tweak mode in the NLA editor (Tab) "
                         "and try again.")


def _select_bones(arm) -> tuple[list, list[str]]:
    bones = list(arm.bones)
    by_name = {b.name: b for b in bones}
    deform_below: dict[str, bool] = {}

    def has_deform(b) -> bool:  # iterative post-order is unnecessary at rig sizes; recursion depth <= chain length
        if b.name not in deform_below:
            deform_below[b.name] = b.use_deform or any(has_deform(c) for c in b.children)
        return deform_below[b.name]

    any_deform = any(b.use_deform for b in bones)
    roots = [b for b in bones if b.parent is None]

    def tree(root):
        out, stack = [], [root]
        while stack:
            b = stack.pop()
            out.append(b)
            stack.extend(b.children)
        return out

    trees = [tree(r) for r in roots]
    main = max(trees, key=lambda t: (sum(b.use_deform for b in t), len(t)))
    keep = [b for b in main if not any_deform or has_deform(b)]
    kept = {b.name for b in keep}
    skipped = [b.name for b in bones if b.name not in kept]
    return [by_name[b.name] for b in keep], skipped


def _channel_values(obj, pb, frame, curves_by_path) -> tuple[np.ndarray, np.ndarray]:
    """(rotation (3,3), location (3,)) of a pose bone at `frame` from F-curves (None frame: current values)."""
    prop, n = rotation_channel(pb.rotation_mode)
    rot_vals = np.array(getattr(pb, prop)[:], dtype=np.float64)
    loc = np.array(pb.location[:], dtype=np.float64)
    if frame is not None:
        for i in range(n):
            fc = curves_by_path.get((bone_path(pb.name, prop), i))
            if fc is not None:
                rot_vals[i] = fc.evaluate(frame)
        for i in range(3):
            fc = curves_by_path.get((bone_path(pb.name, "location"), i))
            if fc is not None:
                loc[i] = fc.evaluate(frame)
    return R.channels_to_matrix(rot_vals, pb.rotation_mode), loc


def _check_constraints_and_drivers(obj, names) -> None:
    wanted = set(names)
    constrained = []
    for name in names:
        pb = obj.pose.bones[name]
        active = [c for c in pb.constraints if not getattr(c, "mute", False) and c.influence > 0.0]
        if active:
            constrained.append(f"{name} ({', '.join(c.type.replace('_', ' ').title() for c in active)})")
    if constrained:
        raise MocapError(
            f"{len(constrained)} bone(s) have active constraints that would override the captured keys: "
            f"{'; '.join(constrained[:6])}{' ...' if len(constrained) > 6 else ''}. Mute those constraints (or set "
            "their influence to 0), or capture onto a rig without them (e.g. the deform skeleton), then try again.")
    driven = []
    ad = obj.animation_data
    if ad is not None:
        for fc in ad.drivers:
            path = fc.data_path
            if fc.mute or not path.startswith('pose.bones["'):
                continue
            bone = path[len('pose.bones["'):].split('"]', 1)[0].replace('\\"', '"').replace("\\\\", "\\")
            prop = path.rsplit(".", 1)[-1]
            if bone in wanted and prop.startswith(("rotation_", "location")):
                driven.append(f"{bone}.{prop}")
    if driven:
        raise MocapError(
            f"Drivers control channels the capture would key: {', '.join(sorted(set(driven))[:6])}. Drivers "
            "override keyframes, so remove or mute these drivers (Drivers editor), then try again.")


def read_rig(obj, reference_frame: int | None = None, *, max_joints: int | None = None) -> RigInfo:
    """Validate the armature and read its rest pose and reference pose. `reference_frame` None: current frame."""
    check_armature(obj)
    arm = obj.data
    if len(arm.bones) < 2:
        raise MocapError(f"Armature {obj.name!r} has {len(arm.bones)} bone(s); motion capture needs a skeleton "
                         "of at least two bones (e.g. a spine and a head). Add bones in Edit Mode.")
    bones, skipped = _select_bones(arm)
    if len(bones) < 2:
        raise MocapError(f"Armature {obj.name!r}: only {len(bones)} bone is connected to a deforming skeleton; "
                         "capture needs at least two connected bones. Parent the bones into one hierarchy.")
    if max_joints is not None and len(bones) > max_joints:
        raise MocapError(f"Armature {obj.name!r} has {len(bones)} bones to capture but the model takes at most "
                         f"{max_joints}. Turn Deform off on helper bones (they are then skipped), or capture onto "
                         "a simpler skeleton and transfer the motion.")
    names = [b.name for b in bones]
    parents = [names.index(b.parent.name) if b.parent is not None and b.parent.name in names else -1 for b in bones]
    rest = np.array([np.array(b.matrix_local) for b in bones], dtype=np.float64)
    tails = np.array([b.tail_local[:] for b in bones], dtype=np.float64)
    skel = Skeleton.from_arrays(names, parents, rest, tails)  # re-ordered parent-first
    _check_constraints_and_drivers(obj, skel.names)

    scene_frame = None
    try:
        import bpy
        scene_frame = bpy.context.scene.frame_current
    except Exception:  # pragma: no cover
        pass
    frame = None if reference_frame is None or reference_frame == scene_frame else float(reference_frame)
    curves = {}
    if frame is not None:
        curves = {(fc.data_path, fc.array_index): fc for fc in anim.fcurves_for(obj) if not fc.mute}
    ref_rot = np.empty((skel.n_joints, 3, 3))
    ref_loc = np.zeros(3)
    modes = []
    for j, name in enumerate(skel.names):
        pb = obj.pose.bones[name]
        rot, loc = _channel_values(obj, pb, frame, curves)
        ref_rot[j] = rot
        if j == skel.root:
            ref_loc = loc
        modes.append(pb.rotation_mode)
    notes = []
    if skipped:
        notes.append(f"{len(skipped)} helper bone(s) not captured: {', '.join(skipped[:5])}"
                     f"{' ...' if len(skipped) > 5 else ''}")
    return RigInfo(skel, tuple(modes), ref_rot, ref_loc, tuple(skipped), notes)


def _rotation_only(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def world_up(obj) -> np.ndarray:
    """(3,) the world's up (+Z) in the armature's space (the ground the contact clean-up looks for)."""
    return _rotation_only(np.array(obj.matrix_world, dtype=np.float64)[:3, :3]).T @ np.array([0.0, 0.0, 1.0])


def cam_from_armature(obj, camera=None) -> np.ndarray:
    """(3, 3) rotation taking armature-space directions to the camera's local frame (looks along -Z, +Y up)."""
    if camera is None:
        return DEFAULT_CAM_FROM_ARMATURE.copy()
    try:
        kind = camera.type
    except (AttributeError, ReferenceError):
        raise MocapError("The camera is not a Blender object. Pass a camera object or None.") from None
    if kind != 'CAMERA':
        raise MocapError(f"{camera.name!r} is a {kind.lower()} object, not a camera. Choose the camera the video "
                         "was shot from, or none (front view).")
    cam = _rotation_only(np.array(camera.matrix_world, dtype=np.float64)[:3, :3])
    arm = _rotation_only(np.array(obj.matrix_world, dtype=np.float64)[:3, :3])
    return cam.T @ arm
