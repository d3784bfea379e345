"""Torch rotation and kinematics helpers, written once for the network, training and tests.

Conventions are the core's (mocap_blender/core/rotations.py, skeleton.py): 6D = the first two COLUMNS of the
matrix, back by Gram-Schmidt; FK is Blender's rule  pose[j] = pose[parent] @ rest_relative[j] @ basis[j].
tests/test_model_geometry.py checks these against the numpy core.
"""
from __future__ import annotations

import torch

EPS = 1e-8


def mm3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched product of small matrices (..., n, k) @ (..., k, m) by broadcasting: far faster than bmm on CPU
    for millions of 3x3 products in PyTorch, and the same result; one MatMul node in an exported graph."""
    if torch.compiler.is_exporting():
        return a @ b
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def mv3(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(..., n, k) @ (..., k) -> (..., n)."""
    if torch.compiler.is_exporting():
        return (a @ v[..., None])[..., 0]
    return (a * v[..., None, :]).sum(-1)


def sixd_to_matrix(d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3): Gram-Schmidt on the two columns (same as core.rotations.sixd_to_matrix)."""
    a, b = d[..., :3], d[..., 3:]
    x = a / torch.sqrt((a * a).sum(-1, keepdim=True) + EPS)
    b = b - (x * b).sum(-1, keepdim=True) * x
    y = b / torch.sqrt((b * b).sum(-1, keepdim=True) + EPS)
    z = torch.cross(x, y, dim=-1)
    return torch.stack([x, y, z], dim=-1)


def matrix_to_sixd(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6) = [m[:, 0], m[:, 1]]."""
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


def geodesic(ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
    """Angle (radians) between rotations (..., 3, 3); gradient-safe near 0 and pi."""
    tr = (ra * rb).sum((-1, -2))
    cos = ((tr - 1.0) * 0.5).clamp(-1.0 + 1e-6, 1.0 - 1e-6)
    return torch.acos(cos)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternion (w, x, y, z) -> (..., 3, 3)."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def swing_between(a: torch.Tensor, b: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Shortest-arc rotation taking direction a towards b (..., 3), scaled by amount in [0, 1] (..., 1)
    (normalised lerp of the quaternion from the identity): (..., 3, 3). Parallel-safe; antiparallel -> identity-ish."""
    a = a / torch.sqrt((a * a).sum(-1, keepdim=True) + EPS)
    b = b / torch.sqrt((b * b).sum(-1, keepdim=True) + EPS)
    q = torch.cat([1.0 + (a * b).sum(-1, keepdim=True), torch.cross(a, b, dim=-1)], -1)
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + EPS)
    ident = torch.zeros_like(q)
    ident = torch.cat([torch.ones_like(q[..., :1]), ident[..., 1:]], -1)
    q = (1.0 - amount) * ident + amount * q
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + EPS)
    return quat_to_matrix(q)


def across(v: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """The part of v (..., 3) perpendicular to axis (..., 3)."""
    y = axis / torch.sqrt((axis * axis).sum(-1, keepdim=True) + EPS)
    return v - (v * y).sum(-1, keepdim=True) * y


def frame_from(p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Orthonormal frame (..., 3, 3), columns [x, y, z]: y along p (a bone's axis, as in Blender), x along the
    part of s perpendicular to p, z = x cross y. Degenerate s gives some frame; callers weight it out."""
    y = p / torch.sqrt((p * p).sum(-1, keepdim=True) + EPS)
    x = s - (s * y).sum(-1, keepdim=True) * y
    x = x / torch.sqrt((x * x).sum(-1, keepdim=True) + EPS)
    return torch.stack([x, y, torch.cross(x, y, dim=-1)], dim=-1)


def perpendicular(v: torch.Tensor) -> torch.Tensor:
    """Some unit direction across v (..., 3), never zero (for v = 0, some fixed direction)."""
    y = v / torch.sqrt((v * v).sum(-1, keepdim=True) + EPS)
    zero = torch.zeros_like(y[..., :1])  # (no tensor constants: this runs inside stage 2's ONNX Loop)
    cx = torch.cat([zero, y[..., 2:3], -y[..., 1:2]], -1)  # y x (1, 0, 0)
    cz = torch.cat([y[..., 1:2], -y[..., :1], zero], -1)  # y x (0, 0, 1)
    c = torch.where((cx * cx).sum(-1, keepdim=True) > 0.25, cx, cz)
    return c / torch.sqrt((c * c).sum(-1, keepdim=True) + EPS)


def twist_towards(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Rotation about axis p (..., 3) turning the part of a perpendicular to p towards that of b, by amount in
    [0, 1] (..., 1) (normalised lerp of the two unit vectors): (..., 3, 3). amount 0 -> the identity, also when a
    or b has no part across p (a bone with one child): then some fixed direction across p stands in for a."""
    y = p / torch.sqrt((p * p).sum(-1, keepdim=True) + EPS)

    def unit(v):
        return v / torch.sqrt((v * v).sum(-1, keepdim=True) + EPS)
    pa = across(a, y)
    ua = unit(torch.where((pa * pa).sum(-1, keepdim=True) > 1e-10, pa, perpendicular(y)))
    target = (1.0 - amount) * ua + amount * unit(across(b, y))
    target = torch.where((target * target).sum(-1, keepdim=True) > 1e-6, target, ua)
    return mm3(frame_from(p, target), frame_from(p, ua).transpose(-1, -2))


def twist_y(cs: torch.Tensor) -> torch.Tensor:
    """(..., 2) unnormalised (cos, sin) -> (..., 3, 3) rotation about the local Y (bone) axis."""
    cs = cs / torch.sqrt((cs * cs).sum(-1, keepdim=True) + EPS)
    c, s = cs[..., 0], cs[..., 1]
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([torch.stack([c, zero, s], -1),
                        torch.stack([zero, one, zero], -1),
                        torch.stack([-s, zero, c], -1)], -2)


def fk_canonical(rest_rel_rot: torch.Tensor, rest_rel_loc: torch.Tensor, parents: torch.Tensor,
                 depth: torch.Tensor, basis: torch.Tensor, tail_local: torch.Tensor | None = None):
    """Forward kinematics in the root's posed frame (root rotation = identity, root head at the origin).

    rest_rel_rot (B, J, 3, 3), rest_rel_loc (B, J, 3): rotation/translation of inv(rest[parent]) @ rest[j]
    (root entry ignored); parents (B, J) int64 (root: 0, padded joints: 0); depth (B, J) int64 (padding: 0);
    basis (B, T, J, 3, 3) local rotations; tail_local (B, J, 3) = (0, length, 0) or None.
    Returns heads (B, T, J, 3) [, tails (B, T, J, 3)] and global rotations (B, T, J, 3, 3).
    Joints are processed one depth level at a time, so the loop runs max-depth times, not J times.
    """
    b, t, j = basis.shape[:3]
    eye = torch.eye(3, dtype=basis.dtype).expand(b, t, 1, 3, 3)
    rot = torch.cat([eye, basis[:, :, 1:] * 0 + eye], dim=2)  # (B, T, J, 3, 3) placeholder
    pos = torch.zeros(b, t, j, 3, dtype=basis.dtype)
    local_rot = mm3(rest_rel_rot[:, None], basis)  # (B, T, J, 3, 3)
    idx_r = parents[:, None, :, None, None].expand(b, t, j, 3, 3)
    idx_p = parents[:, None, :, None].expand(b, t, j, 3)
    for level in range(1, int(depth.max()) + 1 if depth.numel() else 1):
        prot = torch.gather(rot, 2, idx_r)  # parent's global rotation
        ppos = torch.gather(pos, 2, idx_p)
        new_rot = mm3(prot, local_rot)
        new_pos = ppos + mv3(prot, rest_rel_loc[:, None])
        sel = (depth == level)[:, None, :]  # (B, 1, J)
        rot = torch.where(sel[..., None, None], new_rot, rot)
        pos = torch.where(sel[..., None], new_pos, pos)
    # the root's own rotation is the identity in its own frame; its basis is not used here
    if tail_local is None:
        return pos, rot
    tails = pos + mv3(rot, tail_local[:, None])
    return pos, tails, rot


def skeleton_arrays(skel) -> dict:
    """numpy arrays of a core Skeleton that `fk_canonical` needs (float32 / int64, unbatched)."""
    import numpy as np
    rel = skel.rest_relative
    parents = np.maximum(skel.parents, 0).astype(np.int64)
    return {
        "rest_rel_rot": rel[:, :3, :3].astype(np.float32),
        "rest_rel_loc": rel[:, :3, 3].astype(np.float32),
        "parents": parents,
        "depth": skel.subset_depth().astype(np.int64),
        "tail_local": np.stack([np.zeros(skel.n_joints), skel.lengths, np.zeros(skel.n_joints)], -1)
        .astype(np.float32),
    }
