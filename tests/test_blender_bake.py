"""Baking (blender/bake.py + anim.py): values reproduce the rotations in every mode, no flips, the previous action
kept and untouched, nothing left behind on failure. No model needed."""
from __future__ import annotations

import numpy as np
import pytest

from test_blender_helpers import (action_snapshot, fresh_scene, fcurve_values, make_armature,  # noqa: F401
                                  scene_snapshot)

from mocap_blender.blender import anim, bake, rig  # noqa: E402
from mocap_blender.blender.rig import bone_path, rotation_channel  # noqa: E402
from mocap_blender.core import rotations as R  # noqa: E402



@pytest.fixture
def empty_scene():
    yield from fresh_scene()


def _motion(n_frames, n_joints, seed=0, speed=0.15):
    """Smooth random rotations that wander far (several full turns) so flips would show."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n_joints, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    t = np.arange(n_frames)[:, None, None]
    rv = axis[None] * (speed * t) + 0.3 * np.sin(0.2 * t + rng.normal(size=(1, n_joints, 3)))
    return R.rotvec_to_matrix(rv)


def _basis_at(obj, name):
    return np.array(obj.pose.bones[name].matrix_basis)


def test_bake_reproduces_rotations_in_every_mode(empty_scene):
    obj = make_armature()
    info = rig.read_rig(obj)
    n = 60
    rots = _motion(n, info.skeleton.n_joints)
    loc = np.stack([np.linspace(0, 1, n), np.zeros(n), 0.1 * np.sin(np.arange(n))], -1)
    action = bake.bake(obj, info, rots, 5, "clip", root_location=loc)
    assert action.name == "clip" and obj.animation_data.action == action
    for j, name in enumerate(info.names):
        mode = info.rotation_modes[j]
        prop, count = rotation_channel(mode)
        vals = np.stack([fcurve_values(action, obj, bone_path(name, prop), i) for i in range(count)], 1)  # (n,c,2)
        np.testing.assert_array_equal(vals[:, 0, 0], 5 + np.arange(n))  # one key per frame from frame_start
        v = vals[:, :, 1].astype(np.float64)
        if mode == "QUATERNION":
            m = R.quat_to_matrix(v)
            assert np.all(np.sum(v[1:] * v[:-1], -1) > 0)  # sign continuity
        elif mode == "AXIS_ANGLE":
            m = R.axis_angle_to_matrix(v)
        else:
            m = R.euler_to_matrix(v, mode)
            assert np.max(np.abs(np.diff(v, axis=0))) < 3.0  # no 360- or 180-degree flips (gimbal moves are fast)
        np.testing.assert_allclose(m, rots[:, j], atol=2e-4)
        # and Blender evaluates the same pose
    for f in (5, 33, 64):
        empty_scene.frame_set(f)
        for j, name in enumerate(info.names):
            np.testing.assert_allclose(_basis_at(obj, name)[:3, :3], rots[f - 5, j], atol=2e-4)
    root = info.names[0]
    np.testing.assert_allclose(fcurve_values(action, obj, bone_path(root, "location"), 0)[:, 1], loc[:, 0], atol=1e-6)


def test_previous_action_kept_untouched_and_names_unique(empty_scene):
    obj = make_armature()
    pb = obj.pose.bones["spine"]
    pb.keyframe_insert("rotation_euler", frame=1)
    pb.rotation_euler = (0.5, 0, 0)
    pb.keyframe_insert("rotation_euler", frame=10)
    old = obj.animation_data.action
    old_snap = action_snapshot(old)
    info = rig.read_rig(obj)
    rots = _motion(10, info.skeleton.n_joints)
    a1 = bake.bake(obj, info, rots, 1, "clip")
    a2 = bake.bake(obj, info, rots, 1, "clip")
    assert a1.name == "clip" and a2.name != a1.name and a2.name.startswith("clip")
    assert old.use_fake_user and a1.use_fake_user
    snap = action_snapshot(old)
    assert snap["curves"] == old_snap["curves"]
    assert obj.animation_data.action == a2


def test_failure_leaves_nothing(empty_scene, monkeypatch):
    obj = make_armature()
    obj.pose.bones["spine"].keyframe_insert("rotation_euler", frame=1)
    info = rig.read_rig(obj)
    before = scene_snapshot()
    calls = []

    def boom(fc, frames, values):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("disk full")
        return orig(fc, frames, values)

    orig = bake._write
    monkeypatch.setattr(bake, "_write", boom)
    with pytest.raises(RuntimeError):
        bake.bake(obj, info, _motion(10, info.skeleton.n_joints), 1, "clip")
    assert scene_snapshot() == before


def test_bake_on_object_without_animation_data(empty_scene):
    obj = make_armature()
    assert obj.animation_data is None
    info = rig.read_rig(obj)
    action = bake.bake(obj, info, _motion(4, info.skeleton.n_joints), 1, "")
    assert anim.assigned(obj)[0] == action and action.name.startswith("Mocap")
