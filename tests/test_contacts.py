"""core/contacts.py: planted end points found and pinned on a capture with errors; everything else left as it was."""
from __future__ import annotations

import numpy as np

from mocap_blender.core import contacts as C, rotations as R
from mocap_blender.core.skeleton import Skeleton, forward_kinematics, pose_tails
from mocap_blender.core.smoothing import smooth_positions
from _core_rigs import legs_rig

FPS = 30.0
SWING = slice(20, 30)  # the left leg lifts and comes back to the same spot


def stepping_motion(skel: Skeleton, n: int = 50):
    """True motion: the feet stand still except the left leg's swing (SWING frames, the thigh up to 60 degrees);
    the arm waves the whole time; the root stays."""
    rot = np.broadcast_to(np.eye(3), (n, skel.n_joints, 3, 3)).copy()
    phase = np.zeros(n)
    phase[SWING] = np.sin(np.linspace(0, np.pi, SWING.stop - SWING.start))
    thigh = skel.index("thigh.L")
    x_local = skel.rest[thigh, :3, :3].T @ np.array([1.0, 0, 0])  # lift about the world X axis
    rot[:, thigh] = R.rotvec_to_matrix(phase[:, None] * np.radians(60) * x_local)
    rot[:, skel.index("shin.L")] = R.rotvec_to_matrix(-phase[:, None] * np.radians(50) * x_local)
    rot[:, skel.index("arm")] = R.rotvec_to_matrix(np.sin(np.arange(n) / 3.0)[:, None] * np.array([0.0, 0.0, 1.0]))
    return rot, np.zeros((n, 3))


def with_errors(skel, rot, loc, degrees=2.0, root=0.005, seed=0):
    rng = np.random.default_rng(seed)
    noise = smooth_positions(rng.normal(size=rot.shape[:2] + (3,)), 3.0)
    noisy = rot @ R.rotvec_to_matrix(noise / noise.std() * np.radians(degrees))
    noisy[:, skel.root] = rot[:, skel.root]
    shake = smooth_positions(rng.normal(size=loc.shape), 3.0)
    return noisy, loc + shake / shake.std() * root * skel.height


def foot_tips(skel, rot, loc):
    return pose_tails(skel, forward_kinematics(skel, rot, loc))[:, [skel.index("foot.L"), skel.index("foot.R")]]


def test_end_chains_stop_at_branches_and_skip_stubs():
    skel = legs_rig()
    chains = {skel.names[leaf]: [skel.names[j] for j in chain] for leaf, chain in C.end_chains(skel)}
    assert chains == {"foot.L": ["thigh.L", "shin.L"], "foot.R": ["thigh.R", "shin.R"], "forearm": ["arm"]}


def test_planted_feet_are_pinned_and_the_rest_is_untouched():
    skel = legs_rig()
    rot, loc = stepping_motion(skel)
    noisy, noisy_loc = with_errors(skel, rot, loc)
    fixed, found = C.clean_contacts(skel, noisy, noisy_loc, FPS)
    left, right = (found.leaves.index(skel.index(n)) for n in ("foot.L", "foot.R"))
    # Found: the right foot stands all clip long, the left one before and after its swing, never during it.
    assert found.planted[:, right].mean() > 0.9
    assert found.planted[:16, left].mean() > 0.8 and found.planted[34:, left].mean() > 0.8
    assert not found.planted[SWING, left].any()
    # Pinned: the feet hardly move while planted, far less than the errors made them skate.
    tips_before, tips_after = foot_tips(skel, noisy, noisy_loc), foot_tips(skel, fixed, noisy_loc)
    for k, name in ((left, "foot.L"), (right, "foot.R")):
        both = found.planted[1:, k] & found.planted[:-1, k]
        col = 0 if name == "foot.L" else 1
        skate = lambda tips: np.linalg.norm(np.diff(tips[:, col], axis=0), axis=-1)[both].mean()
        assert skate(tips_after) < 0.05 * skate(tips_before), name
        # each stretch held at one spot, no further from the true one than the erroneous positions were on average
        truth = foot_tips(skel, rot, loc)[0, col]
        for a, b in C._runs(found.planted[:, k]):
            held = tips_after[a:b + 1, col]
            assert np.ptp(held, axis=0).max() < 5e-3 * skel.height
            assert np.linalg.norm(held[0] - truth) <= np.linalg.norm(tips_before[a:b + 1, col] - truth, axis=-1).mean()
    # Untouched: the root, the arm, the stub, and the left leg in the middle of its swing.
    for name in ("hips", "arm", "forearm", "stub"):
        np.testing.assert_array_equal(fixed[:, skel.index(name)], noisy[:, skel.index(name)])
    np.testing.assert_array_equal(fixed[23:27, 1:4], noisy[23:27, 1:4])
    assert found.shift.shape == found.planted.shape and found.shift.max() < C.MAX_SHIFT
    # The turns that pin the feet are small on the whole (a nearly straight leg needs more at the knee), and never
    # beyond the limit: the legs keep their pose.
    turn = np.degrees(R.geodesic_angle(fixed, noisy))[:, 1:7]
    assert turn.max() <= C.MAX_TURN + 1e-6 and turn[turn > 0].mean() < 5.0, (turn.max(), turn[turn > 0].mean())


def test_a_clip_without_contacts_comes_back_unchanged():
    skel = legs_rig()
    rot, _ = stepping_motion(skel)
    rising = np.zeros((len(rot), 3))
    rising[:, 1] = np.linspace(0.0, 1.5, len(rot))  # the root bone's +Y is world +Z here: the body flies up
    noisy, noisy_loc = with_errors(skel, rot, rising)
    fixed, found = C.clean_contacts(skel, noisy, noisy_loc, FPS)
    assert not found.planted.any()
    np.testing.assert_array_equal(fixed, noisy)


def test_the_true_motion_is_left_as_it_is():
    """Feet that already stand still need no turn: the clean-up leaves an exact motion exact."""
    skel = legs_rig()
    rot, loc = stepping_motion(skel)
    fixed, found = C.clean_contacts(skel, rot, loc, FPS)
    assert found.planted.any()
    np.testing.assert_allclose(fixed, rot, atol=1e-9)
