"""The torch FK / 6D helpers in models/ agree with the numpy core."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mocap_blender.core import rotations as R
from mocap_blender.core.preprocess import canonical_positions
from mocap_blender.core.skeleton import forward_kinematics
from models.export import random_skeleton
from models.geometry import fk_canonical, geodesic, matrix_to_sixd, sixd_to_matrix, skeleton_arrays


def test_sixd_round_trip_matches_core():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(20, 6))
    np.testing.assert_allclose(sixd_to_matrix(torch.from_numpy(d)).numpy(), R.sixd_to_matrix(d), atol=1e-6)
    m = R.rotvec_to_matrix(rng.normal(size=(20, 3)))
    np.testing.assert_allclose(matrix_to_sixd(torch.from_numpy(m)).numpy(), R.matrix_to_6d(m), atol=1e-12)
    a, b = R.rotvec_to_matrix(rng.normal(size=(20, 3))), R.rotvec_to_matrix(rng.normal(size=(20, 3)))
    np.testing.assert_allclose(geodesic(torch.from_numpy(a), torch.from_numpy(b)).numpy(),
                               R.geodesic_angle(a, b), atol=1e-5)


@pytest.mark.parametrize("j", [2, 9, 30])
def test_torch_fk_equals_core_fk(j):
    rng = np.random.default_rng(j)
    skel = random_skeleton(j, rng)
    basis = R.rotvec_to_matrix(rng.normal(0, 0.8, (5, j, 3)))  # (T, J, 3, 3)
    heads, tails = canonical_positions(skel, forward_kinematics(skel, basis))
    a = {k: torch.from_numpy(v)[None] for k, v in skeleton_arrays(skel).items()}
    th, tt, _ = fk_canonical(a["rest_rel_rot"].double(), a["rest_rel_loc"].double(), a["parents"], a["depth"],
                             torch.from_numpy(basis)[None], a["tail_local"].double())
    np.testing.assert_allclose(th[0].numpy() / skel.height, heads, atol=1e-5)
    np.testing.assert_allclose(tt[0].numpy() / skel.height, tails, atol=1e-5)


def test_swing_between_takes_a_to_b():
    from models.geometry import swing_between
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    r = swing_between(torch.from_numpy(a), torch.from_numpy(b), torch.ones(30, 1, dtype=torch.float64)).numpy()
    un = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.einsum("nab,nb->na", r, un(a)), un(b), atol=1e-6)
    half = swing_between(torch.from_numpy(a), torch.from_numpy(b), torch.full((30, 1), 0.5, dtype=torch.float64))
    full_angle = R.geodesic_angle(r, np.eye(3))
    assert np.all(R.geodesic_angle(half.numpy(), np.eye(3)) < full_angle + 1e-9)
    zero = swing_between(torch.from_numpy(a), torch.from_numpy(b), torch.zeros(30, 1, dtype=torch.float64))
    np.testing.assert_allclose(zero.numpy(), np.broadcast_to(np.eye(3), (30, 3, 3)), atol=1e-9)
