"""The metrics measure what they claim: a known 5-degree perturbation scores 5 degrees."""
import numpy as np
import pytest

from mocap_blender.core import metrics
from mocap_blender.core import rotations as R


def _motion(t=20, j=8, seed=0):
    rng = np.random.default_rng(seed)
    phase = np.linspace(0, 2 * np.pi, t)[:, None, None]
    amp = rng.normal(0, 0.5, (1, j, 3))
    amp[:, 3] = 0.0  # bone 3 does not move
    return R.rotvec_to_matrix(amp * np.sin(phase) + rng.normal(0, 0.3, (1, j, 3)))


def test_five_degree_perturbation_scores_five_degrees():
    rng = np.random.default_rng(1)
    true = _motion()
    axis = rng.normal(size=true.shape[:-1])
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    pred = true @ R.rotvec_to_matrix(axis * np.radians(5.0))
    e = metrics.rotation_errors(pred, true)
    assert abs(e["moving"][0] - 5.0) < 1e-6 and abs(e["all"][0] - 5.0) < 1e-6
    assert e["all"][1] == 20 * 7  # non-root bones only
    assert e["moving"][1] == 20 * 6  # bone 3 is static, the root is excluded
    assert abs(metrics.root_orientation_error(pred[:, 0], true[:, 0])[0] - 5.0) < 1e-6


def test_moving_mask_threshold():
    true = _motion()
    m = metrics.moving_mask(true)
    assert not m[0] and not m[3] and m[1]
    tiny = np.broadcast_to(R.rotvec_to_matrix(np.array([0.0, 0.0, np.radians(0.5)])), (5, 2, 3, 3)).copy()
    tiny[2:, 1] = R.rotvec_to_matrix(np.array([0.0, 0.0, np.radians(0.9)]))
    assert not metrics.moving_mask(tiny)[1]


def test_mpjpe_percent_and_hold():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(4, 6, 3))
    shift = np.zeros(3) + 7.0  # a global offset does not count: root-relative
    p = g + shift
    p[:, 1:, 0] += 0.1  # every non-root head off by 0.1
    val, n = metrics.mpjpe_percent(p, g, height=2.0)
    assert abs(val - 5.0) < 1e-9 and n == 4 * 5
    ref = R.rotvec_to_matrix(rng.normal(size=(6, 3)))
    h = metrics.hold_baseline(ref, 3)
    assert h.shape == (3, 6, 3, 3) and np.allclose(h[2], ref)
    assert abs(metrics.pool([(1.0, 1), (4.0, 3), (float("nan"), 5)]) - 3.25) < 1e-12


def test_image_distance_after_similarity_removes_placement_only():
    """evaluate's "2D sim px": a turned, scaled and shifted copy of the true heads scores 0 after alignment (and
    its raw distance is large); moving one joint leaves about that joint's share; heads outside the frame are
    left out."""
    from models.evaluate import _px2d, _px2d_aligned
    rng = np.random.default_rng(0)
    true = rng.uniform(20, 140, (5, 12, 2))
    c, s = np.cos(0.4), np.sin(0.4)
    placed = 1.3 * true @ np.array([[c, s], [-s, c]]) + np.array([7.0, -4.0])
    raw, n = _px2d(placed, true, 160)
    aligned, n2 = _px2d_aligned(placed, true, 160)
    assert raw > 10 and aligned < 1e-9 and n == n2 == 60
    bent = true.copy()
    bent[:, 3] += [12.0, 0.0]  # one joint moved 12 px (1 px per head on average): no similarity undoes it
    aligned, _ = _px2d_aligned(bent, true, 160)
    assert 0.5 < aligned < 2.5  # (least squares spreads part of it over the other heads)
    out = true.copy()
    out[:, 0] = [-5.0, 80.0]  # outside the frame: not counted
    assert _px2d_aligned(out, true, 160)[1] == 60 and _px2d_aligned(true, out, 160)[1] == 55
    # a clip twice as large: the same distances, given in pixels of a 160 px frame
    assert abs(_px2d(2 * placed, 2 * true, 320)[0] - raw) < 1e-9
    assert abs(_px2d_aligned(2 * bent, 2 * true, 320)[0] - _px2d_aligned(bent, true, 160)[0]) < 1e-9


def test_depth_from_lengths_rebuilds_depth_up_to_the_references_signs():
    """The image-plane ceiling rows: with the truth as the reference, depth rebuilt from the rig's lengths is the
    truth; a reference whose bone points the other way in depth mirrors that bone's depth offset only."""
    import pytest
    pytest.importorskip("torch")
    from mocap_blender.core.skeleton import forward_kinematics, pose_tails
    from models.evaluate import depth_from_lengths
    from models.export import random_skeleton
    rng = np.random.default_rng(3)
    skel = random_skeleton(9, rng)
    pose = forward_kinematics(skel, _motion(t=6, j=9))
    heads, tails = pose[..., :3, 3], pose_tails(skel, pose)
    heads, tails = heads - heads[:, :1], tails - heads[:, :1]
    h2, t2 = depth_from_lengths(heads, tails, skel.parents, heads, tails)
    np.testing.assert_allclose(h2, heads, atol=1e-9)
    np.testing.assert_allclose(t2, tails, atol=1e-9)
    flipped = tails.copy()
    flipped[:, 4, 2] = 2 * heads[:, 4, 2] - tails[:, 4, 2]  # bone 4's tail mirrored in depth about its head
    h3, t3 = depth_from_lengths(heads, tails, skel.parents, heads, flipped)
    np.testing.assert_allclose(h3, heads, atol=1e-9)
    np.testing.assert_allclose(np.delete(t3, 4, 1), np.delete(tails, 4, 1), atol=1e-9)
    np.testing.assert_allclose(t3[:, 4], flipped[:, 4], atol=1e-9)


def test_tracking_probe_follows_a_moving_texture():
    """models/probe_tracking.py carries points with the flow: a textured square sliding sideways."""
    from models.probe_tracking import track
    rng = np.random.default_rng(0)
    tex = (rng.random((40, 40)) * 255).astype(np.uint8)
    tex = np.kron(tex, np.ones((2, 2), np.uint8))  # 80 x 80, blobs of 2 px
    shift = np.array([0, 1, 3, 4, 6, 7])  # whole pixels, 1.5 per frame on average
    frames = np.zeros((len(shift), 160, 160, 3), np.uint8)
    for t, s in enumerate(shift):
        frames[t, 40:120, 30 + s:110 + s] = tex[..., None]
    pts0 = np.array([[60.0, 70.0], [90.0, 90.0], [50.0, 100.0]])
    for chained in (True, False):
        p = track(frames, pts0, chained)
        assert p.shape == (6, 3, 2)
        assert np.abs(p[..., 0] - (pts0[None, :, 0] + shift[:, None])).max() < 0.5
        assert np.abs(p[..., 1] - pts0[None, :, 1]).max() < 0.5


def test_tracking_probe_matches_features_near_the_prior():
    """models/probe_tracking.py's encoder-feature matching finds each joint's first-frame feature again on later
    frames: random unit features sliding 2 px per frame, searched within 3 px of a prior 1 px off."""
    torch = pytest.importorskip("torch")
    from models.probe_tracking import match
    fm0 = torch.nn.functional.normalize(torch.randn(8, 32, 32, generator=torch.Generator().manual_seed(0)), dim=0)
    fmaps = torch.stack([torch.roll(fm0, 2 * t, dims=2) for t in range(4)])  # (T, C, S, S), moving right
    pts0 = np.array([[5.0, 7.0], [12.0, 20.0], [20.0, 9.0]])
    truth = pts0[None] + np.array([2.0, 0.0]) * np.arange(4)[:, None, None]  # (T, J, 2)
    got = match(fmaps, pts0, truth + np.array([1.0, -1.0]), radius=3.0)
    np.testing.assert_allclose(got, truth)


def test_encoder_tuning_probe_loss_falls_on_one_pair():
    """models/probe_encoder_tune.py's contrastive loss is a real objective: finite, and a few steps of tuning lower
    it on the pair they see (a small random-weight encoder, 64 px frames, five joints)."""
    torch = pytest.importorskip("torch")
    from models.encoder import build_encoder
    from models.probe_encoder_tune import contrastive_loss
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    px = rng.uniform(8, 56, (2, 5, 2))
    enc = build_encoder("lite0", pretrained=False)[0].eval()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = contrastive_loss(enc, frames[0], frames[1], px[0], px[1], np.random.default_rng(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


def test_patch_tracker_probe_reads_patches_where_asked():
    """models/probe_patch_tracker.py cuts square patches centred on the given pixels (a ramp image: each patch
    pixel reads its own frame coordinate)."""
    torch = pytest.importorskip("torch")
    from models.probe_patch_tracker import patches
    s = 64
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    frames = torch.stack([xx, yy, xx + yy])[None].expand(2, -1, -1, -1)  # (2, 3, S, S)
    centres = torch.tensor([[20.0, 30.0], [33.5, 12.25]])
    p = patches(frames, centres, 8)  # (2, 3, 8, 8)
    r = torch.arange(8, dtype=torch.float32) - 3.5
    for k, (cx, cy) in enumerate(centres.tolist()):
        torch.testing.assert_close(p[k, 0], (cx + r)[None].expand(8, -1))
        torch.testing.assert_close(p[k, 1], (cy + r)[:, None].expand(-1, 8))


def test_patch_tracker_probe_lift_inverts_the_layout():
    """The rotation probe's lift takes the layout's pixels back to the camera-frame pose they were made from (x, y
    relative to the root; depth from the reference given)."""
    from types import SimpleNamespace

    from mocap_blender.core.rotations import rotvec_to_matrix
    from models.probe_patch_tracker import layout_from, lift
    rng = np.random.default_rng(3)
    t, j, size = 5, 6, 160
    head_cam = rng.normal(0, 0.3, (t, j, 3))
    head_cam -= head_cam[:, :1]  # root-relative
    clip = SimpleNamespace(root_rot=rotvec_to_matrix(rng.normal(0, 1, (t, 3))), head_cam=head_cam,
                           log_depth=rng.normal(0.5, 0.1, t), uv=rng.uniform(0.3, 0.7, (t, j, 2)))
    px = layout_from(clip, 2, size)  # (T, J, 2)
    turned = np.einsum("tab,jb->tja", clip.root_rot @ clip.root_rot[2].T, head_cam[2])
    np.testing.assert_allclose(px[:, 0], clip.uv[:, 0] * size)
    back = lift(clip, px, turned, size)
    np.testing.assert_allclose(back, turned, atol=1e-9)


def test_patch_tracker_probe_learns_to_follow_a_texture():
    """The tracker's loss is a real objective: on textured squares moved by known offsets, a few steps of training
    bring its found offsets closer to the truth."""
    torch = pytest.importorskip("torch")
    from models.probe_patch_tracker import SEARCH, TEMPLATE, PatchTracker, loss_fn, patches
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tex = torch.from_numpy(rng.random((8, 3, 24, 24))).float().repeat_interleave(4, -1).repeat_interleave(4, -2)
    frames = torch.zeros(8, 3, 160, 160)
    frames[:, :, 32:128, 32:128] = tex - 0.5
    centres = torch.from_numpy(rng.uniform(60, 100, (8, 2))).float()
    target = torch.from_numpy(rng.uniform(-12, 12, (8, 2))).float()  # the joint sits here from the search centre
    tmpl = patches(frames, centres, TEMPLATE)
    search = patches(frames, centres - target, SEARCH)
    net = PatchTracker(16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    errs = []
    for _ in range(40):
        loss, err = loss_fn(net, tmpl, search, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        errs.append(err.item())
    assert np.isfinite(errs).all() and np.mean(errs[-5:]) < 0.6 * np.mean(errs[:5]), errs


def test_bone_turn_probe_turns_pictures_and_vectors_alike():
    """models/probe_bone_turn.py turns each patch so that the bone points up in it: a line drawn from the centre
    along a vector's image direction runs straight up the turned patch, and the vector turned the same way points
    up (+Y, no x) in the camera frame."""
    torch = pytest.importorskip("torch")
    from models.probe_bone_turn import oriented_patches, turn_z, up_angle
    s, n = 96, 33
    for d in ([0.6, 0.3, 0.74], [-0.5, -0.7, 0.5], [0.1, -0.9, -0.4]):
        d = np.array(d) / np.linalg.norm(d)
        phi = up_angle(d)
        turned = turn_z(d, phi)
        assert abs(turned[0]) < 1e-12 and turned[1] > 0 and turned[2] == d[2]
        img = np.zeros((s, s), np.float32)
        u = np.array([d[0], -d[1]]) / np.linalg.norm(d[:2])  # image direction (v grows downwards)
        for r in np.linspace(0, 14, 200):
            x, y = np.round(np.array([48.0, 48.0]) + r * u).astype(int)
            img[y, x] = 1.0
        frames = torch.from_numpy(img)[None, None].expand(1, 3, -1, -1)
        p = oriented_patches(frames, torch.tensor([[48.0, 48.0]]), torch.tensor([float(n)]),
                             torch.tensor([phi], dtype=torch.float32), n)[0, 0].numpy()  # (n, n), 1 px per cell
        c = n // 2
        assert p[c - 12:c - 2, c - 1:c + 2].max(1).min() > 0.4  # the line, straight up from the centre
        assert p[c + 3:, :].max() < 0.05 and p[:, :c - 3].max() < 0.05 and p[:, c + 4:].max() < 0.05


def test_bone_turn_probe_starts_at_the_carried_direction():
    """The untrained bone-turn network gives back the carried direction ("hold") to a fraction of a degree."""
    torch = pytest.importorskip("torch")
    from models.probe_bone_turn import PATCH, BoneTurn
    torch.manual_seed(0)
    net = BoneTurn(8).eval()
    d_prior = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    out = net(torch.randn(5, 3, PATCH, PATCH), torch.randn(5, 3, PATCH, PATCH),
              torch.nn.functional.normalize(torch.randn(5, 3), dim=-1), d_prior)
    assert torch.rad2deg(torch.acos((out * d_prior).sum(-1).clamp(max=1.0))).max() < 0.5


def test_bone_turn_probe_shortest_arc():
    """The bone-turn probe swings each bone by the shortest arc: it takes u onto v by exactly the angle between
    them (no turn about either), also where they are opposite. (Composing two swings from +Y, as a first version
    did, adds a turn about the bone and put perfect directions 7-9 degrees behind hold.)"""
    from models.probe_bone_turn import shortest_arc
    rng = np.random.default_rng(0)
    u = rng.normal(size=(200, 3))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    v = rng.normal(size=(200, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    v[0] = -u[0]
    r = shortest_arc(u, v)
    np.testing.assert_allclose(np.einsum("nab,nb->na", r, u), v, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-9)
    turn = np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1))
    np.testing.assert_allclose(turn, np.arccos(np.clip((u * v).sum(-1), -1, 1)), atol=1e-6)


def test_patch_tracker_probe_lite0_front_stays_frozen():
    """With `--backbone lite0` the tracker's pretrained front keeps its ImageNet weights and BatchNorm statistics
    through a training step; only the adapter and head learn."""
    torch = pytest.importorskip("torch")
    from models.probe_patch_tracker import SEARCH, TEMPLATE, PatchTracker, loss_fn
    torch.manual_seed(0)
    net = PatchTracker(8, "lite0")
    front = {k: v.clone() for k, v in net.feat[0].state_dict().items()}
    rest = [p.detach().clone() for p in net.head.parameters()]
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net.train()
    assert not net.feat[0].training
    loss, _ = loss_fn(net, torch.rand(4, 3, TEMPLATE, TEMPLATE) - 0.5, torch.rand(4, 3, SEARCH, SEARCH) - 0.5,
                      torch.tensor([[3.0, -2.0], [0.0, 5.0], [-7.0, 1.0], [2.0, 2.0]]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    for k, v in net.feat[0].state_dict().items():
        torch.testing.assert_close(v, front[k])
    assert any(not torch.equal(p, q) for p, q in zip(net.head.parameters(), rest))
