"""The core agrees with Blender itself: FK, inverse FK (convert_space), rotation conversions, BVH import and export.

Needs the `bpy` module (Blender as a Python module); nothing here is skipped.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bpy  # noqa: E402  (conftest has pointed BLENDER_USER_RESOURCES at a temporary folder)
from mathutils import Euler, Matrix, Quaternion  # importable only after bpy

from _core_rigs import ROTATION_MODES, random_mode_params, random_rotations
from conftest import MOCAP_DEV
from mocap_blender.core import bvh as B
from mocap_blender.core import rotations as R
from mocap_blender.core.skeleton import Skeleton, basis_from_pose, forward_kinematics

REAL_BVH = sorted(MOCAP_DEV.rglob("*.bvh"))
BLENDER_ATOL = 1e-5  # Blender computes in float32


@pytest.fixture
def scene():
    """A clean, empty scene for every test."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene
    bpy.ops.wm.read_factory_settings(use_empty=True)


def _np(m) -> np.ndarray:
    return np.array([list(row) for row in m], dtype=np.float64)


def _build_rig(rng, n_bones):
    """A random armature: random heads, tails and rolls, random parents, connected and not, a scale on the object."""
    arm = bpy.data.armatures.new("Rig")
    ob = bpy.data.objects.new("Rig", arm)
    bpy.context.collection.objects.link(ob)
    bpy.context.view_layer.objects.active = ob
    ob.location = rng.uniform(-2, 2, 3)
    ob.rotation_euler = rng.uniform(-np.pi, np.pi, 3)
    ob.scale = rng.uniform(0.5, 2.0, 3)  # non-uniform: pose_bone.matrix is in armature space, unaffected
    bpy.ops.object.mode_set(mode="EDIT")
    ebs = []
    for i in range(n_bones):
        eb = arm.edit_bones.new(f"bone.{i:02d}")
        eb.head = rng.uniform(-1, 1, 3)
        eb.tail = np.array(eb.head) + rng.normal(size=3) / np.sqrt(3) * rng.uniform(0.2, 1.0)
        eb.roll = rng.uniform(-np.pi, np.pi)
        if i:
            eb.parent = ebs[int(rng.integers(0, i)) if rng.random() < 0.6 else i - 1]
            eb.use_connect = bool(rng.random() < 0.5)  # a connected bone's head snaps to its parent's tail
        ebs.append(eb)
    bpy.ops.object.mode_set(mode="OBJECT")
    bones = list(arm.bones)
    names = [b.name for b in bones]
    parents = [names.index(b.parent.name) if b.parent else -1 for b in bones]
    rest = np.stack([_np(b.matrix_local) for b in bones])
    tails = np.array([list(b.tail_local) for b in bones])
    return ob, Skeleton.from_arrays(names, parents, rest, tails)


def _random_pose(rng, ob, skel):
    """Random matrix_basis values set through each bone's own rotation mode (all eight used); locations on bones
    that are free to move. Returns rotations (J,3,3) and locations (J,3) from the values Blender stored."""
    modes = [ROTATION_MODES[(k + int(rng.integers(8))) % 8] for k in range(skel.n_joints)]
    rot = np.zeros((skel.n_joints, 3, 3))
    loc = np.zeros((skel.n_joints, 3))
    for j, name in enumerate(skel.names):
        pb = ob.pose.bones[name]
        mode = modes[j]
        pb.rotation_mode = mode
        p = random_mode_params(rng, mode)
        if mode == "QUATERNION":
            pb.rotation_quaternion = p * rng.uniform(0.5, 2.0)  # Blender normalises, and so does the core
            got = np.array(pb.rotation_quaternion)
        elif mode == "AXIS_ANGLE":
            pb.rotation_axis_angle = p
            got = np.array(pb.rotation_axis_angle)
        else:
            pb.rotation_euler = p
            got = np.array(pb.rotation_euler)
        rot[j] = {"QUATERNION": R.quat_to_matrix, "AXIS_ANGLE": R.axis_angle_to_matrix}.get(
            mode, lambda v: R.euler_to_matrix(v, mode))(got)
        if not pb.bone.use_connect:
            pb.location = rng.uniform(-0.5, 0.5, 3)
            loc[j] = np.array(pb.location)
    bpy.context.view_layer.update()
    return rot, loc


@pytest.mark.parametrize("seed", range(6))
def test_fk_matches_blender_pose(scene, seed):
    rng = np.random.default_rng(seed)
    ob, skel = _build_rig(rng, n_bones=int(rng.integers(3, 11)))
    for _ in range(3):
        rot, loc = _random_pose(rng, ob, skel)
        blender = np.stack([_np(ob.pose.bones[n].matrix) for n in skel.names])
        basis = np.stack([_np(ob.pose.bones[n].matrix_basis) for n in skel.names])
        assert np.allclose(basis[:, :3, :3], rot, atol=BLENDER_ATOL)  # the core's conversion of each mode
        core = forward_kinematics(skel, rot, basis_loc=loc)
        assert np.allclose(core, blender, atol=BLENDER_ATOL)
        # With only the root moving, root_loc alone is enough.
        if not np.any(loc[1:]):
            assert np.allclose(forward_kinematics(skel, rot, loc[0]), blender, atol=BLENDER_ATOL)


@pytest.mark.parametrize("seed", range(4))
def test_basis_from_pose_matches_convert_space(scene, seed):
    rng = np.random.default_rng(100 + seed)
    ob, skel = _build_rig(rng, n_bones=int(rng.integers(3, 9)))
    _random_pose(rng, ob, skel)
    pose = np.stack([_np(ob.pose.bones[n].matrix) for n in skel.names])
    basis = np.stack([_np(ob.pose.bones[n].matrix_basis) for n in skel.names])
    assert np.allclose(basis_from_pose(skel, pose), basis, atol=BLENDER_ATOL)
    # Any armature-space matrix for one bone, the others as posed: Blender's POSE -> LOCAL conversion.
    targets = np.zeros((skel.n_joints, 4, 4))
    targets[:, :3, :3] = random_rotations(rng, (skel.n_joints,))
    targets[:, :3, 3] = rng.uniform(-2, 2, (skel.n_joints, 3))
    targets[:, 3, 3] = 1
    for j, name in enumerate(skel.names):
        pb = ob.pose.bones[name]
        blender = _np(ob.convert_space(pose_bone=pb, matrix=Matrix(targets[j].tolist()), from_space="POSE",
                                       to_space="LOCAL"))
        p = pose.copy()
        p[j] = targets[j]
        assert np.allclose(basis_from_pose(skel, p)[j], blender, atol=BLENDER_ATOL)
        # and back: Blender's LOCAL -> POSE equals the core FK of that basis
        back = _np(ob.convert_space(pose_bone=pb, matrix=Matrix(blender.tolist()), from_space="LOCAL",
                                    to_space="POSE"))
        assert np.allclose(back, targets[j], atol=BLENDER_ATOL)


# --- rotation conversions against mathutils ------------------------------------------------------

angles = hnp.arrays(np.float64, (3,), elements=st.floats(-2 * np.pi, 2 * np.pi))
quat = hnp.arrays(np.float64, (4,), elements=st.floats(-1, 1)).filter(lambda q: np.linalg.norm(q) > 0.1)
orders = st.sampled_from(R.EULER_ORDERS)
mu = settings(max_examples=80, deadline=None)


@mu
@given(angles, orders)
def test_euler_matches_mathutils(e, order):
    m = R.euler_to_matrix(e, order)
    assert np.allclose(m, _np(Euler(e, order).to_matrix()), atol=1e-6)
    q = R.matrix_to_quat(m)
    bq = np.array(Euler(e, order).to_quaternion())
    assert np.allclose(q * np.sign(q @ bq), bq, atol=1e-6)
    # Blender's to_euler may pick the other Euler family; both are the same rotation.
    be = np.array(Matrix(m.tolist()).to_euler(order))
    ce = R.matrix_to_euler(m, order)
    assert np.allclose(R.euler_to_matrix(be, order), R.euler_to_matrix(ce, order), atol=1e-5)


@mu
@given(angles, angles, orders)
def test_compatible_euler_matches_mathutils(e, ref, order):
    """to_euler(order, compat) and the core's euler_compatible pick the same triple (away from exact ties)."""
    m = R.euler_to_matrix(e, order)
    ce = R.matrix_to_euler(m, order)
    mid = "XYZ".index(order[1])
    if abs(abs(ce[mid]) - np.pi / 2) < 1e-2:
        return  # near gimbal lock float32 Blender and float64 core may split the angles differently
    i, j, k = ("XYZ".index(c) for c in order)
    alt = ce.copy()
    alt[i] += np.pi
    alt[j] = np.pi - alt[j]
    alt[k] += np.pi
    d = [np.sum(np.abs(c + 2 * np.pi * np.round((ref - c) / (2 * np.pi)) - ref)) for c in (ce, alt)]
    wrap_ties = [np.any(np.abs(np.abs(((c - ref + np.pi) % (2 * np.pi)) - np.pi) - np.pi) < 1e-3) for c in (ce, alt)]
    if abs(d[0] - d[1]) < 1e-3 or any(wrap_ties):
        return  # a tie: either answer is right
    ours = R.euler_compatible(ce, ref, order)
    theirs = np.array(Matrix(m.tolist()).to_euler(order, Euler(ref, order)))
    assert np.allclose(ours, theirs, atol=1e-4)


@mu
@given(quat)
def test_quaternion_matches_mathutils(q):
    q = q / np.linalg.norm(q)
    bq = Quaternion(q)
    m = R.quat_to_matrix(q)
    assert np.allclose(m, _np(bq.to_matrix()), atol=1e-6)
    ours = R.matrix_to_quat(m)
    theirs = np.array(Matrix(m.tolist()).to_quaternion())
    assert np.allclose(ours * np.sign(ours @ theirs), theirs, atol=1e-6)
    # axis-angle: mathutils may give angle in (pi, 2pi) with the opposite axis; compare as rotations. mathutils
    # computes these two in float32 from acosf(w), ill-conditioned near w = +-1 (errors up to ~2e-4 measured), hence
    # the looser tolerance; the checks are of conventions (angle first, shorter way round), not of precision.
    axis, angle = bq.to_axis_angle()
    assert np.allclose(R.axis_angle_to_matrix(np.r_[angle, list(axis)]), m, atol=1e-3)
    aa = R.matrix_to_axis_angle(m)
    assert np.allclose(_np(Quaternion(aa[1:], aa[0]).to_matrix()), m, atol=1e-6)
    # exponential map = rotation vector (the shorter way round). Where w is near -1 mathutils' angle (near 2 pi) is
    # off by far more than its float32 (q = (-0.75, 2^-8, 2^-8, 2^-8) normalised: 6.2726 against 2 pi - 0.0180,
    # found by Hypothesis on 3 Dec), so the convention is checked away from there
    v = np.array(bq.to_exponential_map())
    if np.linalg.norm(v) > 2 * np.pi - 0.05:
        return
    if np.linalg.norm(v) > np.pi:
        v = v - 2 * np.pi * v / np.linalg.norm(v)
    if np.linalg.norm(v) < np.pi - 1e-3:
        assert np.allclose(R.matrix_to_rotvec(m), v, atol=1e-3)
    assert np.allclose(R.rotvec_to_matrix(v), m, atol=1e-3)


@mu
@given(quat, quat)
def test_quat_multiply_matches_mathutils(a, b):
    assert np.allclose(R.quat_multiply(a, b), np.array(Quaternion(a) @ Quaternion(b)), atol=1e-6)


# --- BVH against Blender's own importer and exporter ---------------------------------------------

def _import_bvh(path):
    bpy.ops.import_anim.bvh(filepath=str(path))  # defaults: -Z forward, Y up, scale 1, frame 1, NATIVE rotations
    ob = bpy.context.view_layer.objects.active
    assert ob.type == "ARMATURE"
    return ob


def _importer_agrees(path, frames):
    m = B.read_bvh(path)
    sm = m.to_skeleton_motion(blender_axes=True)
    ob = _import_bvh(path)
    sk = sm.skeleton
    assert np.allclose(np.array([list(ob.data.bones[n].head_local) for n in sk.names]), sk.heads,
                       atol=BLENDER_ATOL * sk.height)
    assert np.allclose(np.array([list(ob.data.bones[n].tail_local) for n in sk.names]), sk.tails,
                       atol=BLENDER_ATOL * sk.height)
    heads = sm.pose()[..., :3, 3]
    for f in frames:
        bpy.context.scene.frame_set(1 + f)  # the importer puts BVH frame 0 on scene frame 1
        got = np.array([list(ob.pose.bones[n].head) for n in sk.names])
        assert np.allclose(ob.matrix_world, np.eye(4))
        assert np.allclose(got, heads[f], atol=BLENDER_ATOL * sk.height), f"frame {f}"


@pytest.mark.parametrize("path", REAL_BVH, ids=[p.name for p in REAL_BVH])
def test_blender_importer_heads_match_core_fk(scene, path):
    n = B.read_bvh(path).n_frames
    _importer_agrees(path, sorted(set(range(0, n, max(1, n // 25))) | {n - 1}))


def test_blender_importer_any_channel_order(scene, tmp_path):
    """Every rotation order, position channels on a non-root joint, a joint without channels."""
    rng = np.random.default_rng(7)
    names = [f"j{i}" for i in range(9)]
    parents = np.array([-1, 0, 1, 2, 3, 1, 5, 0, 7])
    perms = [("X", "Y", "Z"), ("X", "Z", "Y"), ("Y", "X", "Z"), ("Y", "Z", "X"), ("Z", "X", "Y"), ("Z", "Y", "X")]
    channels = [("Zposition", "Xposition", "Yposition", "Yrotation", "Xrotation", "Zrotation")]
    for i in range(1, 9):
        rot = tuple(f"{a}rotation" for a in perms[i % 6])
        channels.append(() if i == 4 else rot + (("Xposition", "Yposition", "Zposition") if i == 6 else ()))
    c = sum(len(ch) for ch in channels)
    values = rng.uniform(-180, 180, (12, c))
    offsets = rng.uniform(-10, 10, (9, 3))
    ends = {4: np.array([0, 3.0, 0]), 6: np.array([1.0, 1, 1]), 8: np.array([0, 0, 2.0])}
    m = B.BvhMotion(names, parents, offsets, channels, ends, values, 1 / 24)
    assert m.to_skeleton_motion().has_joint_translation
    p = tmp_path / "orders.bvh"
    B.write_bvh(p, m)
    _importer_agrees(p, range(12))


def test_blender_exporter_read_by_core(scene, tmp_path):
    """A random rig keyed in Blender, written by Blender's BVH exporter, read by the core: same heads."""
    rng = np.random.default_rng(11)
    ob, skel = _build_rig(rng, n_bones=7)
    frames = [1, 2, 3, 4]
    for f in frames:
        _random_pose(rng, ob, skel)
        for pb in ob.pose.bones:
            pb.keyframe_insert("location", frame=f)
            path = {"QUATERNION": "rotation_quaternion", "AXIS_ANGLE": "rotation_axis_angle"}.get(
                pb.rotation_mode, "rotation_euler")
            pb.keyframe_insert(path, frame=f)
            # keep the key even if a later frame switches this bone to another rotation mode
            for other in ("rotation_quaternion", "rotation_axis_angle", "rotation_euler"):
                if other != path:
                    pb.keyframe_insert(other, frame=f)
    heads = []
    for f in frames:
        bpy.context.scene.frame_set(f)
        heads.append([list(ob.pose.bones[n].head) for n in skel.names])
    heads = np.array(heads)
    out = tmp_path / "blender.bvh"
    bpy.ops.export_anim.bvh(filepath=str(out), frame_start=frames[0], frame_end=frames[-1])
    m = B.read_bvh(out)
    assert m.n_frames == len(frames)
    sm = m.to_skeleton_motion()  # Blender's exporter writes armature space unchanged
    idx = [sm.skeleton.names.index(n) for n in skel.names]
    assert np.allclose(sm.pose()[:, idx][..., :3, 3], heads, atol=1e-4)  # the exporter writes 6 decimals
