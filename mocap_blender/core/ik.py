"""The "factorized" baseline (MoCapAnything V1): joint positions -> local rotations by analytic IK.

For each bone, parent first: the swing takes the rest bone axis (local +Y) to the observed head->tail direction
(in the bone's frame under its posed parent); the twist about the bone axis cannot be seen in positions and is
taken from the reference pose (swing-twist decomposition of the reference rotation about +Y). A bone too short to
show a direction (shorter than `AIM_CHILDREN_BELOW` of the rig height; imported glTF rigs are full of them) with
children aims at the mean of its children's heads instead, with the twist about that axis from the reference
(the model does the same, models/model.py::MocapNet.aim_fn). Where a bone's tail and children's heads span a
plane, the whole rotation is seen, and fitted to them (Kabsch), twist included. The root's rotation
is fitted to its tail and its children's heads (Kabsch) when they span a plane; otherwise, or when
`root_rot` is given, that is used.
"""
from __future__ import annotations

import numpy as np

from .rotations import matrix_to_quat, quat_to_matrix
from .skeleton import Skeleton

_EPS = 1e-9
AIM_CHILDREN_BELOW = 0.02  # fraction of rig height (models/model.py ModelConfig.aim_children_below)


def _swing_twist_about(axis, d_loc, ref) -> np.ndarray:
    """Rotation taking the unit local `axis` (3,) to the direction d_loc (T, 3), with the twist about `axis` of
    the reference rotation ref (3, 3): the +Y construction conjugated by the arc Y -> axis."""
    q = swing_from_y(axis)  # Y -> axis
    return q @ swing_from_y(d_loc @ q) @ twist_about_y(q.T @ ref @ q) @ q.T


def _fit_points(skel: Skeleton, k: int, kids, heads, tails, frame):
    """Bone k's local rotation (T, 3, 3) fitted to its tail and children's heads when they span a plane, else
    None. frame (T, 3, 3): the bone's frame with an identity basis."""
    h = max(skel.height, _EPS)
    src = [np.array([0.0, skel.lengths[k], 0.0])] + [skel.rest_relative[c, :3, 3] for c in kids]
    dst = [tails[:, k] - heads[:, k]] + [heads[:, c] - heads[:, k] for c in kids]
    src = np.stack(src)
    keep = np.linalg.norm(src, axis=-1) > 0.01 * h
    if keep.sum() < 2:
        return None
    src = src[keep]
    sn = src / np.linalg.norm(src, axis=-1, keepdims=True)
    if np.linalg.matrix_rank(sn, tol=0.1) < 2:
        return None
    dst = np.einsum("tba,ktb->tka", frame, np.stack(dst)[keep])  # (T, K, 3) in the bone's frame
    scale = np.linalg.norm(dst, axis=-1).sum(-1) / np.linalg.norm(src, axis=-1).sum()
    return kabsch(src, dst / np.maximum(scale, _EPS)[:, None, None])


def twist_about_y(rot) -> np.ndarray:
    """Twist part (..., 3, 3) of rotations (..., 3, 3) about the local Y axis, R = swing @ twist."""
    q = matrix_to_quat(rot)  # (w, x, y, z)
    w, y = q[..., 0], q[..., 2]
    n = np.sqrt(w * w + y * y)
    ok = n > 1e-9
    w = np.where(ok, w / np.maximum(n, 1e-12), 1.0)
    y = np.where(ok, y / np.maximum(n, 1e-12), 0.0)
    z = np.zeros_like(w)
    return quat_to_matrix(np.stack([w, z, y, z], axis=-1))


def swing_from_y(d) -> np.ndarray:
    """Shortest-arc rotation (..., 3, 3) taking +Y to the unit direction d (..., 3)."""
    d = np.asarray(d, np.float64)
    d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), _EPS)
    # quaternion of the arc y -> d: (1 + y.d, y x d), normalised; y x d = (d_z, 0, -d_x)
    w = 1.0 + d[..., 1]
    q = np.stack([w, d[..., 2], np.zeros_like(w), -d[..., 0]], axis=-1)
    flip = w < 1e-9  # d = -Y: half turn about X
    q = np.where(flip[..., None], np.array([0.0, 1.0, 0.0, 0.0]), q)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return quat_to_matrix(q)


def kabsch(src, dst, weights=None) -> np.ndarray:
    """Rotation R (..., 3, 3) minimising sum |R src_k - dst_k|^2; src (K, 3), dst (..., K, 3)."""
    w = np.ones(src.shape[0]) if weights is None else np.asarray(weights, np.float64)
    h = np.einsum("k,ka,...kb->...ba", w, src, dst)  # (..., 3, 3) = sum w dst src^T
    u, _, vt = np.linalg.svd(h)
    det = np.linalg.det(u @ vt)
    d = np.ones(h.shape[:-2] + (3,))
    d[..., 2] = np.sign(det + 1e-12)
    return (u * d[..., None, :]) @ vt


def ik_factorized(skel: Skeleton, heads, tails, ref_rot, root_rot=None, min_length: float = 1e-6) -> np.ndarray:
    """Positions -> local rotations (matrix_basis) (T, J, 3, 3).

    heads, tails: (T, J, 3) in armature space (any scale and offset consistent with the rig's units after a
    uniform scale; only directions are used). ref_rot: (J, 3, 3) reference local rotations (twists come from it).
    root_rot: optional (T, 3, 3) root local rotation (matrix_basis) to use instead of fitting it.
    """
    heads, tails = np.asarray(heads, np.float64), np.asarray(tails, np.float64)
    ref_rot = np.asarray(ref_rot, np.float64)
    t, j = heads.shape[:2]
    rest_rot = skel.rest[:, :3, :3]
    rel_rot = skel.rest_relative[:, :3, :3]
    twist = twist_about_y(ref_rot)  # (J, 3, 3)
    basis = np.empty((t, j, 3, 3))
    glob = np.empty((t, j, 3, 3))  # armature-space rotation of each posed bone

    # root
    if root_rot is not None:
        basis[:, 0] = root_rot
    else:
        kids = list(skel.children[0])
        src = [skel.tails[0] - skel.heads[0]] + [skel.heads[k] - skel.heads[0] for k in kids]
        dst = [tails[:, 0] - heads[:, 0]] + [heads[:, k] - heads[:, 0] for k in kids]
        src = np.stack(src) @ rest_rot[0]  # (K, 3) in the root's local frame (v @ R = R^T v)
        dst = np.stack(dst, axis=1)  # (T, K, 3)
        keep = np.linalg.norm(src, axis=-1) > min_length
        src, dst = src[keep], dst[:, keep]
        sn = src / np.linalg.norm(src, axis=-1, keepdims=True)
        planar = len(sn) >= 2 and np.linalg.matrix_rank(sn, tol=1e-3) >= 2
        if planar:
            # armature rotation of the root = Kabsch(local points -> observed); basis = rest^T @ it
            scale = np.linalg.norm(dst, axis=-1).sum(-1) / np.maximum(np.linalg.norm(src, axis=-1).sum(), _EPS)
            g = kabsch(src, dst / np.maximum(scale, _EPS)[:, None, None])
            basis[:, 0] = rest_rot[0].T @ g
        else:
            d_loc = np.einsum("ba,tb->ta", rest_rot[0], tails[:, 0] - heads[:, 0])  # R^T d
            basis[:, 0] = swing_from_y(d_loc) @ twist[0]
    glob[:, 0] = rest_rot[0] @ basis[:, 0]

    short = skel.lengths < AIM_CHILDREN_BELOW * skel.height
    for k in range(1, j):
        p = skel.parents[k]
        frame = glob[:, p] @ rel_rot[k]  # (T, 3, 3) the bone's frame with an identity basis
        kids = list(skel.children[k])
        fitted = _fit_points(skel, k, kids, heads, tails, frame)
        if fitted is not None:
            basis[:, k] = fitted
            glob[:, k] = frame @ fitted
            continue
        axis = None
        if short[k] and kids:  # aim at the children's heads (their rest offsets in this bone's frame)
            axis = skel.rest_relative[kids, :3, 3].mean(0)
            d = heads[:, kids].mean(1) - heads[:, k]
            if np.linalg.norm(axis) < 1e-3 * max(skel.height, _EPS):
                axis = None
        if axis is None:
            d = tails[:, k] - heads[:, k]
        d_loc = np.einsum("tba,tb->ta", frame, d)  # frame^T d
        ok = np.linalg.norm(d, axis=-1) > min_length * max(skel.height, _EPS)
        b = swing_from_y(d_loc) @ twist[k] if axis is None else _swing_twist_about(
            axis / np.linalg.norm(axis), d_loc, ref_rot[k])
        basis[:, k] = np.where(ok[:, None, None], b, ref_rot[k])
        glob[:, k] = frame @ basis[:, k]
    return basis
