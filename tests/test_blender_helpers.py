"""Shared helpers for the bpy tests (no tests or fixtures here): a factory-empty scene, a small rig, a drawn clip, the model
file, and a snapshot of everything a capture could change (to assert "the scene is unchanged")."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
cv2 = pytest.importorskip("cv2")

import mocap_blender  # noqa: E402
from mocap_blender import api  # noqa: E402
from mocap_blender.blender import anim  # noqa: E402
from mocap_blender.blender.rig import bone_path, rotation_channel  # noqa: E402
from mocap_blender.core import rotations as R  # noqa: E402

MODEL_PATH = Path(mocap_blender.__file__).resolve().parent / "weights" / "mocap.onnx"
needs_model = pytest.mark.skipif(not MODEL_PATH.is_file(), reason="mocap_blender/weights/mocap.onnx not exported yet")

# (name, parent, head, tail, rotation mode): a small biped mixing every rotation mode
RIG_BONES = [
    ("hips", None, (0, 0, 1.0), (0, 0, 1.2), "QUATERNION"),
    ("spine", "hips", (0, 0, 1.2), (0, 0, 1.5), "XYZ"),
    ("head", "spine", (0, 0, 1.5), (0, 0, 1.75), "ZXY"),
    ("arm.L", "spine", (0.15, 0, 1.45), (0.45, 0, 1.45), "AXIS_ANGLE"),
    ("forearm.L", "arm.L", (0.45, 0, 1.45), (0.7, 0, 1.45), "YZX"),
    ("arm.R", "spine", (-0.15, 0, 1.45), (-0.45, 0, 1.45), "QUATERNION"),
    ("forearm.R", "arm.R", (-0.45, 0, 1.45), (-0.7, 0, 1.45), "ZYX"),
    ("thigh.L", "hips", (0.1, 0, 1.0), (0.1, 0.02, 0.5), "XZY"),
    ("shin.L", "thigh.L", (0.1, 0.02, 0.5), (0.1, 0, 0.05), "QUATERNION"),
    ("thigh.R", "hips", (-0.1, 0, 1.0), (-0.1, 0.02, 0.5), "YXZ"),
    ("shin.R", "thigh.R", (-0.1, 0.02, 0.5), (-0.1, 0, 0.05), "QUATERNION"),
]


def fresh_scene():
    """Generator for a per-test fixture: an empty factory scene with the add-on registered from the repository
    package. Each test module defines its own `empty_scene` fixture as `yield from fresh_scene()`: a pytest
    fixture object imported from another module makes the bpy 4.2 module segfault at interpreter exit (pytest
    9), even when unused."""
    if hasattr(bpy.types, "MOCAP_OT_capture_video"):  # left registered by an interrupted test
        mocap_blender.unregister()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    mocap_blender.register()
    api.MODEL.path = None
    yield bpy.context.scene
    if hasattr(bpy.types, "MOCAP_OT_capture_video"):
        mocap_blender.unregister()


def make_armature(name="Rig", bones=RIG_BONES, *, scene=None, active=True, pose=True):
    scene = scene or bpy.context.scene
    arm = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, arm)
    scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    with bpy.context.temp_override(active_object=obj, object=obj):
        bpy.ops.object.mode_set(mode='EDIT')
    eb = {}
    for bname, parent, head, tail, _ in bones:
        b = arm.edit_bones.new(bname)
        b.head, b.tail = head, tail
        if parent:
            b.parent = eb[parent]
        eb[bname] = b
    bpy.ops.object.mode_set(mode='OBJECT')
    for bname, _, _, _, mode in bones:
        obj.pose.bones[bname].rotation_mode = mode
    if pose:
        rng = np.random.default_rng(1)
        for bname, *_ in bones:  # a non-rest reference pose in every rotation mode
            pb = obj.pose.bones[bname]
            rv = rng.normal(0, 0.25, 3)
            m = R.rotvec_to_matrix(rv)
            if pb.rotation_mode == "QUATERNION":
                pb.rotation_quaternion = R.matrix_to_quat(m)
            elif pb.rotation_mode == "AXIS_ANGLE":
                pb.rotation_axis_angle = R.matrix_to_axis_angle(m)
            else:
                pb.rotation_euler = R.matrix_to_euler(m, pb.rotation_mode)
    if not active:
        obj.select_set(False)
    return obj


def write_clip(path, n_frames=24, size=(96, 96), fps=24, fourcc="mp4v"):
    """A drawn stick figure waving its arms (plumbing only)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for i in range(n_frames):
        img = np.full((h, w, 3), 40, np.uint8)
        cx, top = w // 2, h // 6
        a = 0.8 * math.sin(2 * math.pi * i / max(n_frames, 2))
        pts = {"head": (cx, top), "neck": (cx, top + h // 8), "hip": (cx, h // 2 + h // 10)}
        cv2.circle(img, pts["head"], max(2, h // 14), (200, 220, 240), -1)
        cv2.line(img, pts["neck"], pts["hip"], (220, 200, 180), max(1, w // 32))
        for s in (-1, 1):
            hand = (int(cx + s * w * 0.3 * math.cos(a)), int(pts["neck"][1] - s * h * 0.2 * math.sin(a)))
            cv2.line(img, pts["neck"], hand, (90, 200, 90), max(1, w // 40))
            foot = (int(cx + s * w * 0.15), h - h // 12)
            cv2.line(img, pts["hip"], foot, (200, 90, 90), max(1, w // 40))
        writer.write(img)
    writer.release()
    return str(path)


def channel_snapshot(obj) -> dict:
    out = {}
    for pb in obj.pose.bones:
        out[pb.name] = (pb.rotation_mode, tuple(pb.rotation_quaternion), tuple(pb.rotation_euler),
                        tuple(pb.rotation_axis_angle), tuple(pb.location), tuple(pb.scale))
    return out


def action_snapshot(action) -> dict:
    curves = {}
    if anim.LAYERED:
        bags = [strip.channelbag(slot) for layer in action.layers for strip in layer.strips for slot in action.slots]
        fcs = [fc for bag in bags if bag is not None for fc in bag.fcurves]
    else:
        fcs = list(action.fcurves)
    for fc in fcs:
        co = np.empty(2 * len(fc.keyframe_points), np.float32)
        fc.keyframe_points.foreach_get("co", co)
        curves[(fc.data_path, fc.array_index)] = co.tobytes()
    return {"fake_user": action.use_fake_user, "users": action.users, "curves": curves}


def scene_snapshot() -> dict:
    """Everything a capture could change: actions and their keys, assignments, pose values, selection, mode."""
    vl = bpy.context.view_layer
    vl.update()  # the view layer syncs its object list lazily
    objs = {}
    for o in bpy.data.objects:
        ad = o.animation_data
        objs[o.name] = {
            "action": ad.action.name if ad is not None and ad.action is not None else None,
            "has_anim": ad is not None, "selected": o.select_get(view_layer=vl) if vl.objects.get(o.name) else None,
            "mode": o.mode, "pose": channel_snapshot(o) if o.type == 'ARMATURE' and o.pose else None,
        }
    return {
        "actions": {a.name: action_snapshot(a) for a in bpy.data.actions},
        "objects": objs,
        "active": vl.objects.active.name if vl.objects.active else None,
        "frame": bpy.context.scene.frame_current,
        "n_ids": (len(bpy.data.actions), len(bpy.data.objects), len(bpy.data.armatures)),
    }


def fcurve_values(action, obj, data_path, index) -> np.ndarray:
    """(n, 2) keyframe (frame, value) of one channel of `obj`'s action."""
    for fc in anim_fcurves(action, obj):
        if fc.data_path == data_path and fc.array_index == index:
            co = np.empty(2 * len(fc.keyframe_points), np.float32)
            fc.keyframe_points.foreach_get("co", co)
            return co.reshape(-1, 2)
    raise KeyError((data_path, index))


def channel_rotations(action, obj, name, mode):
    """Keyed frames (n,) and rotations (n, 3, 3) of one bone's rotation channels in its rotation `mode`."""
    prop, count = rotation_channel(mode)
    co = np.stack([fcurve_values(action, obj, bone_path(name, prop), i) for i in range(count)], 1)
    return co[:, 0, 0], R.channels_to_matrix(co[:, :, 1].astype(np.float64), mode)


def anim_fcurves(action, obj):
    if obj.animation_data is not None and obj.animation_data.action == action:
        return anim.fcurves_for(obj)
    raise AssertionError("action not assigned to the object")


def set_settings(scene, **kw):
    s = scene.mocap_capture
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def override(obj):
    """Context for running the operator on `obj` (3D viewport-less, background)."""
    return bpy.context.temp_override(active_object=obj, object=obj, selected_objects=[obj])
