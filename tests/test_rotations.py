"""Property tests for every rotation conversion in mocap_blender.core.rotations (no Blender needed)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mocap_blender.core import rotations as R

core = settings(max_examples=60, deadline=None)  # each example checks a batch of rotations

N = 8  # rotations per example: every conversion is also checked batched
ATOL = 1e-9


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _non_degenerate(q):
    """Rows too short to normalise get w = 1 added (no filtering: hypothesis likes zeros)."""
    q = q.copy()
    q[np.linalg.norm(q, axis=-1) < 0.1, 0] += 1.0
    return _unit(q)


def _axis(v):
    v = v.copy()
    v[np.linalg.norm(v, axis=-1) < 1e-3, 2] += 1.0
    return v


quats = hnp.arrays(np.float64, (N, 4), elements=st.floats(-1, 1)).map(_non_degenerate)
mats = quats.map(R.quat_to_matrix)
angles = st.floats(-2 * np.pi, 2 * np.pi)
eulers = hnp.arrays(np.float64, (N, 3), elements=angles)
orders = st.sampled_from(R.EULER_ORDERS)


def _assert_rotation(m):
    assert np.allclose(np.swapaxes(m, -1, -2) @ m, np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(m), 1.0, atol=1e-9)


def _ref_axis(axis, a):
    c, s = np.cos(a), np.sin(a)
    return {"X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _ref_euler(e, order):
    """Blender's meaning, written out: order "XYZ" applies X first, so R = Rz @ Ry @ Rx."""
    m = np.eye(3)
    for ax in order:
        m = _ref_axis(ax, e["XYZ".index(ax)]) @ m
    return m


# --- quaternions ---------------------------------------------------------------------------------

@core
@given(quats)
def test_quat_matrix_round_trip(q):
    m = R.quat_to_matrix(q)
    _assert_rotation(m)
    q2 = R.matrix_to_quat(m)
    assert np.all(q2[:, 0] >= 0)
    assert np.allclose(np.abs(np.sum(q2 * q, axis=-1)), 1.0, atol=1e-9)  # same up to sign
    assert np.allclose(R.quat_to_matrix(q2), m, atol=ATOL)


@core
@given(mats)
def test_matrix_quat_round_trip(m):
    assert np.allclose(R.quat_to_matrix(R.matrix_to_quat(m)), m, atol=ATOL)


@core
@given(quats, st.floats(0.1, 10))
def test_quat_to_matrix_ignores_length(q, s):
    assert np.allclose(R.quat_to_matrix(q * s), R.quat_to_matrix(q), atol=ATOL)


@core
@given(quats, quats, quats)
def test_quat_multiply_is_matrix_product(a, b, c):
    assert np.allclose(R.quat_to_matrix(R.quat_multiply(a, b)), R.quat_to_matrix(a) @ R.quat_to_matrix(b), atol=ATOL)
    assert np.allclose(R.quat_multiply(R.quat_multiply(a, b), c), R.quat_multiply(a, R.quat_multiply(b, c)),
                       atol=ATOL)
    assert np.allclose(R.quat_multiply(a, [1.0, 0, 0, 0]), a)


def test_matrix_to_quat_exact_cases():
    for angle in (0.0, 1e-9, 0.5, np.pi - 1e-9, np.pi):
        for axis in np.eye(3):
            m = R.rotvec_to_matrix(axis * angle)
            q = R.matrix_to_quat(m)
            assert np.isclose(np.linalg.norm(q), 1.0)
            assert np.allclose(R.quat_to_matrix(q), m, atol=1e-12)
    assert np.allclose(R.matrix_to_quat(np.eye(3)), [1, 0, 0, 0])
    q = R.matrix_to_quat(np.diag([1.0, -1.0, -1.0]))  # 180 degrees about X
    assert np.allclose(np.abs(q), [0, 1, 0, 0])


@core
@given(hnp.arrays(np.float64, (6, N, 4), elements=st.floats(-1, 1)).map(_non_degenerate), st.integers(0, 1))
def test_quat_continuity(q, axis):
    q = np.moveaxis(q, 0, axis)
    out = R.quat_continuity(q, axis=axis)
    assert out.shape == q.shape
    assert np.allclose(R.quat_to_matrix(out), R.quat_to_matrix(q), atol=ATOL)  # same rotations
    o = np.moveaxis(out, axis, 0)
    assert np.all(np.sum(o[1:] * o[:-1], axis=-1) >= 0)  # no sign flip between consecutive frames
    assert np.allclose(o[0], np.moveaxis(q, axis, 0)[0])  # the first frame is kept


# --- 6D ------------------------------------------------------------------------------------------

@core
@given(mats)
def test_6d_round_trip(m):
    d = R.matrix_to_6d(m)
    assert d.shape == (N, 6)
    assert np.allclose(d[:, :3], m[:, :, 0]) and np.allclose(d[:, 3:], m[:, :, 1])
    assert np.allclose(R.sixd_to_matrix(d), m, atol=ATOL)


@core
@given(mats, hnp.arrays(np.float64, (N, 2), elements=st.floats(0.01, 100)),
       hnp.arrays(np.float64, (N,), elements=st.floats(-50, 50)))
def test_6d_gram_schmidt(m, scale, shear):
    """Any two independent vectors: the first keeps its direction, the second is made orthogonal in their plane."""
    a = scale[:, :1] * m[:, :, 0]
    b = scale[:, 1:] * (m[:, :, 1] + shear[:, None] * m[:, :, 0])
    out = R.sixd_to_matrix(np.concatenate([a, b], axis=-1))
    _assert_rotation(out)
    assert np.allclose(out, m, atol=1e-8)


# --- rotation vectors and Blender axis-angle -----------------------------------------------------

@core
@given(hnp.arrays(np.float64, (N, 3), elements=st.floats(-1, 1)).map(_axis), st.floats(0, np.pi - 1e-6))
def test_rotvec_round_trip(axis, angle):
    v = _unit(axis) * angle
    m = R.rotvec_to_matrix(v)
    _assert_rotation(m)
    assert np.allclose(R.matrix_to_rotvec(m), v, atol=1e-7)
    # Rodrigues, written out.
    k = _unit(axis)
    kx = np.zeros((N, 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx = kx - np.swapaxes(kx, 1, 2)
    ref = np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx
    assert np.allclose(m, ref, atol=ATOL)


@core
@given(mats)
def test_matrix_rotvec_round_trip(m):
    v = R.matrix_to_rotvec(m)
    assert np.all(np.linalg.norm(v, axis=-1) <= np.pi + 1e-12)
    assert np.allclose(R.rotvec_to_matrix(v), m, atol=ATOL)


@pytest.mark.parametrize("angle", [0.0, 1e-14, 1e-9, 1e-6, 1e-3])
def test_rotvec_small_angles(angle):
    v = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8]) * angle
    m = R.rotvec_to_matrix(v)
    _assert_rotation(m)
    assert np.allclose(R.matrix_to_rotvec(m), v, atol=1e-12)


@core
@given(hnp.arrays(np.float64, (N, 3), elements=st.floats(-3, 3)).map(_axis), hnp.arrays(np.float64, (N,), elements=angles))
def test_axis_angle_round_trip(axis, angle):
    aa = np.concatenate([angle[:, None], axis], axis=-1)  # axis need not be unit length
    m = R.axis_angle_to_matrix(aa)
    _assert_rotation(m)
    assert np.allclose(m, R.rotvec_to_matrix(_unit(axis) * angle[:, None]), atol=ATOL)
    back = R.matrix_to_axis_angle(m)
    assert np.allclose(np.linalg.norm(back[:, 1:], axis=-1), 1.0)
    assert np.all((back[:, 0] >= 0) & (back[:, 0] <= np.pi + 1e-12))
    assert np.allclose(R.axis_angle_to_matrix(back), m, atol=ATOL)


@core
@given(mats)
def test_matrix_axis_angle_round_trip(m):
    assert np.allclose(R.axis_angle_to_matrix(R.matrix_to_axis_angle(m)), m, atol=ATOL)


def test_axis_angle_conventions():
    # Like Blender's pose evaluation: a zero axis is the identity whatever the angle.
    assert np.allclose(R.axis_angle_to_matrix([0.7, 0.0, 0.0, 0.0]), np.eye(3))
    # The identity comes back with Blender's default axis (Y) and angle 0.
    assert np.allclose(R.matrix_to_axis_angle(np.eye(3)), [0, 0, 1, 0])
    assert np.allclose(R.axis_angle_to_matrix([np.pi / 2, 0, 0, 2.0]), _ref_axis("Z", np.pi / 2))


# --- Euler ---------------------------------------------------------------------------------------

@core
@given(eulers, orders)
def test_euler_to_matrix_is_blenders_product(e, order):
    m = R.euler_to_matrix(e, order)
    _assert_rotation(m)
    for n in range(N):
        assert np.allclose(m[n], _ref_euler(e[n], order), atol=ATOL)


@core
@given(mats, orders)
def test_matrix_euler_round_trip(m, order):
    e = R.matrix_to_euler(m, order)
    mid = "XYZ".index(order[1])
    assert np.all(np.abs(e[:, mid]) <= np.pi / 2 + 1e-12)
    assert np.all(np.abs(e) <= np.pi + 1e-12)
    assert np.allclose(R.euler_to_matrix(e, order), m, atol=ATOL)


@core
@given(hnp.arrays(np.float64, (N, 3), elements=st.floats(-np.pi + 1e-6, np.pi - 1e-6)), orders)
def test_euler_matrix_round_trip_principal(e, order):
    mid = "XYZ".index(order[1])
    e[:, mid] = np.clip(e[:, mid] / 2, -np.pi / 2 + 1e-3, np.pi / 2 - 1e-3)
    assert np.allclose(R.matrix_to_euler(R.euler_to_matrix(e, order), order), e, atol=1e-7)


@core
@given(hnp.arrays(np.float64, (N, 3), elements=angles), orders, st.sampled_from([1.0, -1.0]),
       st.sampled_from([0.0, 1e-12, 1e-9, 1e-7, 1e-4]))
def test_matrix_to_euler_gimbal_lock(e, order, sign, eps):
    """At and near gimbal lock (middle angle +-90 degrees) the Euler triple still gives the same matrix."""
    e[:, "XYZ".index(order[1])] = sign * (np.pi / 2 - eps)
    m = R.euler_to_matrix(e, order)
    back = R.matrix_to_euler(m, order)
    assert np.all(np.isfinite(back))
    assert np.allclose(R.euler_to_matrix(back, order), m, atol=1e-7)


def test_matrix_to_euler_exact_gimbal_sets_last_angle_zero():
    for order in R.EULER_ORDERS:
        e = np.zeros(3)
        e["XYZ".index(order[0])], e["XYZ".index(order[1])], e["XYZ".index(order[2])] = 0.3, np.pi / 2, 0.2
        back = R.matrix_to_euler(R.euler_to_matrix(e, order), order)
        assert back["XYZ".index(order[2])] == 0.0
        assert np.allclose(R.euler_to_matrix(back, order), R.euler_to_matrix(e, order), atol=1e-12)


def test_unknown_euler_order():
    with pytest.raises(ValueError, match="XYZ"):
        R.euler_to_matrix(np.zeros(3), "XXY")
    assert np.allclose(R.euler_to_matrix([0.1, 0.2, 0.3], "zyx"), R.euler_to_matrix([0.1, 0.2, 0.3], "ZYX"))


@core
@given(eulers, eulers, orders)
def test_euler_compatible(e, ref, order):
    out = R.euler_compatible(e, ref, order)
    assert np.allclose(R.euler_to_matrix(out, order), R.euler_to_matrix(e, order), atol=1e-9)  # same rotation
    assert np.all(np.abs(out - ref) <= np.pi + 1e-9)  # each angle within half a turn of the reference
    wrapped = e + 2 * np.pi * np.round((ref - e) / (2 * np.pi))
    assert np.all(np.sum(np.abs(out - ref), -1) <= np.sum(np.abs(wrapped - ref), -1) + 1e-9)


@core
@given(hnp.arrays(np.float64, (2, 3), elements=st.floats(-3, 3)), orders,
       hnp.arrays(np.int64, (40, 3), elements=st.integers(-2, 2)), st.lists(st.booleans(), min_size=40, max_size=40))
def test_euler_unwrap(ends, order, turns, flips):
    """A smooth motion stored with 360-degree jumps and flipped Euler families unwraps to jumps < 180 degrees."""
    t = np.linspace(0, 1, 40)[:, None]
    smooth = ends[0] * (1 - t) + ends[1] * t * 3  # up to ~9 rad of travel
    i, j, k = ("XYZ".index(c) for c in order)
    noisy = smooth + 2 * np.pi * turns
    f = np.array(flips)
    noisy[f, i] += np.pi
    noisy[f, j] = np.pi - noisy[f, j]
    noisy[f, k] += np.pi
    out = R.euler_unwrap(noisy, order)
    assert np.allclose(R.euler_to_matrix(out, order), R.euler_to_matrix(smooth, order), atol=1e-9)
    assert np.all(np.abs(np.diff(out, axis=0)) <= np.pi + 1e-9)
    assert np.allclose(out[0], noisy[0])


@core
@given(hnp.arrays(np.float64, (4, 10, 3), elements=angles), orders)
def test_euler_unwrap_axis(e, order):
    """Unwrapping along axis 1 equals unwrapping each sequence on its own."""
    out = R.euler_unwrap(e, order, axis=1)
    for n in range(4):
        assert np.allclose(out[n], R.euler_unwrap(e[n], order))
    assert np.allclose(R.euler_to_matrix(out, order), R.euler_to_matrix(e, order), atol=1e-9)


# --- comparisons ---------------------------------------------------------------------------------

@core
@given(mats, mats, mats)
def test_geodesic_angle(a, b, c):
    d = R.geodesic_angle(a, b)
    assert np.all((d >= 0) & (d <= np.pi + 1e-12))
    assert np.allclose(d, R.geodesic_angle(b, a))
    assert np.allclose(R.geodesic_angle(a, a), 0, atol=1e-6)
    assert np.allclose(d, R.geodesic_angle(c @ a, c @ b), atol=1e-6)  # invariant under a common rotation
    ang = np.linalg.norm(R.matrix_to_rotvec(np.swapaxes(a, -1, -2) @ b), axis=-1)
    assert np.allclose(d, ang, atol=1e-6)
    assert np.all(R.geodesic_angle(a, c) <= d + R.geodesic_angle(b, c) + 1e-6)  # triangle inequality


@core
@given(st.floats(0, np.pi), st.sampled_from("XYZ"))
def test_geodesic_angle_of_axis_rotation(angle, axis):
    assert np.isclose(R.geodesic_angle(_ref_axis(axis, angle), np.eye(3)), angle, atol=1e-6)


@core
@given(mats, hnp.arrays(np.float64, (N, 3, 3), elements=st.floats(-1e-3, 1e-3)))
def test_orthonormalize(m, noise):
    out = R.orthonormalize(m + noise)
    _assert_rotation(out)
    assert np.allclose(out, m, atol=1e-2)
    assert np.allclose(R.orthonormalize(m), m, atol=1e-9)


def test_batched_shapes_and_dtypes():
    q = _unit(np.random.default_rng(0).normal(size=(2, 3, 5, 4)))
    m = R.quat_to_matrix(q)
    assert m.shape == (2, 3, 5, 3, 3)
    assert R.matrix_to_quat(m).shape == q.shape
    assert R.matrix_to_6d(m).shape == (2, 3, 5, 6)
    assert R.matrix_to_rotvec(m).shape == (2, 3, 5, 3)
    assert R.matrix_to_axis_angle(m).shape == (2, 3, 5, 4)
    assert R.matrix_to_euler(m, "ZXY").shape == (2, 3, 5, 3)
    assert R.geodesic_angle(m, m).shape == (2, 3, 5)
    assert R.euler_to_matrix(np.zeros(3, dtype=np.int64)).dtype == np.float64
    assert R.quat_to_matrix(q.astype(np.float32)).dtype == np.float32


def test_channels_to_matrix_follows_each_blender_rotation_mode():
    rng = np.random.default_rng(4)
    m = R.rotvec_to_matrix(rng.normal(0, 1, (20, 3)))
    np.testing.assert_allclose(R.channels_to_matrix(R.matrix_to_quat(m), "QUATERNION"), m, atol=1e-12)
    np.testing.assert_allclose(R.channels_to_matrix(R.matrix_to_axis_angle(m), "AXIS_ANGLE"), m, atol=1e-12)
    for order in R.EULER_ORDERS:
        np.testing.assert_allclose(R.channels_to_matrix(R.matrix_to_euler(m, order), order), m, atol=1e-12)
