"""Contact clean-up: the end points of a rig that rest on the ground stay where they rest (no foot skate).

Any rig: the end points are the tails of the captured tree's leaf bones (feet, toes, claws, tentacle tips). An end
point is planted on the frames where it is near the ground (within CONTACT_HEIGHT of the rig's height above the
clip's ground level, the level of its lowest end points) and nearly still (slower than CONTACT_SPEED rig heights
per second), for at least MIN_FRAMES frames in a row. Over each planted stretch the point is pinned at its mean
position, and the chain above it turns so that it stays there: up to CHAIN_BONES bones with a single child each
(never the root, never a bone where the tree branches; a leaf hanging from such a bone turns itself), solved by
damped least squares on the bones' rotations, so the smallest turn that pins the point is taken and long bones
near the body carry most of it. The pin fades in and out over BLEND_FRAMES frames. A stretch the pin would move by
more than MAX_SHIFT of the height is left alone: that is not a contact the capture nearly got right. A frame keeps
its pose where the solve does not get closer or would turn a bone more than MAX_TURN degrees, and an end point
closer than MIN_REACH to the top of its chain (a stub, a helper bone on the root) is never pinned.

Works on the pose in armature space, root bone location included (the keyed one; the pipeline passes the
reference's when the root's motion is not keyed). The caller keeps the result before clean-up. `up` is the world's
up direction in armature space.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rotations as R
from .skeleton import Skeleton, forward_kinematics, pose_tails
from .smoothing import smooth_positions

CONTACT_HEIGHT = 0.04  # of the rig's height, above the ground level
CONTACT_SPEED = 0.4  # rig heights per second
GROUND_PERCENTILE = 5.0  # the ground: this percentile over frames of the lowest end point's height
DETECT_SIGMA = 2.0  # frames: end points are judged on their smoothed paths, so capture jitter is not motion
MIN_FRAMES = 3
BLEND_FRAMES = 3
CHAIN_BONES = 3
MAX_SHIFT = 0.08  # of the rig's height
ITERATIONS = 12
DAMPING = 0.02  # of the rig's height: keeps the solve calm where a chain is stretched straight
MAX_STEP = 0.05  # radians a bone turns in one iteration
MIN_REACH = 0.1  # of the rig's height: an end point this close to its chain's top is not pinned (a stub, a helper)
MAX_TURN = 30.0  # degrees: a frame whose pin would turn a bone further keeps its captured pose


@dataclass
class Contacts:
    """What the clean-up found: the leaf bones whose tails are end points, and where each is planted."""
    leaves: tuple[int, ...]  # bone index per end point
    planted: np.ndarray  # (F, K) bool: pinned on that frame
    shift: np.ndarray  # (F, K) distance each end point was moved, in rig heights


def end_chains(skel: Skeleton) -> list[tuple[int, list[int]]]:
    """(leaf, bones that turn to pin its tail, top first) for every leaf bone whose tail lies at least MIN_REACH
    from its chain's top in the rest pose (a chain that short cannot pin it without turning wildly)."""
    kids = skel.children
    out = []
    for leaf in map(int, np.flatnonzero(skel.is_leaf)):
        if leaf == skel.root:
            continue
        chain = []
        j = int(skel.parents[leaf])
        while j != skel.root and len(kids[j]) == 1 and len(chain) < CHAIN_BONES:
            chain.append(j)
            j = int(skel.parents[j])
        chain = chain[::-1] or [leaf]
        if np.linalg.norm(skel.tails[leaf] - skel.heads[chain[0]]) >= MIN_REACH * skel.height:
            out.append((leaf, chain))
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) of each run of True in a 1-D bool array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def _tail_local(skel: Skeleton, j: int) -> np.ndarray:
    return np.array([0.0, skel.lengths[j], 0.0, 1.0])


def _chain_world(skel: Skeleton, path, rot, above) -> list[np.ndarray]:
    """World (armature-space) matrices (F, 4, 4) of the bones on `path` (top first, contiguous), given the world
    matrix `above` (F, 4, 4) of the top bone's parent and the local rotations rot (F, J, 3, 3)."""
    out, g = [], above
    for j in path:
        basis = np.zeros(rot.shape[:1] + (4, 4))
        basis[:, :3, :3] = rot[:, j]
        basis[:, 3, 3] = 1.0
        g = g @ skel.rest_relative[j] @ basis
        out.append(g)
    return out


def _skew(v: np.ndarray) -> np.ndarray:
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1), np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _pin(skel: Skeleton, rot, above, chain, leaf, goal) -> np.ndarray:
    """Turn the chain's bones in `rot` (F, J, 3, 3, modified in place) so the leaf's tail reaches `goal` (F, 3):
    damped least squares on the bones' world angular steps (each at most MAX_STEP), ITERATIONS times; each frame
    keeps the iterate that came closest. Returns the distance left (F,)."""
    path = _path(skel, chain, leaf)
    tail = _tail_local(skel, leaf)
    lam2 = (DAMPING * skel.height) ** 2
    idx = [path.index(j) for j in chain]
    best, best_miss = rot.copy(), None
    for it in range(ITERATIONS + 1):
        world = _chain_world(skel, path, rot, above)
        end = (world[-1] @ tail)[:, :3]  # (F, 3)
        err = goal - end
        miss = np.linalg.norm(err, axis=-1)
        better = np.ones(len(miss), bool) if best_miss is None else miss < best_miss
        best[better] = rot[better]
        best_miss = miss if best_miss is None else np.where(better, miss, best_miss)
        if it == ITERATIONS:
            break
        jac = np.concatenate([-_skew(end - world[i][:, :3, 3]) for i in idx], axis=-1)  # (F, 3, 3n)
        jjt = jac @ jac.transpose(0, 2, 1) + lam2 * np.eye(3)
        step = (jac.transpose(0, 2, 1) @ np.linalg.solve(jjt, err[..., None]))[..., 0]  # (F, 3n) world rotvecs
        step = step.reshape(len(step), -1, 3)
        size = np.linalg.norm(step, axis=-1, keepdims=True)
        step = step * np.minimum(1.0, MAX_STEP / np.maximum(size, 1e-12))
        for n, i in enumerate(idx):
            g = world[i][:, :3, :3]
            turn = R.rotvec_to_matrix(step[:, n])  # about the bone's head, in armature space
            rot[:, path[i]] = R.orthonormalize(rot[:, path[i]] @ g.transpose(0, 2, 1) @ turn @ g)  # no drift
    rot[...] = best
    return best_miss


def _path(skel: Skeleton, chain, leaf) -> list[int]:
    """The bones from the chain's top down to the leaf, top first (indices are parent-first)."""
    out, j = {int(leaf)}, int(leaf)
    while j != chain[0] and j >= 0:
        j = int(skel.parents[j])
        out.add(j)
    return sorted(out)


def clean_contacts(skel: Skeleton, rot, root_loc, fps: float, up=None) -> tuple[np.ndarray, Contacts]:
    """Local rotations (F, J, 3, 3) and root location (F, 3) -> (rotations with planted end points pinned,
    Contacts). `up`: the world's up in armature space (None: +Z). The root's rotation and location and every bone
    outside the pinned chains are unchanged."""
    rot = np.array(rot, dtype=np.float64)
    root_loc = np.asarray(root_loc, dtype=np.float64)
    f = rot.shape[0]
    chains = end_chains(skel)
    leaves = tuple(leaf for leaf, _ in chains)
    planted = np.zeros((f, len(chains)), bool)
    shift = np.zeros((f, len(chains)))
    if f < MIN_FRAMES or not chains:
        return rot, Contacts(leaves, planted, shift)
    h = skel.height
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, np.float64)
    up = up / max(np.linalg.norm(up), 1e-12)
    pose = forward_kinematics(skel, rot, root_loc)  # (F, J, 4, 4)
    tails = pose_tails(skel, pose)[:, list(leaves)]  # (F, K, 3) the end points
    calm = smooth_positions(tails, DETECT_SIGMA)
    height = calm @ up
    ground = np.percentile(height.min(axis=1), GROUND_PERCENTILE)
    step = np.linalg.norm(np.diff(calm, axis=0), axis=-1)  # (F-1, K)
    speed = np.concatenate([step[:1], 0.5 * (step[1:] + step[:-1]), step[-1:]]) * fps  # (F, K) per second
    near = (height - ground < CONTACT_HEIGHT * h) & (speed < CONTACT_SPEED * h)
    for k, (leaf, chain) in enumerate(chains):
        weight = np.zeros(f)
        goal = tails[:, k].copy()
        for a, b in _runs(near[:, k]):
            if b - a + 1 < MIN_FRAMES:
                continue
            pin = tails[a:b + 1, k].mean(axis=0)
            if np.linalg.norm(tails[a:b + 1, k] - pin, axis=-1).max() > MAX_SHIFT * h:
                continue
            planted[a:b + 1, k] = True
            lo, hi = max(a - BLEND_FRAMES, 0), min(b + BLEND_FRAMES, f - 1)
            t = np.arange(lo, hi + 1)
            ramp = np.clip(np.minimum(t - (a - BLEND_FRAMES - 1), (b + BLEND_FRAMES + 1) - t) / (BLEND_FRAMES + 1),
                           0.0, 1.0)
            w = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: 1 on the stretch, easing to 0 outside it
            better = w > weight[lo:hi + 1]
            weight[lo:hi + 1] = np.where(better, w, weight[lo:hi + 1])
            goal[lo:hi + 1] = np.where(better[:, None], w[:, None] * pin + (1 - w[:, None]) * tails[lo:hi + 1, k],
                                       goal[lo:hi + 1])
        move = (weight > 0) & (np.linalg.norm(goal - tails[:, k], axis=-1) > 1e-6 * h)
        if not move.any():
            continue
        above = pose[move, skel.parents[chain[0]]]  # the chain's top is never the root
        before = rot[move]
        sub = before.copy()
        miss = _pin(skel, sub, above, chain, leaf, goal[move])
        # keep the captured pose where the solve did not get closer or would turn a bone too far
        was = np.linalg.norm(tails[move, k] - goal[move], axis=-1)
        turn = np.degrees(R.geodesic_angle(sub[:, chain], before[:, chain])).max(axis=1)
        ok = (miss < was) & (turn <= MAX_TURN)
        rot[np.flatnonzero(move)[ok]] = sub[ok]
        planted[np.flatnonzero(move)[~ok], k] = False
    if planted.any():
        after = pose_tails(skel, forward_kinematics(skel, rot, root_loc))[:, list(leaves)]
        shift = np.linalg.norm(after - tails, axis=-1) / h
    return rot, Contacts(leaves, planted, shift)
