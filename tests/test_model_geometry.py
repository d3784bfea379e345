"""The torch FK / 6D helpers in models/ agree with the numpy core."""
import math
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


def _stage2_on_given_positions(exact_ik: bool, learned: str, pos_err: float, seed: int = 3, exact_twist=False,
                               tiny: float = 0.0):
    """A random 24-joint rig (children around their parent's tail: turns show) in a random pose; stage 2 of a
    small network fed its exact positions, told they are `pos_err` off. learned: "open" = gates fully open and
    residuals zero (set by hand), "random" = every learned part random. tiny > 0: every third bone this long
    (fraction of the rig's height), as in imported glTF rigs. -> (skel, truth, rot, head_can, tail_can, ref)"""
    from mocap_blender.core.skeleton import Skeleton
    from models.model import MocapNet, ModelConfig
    rng = np.random.default_rng(seed)
    skel = random_skeleton(24, rng, child_offset=0.05)
    if tiny:
        tails = skel.tails.copy()
        tails[1::3] = skel.heads[1::3] + skel.rest[1::3, :3, 1] * tiny * skel.height
        skel = Skeleton.from_arrays(skel.names, skel.parents, skel.rest, tails)
    t = 4
    truth = R.rotvec_to_matrix(rng.normal(0, 0.6, (t, 24, 3)))
    ref = R.rotvec_to_matrix(rng.normal(0, 0.6, (24, 3)))
    head_can, tail_can = canonical_positions(skel, forward_kinematics(skel, truth))
    torch.manual_seed(seed)
    net = MocapNet(ModelConfig(encoder="small8", img_size=64, dim=32, stage1_layers=1, stage2_layers=1,
                               swing_floor=0.0, exact_ik=exact_ik, exact_twist=exact_twist),
                   pretrained=False).double().eval()
    with torch.no_grad():
        if learned == "open":
            net.rot_head.bias[6:8] = 40.0  # follow the positions fully; the residual and clip twist start at zero
        else:  # residual swing and twist, clip twist, gates anywhere
            for head in (net.rot_head, net.twist_head[2]):
                head.weight.normal_(0, 0.5), head.bias.normal_(0, 0.5)
    return skel, truth, _stage2_rotations(net, skel, ref, head_can, tail_can, pos_err), head_can, tail_can, ref


def _stage2_rotations(net, skel, ref, head_can, tail_can, pos_err: float, ref_k=None) -> np.ndarray:
    """Stage 2 of `net` (float64) on the given canonical positions (T, J, 3), told they are `pos_err` off, with
    the reference `ref` (J, 3, 3) shown on frame ref_k (None: no frame) -> local rotations (T, J, 3, 3)."""
    from mocap_blender.core import preprocess
    t, j = head_can.shape[:2]
    rig = preprocess.make_rig_inputs(skel, ref)
    f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))[None]
    with torch.no_grad():
        out = net(None, f(rig["joint_feats"]), f(rig["ref_rot6d"]), torch.from_numpy(rig["parents"])[None],
                  torch.from_numpy(rig["hops"])[None], torch.from_numpy(rig["edge_type"])[None],
                  f(rig["local_mask"]), f(preprocess.make_ref_flag(t, ref_k)),
                  pose_override={"head_can": f(head_can), "tail_can": f(tail_can),
                                 "pos_err": torch.full((1, t, j, 1), pos_err, dtype=torch.float64)})
    return out["rot"][0].numpy()


def _assert_shown_rotations_exact(skel, truth, rot, head_can, tail_can, tiny_aims_at_kids=False, leaf_atol=1e-5):
    """Bones whose rotation the exact positions show (children off their axis; a tiny bone aims at its children,
    and with one its turn about that aim does not show), and their children's local rotations, are the truth;
    a bone without children points where its tail is (its twist comes from the reference). -> checked bones"""
    from mocap_blender.core.ik import AIM_CHILDREN_BELOW
    kids = np.bincount(skel.parents[1:], minlength=len(skel.parents))
    aims_at_tail = skel.lengths >= AIM_CHILDREN_BELOW * skel.height if tiny_aims_at_kids else True
    shown = (kids >= 2) | ((kids == 1) & aims_at_tail)
    full = {0} | {j for j in range(1, len(kids)) if shown[j]}
    check = [j for j in range(1, len(kids)) if j in full and skel.parents[j] in full]
    # (the angle from the rotation vector: acos of the trace loses ~0.03 degrees near zero)
    err = np.degrees(np.linalg.norm(R.matrix_to_rotvec(np.swapaxes(truth[:, check], -1, -2) @ rot[:, check]), axis=-1))
    assert err.max() < 1e-3, err.max()
    leaves = [j for j in range(1, len(kids)) if kids[j] == 0 and skel.parents[j] in full]
    heads, tails = canonical_positions(skel, forward_kinematics(skel, rot))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    np.testing.assert_allclose(unit(tails - heads)[:, leaves], unit(tail_can - head_can)[:, leaves], atol=leaf_atol)
    return check


@pytest.mark.parametrize("exact_ik,learned", [(False, "open"), (True, "open"), (True, "random")])
def test_stage2_prior_is_the_ik_solution_on_exact_positions(exact_ik, learned):
    """With exact positions (told: error 0), stage 2 swings each bone onto its observed direction and turns a
    bone with children (here all off its axis) about its axis until they sit where the positions put them: those
    bones' rotations (and their children's local rotations) are the truth, whatever the reference. Without
    `exact_ik` only when its learned gates are open and its residuals zero; with it, whatever they are."""
    assert len(_assert_shown_rotations_exact(*_stage2_on_given_positions(exact_ik, learned, 0.0)[:5])) >= 3


@pytest.mark.parametrize("exact_twist", [False, True])
def test_stage2_on_exact_positions_is_the_analytic_solution(exact_twist):
    """Exact positions (told: error 0): without `exact_twist` every bone's rotation is the analytic one (learned
    gates open, residual zero) whatever the learned weights, the twist of bones without children included; with
    it (configs before 2 Dec) the learned residual still twists those bones about their aim."""
    rots = {}
    for learned in ("open", "random"):
        skel, truth, rots[learned], *_ = _stage2_on_given_positions(True, learned, 0.0, exact_twist=exact_twist)
    leaves = [j for j in range(1, 24) if j not in skel.parents]
    err = np.degrees(np.linalg.norm(R.matrix_to_rotvec(np.swapaxes(rots["open"], -1, -2) @ rots["random"]), axis=-1))
    if exact_twist:
        assert err[:, leaves].mean() > 1.0
    else:
        assert err.max() < 1e-3, err.max()


@pytest.mark.parametrize("pos_err", [0.0, 0.02])
def test_stage2_places_every_level_of_a_deep_chain(monkeypatch, pos_err):
    """A snake 39 bones deep: stage 2 places parents before children through as many passes as the rig is deep
    (`chain_levels`), so more passes change nothing, and a fixed 16 (the passes before 2 Dec) leave the deep
    bones off (their twist is carried from their parents')."""
    import models.model as model
    rng = np.random.default_rng(5)
    skel = random_skeleton(40, rng, chain=True)
    truth = R.rotvec_to_matrix(rng.normal(0, 0.4, (3, 40, 3)))
    ref = R.rotvec_to_matrix(rng.normal(0, 0.4, (40, 3)))
    head_can, tail_can = canonical_positions(skel, forward_kinematics(skel, truth))
    torch.manual_seed(5)
    net = model.MocapNet(model.ModelConfig(encoder="small8", img_size=64, dim=32, stage1_layers=1, stage2_layers=1),
                         pretrained=False).double().eval()
    with torch.no_grad():
        net.rot_head.weight.normal_(0, 0.5), net.rot_head.bias.normal_(0, 0.5)
    levels = model.chain_levels(torch.from_numpy(np.maximum(skel.parents, 0))[None])
    assert int(levels) == 39
    rot = _stage2_rotations(net, skel, ref, head_can, tail_can, pos_err)
    passes = {}
    for n in (16, 60):
        monkeypatch.setattr(model, "chain_levels", lambda *a, n=n: torch.tensor(n))
        passes[n] = _stage2_rotations(net, skel, ref, head_can, tail_can, pos_err)
    np.testing.assert_allclose(rot, passes[60], atol=1e-9)
    off = np.degrees(np.linalg.norm(R.matrix_to_rotvec(np.swapaxes(passes[16], -1, -2) @ rot), axis=-1))  # (T, J)
    assert off[:, :17].max() < 1e-5 and off[:, 17:].max() > 1e-3, (off[:, :17].max(), off[:, 17:].max())


def test_stage2_on_exact_positions_of_tiny_bones():
    """Bones of 0.03% of the rig's height (imported rigs have them) get clean rotations on exact positions: each a
    rotation, and the truth wherever the positions show it."""
    skel, truth, rot, head_can, tail_can, _ = _stage2_on_given_positions(True, "random", 0.0, tiny=3e-4)
    assert skel.lengths[1::3].max() < 1e-3 * skel.height
    np.testing.assert_allclose(np.swapaxes(rot, -1, -2) @ rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-3)
    check = _assert_shown_rotations_exact(skel, truth, rot, head_can, tail_can, tiny_aims_at_kids=True, leaf_atol=1e-3)
    assert len([j for j in check if j % 3 == 1]) >= 2  # tiny bones among them


def test_stage2_residual_acts_once_positions_are_off():
    """The same random network told the positions are 5% of the height off: its residual and gates now move the
    bones away from the observed directions (so the exactness above is the lock, not a weak residual)."""
    skel, truth, rot, head_can, tail_can, _ = _stage2_on_given_positions(True, "random", 0.05)
    heads, tails = canonical_positions(skel, forward_kinematics(skel, rot))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    cos = (unit(tails - heads) * unit(tail_can - head_can)).sum(-1)[:, 1:]
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).mean() > 5.0


@pytest.mark.parametrize("anchor", [False, True])
def test_stage2_anchored_on_the_reference_frame(anchor):
    """Matched protocol, stage 2 fed the reference pose on every frame (noisy by its account, so its residual and
    per-clip twist act) with every learned part random: anchored, the reference frame gets the reference rotations
    exactly and the other frames keep a residual; not anchored (configs before 2 Dec), the reference frame too."""
    from models.model import MocapNet, ModelConfig
    rng = np.random.default_rng(5)
    skel = random_skeleton(12, rng, child_offset=0.05)
    t, k = 5, 2
    ref = R.rotvec_to_matrix(rng.normal(0, 0.6, (12, 3)))
    head_can, tail_can = canonical_positions(skel, forward_kinematics(skel, np.broadcast_to(ref, (t, 12, 3, 3))))
    torch.manual_seed(5)
    net = MocapNet(ModelConfig(encoder="small8", img_size=64, dim=32, stage1_layers=1, stage2_layers=1,
                               anchor_stage2=anchor), pretrained=False).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for head in (net.rot_head, net.twist_head[2]):
            head.weight.normal_(0, 0.5), head.bias.normal_(0, 0.5)
    rot = _stage2_rotations(net, skel, ref, head_can, tail_can, 0.03, ref_k=k)[:, 1:]
    err = np.degrees(np.linalg.norm(R.matrix_to_rotvec(np.swapaxes(ref[None, 1:], -1, -2) @ rot), axis=-1))  # (T, J-1)
    others = [i for i in range(t) if i != k]
    assert err[others].mean(-1).min() > 1.0  # the residual acts
    if anchor:
        assert err[k].max() < 1e-3
    else:
        assert err[k].mean() > 1.0


@pytest.mark.parametrize("refine_rounds,stage1_local", [(0, False), (2, False), (0, True)])
def test_reference_frame_gets_the_reference_exactly(refine_rounds, stage1_local):
    """Matched protocol: on the frame the reference shows, stage 1's root orientation is the reference's and its
    pose is the reference pose carried by it, whatever the (here random) weights, with or without the 2D
    refinement cascade moving the pose; without a reference frame the residuals apply on every frame."""
    from mocap_blender.core import preprocess
    from models.export import dummy_inputs
    from models.model import MocapNet, ModelConfig
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="small8", img_size=64, dim=32, stage1_layers=1, stage2_layers=1,
                      refine_rounds=refine_rounds, stage1_local=stage1_local)
    net = MocapNet(cfg, pretrained=False).eval()
    with torch.no_grad():  # non-zero residual heads
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    frames, feats, ref6, parents, hops, edge, mask, _ = dummy_inputs(cfg, t=6, j=9)
    fs = preprocess.feature_slices()
    ref_root = R.sixd_to_matrix(feats[0, fs["ref_root_cam6d"]].astype(np.float64))
    ref_pose = np.einsum("ab,jb->ja", ref_root, feats[:, fs["ref_head"]])  # (J, 3) camera frame
    f = lambda a: torch.from_numpy(np.asarray(a))[None]
    for k in (None, 0, 4):
        flag = preprocess.make_ref_flag(6, k)
        with torch.no_grad():
            out = net.forward_frames(f(frames), f(feats), f(ref6), f(parents), f(hops), f(edge), f(mask), f(flag))
        root, heads = out["root_rot"][0].double().numpy(), out["head_cam"][0].double().numpy()
        root_err = np.degrees(np.linalg.norm(R.matrix_to_rotvec(np.swapaxes(root, -1, -2) @ ref_root), axis=-1))
        pose_err = np.linalg.norm(heads - (ref_pose - ref_pose[:1]), axis=-1).max(-1)  # (T,)
        others = [i for i in range(6) if i != k]
        assert root_err[others].min() > 0.05 and pose_err[others].min() > 1e-3  # the residuals act
        if k is not None:
            assert root_err[k] < 1e-3 and pose_err[k] < 1e-5


def test_stage2_aims_at_averaged_positions_only_where_they_are_noisy():
    """Stage 2 averages noisy positions over nearby frames (jitter shrinks, a smooth motion stays) and leaves
    exact ones (told: error 0) untouched."""
    from models.model import MocapNet, ModelConfig
    net = MocapNet(ModelConfig(encoder="small8", img_size=64, dim=32, stage1_layers=1, stage2_layers=1),
                   pretrained=False).double()
    rng = np.random.default_rng(5)
    t = torch.arange(32, dtype=torch.float64)
    motion = torch.stack([torch.sin(t / 6.0), torch.cos(t / 6.0), 0.1 * t], -1)[None, :, None].repeat(1, 1, 4, 1)
    noisy = motion + torch.from_numpy(rng.normal(0, 0.02, motion.shape))
    err = torch.full((1, 32, 4, 1), 0.035, dtype=torch.float64)
    with torch.no_grad():
        out = net.smoothed(noisy, err)
        same = net.smoothed(noisy, torch.zeros_like(err))
    torch.testing.assert_close(same, noisy, rtol=0, atol=1e-9)
    before = (noisy - motion)[:, 2:-2].norm(dim=-1).mean()
    after = (out - motion)[:, 2:-2].norm(dim=-1).mean()
    assert after < 0.65 * before, (float(after), float(before))


def test_sample_grid_reads_the_map_where_asked():
    """sample_grid: at a cell centre it returns that cell; half way between two cells, their mean; outside the
    frame, zero (the fine grid's cell centres are at (i + 0.5) / G, as MocapNet.img_xy8)."""
    from models.model import sample_grid
    g = 8
    fmap = torch.zeros(1, 2, g, g)
    fmap[0, 0, 3, 5] = 1.0  # row 3 (v), column 5 (u)
    fmap[0, 1, 3, 6] = 4.0
    pts = torch.tensor([[[[5.5 / g, 3.5 / g], [6.0 / g, 3.5 / g], [1.2, 0.5]]]])  # (B=1, T=1, 3, 2)
    out = sample_grid(fmap, pts)[0, 0]  # (3, 2)
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0], [0.5, 2.0], [0.0, 0.0]]))


def test_refinement_moves_the_pose_by_what_it_finds_in_the_image():
    """The cascade: each round moves the heads and tails by its offset (in units of its patch spacing), and the
    found image positions move the camera-frame pose by weak perspective at the root's depth (x = du * depth,
    y = -dv * depth, root-relative) times the learned amount; the untrained cascade moves nothing."""
    from models.export import dummy_inputs
    from models.model import MocapNet, ModelConfig
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="small8", img_size=64, dim=32, stage1_layers=1, stage2_layers=1, refine_rounds=2)
    net = MocapNet(cfg, pretrained=False).eval()
    frames, feats, ref6, parents, hops, edge, mask, flag = dummy_inputs(cfg, t=5, j=7)
    f = lambda a: torch.from_numpy(np.asarray(a))[None]
    args = (f(frames), f(feats), f(ref6), f(parents), f(hops), f(edge), f(mask), torch.zeros(1, 5))
    with torch.no_grad():
        base = net.forward_frames(*args, stages=1)
        torch.testing.assert_close(base["uv_steps"][0][..., 0, :], base["uv"])  # untrained: no move
        net.refine[0].delta.bias.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
        net.refine[1].delta.weight.normal_(0.0, 0.1)  # a move that differs per joint
        out = net.forward_frames(*args, stages=1)
        step0 = out["uv_steps"][1] - out["uv_steps"][0]  # (1, T, J, 2, 2)
        torch.testing.assert_close(step0[..., 0, :], torch.tensor([1.0, -2.0]).expand_as(step0[..., 0, :]) / 8)
        torch.testing.assert_close(out["head_cam"], base["head_cam"])  # lift amount 0: the pose is unchanged
        net.lift_gate.bias.fill_(1.0)
        lifted = net.forward_frames(*args, stages=1)
    duv = (lifted["uv"] - lifted["uv_prior"][..., 0, :]) * torch.exp(lifted["log_root_depth"])[..., None, None]
    move = torch.stack([duv[..., 0], -duv[..., 1], torch.zeros_like(duv[..., 0])], -1)
    torch.testing.assert_close(lifted["head_cam"] - base["head_cam"], move - move[:, :, :1], atol=1e-5, rtol=1e-4)


def test_similar_finds_the_2d_similarity():
    """similar(p, q, w): when q is p scaled, turned and shifted, it returns q exactly; padded points (weight 0) do
    not pull the fit."""
    from models.model import similar
    torch.manual_seed(0)
    p = torch.rand(1, 3, 6, 2, 2)
    a, s, shift = 0.7, 1.8, torch.tensor([0.2, -0.1])
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    q = s * p @ rot.T + shift
    w = torch.ones(1, 1, 6, 1, 1)
    w[:, :, -1] = 0.0
    q[:, :, -1] += 5.0  # a wrong point where the weight is 0
    fit = similar(p, q, w)
    torch.testing.assert_close(fit[:, :, :-1], q[:, :, :-1], atol=1e-5, rtol=1e-5)


def test_snap_targets_point_to_the_nearest_bone():
    """The snap field's truth: beside a bone, the perpendicular offset to it (in cells); past its tail, the offset
    to the tail; never longer than the reach; padded joints are ignored."""
    from models.train import snap_targets
    g = 20
    xy = torch.stack(torch.meshgrid(*(((torch.arange(g) + 0.5) / g),) * 2, indexing="xy"), -1).reshape(-1, 2)
    uv = torch.tensor([[[[0.2, 0.5], [0.0, 0.0]]]])  # (B=1, T=1, J=2, 2); joint 1 is padding
    tail = torch.tensor([[[[0.8, 0.5], [0.1, 0.1]]]])
    off, near = snap_targets(uv, tail, torch.tensor([[1.0, 0.0]]), xy, 2.5)
    off, near = off[0, 0].view(g, g, 2), near[0, 0].view(g, g)  # [row v, column u]
    torch.testing.assert_close(off[8, 10], torch.tensor([0.0, 1.5]))  # v = 0.425: 1.5 cells above the bone
    torch.testing.assert_close(off[11, 5], torch.tensor([0.0, -1.5]))
    torch.testing.assert_close(off[10, 17], torch.tensor([-1.5, -0.5]))  # past the tail (u = 0.875): to the tail
    torch.testing.assert_close(off[0, 10], torch.tensor([0.0, 2.5]))  # 9.5 cells away: towards it, at most 2.5
    assert near[8, 10] == 1 and near[0, 10] == 0
    assert near[1, 1] == 0  # the padded joint at (0.05..0.1) does not count


def test_snap_moves_joints_by_the_field():
    """Each head and tail moves by the snap field read where it is (in cells); a field that is the truth of
    `snap_targets` puts points near a bone onto it to within a hair (offsets to a line are linear, so reading the
    field between cell centres is exact)."""
    from models.export import dummy_inputs
    from models.model import MocapNet, ModelConfig, sample_grid
    from models.train import snap_targets
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="small8", img_size=64, dim=32, stage1_layers=1, stage2_layers=1, snap_rounds=2)
    net = MocapNet(cfg, pretrained=False).eval()
    frames, feats, ref6, parents, hops, edge, mask, flag = dummy_inputs(cfg, t=4, j=6)
    f = lambda a: torch.from_numpy(np.asarray(a))[None]
    with torch.no_grad():
        net.snap.net[-1].weight.zero_(), net.snap.net[-1].bias.copy_(torch.tensor([0.5, -0.25]))
        out = net.forward_frames(f(frames), f(feats), f(ref6), f(parents), f(hops), f(edge), f(mask),
                                 torch.zeros(1, 4), stages=1)
    g = cfg.img_size // 8
    before = out["uv_steps"][-1]  # (1, T, J, 2[head, tail], 2)
    moved = torch.stack([out["uv"], out["tail_uv"]], 3) - before
    u, v = before[..., 0], before[..., 1]  # points that read the whole field on both rounds (not the zero border)
    inside = (u > 0.5 / g) & (u < 1 - 1.5 / g) & (v > 1.0 / g) & (v < 1 - 0.5 / g)
    assert inside.sum() >= 4
    expect = torch.tensor([0.5, -0.25]) * 2 / g  # two rounds of a constant field
    torch.testing.assert_close(moved[inside], expect.expand_as(moved[inside]))
    # the true field snaps points 1.3 cells off a diagonal bone onto it
    g = 20
    xy = torch.stack(torch.meshgrid(*(((torch.arange(g) + 0.5) / g),) * 2, indexing="xy"), -1).reshape(-1, 2)
    a, b = torch.tensor([0.2, 0.3]), torch.tensor([0.8, 0.7])
    field, _ = snap_targets(a.view(1, 1, 1, 2), b.view(1, 1, 1, 2), torch.ones(1, 1), xy, 2.5)
    fmap = field[0].transpose(-1, -2).reshape(1, 2, g, g)
    d = (b - a) / (b - a).norm()
    normal = torch.tensor([-d[1], d[0]])
    s = torch.linspace(0.25, 0.75, 7)[:, None]
    on = a + s * (b - a)
    pts = (on + 1.3 / g * normal * torch.tensor([1.0, -1.0]).repeat(4)[:7, None]).view(1, 1, 7, 2)
    snapped = pts + sample_grid(fmap, pts) / g
    torch.testing.assert_close(snapped[0, 0], on, atol=1e-5, rtol=0)
