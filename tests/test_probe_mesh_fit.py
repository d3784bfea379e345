"""models/probe_mesh_fit.py: the dumped surface points are skinned as Blender skins the body, land on the rendered
body when projected, and the fit's pieces (axis-angle, forward kinematics) agree with the core."""
import numpy as np
import pytest

pytest.importorskip("bpy")
torch = pytest.importorskip("torch")

from mocap_blender.core import rotations as R  # noqa: E402
from mocap_blender.core.skeleton import forward_kinematics  # noqa: E402
from models.data.generate import make_clip, write_shard  # noqa: E402
from models.probe_mesh_fit import MeshFit, depth_levels, dump_clip, reference_colours, rodrigues  # noqa: E402

SEED, SIZE, FRAMES = 11, 160, 16  # 16 frames: the body moves well away from the first frame


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from models.train import Clip
    path = tmp_path_factory.mktemp("mesh") / f"clip_{SEED:010d}.npz"
    shard = make_clip(SEED, SIZE, FRAMES)
    write_shard(path, shard)
    mesh = dump_clip(SEED, SIZE, FRAMES, 0.0, shard["frames"][0])
    return Clip(path), np.load(path), mesh


def test_rodrigues_matches_the_core():
    w = np.random.default_rng(0).normal(0, 1, (20, 3))
    w[0] = 0.0
    w[1] = [1e-6, 0, 0]
    np.testing.assert_allclose(rodrigues(torch.as_tensor(w)).numpy(), R.rotvec_to_matrix(w), atol=1e-12)


def test_depth_levels_put_parents_first():
    parents = np.array([-1, 0, 1, 0, 3, 4, 2])
    levels = depth_levels(parents)
    assert [list(lv) for lv in levels] == [[0], [1, 3], [2, 4], [5, 6]]


def test_dumped_skin_is_blenders_and_the_scene_is_the_clips(clip):
    _, _, mesh = clip
    assert mesh["frame0_diff"] == 0.0  # the rebuilt scene renders the stored first frame exactly
    assert mesh["skin_err_max"] < 1e-5  # our skinning of the vertices = Blender's deformed mesh (of the height)
    assert len(mesh["points"]) > 100
    np.testing.assert_allclose(np.linalg.norm(mesh["normals"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(mesh["skin_w"].sum(1), 1.0, atol=1e-5)


def test_pose_and_projection_match_the_truth(clip):
    c, shard, mesh = clip
    fit = MeshFit(c, shard, mesh)
    want = forward_kinematics(c.skel, c.basis, shard["root_loc"].astype(np.float64))
    for t in (0, FRAMES - 1):
        got = fit.pose(torch.as_tensor(c.basis[t]), t).numpy()
        np.testing.assert_allclose(got, want[t], atol=1e-9)
    # points placed on the bone heads, each skinned to its own bone, project onto the stored joints2d
    heads = {"points": c.skel.heads.astype(np.float64), "normals": np.tile([0.0, 0, 1], (c.n_joints, 1)),
             "skin_idx": np.arange(c.n_joints)[:, None], "skin_w": np.ones((c.n_joints, 1))}
    at_heads = MeshFit(c, shard, heads)
    for t in range(FRAMES):
        uv, _, _ = at_heads.project(torch.as_tensor(c.basis[t]), t)
        np.testing.assert_allclose(uv.numpy(), shard["joints2d"][t], atol=1e-3)


def test_points_keep_their_colours_under_the_true_pose(clip):
    """The surface points the reference frame shows keep their colours on a later frame under that frame's true
    pose better than under the reference pose carried by the root (hold). Shading changes them too: the objective
    cannot be exact."""
    c, shard, mesh = clip
    fit = MeshFit(c, shard, mesh)
    imgs, colours, has = reference_colours(fit, c.basis[0], FRAMES, (0.0,))
    assert has.sum() > 30
    t = FRAMES - 1
    uv, _, _ = fit.project(torch.as_tensor(c.basis[t]), t)
    again = fit.sample(imgs[0.0][t], uv)[has]
    hold = c.basis[0].copy()
    hold[0] = c.basis[t, 0]
    uv_h, _, _ = fit.project(torch.as_tensor(hold), t)
    held = fit.sample(imgs[0.0][t], uv_h)[has]
    err_true = (again - colours[0.0][has]).abs().sum(1).mean()
    err_hold = (held - colours[0.0][has]).abs().sum(1).mean()
    print(f"colour change, sum over RGB: true pose {err_true:.3f}, hold {err_hold:.3f}")
    assert err_true < 0.8 * err_hold


def test_fit_follows_the_body_in_the_picture(clip):
    """Fitted frame by frame from the matched first frame (true root given), the skeleton's heads land nearer their
    true image positions than the reference pose carried by the root (hold) puts them."""
    from models.probe_mesh_fit import fit_window, joint_pixels
    c, shard, mesh = clip
    rot = fit_window(MeshFit(c, shard, mesh), c.basis[0], c.basis[:, 0], FRAMES)
    hold = np.repeat(c.basis[:1], FRAMES, 0)
    hold[:, 0] = c.basis[:, 0]
    np.testing.assert_allclose(joint_pixels(c, shard, c.basis)[0], shard["joints2d"], atol=1e-3)
    err = {tag: np.linalg.norm(joint_pixels(c, shard, r)[0] - shard["joints2d"], axis=-1)[1:].mean()
           for tag, r in (("fit", rot), ("hold", hold))}
    print(f"heads, px: fit {err['fit']:.2f}, hold {err['hold']:.2f}")
    assert err["fit"] < 0.7 * err["hold"]


def test_fit_light_recovers_a_shaded_surface():
    """Colours made by a light fixed to the camera are explained exactly once the normals have turned; from one
    frame alone the model keeps that frame's colours and no normal term."""
    from models.probe_mesh_fit import fit_light
    rng = np.random.default_rng(4)
    T, P = 6, 200
    albedo = rng.uniform(0.2, 0.9, (P, 3))
    a, b = np.array([0.5, 0.45, 0.55]), rng.normal(0, 0.2, (3, 3))
    n = rng.normal(0, 1, (T, P, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    colours = albedo * (a + n @ b.T)
    seen = rng.random((T, P)) < 0.8
    alb, a_fit, b_fit = fit_light(colours, n, seen, iters=50)
    shaded = alb * (a_fit + n @ b_fit.T)
    assert np.abs(shaded - colours)[seen].max() < 1e-3
    alb1, a1, b1 = fit_light(colours[:1], n[:1], seen[:1])
    np.testing.assert_allclose(b1, 0, atol=1e-5)  # 1e-6 ridge
    np.testing.assert_allclose((alb1 * (a1 + n[0] @ b1.T))[seen[0]], colours[0][seen[0]], atol=1e-5)


def test_silhouette_targets_match_the_true_coverage(clip):
    """The colour posterior (frame 0's colours in and out of the reference pose's coverage) finds, on a later
    frame, the pixels the true pose's points cover; the silhouette term is lower at the true pose than at hold."""
    from models.probe_mesh_fit import silhouette_term, silhouettes
    c, shard, mesh = clip
    fit = MeshFit(c, shard, mesh)
    t, s = FRAMES - 1, 1.0
    found = silhouettes(fit, c.basis[0], FRAMES, (s,))
    oracle = silhouettes(fit, c.basis[0], FRAMES, (s,), oracle_rot=c.basis)
    assert fit.areas is not None and found[s][1] is None  # points stand for their surface
    a, b = found[s][0][t] > 0.5, oracle[s][0][t] > 0.5
    iou = float((a & b).sum() / (a | b).sum())
    hold = c.basis[0].copy()
    hold[0] = c.basis[t, 0]

    def term(rot):
        uv, z, _ = fit.project(torch.as_tensor(rot), t)
        return float(silhouette_term(fit, uv, z, found[s], s, t))
    print(f"posterior vs true coverage IoU {iou:.2f}; term: true pose {term(c.basis[t]):.3f}, hold {term(hold):.3f}")
    assert iou > 0.7
    assert term(c.basis[t]) < 0.8 * term(hold)


def test_points_standing_for_their_surface_cover_it():
    """A square of surface 20 px wide, sampled every 2 px (4 px^2 per point), covers its inside (one layer: 86%)
    and nothing well outside, whatever the spacing of its points; without areas the density counts points."""
    from models.probe_mesh_fit import coverage
    g = torch.arange(41.0, 60.0, 2.0, dtype=torch.float64)
    uv = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    cover = coverage(uv, 100, 0.0, areas=torch.full((len(uv),), 4.0, dtype=torch.float64))
    assert abs(float(cover[45:55, 45:55].mean()) - (1 - np.exp(-2))) < 0.03
    assert float(cover[:30].max()) < 1e-3 and float(cover[:, 70:].max()) < 1e-3
    np.testing.assert_allclose(float(coverage(uv, 100, 1.0).sum()), len(uv), rtol=1e-6)
