"""Optional temporal smoothing of captured rotations and locations; the raw result is always kept by the caller.

Rotations are filtered in quaternion space: per joint, quaternions are made sign-continuous over time, filtered
with a Gaussian kernel (edges reflected, so the clip's ends do not drift towards zero), then renormalised. For the
small angular steps between neighbouring video frames this is an accurate approximation of a geodesic average.
Optionally each frame is weighted by the model's confidence, so uncertain frames lean on their neighbours.
"""
from __future__ import annotations

import numpy as np

from . import rotations as R


def gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter_time(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve along axis 0 with reflected edges. x: (F, ...)."""
    f = x.shape[0]
    r = len(kernel) // 2
    if f == 1:
        return x.copy()
    idx = np.arange(-r, f + r)
    idx = np.abs(idx)  # reflect at 0
    period = 2 * (f - 1)
    idx = idx % period
    idx = np.where(idx >= f, period - idx, idx)
    padded = x[idx]
    out = np.zeros_like(x, dtype=np.float64)
    for i, w in enumerate(kernel):
        out += w * padded[i:i + f]
    return out


def smooth_rotations(rot: np.ndarray, sigma: float, weights: np.ndarray | None = None) -> np.ndarray:
    """rot (F, J, 3, 3) -> smoothed (F, J, 3, 3). sigma in frames; 0 returns a copy. weights (F, J) optional."""
    rot = np.asarray(rot, dtype=np.float64)
    if sigma <= 0 or rot.shape[0] < 2:
        return rot.copy()
    q = R.quat_continuity(R.matrix_to_quat(rot), axis=0)  # (F, J, 4)
    k = gaussian_kernel(float(sigma))
    if weights is None:
        qs = _filter_time(q, k)
    else:
        w = np.clip(np.asarray(weights, dtype=np.float64), 1e-3, None)[..., None]
        qs = _filter_time(q * w, k) / _filter_time(w, k)
    norm = np.linalg.norm(qs, axis=-1, keepdims=True)
    qs = np.where(norm > 1e-8, qs / np.maximum(norm, 1e-12), q)  # opposite quats cancelling: keep the raw
    return R.quat_to_matrix(qs)


def smooth_positions(x: np.ndarray, sigma: float) -> np.ndarray:
    """x (F, ...) -> Gaussian-smoothed along time. sigma in frames; 0 returns a copy."""
    x = np.asarray(x, dtype=np.float64)
    if sigma <= 0 or x.shape[0] < 2:
        return x.copy()
    return _filter_time(x, gaussian_kernel(float(sigma)))
