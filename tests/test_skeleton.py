"""Skeleton validation, derived quantities, and FK / inverse-FK round trips on random rigs (no Blender needed)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _core_rigs import ROTATION_MODES, random_basis, random_rotations, random_skeleton
from mocap_blender.core.errors import MocapError
from mocap_blender.core.skeleton import (
    Skeleton, basis_from_pose, forward_kinematics, normalise_positions, pose_heads, pose_tails)

seeds = st.integers(0, 2**32 - 1)
core = settings(max_examples=40, deadline=None)


def _reference_fk(skel, basis):
    """Blender's rule written out joint by joint: pose[j] = pose[p] @ inv(rest[p]) @ rest[j] @ basis[j]."""
    pose = np.zeros_like(basis)
    for j in range(skel.n_joints):
        p = skel.parents[j]
        if p < 0:
            pose[..., j, :, :] = skel.rest[j] @ basis[..., j, :, :]
        else:
            pose[..., j, :, :] = pose[..., p, :, :] @ np.linalg.inv(skel.rest[p]) @ skel.rest[j] @ basis[..., j, :, :]
    return pose


def _basis4(rot, root_loc):
    b = np.zeros(rot.shape[:-2] + (4, 4))
    b[..., :3, :3] = rot
    b[..., 3, 3] = 1
    b[..., 0, :3, 3] = root_loc
    return b


# --- FK and its inverse on random rigs ----------------------------------------------------------

@core
@given(seeds)
def test_fk_matches_blenders_rule(seed):
    rng = np.random.default_rng(seed)
    skel = random_skeleton(rng)
    modes, rot, loc = random_basis(rng, skel, n_frames=3)
    pose = forward_kinematics(skel, rot, loc)
    assert pose.shape == (3, skel.n_joints, 4, 4)
    assert np.allclose(pose, _reference_fk(skel, _basis4(rot, loc)), atol=1e-9)


@core
@given(seeds)
def test_basis_from_pose_inverts_fk(seed):
    rng = np.random.default_rng(seed)
    skel = random_skeleton(rng)
    _, rot, loc = random_basis(rng, skel, n_frames=4)
    basis = basis_from_pose(skel, forward_kinematics(skel, rot, loc))
    assert np.allclose(basis, _basis4(rot, loc), atol=1e-9)


@core
@given(seeds)
def test_fk_inverts_basis_from_pose(seed):
    """Any rigid armature-space pose matrices -> matrix_basis -> FK (with every bone's translation) -> the same."""
    rng = np.random.default_rng(seed)
    skel = random_skeleton(rng)
    pose = np.zeros((2, skel.n_joints, 4, 4))
    pose[..., :3, :3] = random_rotations(rng, (2, skel.n_joints))
    pose[..., :3, 3] = rng.uniform(-2, 2, (2, skel.n_joints, 3))
    pose[..., 3, 3] = 1
    basis = basis_from_pose(skel, pose)
    assert np.allclose(basis[..., 3, :], [0, 0, 0, 1], atol=1e-12)
    again = forward_kinematics(skel, basis[..., :3, :3], basis_loc=basis[..., :3, 3])
    assert np.allclose(again, pose, atol=1e-9)


@core
@given(seeds)
def test_fk_is_rigid(seed):
    """Bone lengths and parent-to-child head offsets keep their length; the rest pose is the identity basis."""
    rng = np.random.default_rng(seed)
    skel = random_skeleton(rng)
    assert np.allclose(forward_kinematics(skel, np.broadcast_to(np.eye(3), (skel.n_joints, 3, 3))), skel.rest)
    _, rot, loc = random_basis(rng, skel, n_frames=2)
    pose = forward_kinematics(skel, rot, loc)
    heads, tails = pose_heads(pose), pose_tails(skel, pose)
    assert np.allclose(np.linalg.norm(tails - heads, axis=-1), skel.lengths, atol=1e-9)
    assert np.allclose(pose[..., :3, 1] * skel.lengths[:, None], tails - heads, atol=1e-9)  # tails along local Y
    p = skel.parents[1:]
    rest_d = np.linalg.norm(skel.heads[1:] - skel.heads[p], axis=-1)
    assert np.allclose(np.linalg.norm(heads[:, 1:] - heads[:, p], axis=-1), rest_d, atol=1e-9)
    assert np.allclose(pose_tails(skel, skel.rest), skel.tails, atol=1e-9)


@core
@given(seeds)
def test_fk_batch_dims(seed):
    rng = np.random.default_rng(seed)
    skel = random_skeleton(rng, max_joints=6)
    rot = random_rotations(rng, (2, 3, skel.n_joints))
    loc = rng.normal(size=(2, 3, 3))
    pose = forward_kinematics(skel, rot, loc)
    assert pose.shape == (2, 3, skel.n_joints, 4, 4)
    for a in range(2):
        assert np.allclose(pose[a], forward_kinematics(skel, rot[a], loc[a]))
    assert np.allclose(forward_kinematics(skel, rot[0, 0], loc[0, 0]), pose[0, 0])


@core
@given(seeds)
def test_from_arrays_reorders_parent_first(seed):
    """Joints given in any order come out parent-first with the same names, rest and FK."""
    rng = np.random.default_rng(seed)
    skel = random_skeleton(rng, n_joints=int(rng.integers(2, 12)))
    perm = rng.permutation(skel.n_joints)
    inv = np.argsort(perm)
    parents = np.where(skel.parents[perm] < 0, -1, inv[np.maximum(skel.parents[perm], 0)])
    shuffled = Skeleton.from_arrays([skel.names[i] for i in perm], parents, skel.rest[perm], skel.tails[perm])
    assert np.all(shuffled.parents[1:] < np.arange(1, skel.n_joints))
    assert shuffled.parents[0] == -1
    idx = [shuffled.names.index(n) for n in skel.names]
    assert np.allclose(shuffled.rest[idx], skel.rest)
    for j in range(1, skel.n_joints):
        assert shuffled.names[shuffled.parents[idx[j]]] == skel.names[skel.parents[j]]
    _, rot, loc = random_basis(rng, skel)
    a = forward_kinematics(skel, rot, loc)
    b = forward_kinematics(shuffled, rot[np.argsort(idx)], loc)
    assert np.allclose(b[idx], a, atol=1e-9)


def test_rotation_modes_cover_blender():
    assert set(ROTATION_MODES) == {"QUATERNION", "XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX", "AXIS_ANGLE"}


# --- derived quantities -------------------------------------------------------------------------

def _chain(n=4, step=(0, 1, 0)):
    rest = np.tile(np.eye(4), (n, 1, 1))
    rest[:, :3, 3] = np.arange(n)[:, None] * np.array(step, float)
    tails = rest[:, :3, 3] + np.array(step, float)
    return Skeleton.from_arrays([f"b{i}" for i in range(n)], np.arange(n) - 1, rest, tails)


def test_derived_quantities():
    skel = _chain(4)
    assert skel.n_joints == 4 and skel.root == 0
    assert skel.children == ((1,), (2,), (3,), ())
    assert list(skel.is_leaf) == [False, False, False, True]
    assert np.allclose(skel.lengths, 1.0)
    assert skel.height == pytest.approx(4.0)  # heads and tails span 0..4 along Y
    assert np.allclose(skel.rest_relative[1:, :3, 3], [0, 1, 0])
    assert list(skel.subset_depth()) == [0, 1, 2, 3]
    assert skel.index("b2") == 2
    with pytest.raises(MocapError, match="No bone named"):
        skel.index("nope")


def test_height_uses_largest_side():
    """A snake lying along Y: the height is its length, not its (tiny) vertical extent."""
    skel = _chain(10, step=(0, 0.5, 0))
    assert skel.height == pytest.approx(5.0)


def test_normalise_positions():
    rng = np.random.default_rng(3)
    skel = random_skeleton(rng, n_joints=7)
    _, rot, loc = random_basis(rng, skel, n_frames=5)
    heads = pose_heads(forward_kinematics(skel, rot, loc))
    n = normalise_positions(skel, heads)
    assert np.allclose(n[:, 0], 0)
    assert np.allclose(n * skel.height + heads[:, :1], heads)
    moved = normalise_positions(skel, heads + np.array([5.0, -2, 1]))
    assert np.allclose(moved, n)  # root-relative: a global shift changes nothing


# --- validation ---------------------------------------------------------------------------------

def _valid(n=3):
    rest = np.tile(np.eye(4), (n, 1, 1))
    rest[:, :3, 3] = np.arange(n)[:, None] * np.array([0, 1.0, 0])
    return [f"b{i}" for i in range(n)], np.arange(n) - 1, rest, rest[:, :3, 3] + np.array([0, 1.0, 0])


def test_valid_skeleton_builds():
    assert Skeleton.from_arrays(*_valid()).n_joints == 3


def test_empty_rig():
    with pytest.raises(MocapError, match="no bones"):
        Skeleton.from_arrays([], [], np.zeros((0, 4, 4)), np.zeros((0, 3)))


def test_several_roots():
    names, parents, rest, tails = _valid(4)
    parents = np.array([-1, 0, -1, 2])
    with pytest.raises(MocapError, match=r"2 root bones \(b0, b2\).*Parent the other roots"):
        Skeleton.from_arrays(names, parents, rest, tails)


def test_cycle_with_a_root():
    names, parents, rest, tails = _valid(5)
    parents = np.array([-1, 0, 3, 4, 2])  # b2 -> b3 -> b4 -> b2
    with pytest.raises(MocapError, match="cycle through: b2, b3, b4"):
        Skeleton.from_arrays(names, parents, rest, tails)


def test_cycle_without_a_root():
    names, parents, rest, tails = _valid(3)
    with pytest.raises(MocapError, match="cycle and no root"):
        Skeleton.from_arrays(names, np.array([2, 0, 1]), rest, tails)


def test_own_parent():
    names, parents, rest, tails = _valid(3)
    with pytest.raises(MocapError, match="'b1' is its own parent"):
        Skeleton.from_arrays(names, np.array([-1, 1, 1]), rest, tails)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("where", ["rest", "tails"])
def test_non_finite(bad, where):
    names, parents, rest, tails = _valid(3)
    if where == "rest":
        rest[1, 0, 3] = bad
    else:
        tails[1, 2] = bad
    with pytest.raises(MocapError, match="non-finite.*b1"):
        Skeleton.from_arrays(names, parents, rest, tails)


def test_zero_length_bone():
    names, parents, rest, tails = _valid(3)
    tails[2] = rest[2, :3, 3]
    with pytest.raises(MocapError, match="Zero-length bones: b2.*Edit Mode"):
        Skeleton.from_arrays(names, parents, rest, tails)


def test_duplicate_names():
    names, parents, rest, tails = _valid(3)
    with pytest.raises(MocapError, match="unique.*b0"):
        Skeleton.from_arrays(["b0", "b1", "b0"], parents, rest, tails)


def test_shape_mismatch_and_parent_range():
    names, parents, rest, tails = _valid(3)
    with pytest.raises(MocapError, match="disagree"):
        Skeleton.from_arrays(names, parents, rest[:2], tails)
    with pytest.raises(MocapError, match="out of range"):
        Skeleton.from_arrays(names, np.array([-1, 0, 7]), rest, tails)


def test_fk_rejects_wrong_joint_count():
    skel = Skeleton.from_arrays(*_valid(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3, 3\)"):
        forward_kinematics(skel, np.tile(np.eye(3), (4, 1, 1)))
