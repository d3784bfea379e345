"""Rotation conversions, batched over leading dimensions, matching Blender's conventions.

- Quaternions are (w, x, y, z).
- 6D is the first two columns of the matrix, concatenated (Zhou et al. 2019).
- Euler order "XYZ" means X is applied first: R = Rz @ Ry @ Rx (Blender's meaning).
- Blender axis-angle is (angle, x, y, z); a rotation vector is axis * angle.
"""
from __future__ import annotations

import numpy as np

EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
_AXIS = {"X": 0, "Y": 1, "Z": 2}
_EPS = 1e-12
# Below this cos(middle angle) an Euler decomposition is treated as gimbal-locked; the error either way is
# about this size (sqrt of float64 epsilon balances the two branches).
_GIMBAL_EPS = 1e-8


def _as_float(a) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


# --- quaternions -----------------------------------------------------------------------------

def quat_normalize(q) -> np.ndarray:
    q = _as_float(q)
    return q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), _EPS)


def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product a * b (apply b first, then a)."""
    a, b = _as_float(a), _as_float(b)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_to_matrix(q) -> np.ndarray:
    """(..., 4) -> (..., 3, 3). The quaternion need not be unit length."""
    w, x, y, z = np.moveaxis(quat_normalize(q), -1, 0)
    m = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return m.reshape(m.shape[:-1] + (3, 3))


def matrix_to_quat(m) -> np.ndarray:
    """(..., 3, 3) rotation -> (..., 4) unit quaternion with w >= 0 (Shepperd's method, branch-free)."""
    m = _as_float(m)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Four candidate solutions, each well conditioned when its leading component is large.
    cands = np.stack([
        np.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        np.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        np.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        np.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], -2)  # (..., 4, 4)
    diag = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = quat_normalize(q)
    return np.where(q[..., :1] < 0, -q, q)


def quat_continuity(q, axis: int = 0) -> np.ndarray:
    """Flip signs along `axis` (time) so consecutive quaternions have a non-negative dot product."""
    q = np.moveaxis(_as_float(q).copy(), axis, 0)
    for t in range(1, q.shape[0]):
        flip = np.sum(q[t] * q[t - 1], axis=-1, keepdims=True) < 0
        q[t] = np.where(flip, -q[t], q[t])
    return np.moveaxis(q, 0, axis)


# --- 6D ---------------------------------------------------------------------------------------

def matrix_to_6d(m) -> np.ndarray:
    m = _as_float(m)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def sixd_to_matrix(d) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two columns."""
    d = _as_float(d)
    a, b = d[..., :3], d[..., 3:]
    x = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), _EPS)
    b = b - np.sum(x * b, axis=-1, keepdims=True) * x
    y = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), _EPS)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


# --- axis-angle --------------------------------------------------------------------------------

def rotvec_to_matrix(v) -> np.ndarray:
    """Rotation vector (axis * angle) (..., 3) -> (..., 3, 3), Rodrigues."""
    v = _as_float(v)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(half)/angle with a series near zero.
    k = np.where(angle > 1e-8, np.sin(half) / np.maximum(angle, _EPS), 0.5 - angle ** 2 / 48.0)
    q = np.concatenate([np.cos(half), v * k], axis=-1)
    return quat_to_matrix(q)


def matrix_to_rotvec(m) -> np.ndarray:
    q = matrix_to_quat(m)  # w >= 0, so the angle is in [0, pi]
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    k = np.where(s > 1e-8, angle / np.maximum(s, _EPS), 2.0 / np.maximum(q[..., :1], _EPS))
    return q[..., 1:] * k


def axis_angle_to_matrix(aa) -> np.ndarray:
    """Blender axis-angle (..., 4) = (angle, x, y, z); the axis need not be unit length.

    A zero axis gives the identity whatever the angle, as Blender's own pose evaluation does.
    """
    aa = _as_float(aa)
    axis = aa[..., 1:]
    n = np.linalg.norm(axis, axis=-1, keepdims=True)
    unit = axis / np.maximum(n, _EPS)
    angle = np.where(n > _EPS, aa[..., :1], 0.0)
    return rotvec_to_matrix(unit * angle)


def matrix_to_axis_angle(m) -> np.ndarray:
    """(..., 3, 3) -> (..., 4) = (angle, x, y, z) with a unit axis (Y for the identity, like Blender)."""
    v = matrix_to_rotvec(m)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    axis = np.where(angle > 1e-10, v / np.maximum(angle, _EPS), np.array([0.0, 1.0, 0.0]))
    return np.concatenate([angle, axis], axis=-1)


# --- Euler -------------------------------------------------------------------------------------

def _check_order(order: str) -> str:
    order = order.upper()
    if order not in EULER_ORDERS:
        raise ValueError(f"unknown Euler order {order!r}; use one of {', '.join(EULER_ORDERS)}")
    return order


def _axis_matrix(axis: int, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(angle), np.zeros_like(angle)
    if axis == 0:
        rows = [one, zero, zero, zero, c, -s, zero, s, c]
    elif axis == 1:
        rows = [c, zero, s, zero, one, zero, -s, zero, c]
    else:
        rows = [c, -s, zero, s, c, zero, zero, zero, one]
    return np.stack(rows, -1).reshape(angle.shape + (3, 3))


def euler_to_matrix(e, order: str = "XYZ") -> np.ndarray:
    """(..., 3) angles (x, y, z) in radians -> (..., 3, 3); order "XYZ" applies X first."""
    e = _as_float(e)
    order = _check_order(order)
    m = None
    for ch in order:  # first axis applied first, so it ends up rightmost
        r = _axis_matrix(_AXIS[ch], e[..., _AXIS[ch]])
        m = r if m is None else r @ m
    return m


def matrix_to_euler(m, order: str = "XYZ") -> np.ndarray:
    """(..., 3, 3) -> (..., 3) angles (x, y, z); the middle angle lies in [-pi/2, pi/2].

    At gimbal lock (middle angle at +-pi/2) the last axis's angle is 0, as in Blender.
    """
    m = _as_float(m)
    order = _check_order(order)
    i, j, k = (_AXIS[c] for c in order)  # applied first, second, third: R = R_k R_j R_i
    # Parity of the permutation (i, j, k): even for XYZ, YZX, ZXY.
    sign = 1.0 if (j - i) % 3 == 1 else -1.0
    # R = R_k(c) R_j(b) R_i(a): R[k,i] = -sign sin(b), and the first column's other two entries have norm cos(b).
    cb = np.hypot(m[..., i, i], m[..., j, i])
    b = np.arctan2(-sign * m[..., k, i], cb)  # atan2, not asin: accurate near +-pi/2
    gimbal = cb < _GIMBAL_EPS
    a = np.arctan2(sign * m[..., k, j], m[..., k, k])
    c = np.arctan2(sign * m[..., j, i], m[..., i, i])
    # Gimbal lock: only a -+ c is defined; set c = 0 and recover a from the remaining block.
    a_g = np.arctan2(-sign * m[..., j, k], m[..., j, j])
    a = np.where(gimbal, a_g, a)
    c = np.where(gimbal, 0.0, c)
    out = np.empty(m.shape[:-2] + (3,), dtype=np.float64)
    out[..., i], out[..., j], out[..., k] = a, b, c
    return out


def _wrap_towards(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return x + 2 * np.pi * np.round((ref - x) / (2 * np.pi))


def euler_compatible(e, ref, order: str = "XYZ") -> np.ndarray:
    """Of the Euler triples equal to rotation `e`, the one closest to `ref`, as Blender's `to_euler(order, compat)`.

    Like Blender: both Euler families, (a, b, c) and (a + pi, pi - b, c + pi), are wrapped angle by angle to within
    pi of `ref`, and the one with the smaller sum of absolute differences wins (the first one on a tie).
    """
    e, ref = _as_float(e), _as_float(ref)
    order = _check_order(order)
    i, j, k = (_AXIS[c] for c in order)
    alt = e.copy()
    alt[..., i] += np.pi
    alt[..., j] = np.pi - alt[..., j]
    alt[..., k] += np.pi
    first = _wrap_towards(e, ref)
    second = _wrap_towards(alt, ref)
    d1 = np.sum(np.abs(first - ref), axis=-1)
    d2 = np.sum(np.abs(second - ref), axis=-1)
    return np.where((d1 > d2)[..., None], second, first)


def euler_unwrap(e, order: str = "XYZ", axis: int = 0) -> np.ndarray:
    """Along `axis` (time), replace each Euler triple by the equivalent one closest to the previous frame."""
    e = np.moveaxis(_as_float(e).copy(), axis, 0)
    for t in range(1, e.shape[0]):
        e[t] = euler_compatible(e[t], e[t - 1], order)
    return np.moveaxis(e, 0, axis)


def channels_to_matrix(values, mode: str) -> np.ndarray:
    """A Blender bone's rotation channels in its `rotation_mode` -> (..., 3, 3).

    values: (..., 4) for "QUATERNION" (w, x, y, z) and "AXIS_ANGLE" (angle, x, y, z); (..., 3) for an Euler order.
    """
    if mode == "QUATERNION":
        return quat_to_matrix(values)
    if mode == "AXIS_ANGLE":
        return axis_angle_to_matrix(values)
    return euler_to_matrix(values, mode)


# --- comparisons -------------------------------------------------------------------------------

def geodesic_angle(ra, rb) -> np.ndarray:
    """Angle (radians) of the rotation taking rb to ra, (..., 3, 3) x2 -> (...)."""
    ra, rb = _as_float(ra), _as_float(rb)
    tr = np.einsum("...ij,...ij->...", ra, rb)  # trace(ra^T rb)
    return np.arccos(np.clip((tr - 1.0) * 0.5, -1.0, 1.0))


def orthonormalize(m) -> np.ndarray:
    """Nearest rotation matrix (SVD), for matrices with scale or numerical drift."""
    u, _, vt = np.linalg.svd(_as_float(m))
    r = u @ vt
    det = np.linalg.det(r)
    u = u.copy()
    u[..., :, -1] *= np.where(det < 0, -1.0, 1.0)[..., None]
    return u @ vt
