"""How results are measured (see ../shared/DESIGN.md, "How results are measured"), and the "hold" baseline.

All angles are in degrees. Rotations are local (matrix_basis) unless said otherwise. Each function returns
a (mean, count) pair where pooling over clips matters, so that an evaluation can weight clips by what they hold.
"""
from __future__ import annotations

import numpy as np

from .rotations import geodesic_angle

MOVING_THRESHOLD_DEG = 1.0


def moving_mask(true_rot, threshold_deg: float = MOVING_THRESHOLD_DEG) -> np.ndarray:
    """(T, J, 3, 3) true local rotations -> (J,) bool: non-root bones whose rotation changes by more than
    `threshold_deg` within the window (largest angle between any frame and the window's first frame)."""
    true_rot = np.asarray(true_rot, dtype=np.float64)
    change = np.degrees(geodesic_angle(true_rot, true_rot[:1])).max(axis=0)  # (J,)
    mask = change > threshold_deg
    mask[0] = False  # the root is measured separately (root orientation)
    return mask


def rotation_errors(pred_rot, true_rot, threshold_deg: float = MOVING_THRESHOLD_DEG) -> dict:
    """Moving-bone and all-bone local rotation errors over non-root bones.

    pred_rot, true_rot: (T, J, 3, 3). Returns dict(moving=(mean deg, count), all=(mean deg, count),
    per_bone (J,) mean deg over frames).
    """
    pred_rot, true_rot = np.asarray(pred_rot, np.float64), np.asarray(true_rot, np.float64)
    if pred_rot.shape != true_rot.shape:
        raise ValueError(f"shape mismatch {pred_rot.shape} vs {true_rot.shape}")
    err = np.degrees(geodesic_angle(pred_rot, true_rot))  # (T, J)
    mov = moving_mask(true_rot, threshold_deg)
    non_root = np.arange(err.shape[1]) > 0
    em, ea = err[:, mov], err[:, non_root]
    return {"moving": (float(em.mean()) if em.size else float("nan"), int(em.size)),
            "all": (float(ea.mean()) if ea.size else float("nan"), int(ea.size)),
            "per_bone": err.mean(axis=0)}


def root_orientation_error(pred_root, true_root) -> tuple[float, int]:
    """(T, 3, 3) root rotations in one frame (camera or armature) -> (mean geodesic deg, T)."""
    e = np.degrees(geodesic_angle(np.asarray(pred_root, np.float64), np.asarray(true_root, np.float64)))
    return float(e.mean()), int(e.size)


def mpjpe_percent(pred_heads, true_heads, height: float) -> tuple[float, int]:
    """Mean distance of bone heads after removing each pose's root position, in % of the rig's rest height.

    pred_heads, true_heads: (T, J, 3) in the same (armature) space and units; root = joint 0.
    """
    p = np.asarray(pred_heads, np.float64)
    g = np.asarray(true_heads, np.float64)
    p = p - p[:, :1]
    g = g - g[:, :1]
    d = np.linalg.norm(p - g, axis=-1)[:, 1:]  # the root is 0 by construction
    return float(100.0 * d.mean() / height) if d.size else float("nan"), int(d.size)


def hold_baseline(ref_rot, n_frames: int) -> np.ndarray:
    """The "hold" baseline: the reference pose's local rotations (J, 3, 3) on every frame -> (T, J, 3, 3)."""
    ref_rot = np.asarray(ref_rot, np.float64)
    return np.broadcast_to(ref_rot, (n_frames,) + ref_rot.shape).copy()


def pool(pairs) -> float:
    """Weighted mean of (mean, count) pairs (NaNs and empty pairs skipped)."""
    num = den = 0.0
    for m, n in pairs:
        if n and np.isfinite(m):
            num += m * n
            den += n
    return num / den if den else float("nan")
