"""The factorized baseline: analytic IK from positions."""
import numpy as np

from mocap_blender.core import ik
from mocap_blender.core import rotations as R
from mocap_blender.core.skeleton import forward_kinematics, pose_tails
from models.export import random_skeleton


def _truth(j=15, t=6, seed=0):
    rng = np.random.default_rng(seed)
    skel = random_skeleton(j, rng)
    basis = R.rotvec_to_matrix(rng.normal(0, 0.7, (t, j, 3)))
    pose = forward_kinematics(skel, basis)
    return skel, basis, pose[..., :3, 3], pose_tails(skel, pose)


def test_swing_twist_decomposition():
    rng = np.random.default_rng(3)
    r = R.rotvec_to_matrix(rng.normal(size=(50, 3)))
    tw = ik.twist_about_y(r)
    swing = r @ np.swapaxes(tw, -1, -2)
    # the twist is about Y; the swing moves Y exactly as r does and has no twist of its own
    np.testing.assert_allclose(tw[:, :, 1], np.tile([0.0, 1.0, 0.0], (50, 1)), atol=1e-9)
    np.testing.assert_allclose(swing[:, :, 1], r[:, :, 1], atol=1e-9)
    np.testing.assert_allclose(R.geodesic_angle(ik.twist_about_y(swing), np.eye(3)), 0.0, atol=1e-6)
    d = rng.normal(size=(50, 3))
    np.testing.assert_allclose(ik.swing_from_y(d)[:, :, 1], d / np.linalg.norm(d, axis=-1, keepdims=True),
                               atol=1e-9)


def test_ik_from_perfect_positions_with_true_twist_recovers_rotations():
    skel, basis, heads, tails = _truth()
    for t in range(basis.shape[0]):  # twist from the truth of that frame -> exact
        out = ik.ik_factorized(skel, heads[t:t + 1], tails[t:t + 1], basis[t])
        np.testing.assert_allclose(R.geodesic_angle(out, basis[t:t + 1]), 0.0, atol=1e-5)


def test_ik_recovers_swing_with_any_twist():
    skel, basis, heads, tails = _truth(seed=1)
    out = ik.ik_factorized(skel, heads, tails, np.tile(np.eye(3), (skel.n_joints, 1, 1)))
    # every bone points where it should (positions reproduced), only twist may differ
    pose = forward_kinematics(skel, out)
    np.testing.assert_allclose(pose_tails(skel, pose), tails, atol=1e-6)
    np.testing.assert_allclose(pose[..., :3, 3], heads, atol=1e-6)


def test_ik_root_given_and_scale_free():
    skel, basis, heads, tails = _truth(seed=2)
    out = ik.ik_factorized(skel, 3.0 * heads + 1.0, 3.0 * tails + 1.0, basis[0], root_rot=basis[:, 0])
    np.testing.assert_allclose(out[:, 0], basis[:, 0])
    pose = forward_kinematics(skel, out)
    np.testing.assert_allclose(pose_tails(skel, pose), tails, atol=1e-6)


def _imported_rig(seed=0, t=5):
    """A glTF-like rig: every bone 0.2% of the size, children's heads anywhere around their parent's head.
    Bone 1 has one child (3); bone 2 has two (4, 5), off its axis."""
    from mocap_blender.core.skeleton import Skeleton
    rng = np.random.default_rng(seed)
    parents = np.array([-1, 0, 0, 1, 2, 2])
    offsets = rng.normal(0, 1.0, (6, 3))
    rest = np.tile(np.eye(4), (6, 1, 1))
    for i in range(6):
        rest[i, :3, :3] = R.rotvec_to_matrix(rng.normal(0, 1.0, 3))
        rest[i, :3, 3] = 0.0 if i == 0 else rest[parents[i], :3, 3] + offsets[i]
    tails = rest[:, :3, 3] + 0.01 * rest[:, :3, 1]
    skel = Skeleton.from_arrays([f"b{i}" for i in range(6)], parents, rest, tails)
    basis = R.rotvec_to_matrix(rng.normal(0, 0.7, (t, 6, 3)))
    pose = forward_kinematics(skel, basis)
    return skel, basis, pose[..., :3, 3], pose_tails(skel, pose)


def test_ik_short_bones_aim_at_their_children():
    skel, basis, heads, tails = _imported_rig()
    assert (skel.lengths < ik.AIM_CHILDREN_BELOW * skel.height).all()
    # the twist that positions cannot show comes from the reference: given the truth, IK is exact
    for t in range(basis.shape[0]):
        out = ik.ik_factorized(skel, heads[t:t + 1], tails[t:t + 1], basis[t], root_rot=basis[t:t + 1, 0])
        np.testing.assert_allclose(R.geodesic_angle(out, basis[t:t + 1]), 0.0, atol=1e-5)
    # with a wrong reference, the children's heads are still reached (swing right, only twist off)
    out = ik.ik_factorized(skel, heads, tails, np.tile(np.eye(3), (6, 1, 1)), root_rot=basis[:, 0])
    np.testing.assert_allclose(forward_kinematics(skel, out)[..., :3, 3], heads, atol=1e-6)
    # the tail-only rule of a long bone would leave the single-child bone b1 at the reference: far off
    k = skel.names.index("b1")
    assert np.degrees(R.geodesic_angle(out[:, k], basis[:, k])).mean() < np.degrees(
        R.geodesic_angle(np.eye(3), basis[:, k])).mean()


def test_ik_fits_the_whole_rotation_where_children_span_a_plane():
    skel, basis, heads, tails = _imported_rig(seed=1)
    out = ik.ik_factorized(skel, heads, tails, np.tile(np.eye(3), (6, 1, 1)), root_rot=basis[:, 0])
    # b2's two children are off its axis: its twist is seen, whatever the reference says
    k = skel.names.index("b2")  # (from_arrays orders bones depth-first)
    np.testing.assert_allclose(R.geodesic_angle(out[:, k], basis[:, k]), 0.0, atol=1e-6)
