"""Graph tensors of a rig for attention: hop distances, edge types and the ancestor mask, all (J, J).

Row i is the joint that attends, column k the joint attended to. Everything is computed with whole-array
operations (no per-pair Python loop), so a 150-joint rig takes well under a millisecond or two.
"""
from __future__ import annotations

import numpy as np

from .errors import MocapError

SELF = 0  # diagonal of a joint with children
PARENT = 1  # column k is the parent of row i
CHILD = 2  # column k is a child of row i
SIBLING = 3  # same parent, different joints
OTHER = 4  # anything else
LEAF_SELF = 5  # diagonal of a leaf joint (no children)
N_EDGE_TYPES = 6
EDGE_TYPE_NAMES = ("self", "parent", "child", "sibling", "other", "leaf_self")


def _parents_of(skel) -> np.ndarray:
    parents = np.asarray(getattr(skel, "parents", skel), dtype=np.int64).reshape(-1)
    j = parents.shape[0]
    if j == 0:
        raise MocapError("The rig has no bones; graph tensors need at least one joint.")
    if np.any(parents >= np.arange(j)) or np.any(parents < -1) or np.count_nonzero(parents < 0) != 1 \
            or parents[0] != -1:
        raise MocapError("Graph tensors need one root at index 0 and every parent listed before its child; "
                         "build the rig with Skeleton.from_arrays, which orders it so.")
    return parents


def ancestor_mask(skel) -> np.ndarray:
    """(J, J) bool: [i, k] is True when k is i or an ancestor of i. `skel` is a Skeleton or a parents array."""
    parents = _parents_of(skel)
    j = parents.shape[0]
    jump = np.where(parents < 0, np.arange(j), parents)  # the root points at itself
    anc = np.eye(j, dtype=bool)
    anc[np.arange(j), jump] = True
    # Pointer doubling: after step s, anc[i] holds every ancestor up to 2**(s+1) levels above i.
    while True:
        jump = jump[jump]
        new = anc | anc[jump]
        if np.array_equal(new, anc):
            return new
        anc = new


def graph_tensors(skel, max_hops: int = 8) -> dict[str, np.ndarray]:
    """hops (J, J) int64 tree distance capped at `max_hops`; edge_type (J, J) int64; ancestor (J, J) bool.

    `skel` is a `Skeleton` (or anything with `.parents`, or a parents array) in parent-first order.
    """
    if int(max_hops) < 1:
        raise ValueError(f"max_hops must be at least 1, got {max_hops}")
    parents = _parents_of(skel)
    j = parents.shape[0]
    anc = ancestor_mask(parents)
    depth = anc.sum(axis=1) - 1  # number of proper ancestors
    # Common ancestors of i and k (self included) = the path from the root to their lowest common ancestor.
    a = anc.astype(np.int64)
    common = a @ a.T
    hops = depth[:, None] + depth[None, :] - 2 * (common - 1)
    hops = np.minimum(hops, int(max_hops)).astype(np.int64)

    edge = np.full((j, j), OTHER, dtype=np.int64)
    same_parent = (parents[:, None] == parents[None, :]) & (parents[:, None] >= 0)
    edge[same_parent] = SIBLING
    child = np.flatnonzero(parents >= 0)
    edge[child, parents[child]] = PARENT
    edge[parents[child], child] = CHILD
    is_leaf = np.ones(j, dtype=bool)
    is_leaf[parents[child]] = False
    diag = np.arange(j)
    edge[diag, diag] = np.where(is_leaf, LEAF_SELF, SELF)
    return {"hops": hops, "edge_type": edge, "ancestor": anc}
