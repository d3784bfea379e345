"""Training runs end to end on tiny synthetic shards in seconds, checkpoints carry the config, and resume."""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mocap_blender.core.rotations import rotvec_to_matrix
from mocap_blender.core.skeleton import forward_kinematics
from models.export import random_skeleton
from models.model import ModelConfig
from models.encoder import build_encoder
from models.train import Clip, TrainConfig, check_cache_encoder, collate, fit, make_sample

TINY = dict(img_size=64, encoder="small8", dim=32, heads=4, local_heads=2, stage1_layers=1, stage2_layers=1,
            window=8, max_joints=40, refine_rounds=1, snap_rounds=1, stage1_local=True)


def write_shard(path, j, t=12, s=64, seed=0):
    """A synthetic clip in the data engine's shard format (random rig, motion, camera; noise frames)."""
    rng = np.random.default_rng(seed)
    skel = random_skeleton(j, rng)
    basis = rotvec_to_matrix(rng.normal(0, 0.3, (1, j, 3)) + np.linspace(0, 1, t)[:, None, None]
                             * rng.normal(0, 0.3, (1, j, 3)))
    root_loc = np.zeros((t, 3))
    pose = forward_kinematics(skel, basis, root_loc)
    cam = np.tile(np.eye(4), (t, 1, 1))
    cam[:, :3, :3] = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # front view
    cam[:, :3, 3] = [0.0, -4.0, 0.3]
    f = 1.2 * s
    K = np.array([[f, 0, s / 2], [0, f, s / 2], [0, 0, 1]])
    inv = np.linalg.inv(cam)
    pc = np.einsum("tab,tjb->tja", inv[:, :3, :3], pose[..., :3, 3]) + inv[:, None, :3, 3]
    uv = np.stack([f * pc[..., 0] / -pc[..., 2] + s / 2, f * -pc[..., 1] / -pc[..., 2] + s / 2], -1)
    np.savez_compressed(
        path, frames=rng.integers(0, 255, (t, s, s, 3), dtype=np.uint8), names=np.array(skel.names),
        parents=skel.parents, rest=skel.rest.astype(np.float32), tails=skel.tails.astype(np.float32),
        deform=np.ones(j, bool), basis_rot=basis.astype(np.float32), root_loc=root_loc.astype(np.float32),
        heads=pose[..., :3, 3].astype(np.float32), armature_world=np.eye(4, dtype=np.float32),
        cam_world=cam.astype(np.float32), K=K.astype(np.float32), joints2d=uv.astype(np.float32),
        visible=np.ones((t, j), bool), fps=np.float64(24), family=np.array("tree"), source=np.array("procedural"))


@pytest.fixture()
def shards(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir(), cache.mkdir()
    for i, j in enumerate((5, 9, 14)):
        write_shard(data / f"clip_{i:010d}.npz", j, seed=i)
        c = 8 * 1  # small8 encoder: 16 channels at stride 8, 32 at stride 16, 64 at stride 32
        np.savez(cache / f"clip_{i:010d}.npz", f8=np.random.randn(12, 2 * c, 8, 8).astype(np.float16),
                 f16=np.random.randn(12, 4 * c, 4, 4).astype(np.float16),
                 f32=np.random.randn(12, 8 * c, 2, 2).astype(np.float16))
    return data, cache, tmp_path / "run"


def test_clip_truth_is_consistent(shards):
    data, _, _ = shards
    c = Clip(data / "clip_0000000001.npz")
    # canonical = root orientation^T @ camera-frame positions; uv matches the shard's joints2d
    np.testing.assert_allclose(np.einsum("tba,tjb->tja", c.root_rot, c.head_cam), c.head_can, atol=1e-6)
    assert np.allclose(c.head_can[:, 0], 0) and np.isfinite(c.log_depth).all()


def test_flat_depth_keeps_the_image_plane_and_takes_the_references_depth(shards):
    """The image-plane-only positions of `--flat-depth`: x, y the truth's, depth the reference's carried by the
    root, so on the frame the reference shows they are the truth; the sample tells them FLAT_DEPTH_ERR off."""
    from mocap_blender.core import preprocess
    from models.train import FLAT_DEPTH_ERR, flat_depth_positions
    data, _, _ = shards
    c = Clip(data / "clip_0000000001.npz")
    rig = preprocess.make_rig_inputs(c.skel, c.basis[3], ref_cam_to_arm=c.cam_to_arm[3])
    heads, tails = flat_depth_positions(c.head_cam, c.tail_cam, c.root_rot, rig)
    np.testing.assert_allclose(heads[..., :2], c.head_cam[..., :2])
    np.testing.assert_allclose(tails[..., :2], c.tail_cam[..., :2])
    np.testing.assert_allclose(heads[3], c.head_cam[3], atol=1e-5)
    np.testing.assert_allclose(tails[3], c.tail_cam[3], atol=1e-5)
    assert np.abs(heads[..., 2] - c.head_cam[..., 2]).max() > 1e-3  # other frames: depth not the truth's
    tc = TrainConfig(flat_depth=1.0, pos_noise=0.0)
    s = make_sample(c, 8, np.random.default_rng(0), tc, protocol="matched")
    assert np.all(s["pos_err"] == FLAT_DEPTH_ERR)
    np.testing.assert_allclose(s["noisy_head_cam"][..., :2], s["head_cam"][..., :2])
    np.testing.assert_allclose(np.einsum("tba,tjb->tja", s["root_rot"], s["noisy_head_cam"]), s["noisy_head_can"])


def test_batch_padding(shards):
    data, _, _ = shards
    clips = [Clip(p) for p in sorted(data.glob("*.npz"))]
    rng = np.random.default_rng(0)
    b = collate([make_sample(c, 8, rng, TrainConfig()) for c in clips])
    assert b["joint_feats"].shape[:2] == (3, 14) and b["rot"].shape == (3, 8, 14, 3, 3)
    assert float(b["joint_valid"].sum()) == 5 + 9 + 14


def test_fit_runs_saves_config_and_resumes(shards):
    data, cache, run = shards
    tc = TrainConfig(data=[str(data)], cache=str(cache), run=str(run), batch=2, window=8, steps_a=2, steps_b=2,
                     steps_c=2, save_every=2, log_every=1, threads=1)
    fit(tc, ModelConfig(**TINY), resume=False, quiet=True)
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["step"] == 6 and ModelConfig.from_dict(ck["config"]) == ModelConfig(**TINY)
    assert (run / "stage_a.pt").exists() and (run / "stage_c.pt").exists()
    tc.steps_c = 3
    fit(tc, ModelConfig(), resume=True, quiet=True)  # the checkpoint's config wins over the one passed
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 7
    assert "resumed from" in (run / "train.log").read_text()


def test_fork_with_a_training_encoder_reads_frames(shards):
    data, cache, run = shards
    tc = TrainConfig(data=[str(data)], cache=str(cache), run=str(run), batch=2, window=8, steps_a=2, steps_b=0,
                     steps_c=0, save_every=2, log_every=1, threads=1)
    fit(tc, ModelConfig(**TINY), resume=False, quiet=True)
    # fork: the stage-A weights, a different encoder that trains from scratch, stage B from the frames
    fork = TrainConfig(**{**tc.__dict__, "run": str(run) + "_fork", "steps_b": 2, "init_from": str(run / "last.pt")})
    fit(fork, ModelConfig(**{**TINY, "encoder": "small4"}), resume=False, quiet=True)
    ck = torch.load(Path(fork.run) / "last.pt", weights_only=False)
    a = torch.load(run / "last.pt", weights_only=False)
    assert ck["step"] == 4 and ModelConfig.from_dict(ck["config"]).encoder == "small4"
    assert not torch.equal(ck["model"]["joint_in.0.weight"], a["model"]["joint_in.0.weight"])  # trained on
    assert "initialised from" in (Path(fork.run) / "train.log").read_text()


def test_a_run_starts_from_tuned_encoder_weights_and_refuses_another_encoders_cache(shards):
    data, cache, run = shards
    enc = build_encoder("small8", pretrained=False)[0]
    for p in enc.parameters():
        p.data.normal_()
    weights = run.parent / "tuned.pt"
    torch.save({"encoder": enc.state_dict(), "steps": 1}, weights)
    tc = TrainConfig(data=[str(data)], cache=str(cache), run=str(run), batch=2, window=8, steps_a=2, steps_b=0,
                     steps_c=0, save_every=2, log_every=1, threads=1, encoder_weights=str(weights))
    fit(tc, ModelConfig(**TINY), resume=False, quiet=True)  # stage A: no images, so the encoder is untouched
    got = torch.load(run / "last.pt", weights_only=False)["model"]
    for k, v in enc.state_dict().items():
        assert torch.equal(got[f"encoder.{k}"], v)
    # the fixture's cache was made by no tuned encoder: features of the tuned one are looked for elsewhere
    with pytest.raises(SystemExit, match="same --encoder-weights"):
        check_cache_encoder(cache, str(weights))
    assert check_cache_encoder(cache, "") == ""
    (cache / "encoder_weights.txt").write_text(str(weights.resolve()))
    assert check_cache_encoder(cache, str(weights)) == str(weights.resolve())


def test_other_reference_turns_the_root_about_the_worlds_up():
    """An "other clip" reference whose root faces another way has turned about the world's up only: the root's
    global axes keep their height, whatever the root's rest frame and the armature's orientation."""
    from models.train import perturb_reference
    rng = np.random.default_rng(4)
    ref = rotvec_to_matrix(rng.normal(0, 0.5, (6, 3)))
    root_rest = rotvec_to_matrix(rng.normal(0, 1.0, 3))
    up = rotvec_to_matrix(rng.normal(0, 1.0, 3))[:, 2]  # a rotated armature: up is not +Z in its space
    turned = 0
    for _ in range(40):
        out = perturb_reference(ref, rng, swing_deg=0.0, twist_deg=0.0, root_rest=root_rest, up=up, p_turn=0.2)
        if np.allclose(out[0], ref[0], atol=1e-9):
            continue
        turned += 1
        g0, g1 = root_rest @ ref[0], root_rest @ out[0]
        np.testing.assert_allclose(up @ g1, up @ g0, atol=1e-9)  # each axis keeps its height
    assert 2 < turned < 20  # some references turn (20% of them), most do not


def test_crop_keeps_image_truth_consistent(shards):
    """Seen through a crop, a clip's image truth is what the crop shows: bone heads at their crop coordinates, and
    the root depth ratio shrunk by the magnification, so that the layout the network draws from positions and
    depth (offsets from the root = (x, -y) / depth ratio, weak perspective) lands on them exactly as on the whole
    frame, magnified."""
    from models.train import training_box
    data, _, _ = shards
    clip = Clip(data / "clip_0000000002.npz")
    box = np.array([0.45, 0.52, 0.4])
    rng = np.random.default_rng(0)
    whole = make_sample(clip, 8, rng, TrainConfig(), start=2)
    crop = make_sample(clip, 8, np.random.default_rng(0), TrainConfig(), start=2, box=box)

    def layout_miss(s):
        xy = np.stack([s["head_cam"][..., 0], -s["head_cam"][..., 1]], -1) * np.exp(-s["log_depth"])[:, None, None]
        return (s["uv"] - s["uv"][:, :1]) - xy

    np.testing.assert_allclose(crop["uv"] * box[2] + box[:2] - box[2] / 2, whole["uv"], atol=1e-12)
    np.testing.assert_allclose(layout_miss(crop), layout_miss(whole) / box[2], atol=1e-9)
    spread = np.abs(whole["uv"] - whole["uv"][:, :1]).max()
    assert np.abs(layout_miss(whole)).max() < 0.2 * spread  # the weak-perspective layout is close to begin with
    # the crop training sees: whole in some clips, else around the true heads
    mc = ModelConfig(subject_crop=True)
    clip.uv = clip.uv * 0.3 + 0.2  # a subject in part of the frame
    boxes = []
    for k in range(40):
        clip.name = f"clip_{k:010d}"
        boxes.append(training_box(clip, mc))
    boxes = np.array(boxes)
    whole_share = np.mean(boxes[:, 2] == 1.0)
    assert 0.05 < whole_share < 0.45
    centre = 0.5 * (clip.uv.reshape(-1, 2).min(0) + clip.uv.reshape(-1, 2).max(0))
    cropped = boxes[boxes[:, 2] < 1.0]
    assert np.all(np.abs(cropped[:, :2] - centre).max(1) < 0.3 * cropped[:, 2])
    assert np.all(training_box(clip, ModelConfig(subject_crop=False)) == [0.5, 0.5, 1.0])


def test_aligned_error_removes_a_rotation_only():
    """The articulation-only position loss: a rotated copy of the true pose scores 0; moving one point by d scores
    about d there (after the best rotation), and the gradient reaches the prediction."""
    from mocap_blender.core.rotations import rotvec_to_matrix
    from models.train import aligned_error
    rng = np.random.default_rng(0)
    true = torch.from_numpy(rng.normal(0, 0.3, (2, 3, 12, 3)))
    rot = torch.from_numpy(rotvec_to_matrix(rng.normal(0, 1.0, (2, 3, 3))))
    pred = (rot[:, :, None] @ true[..., None])[..., 0].requires_grad_(True)
    m = torch.ones(2, 1, 12, dtype=torch.float64)
    assert float(aligned_error(pred, true, m).detach().max()) < 1e-9
    moved = true.clone()
    moved[:, :, 5, 0] += 0.05
    e = aligned_error(moved, true, m)
    assert 0.03 < float(e[..., 5].mean()) < 0.05 and float(e[..., :5].mean()) < 0.01
    aligned_error(pred, true + 0.01, m).sum().backward()
    assert pred.grad.abs().sum() > 0


def test_given_positions_in_stage_c_bring_the_bones_true_image_places_to_stage_2(shards, monkeypatch):
    """`p_given` 1: every stage-C batch feeds stage 2 the given positions, and stage 2's look around each bone is
    at the bone's true place in the image (the truth's uv), not where stage 1 found it; 0: stage 1's own; the
    scheduled sampling of earlier runs (no `given_uv`) gives positions only, as before."""
    from models.model import MocapNet
    from models.train import load_feats, run_batch
    data, cache, _ = shards
    clips = [Clip(p) for p in sorted(data.glob("*.npz"))]
    rng = np.random.default_rng(0)
    tc = TrainConfig(flat_depth=1.0)
    b = collate([make_sample(c, 8, rng, tc, feats=load_feats(cache, c.name)) for c in clips])
    b = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in b.items()}
    net = MocapNet(ModelConfig(**TINY), pretrained=False)
    seen = []
    real = net.bone_distance
    monkeypatch.setattr(net, "bone_distance", lambda uv: seen.append(uv.detach().clone()) or real(uv))
    for p_gt, given_uv, truth_last in ((1.0, True, True), (0.0, True, False), (1.0, False, False)):
        seen.clear()
        loss, parts, _ = run_batch(net, b, "c", p_gt, np.random.default_rng(1), given_uv=given_uv)
        truth = torch.stack([b["uv"], b["tail_uv"]], -2).float()
        assert torch.isfinite(loss) and "rot" in parts
        assert torch.allclose(seen[-1].float(), truth) == truth_last
