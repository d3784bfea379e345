"""Reading the rig (blender/rig.py): rest, reference pose in every rotation mode, bone selection, bad rigs."""
from __future__ import annotations

import numpy as np
import pytest

from test_blender_helpers import RIG_BONES, bpy, fresh_scene, make_armature, scene_snapshot  # noqa: F401

from mocap_blender.blender import rig  # noqa: E402
from mocap_blender.core import rotations as R  # noqa: E402
from mocap_blender.core.errors import MocapError  # noqa: E402



@pytest.fixture
def empty_scene():
    yield from fresh_scene()


def test_rest_and_reference_match_blender(empty_scene):
    obj = make_armature()
    obj.scale = (2.0, 2.0, 3.0)  # object scale must not matter
    info = rig.read_rig(obj)
    assert set(info.names) == {b[0] for b in RIG_BONES} and info.names[0] == "hips"
    for j, name in enumerate(info.names):
        bone, pb = obj.data.bones[name], obj.pose.bones[name]
        np.testing.assert_allclose(info.skeleton.rest[j], np.array(bone.matrix_local), atol=1e-6)
        np.testing.assert_allclose(info.ref_rot[j], np.array(pb.matrix_basis)[:3, :3], atol=1e-5)
        assert info.rotation_modes[j] == pb.rotation_mode
        p = info.skeleton.parents[j]
        assert (p < 0 and bone.parent is None) or info.names[p] == bone.parent.name


def test_reference_at_other_frame_from_fcurves_without_changing_scene(empty_scene):
    obj = make_armature()
    pb = obj.pose.bones["spine"]
    pb.rotation_euler = (0.3, 0.0, 0.0)
    pb.keyframe_insert("rotation_euler", frame=10)
    pb.rotation_euler = (0.0, 0.0, 0.9)
    pb.keyframe_insert("rotation_euler", frame=20)
    empty_scene.frame_set(1)
    pb.rotation_euler = (0.0, 1.0, 0.0)  # un-keyed tweak at the current frame: must survive
    before = scene_snapshot()
    info = rig.read_rig(obj, reference_frame=20)
    j = info.names.index("spine")
    np.testing.assert_allclose(info.ref_rot[j], R.euler_to_matrix(np.array([0, 0, 0.9]), "XYZ"), atol=1e-5)
    assert scene_snapshot() == before
    info_now = rig.read_rig(obj)  # current frame: the pose as it is on screen
    np.testing.assert_allclose(info_now.ref_rot[j], R.euler_to_matrix(np.array([0, 1.0, 0]), "XYZ"), atol=1e-5)


def test_several_roots_and_helper_bones_are_skipped(empty_scene):
    bones = RIG_BONES + [("ik_target.L", None, (0.7, 0.3, 1.4), (0.7, 0.3, 1.6), "QUATERNION"),
                         ("prop", None, (1, 0, 0), (1, 0, 0.2), "QUATERNION"),
                         ("pole", "hips", (0, -0.5, 1.0), (0, -0.5, 1.2), "QUATERNION")]
    obj = make_armature(bones=bones)
    for name in ("ik_target.L", "prop", "pole"):
        obj.data.bones[name].use_deform = False
    info = rig.read_rig(obj)
    assert set(info.skipped) == {"ik_target.L", "prop", "pole"}
    assert len(info.names) == len(RIG_BONES) and info.notes


def test_nondeforming_bone_between_deforming_bones_is_kept(empty_scene):
    obj = make_armature()
    obj.data.bones["spine"].use_deform = False
    assert "spine" in rig.read_rig(obj).names


def test_bad_objects(empty_scene):
    with pytest.raises(MocapError, match="No armature"):
        rig.read_rig(None)
    mesh = bpy.data.objects.new("Cube", bpy.data.meshes.new("Cube"))
    empty_scene.collection.objects.link(mesh)
    with pytest.raises(MocapError, match="not an armature"):
        rig.read_rig(mesh)
    one = make_armature("One", bones=RIG_BONES[:1])
    with pytest.raises(MocapError, match="at least two bones"):
        rig.read_rig(one)
    obj = make_armature()
    with pytest.raises(MocapError, match="at most 5"):
        rig.read_rig(obj, max_joints=5)


def test_edit_mode_refused(empty_scene):
    obj = make_armature()
    with bpy.context.temp_override(active_object=obj, object=obj):
        bpy.ops.object.mode_set(mode='EDIT')
    with pytest.raises(MocapError, match="Edit Mode"):
        rig.read_rig(obj)
    bpy.ops.object.mode_set(mode='OBJECT')


def test_constraints_and_drivers_refused(empty_scene):
    obj = make_armature()
    c = obj.pose.bones["forearm.L"].constraints.new('DAMPED_TRACK')
    with pytest.raises(MocapError, match="forearm.L.*Damped Track"):
        rig.read_rig(obj)
    c.mute = True
    rig.read_rig(obj)  # muted: fine
    fc = obj.pose.bones["head"].driver_add("rotation_euler", 2)
    fc.driver.expression = "0.5"
    with pytest.raises(MocapError, match="head.rotation_euler"):
        rig.read_rig(obj)


def test_camera_orientation(empty_scene):
    obj = make_armature()
    np.testing.assert_allclose(rig.cam_from_armature(obj) @ np.array([0, 1.0, 0]), [0, 0, -1])  # looks along +Y
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    empty_scene.collection.objects.link(cam)
    cam.rotation_euler = (np.pi / 2, 0, 0)  # the front view: -Z looks along +Y
    cam.location = (0, -5, 1)
    bpy.context.view_layer.update()
    np.testing.assert_allclose(rig.cam_from_armature(obj, cam), rig.DEFAULT_CAM_FROM_ARMATURE, atol=1e-6)
    obj.rotation_euler = (0, 0, np.pi / 2)
    obj.scale = (2, 2, 2)
    bpy.context.view_layer.update()
    np.testing.assert_allclose(rig.cam_from_armature(obj, cam) @ np.array([1.0, 0, 0]), [0, 0, -1], atol=1e-6)
    with pytest.raises(MocapError, match="not a camera"):
        rig.cam_from_armature(obj, obj)
