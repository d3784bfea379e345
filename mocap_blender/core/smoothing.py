"""Optional temporal smoothing of captured rotations and locations; the raw result is always kept by the caller.

Rotations are filtered in quaternion space: per joint, quaternions are made sign-continuous over time, filtered
with a Gaussian kernel (edges reflected, so the clip's ends do not drift towards zero), then renormalised. For the
small angular steps between neighbouring video frames this is an accurate approximation of a geodesic average.
Optionally each frame is weighted by the model's confidence, so uncertain frames lean on their neighbours.

Continuity of keyed channels (used by the bake): `continuous_quats` (no sign flips), `continuous_eulers` (each
frame the equivalent Euler triple nearest the previous one, all bones and orders at once) and `channel_values`
(rotation matrices -> the values of a bone's rotation channels in its rotation mode).
"""
from __future__ import annotations

import numpy as np

from . import rotations as R


def continuous_quats(q: np.ndarray, ref=None) -> np.ndarray:
    """(F, K, 4) quaternions -> the same rotations with signs continuous over time (vectorised: cumulative sign
    flips), the first frame in the hemisphere of `ref` (K, 4) if given."""
    q = np.array(q, dtype=np.float64)
    if len(q) == 0:
        return q
    sign = np.ones(q.shape[:2])
    if ref is not None:
        sign[0] = np.where(np.sum(q[0] * np.asarray(ref, np.float64), -1) < 0, -1.0, 1.0)
    if len(q) > 1:
        sign[1:] = np.where(np.sum(q[1:] * q[:-1], -1) < 0, -1.0, 1.0)
    return q * np.cumprod(sign, axis=0)[..., None]


_AXIS = {"X": 0, "Y": 1, "Z": 2}
TWO_PI = 2.0 * np.pi


def continuous_eulers(rot: np.ndarray, orders, ref=None) -> np.ndarray:
    """(F, K, 3, 3) rotations of K bones with Euler `orders` (K strings) -> (F, K, 3) Euler angles, each frame the
    equivalent triple nearest the previous one (Blender's compatible-Euler rule, as `rotations.euler_compatible`;
    the first frame nearest `ref` (K, 3)). All bones at once: angles are permuted to their (first, middle, last)
    axes, where both Euler families have the same form: (a, b, c) and (a + pi, pi - b, c + pi)."""
    f, k = rot.shape[:2]
    perm = np.array([[_AXIS[c] for c in o] for o in orders])  # (K, 3) axis of each order position
    canon = np.empty((f, k, 3))
    cols = np.arange(k)[:, None]
    for order in set(orders):
        idx = [i for i, o in enumerate(orders) if o == order]
        e = R.matrix_to_euler(rot[:, idx], order)  # (F, n, 3) in X, Y, Z slots
        canon[:, idx] = np.take_along_axis(e, perm[idx][None], axis=-1)
    alt = canon + np.array([np.pi, 0.0, np.pi])
    alt[..., 1] = np.pi - canon[..., 1]
    out = np.empty_like(canon)
    prev = canon[0] if ref is None else np.take_along_axis(np.asarray(ref, np.float64), perm, axis=-1)
    inv = 1.0 / TWO_PI
    for t in range(f):  # sequential by nature; a handful of small array operations per frame for all bones
        a, b = canon[t], alt[t]
        a = a + TWO_PI * np.rint((prev - a) * inv)
        b = b + TWO_PI * np.rint((prev - b) * inv)
        da, db = np.abs(a - prev), np.abs(b - prev)
        use_b = (db[:, 0] + db[:, 1] + db[:, 2]) < (da[:, 0] + da[:, 1] + da[:, 2])
        prev = np.where(use_b[:, None], b, a)
        out[t] = prev
    res = np.empty_like(out)
    np.put_along_axis(res, np.broadcast_to(perm[None], out.shape), out, axis=-1)
    return res


def channel_values(rot: np.ndarray, mode: str, ref_value=None, orders=None) -> np.ndarray:
    """rot (F, K, 3, 3) -> channel values (F, K, n) for K bones in rotation `mode`, continuous over time.

    mode: "QUATERNION", "AXIS_ANGLE" or "EULER" (then `orders`: K Euler orders). ref_value (K, n): the bones'
    current channel values; the first frame is made nearest to them.
    """
    if mode == "QUATERNION":
        return continuous_quats(R.matrix_to_quat(rot), ref_value)
    if mode == "AXIS_ANGLE":
        q = continuous_quats(R.matrix_to_quat(rot))
        s = np.linalg.norm(q[..., 1:], axis=-1)  # (F, K)
        angle = 2.0 * np.arctan2(s, q[..., 0])  # in [0, 2 pi) given continuous signs
        has_axis = s > 1e-9
        unit = q[..., 1:] / np.where(has_axis, s, 1.0)[..., None]
        # tiny angles have no axis: carry the previous one forward (leading ones take the first real axis)
        f = len(q)
        last = np.maximum.accumulate(np.where(has_axis, np.arange(f)[:, None], -1), axis=0)  # (F, K)
        first = np.argmax(has_axis, axis=0)
        src = np.where(last >= 0, last, first[None])
        axis = np.take_along_axis(unit, src[..., None], axis=0)
        axis[:, ~has_axis.any(axis=0)] = (0.0, 1.0, 0.0)  # Blender's axis for the identity
        # through angle 0 or 2 pi the axis of (angle, axis) reverses; (angle, axis) == (-angle, -axis) and the
        # angle is 2 pi periodic, so flip such axes back and unwrap the angle: both then run continuously
        sign = np.ones(angle.shape)
        if f > 1:
            sign[1:] = np.where(np.sum(axis[1:] * axis[:-1], -1) < 0, -1.0, 1.0)
        sign = np.cumprod(sign, axis=0)
        axis = axis * sign[..., None]
        angle = np.unwrap(angle * sign, axis=0)
        return np.concatenate([angle[..., None], axis], axis=-1)
    if orders is None:
        orders = [mode] * rot.shape[1]
    return continuous_eulers(rot, list(orders), ref_value)


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
    q = continuous_quats(R.matrix_to_quat(rot))  # (F, J, 4)
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
