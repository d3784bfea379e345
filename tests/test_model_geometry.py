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
