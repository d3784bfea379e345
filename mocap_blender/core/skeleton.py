"""The rig: joint names, parents, rest matrices; forward kinematics exactly as Blender evaluates a pose.

A joint is a Blender bone. Its rest matrix is `bone.matrix_local` (armature space, 4x4; the Y column is the bone
axis), its head is the matrix's translation and its tail the rest tail. A local rotation is the rotation part of
`pose_bone.matrix_basis` (relative to rest). Blender's rule (inherit rotation and scale, no constraints):

    pose[j] = pose[parent] @ inv(rest[parent]) @ rest[j] @ basis[j]        root: pose[r] = rest[r] @ basis[r]
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import MocapError


@dataclass(frozen=True, eq=False)
class Skeleton:
    names: tuple[str, ...]
    parents: np.ndarray  # (J,) int64, -1 for the root; every parent index is smaller than its child's
    rest: np.ndarray  # (J, 4, 4) armature-space rest matrices
    tails: np.ndarray  # (J, 3) armature-space rest tails

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, names, parents, rest, tails, *, min_length: float = 1e-6) -> "Skeleton":
        """Validate and build. Joints may come in any order; they are re-ordered parent-first if needed."""
        names = tuple(str(n) for n in names)
        j = len(names)
        if j == 0:
            raise MocapError("The rig has no bones. Select an armature with at least two bones.")
        if len(set(names)) != j:
            dup = sorted({n for n in names if names.count(n) > 1})
            raise MocapError(f"Bone names must be unique; repeated: {', '.join(dup[:5])}. Rename them.")
        parents = np.asarray(parents, dtype=np.int64).reshape(-1)
        rest = np.asarray(rest, dtype=np.float64)
        tails = np.asarray(tails, dtype=np.float64)
        if parents.shape != (j,) or rest.shape != (j, 4, 4) or tails.shape != (j, 3):
            raise MocapError(
                f"Skeleton arrays disagree: {j} names, parents {parents.shape}, rest {rest.shape}, "
                f"tails {tails.shape}; expected ({j},), ({j}, 4, 4), ({j}, 3).")
        if not (np.all(np.isfinite(rest)) and np.all(np.isfinite(tails))):
            bad = [names[i] for i in range(j) if not (np.all(np.isfinite(rest[i])) and np.all(np.isfinite(tails[i])))]
            raise MocapError(f"Bones with non-finite (NaN or infinite) rest data: {', '.join(bad[:5])}. "
                             "Fix or delete them in Edit Mode.")
        if np.any((parents < -1) | (parents >= j)):
            raise MocapError("A parent index is out of range; each parent must be -1 or the index of another bone.")
        if np.any(parents == np.arange(j)):
            raise MocapError(f"Bone {names[int(np.flatnonzero(parents == np.arange(j))[0])]!r} is its own parent.")
        roots = np.flatnonzero(parents < 0)
        if len(roots) != 1:
            if len(roots) == 0:
                raise MocapError("The bone hierarchy has a cycle and no root bone. Give the rig one root bone.")
            raise MocapError(
                f"The rig has {len(roots)} root bones ({', '.join(names[r] for r in roots[:5])}); the capture needs "
                "one. Parent the other roots under the main root bone (or exclude them) and try again.")
        order = _topological_order(parents, names)  # raises on cycles
        lengths = np.linalg.norm(tails - rest[:, :3, 3], axis=-1)
        short = [names[i] for i in range(j) if lengths[i] < min_length]
        if short:
            raise MocapError(f"Zero-length bones: {', '.join(short[:5])}. Give every bone a length in Edit Mode.")
        if not np.array_equal(order, np.arange(j)):
            inv = np.empty(j, dtype=np.int64)
            inv[order] = np.arange(j)
            names = tuple(names[i] for i in order)
            parents = np.where(parents[order] < 0, -1, inv[np.maximum(parents[order], 0)])
            rest, tails = rest[order], tails[order]
        return cls(names, parents, rest.copy(), tails.copy())

    # --- derived quantities ------------------------------------------------------------------
    @property
    def n_joints(self) -> int:
        return len(self.names)

    @property
    def root(self) -> int:
        return 0

    @property
    def heads(self) -> np.ndarray:
        return self.rest[:, :3, 3]

    @property
    def lengths(self) -> np.ndarray:
        return np.linalg.norm(self.tails - self.heads, axis=-1)

    @cached_property
    def children(self) -> tuple[tuple[int, ...], ...]:
        kids: list[list[int]] = [[] for _ in self.names]
        for i, p in enumerate(self.parents):
            if p >= 0:
                kids[p].append(i)
        return tuple(tuple(k) for k in kids)

    @cached_property
    def is_leaf(self) -> np.ndarray:
        return np.array([len(c) == 0 for c in self.children])

    @cached_property
    def height(self) -> float:
        """Largest side of the rest bounding box of all heads and tails (the position normaliser)."""
        pts = np.concatenate([self.heads, self.tails], axis=0)
        return float(max(np.max(pts.max(0) - pts.min(0)), 1e-9))

    @cached_property
    def rest_relative(self) -> np.ndarray:
        """(J, 4, 4): inv(rest[parent]) @ rest[j]; the root's is rest[root]."""
        rel = self.rest.copy()
        p = self.parents
        nz = p >= 0
        rel[nz] = np.linalg.inv(self.rest[p[nz]]) @ self.rest[nz]
        return rel

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise MocapError(f"No bone named {name!r} in the rig.") from None

    def subset_depth(self) -> np.ndarray:
        """(J,) number of ancestors of each joint."""
        depth = np.zeros(self.n_joints, dtype=np.int64)
        for i in range(1, self.n_joints):
            depth[i] = depth[self.parents[i]] + 1
        return depth


def _topological_order(parents: np.ndarray, names) -> np.ndarray:
    j = len(parents)
    kids: list[list[int]] = [[] for _ in range(j)]
    for i, p in enumerate(parents):
        if p >= 0:
            kids[p].append(i)
    order = []
    stack = [int(np.flatnonzero(parents < 0)[0])]
    while stack:  # depth-first, children in their original order
        i = stack.pop()
        order.append(i)
        stack.extend(reversed(kids[i]))
    if len(order) != j:
        lost = sorted(set(range(j)) - set(order))
        raise MocapError(f"The bone hierarchy has a cycle through: {', '.join(names[i] for i in lost[:5])}. "
                         "Re-parent these bones so that every chain ends at the root.")
    return np.asarray(order, dtype=np.int64)


# --- kinematics ----------------------------------------------------------------------------------

def _basis(rot: np.ndarray, loc: np.ndarray | None, n_joints: int, locs: np.ndarray | None = None) -> np.ndarray:
    rot = np.asarray(rot, dtype=np.float64)
    if rot.shape[-3:] != (n_joints, 3, 3):
        raise ValueError(f"expected local rotations of shape (..., {n_joints}, 3, 3), got {rot.shape}")
    basis = np.zeros(rot.shape[:-2] + (4, 4))
    basis[..., :3, :3] = rot
    basis[..., 3, 3] = 1.0
    if locs is not None:
        basis[..., :3, 3] = locs
    if loc is not None:
        basis[..., 0, :3, 3] = loc
    return basis


def forward_kinematics(skel: Skeleton, basis_rot, root_loc=None, *, basis_loc=None) -> np.ndarray:
    """Local rotations (..., J, 3, 3) [+ root location (..., 3) in the root's rest frame] -> (..., J, 4, 4) pose.

    `basis_loc` (..., J, 3), optional: every joint's `matrix_basis` translation (in its own rest frame), for rigs
    whose non-root bones move too (BVH files with position channels on every joint); `root_loc`, when given, wins
    for the root. Joints are in parent-first order, so one pass suffices.
    """
    basis = _basis(basis_rot, root_loc, skel.n_joints, basis_loc)
    local = skel.rest_relative @ basis  # (..., J, 4, 4)
    pose = np.empty_like(local)
    pose[..., 0, :, :] = local[..., 0, :, :]
    for j in range(1, skel.n_joints):
        pose[..., j, :, :] = pose[..., skel.parents[j], :, :] @ local[..., j, :, :]
    return pose


def basis_from_pose(skel: Skeleton, pose) -> np.ndarray:
    """Armature-space pose matrices (..., J, 4, 4) -> Blender `matrix_basis` (..., J, 4, 4)."""
    pose = np.asarray(pose, dtype=np.float64)
    parent_pose = np.empty_like(pose)
    parent_pose[..., 0, :, :] = np.eye(4)
    parent_pose[..., 1:, :, :] = pose[..., skel.parents[1:], :, :]
    return np.linalg.inv(skel.rest_relative) @ np.linalg.inv(parent_pose) @ pose


def pose_heads(pose) -> np.ndarray:
    return np.asarray(pose)[..., :3, 3]


def pose_tails(skel: Skeleton, pose) -> np.ndarray:
    """Tails of every bone under a pose: the rest tail carried by the bone's pose matrix."""
    local_tail = np.einsum("jab,jb->ja", np.linalg.inv(skel.rest), np.concatenate(
        [skel.tails, np.ones((skel.n_joints, 1))], axis=-1))  # (J, 4), = (0, length, 0, 1)
    return np.einsum("...jab,jb->...ja", np.asarray(pose), local_tail)[..., :3]


def normalise_positions(skel: Skeleton, pos) -> np.ndarray:
    """Root-relative positions divided by the rig height (the model's position units)."""
    pos = np.asarray(pos, dtype=np.float64)
    return (pos - pos[..., skel.root:skel.root + 1, :]) / skel.height
