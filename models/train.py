"""Training: pose->rotation on skeletal data, then video->pose, then both jointly with scheduled sampling.

    # 1. image features of the frozen encoder, cached once per clip (runs beside training, picks up new shards)
    python -m models.train cache --data data/train --cache runs/featcache --loop
    # 2. training (resumable: the same command continues from RUN/last.pt)
    python -m models.train fit --data data/train --cache runs/featcache --run runs/main

Checkpoints (RUN/last.pt, RUN/stage_<x>.pt) carry the ModelConfig and TrainConfig, the optimiser and the step.
Progress: tqdm on stderr and RUN/train.log. Uses both cores (torch.set_num_threads(2)).

Every model input is built by mocap_blender/core/preprocess.py::make_rig_inputs, the function the runtime uses.
Reference poses come from other moments of the clip, perturbed per bone like a different clip of the same rig,
or (sometimes) from a frame inside the window, flagged as such.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mocap_blender.core import preprocess
from mocap_blender.core.rotations import rotvec_to_matrix
from mocap_blender.core.skeleton import Skeleton, forward_kinematics, pose_tails
from .geometry import fk_canonical, geodesic, skeleton_arrays
from .model import SNAP_REACH, MocapNet, ModelConfig


@dataclass
class TrainConfig:
    data: list = field(default_factory=lambda: ["data/train"])
    cache: str = "runs/featcache"
    run: str = "runs/main"
    batch: int = 2
    window: int = 16  # training window (frames); temporal biases are relative, so run-time windows may differ
    lr: float = 3e-4
    weight_decay: float = 0.01
    steps_a: int = 300  # pose -> rotation on skeletal data (no images)
    steps_b: int = 350  # video -> pose
    steps_c: int = 650  # joint, scheduled sampling of predicted poses
    p_matched: float = 0.35  # share of samples whose reference pose is a (flagged) frame of the window
    pos_noise: float = 0.025  # largest std (fraction of rig height) of the noise on poses fed to stage 2
    tiny_bones: float = 0.3  # share of clips whose bones are shrunk to 0.1-1% of the height, like imported glTF rigs
    # "other" references (another moment of the clip) are changed like the same rig posed in another clip: each
    # bone swung and twisted by up to these (degrees, std), and the root turned about the world's up in a share
    # (v6 used 12, 25, 0.4: its learned twist and root turn moved real rigs away from a good reference)
    ref_swing_deg: float = 8.0
    ref_twist_deg: float = 12.0
    ref_turn: float = 0.2
    # weight of a position loss after the best per-frame rotation of the predicted pose onto the true one (Kabsch,
    # root-relative): articulation alone, without the root orientation's error (0 = off, as before 1 Dec)
    pa_weight: float = 0.0
    # share of stage-2 samples given the image plane only (probe `models/probe_flat_depth.py`): camera-frame depth
    # replaced by the reference pose's, carried by the true root, and told FLAT_DEPTH_ERR (0 = off, as before 3 Dec)
    flat_depth: float = 0.0
    # share of stage-C batches whose stage 2 gets the given positions (true, noisy or flat) AND the bones' true
    # places in the image instead of stage 1's; -1 = scheduled sampling as before 6 Dec (0.5 falling to 0, given
    # positions only). 1 with flat_depth 1: stage 2 on a perfect image-plane reader (`probe_flat_depth.py --images`)
    p_given: float = -1.0
    save_every: int = 100
    log_every: int = 20
    max_minutes: float = 1e9
    seed: int = 0
    threads: int = 2
    init_from: str = ""  # start a new run from another run's checkpoint (weights that fit, its step)
    # a fresh run (or a fork, over init_from's encoder) starts its (frozen) encoder from these weights
    # (models/probe_encoder_tune.py's OUT) instead of ImageNet's; the feature cache must have been made with the
    # same file (checked)
    encoder_weights: str = ""
    stop_at: int = 0  # stop (and save) at this step, keeping the schedule of the whole run (comparisons)

    @property
    def total(self) -> int:
        return self.steps_a + self.steps_b + self.steps_c

    def stage(self, step: int) -> str:
        return "a" if step < self.steps_a else ("b" if step < self.steps_a + self.steps_b else "c")


# ----------------------------------------------------------------------------------------------------------
# Clips: truth per clip, computed once
# ----------------------------------------------------------------------------------------------------------

class Clip:
    """Everything a training window needs from one shard (frames excluded), in model units."""

    def __init__(self, path: Path, tiny_bones: float = 0.0):
        d = np.load(path)
        self.path, self.name = path, path.stem
        tails = d["tails"].astype(np.float64)
        rng = np.random.default_rng([int.from_bytes(path.stem.encode()[-8:], "little"), 17])
        if rng.random() < tiny_bones:
            # imported rigs (glTF has no tails) often have bones far shorter than the body they move: the same
            # heads, rest frames, motion and pictures, with bones of 0.1-1% of the height
            heads = d["rest"][:, :3, 3].astype(np.float64)
            size = float(np.ptp(heads, axis=0).max())
            short = rng.uniform(0.001, 0.01, len(tails)) * size
            axis = d["rest"][:, :3, 1].astype(np.float64)
            tails = heads + axis * short[:, None]
        self.skel = Skeleton.from_arrays(d["names"], d["parents"], d["rest"], tails)
        self.basis = d["basis_rot"].astype(np.float64)  # (T, J, 3, 3)
        self.n_frames, self.n_joints = self.basis.shape[:2]
        h = self.skel.height
        pose = forward_kinematics(self.skel, self.basis, d["root_loc"])  # (T, J, 4, 4) armature space
        heads, tails = pose[..., :3, 3], pose_tails(self.skel, pose)
        w = d["armature_world"].astype(np.float64)[:3, :3]
        w = w / np.cbrt(np.linalg.det(w))
        cam = d["cam_world"].astype(np.float64)  # (T, 4, 4)
        c = cam[:, :3, :3] / np.cbrt(np.linalg.det(cam[:, :3, :3]))[:, None, None]
        self.cam_to_arm = np.swapaxes(w, -1, -2)[None] @ c  # (T, 3, 3)
        self.up = w[2] / np.linalg.norm(w[2])  # the world's up in armature space
        a2c = np.swapaxes(self.cam_to_arm, -1, -2)  # armature -> camera
        root = heads[:, :1]
        self.head_cam = np.einsum("tab,tjb->tja", a2c, heads - root) / h
        self.tail_cam = np.einsum("tab,tjb->tja", a2c, tails - root) / h
        self.root_rot = a2c @ pose[:, 0, :3, :3]  # (T, 3, 3) root orientation in the camera frame
        self.head_can, self.tail_can = preprocess.canonical_positions(self.skel, pose)
        # image truth: uv in [0, 1] of the (square) frame; root depth ratio
        K = d["K"].astype(np.float64)
        s = float(2 * K[0, 2])  # frames are S x S with the principal point at the centre
        aw = d["armature_world"].astype(np.float64)
        world = np.einsum("ab,tjb->tja", aw[:3, :3], tails) + aw[:3, 3]
        inv = np.linalg.inv(cam)
        pc = np.einsum("tab,tjb->tja", inv[:, :3, :3], world) + inv[:, None, :3, 3]
        z = np.maximum(-pc[..., 2], 1e-6)
        tail_uv = np.stack([K[0, 0] * pc[..., 0] / z + K[0, 2], K[1, 1] * -pc[..., 1] / z + K[1, 2]], -1) / s
        self.uv = d["joints2d"].astype(np.float64) / s
        self.tail_uv = tail_uv
        world_root = heads[:, 0] @ aw[:3, :3].T + aw[:3, 3]
        pr = np.einsum("tab,tb->ta", inv[:, :3, :3], world_root) + inv[:, :3, 3]
        f_norm = K[0, 0] / s
        world_h = h * float(np.cbrt(np.linalg.det(aw[:3, :3])))
        self.log_depth = np.log(np.maximum(-pr[:, 2], 1e-6) / (world_h * f_norm))
        self.geom = skeleton_arrays(self.skel)
        self.geom["rest_rel_loc"] = self.geom["rest_rel_loc"] / h
        self.geom["tail_local"] = self.geom["tail_local"] / h
        self.family = str(d["family"]) if "family" in d.files else ""


def load_clips(dirs, names=None, log=print) -> dict:
    clips = {}
    for d in dirs:
        for p in sorted(Path(d).glob("clip_*.npz")):
            if names is not None and p.stem not in names:
                continue
            try:
                clips[p.stem] = Clip(p)
            except Exception as e:  # a shard being written or broken: skip it, say so
                log(f"skip {p.name}: {type(e).__name__}: {e}")
    return clips


# ----------------------------------------------------------------------------------------------------------
# References and samples
# ----------------------------------------------------------------------------------------------------------

def perturb_reference(ref: np.ndarray, rng, swing_deg: float, twist_deg: float, root_rest=None, up=None,
                      p_turn: float = 0.0) -> np.ndarray:
    """Per-bone random swing and twist offsets, up to these std (degrees; like the same rig posed in another
    clip); in a share p_turn, the root faces another way: turned about the world's up (root_rest: the root's rest
    rotation in armature space, up: the world's up in armature space), as a creature turns; without them,
    anywhere."""
    j = ref.shape[0]
    sw = rng.normal(0, 1, (j, 3)) * np.radians(swing_deg) * rng.uniform(0, 1)
    sw[:, 1] = 0.0
    tw = np.zeros((j, 3))
    tw[:, 1] = rng.normal(0, 1, j) * np.radians(twist_deg) * rng.uniform(0, 1)
    out = rotvec_to_matrix(sw) @ ref @ rotvec_to_matrix(tw)
    if rng.random() < p_turn:  # the root of another clip faces another way
        if root_rest is None or up is None:
            out[0] = rotvec_to_matrix(rng.normal(0, 1.5, 3))
        else:  # global' = Rz @ global, global = rest @ basis  ->  basis' = rest^T Rz rest basis
            turn = rotvec_to_matrix(up * rng.uniform(-np.pi, np.pi))
            out[0] = root_rest.T @ turn @ root_rest @ ref[0]
    return out


def choose_reference(clip: Clip, start: int, t: int, rng, cfg: "TrainConfig", protocol: str | None = None):
    """-> (ref_rot (J, 3, 3), index of the reference in the window or None, cam_to_arm at the reference)."""
    protocol = protocol or ("matched" if rng.random() < cfg.p_matched else "other")
    if protocol == "matched":
        k = int(rng.integers(0, t))
        return clip.basis[start + k].copy(), k, clip.cam_to_arm[start + k]
    outside = [i for i in range(clip.n_frames) if i < start or i >= start + t]
    i = int(rng.choice(outside)) if outside else int(rng.integers(0, clip.n_frames))
    ref = perturb_reference(clip.basis[i], rng, cfg.ref_swing_deg, cfg.ref_twist_deg, clip.skel.rest[0, :3, :3],
                            clip.up, p_turn=cfg.ref_turn)
    return ref, None, clip.cam_to_arm[start]


def smooth_noise(rng, shape, sigma: float, white: float = 0.15) -> np.ndarray:
    """Position noise like a video-to-pose stage makes: a slowly varying offset per joint and independent
    jitter (axis 0 = time), `white` the jitter's share. Only-white noise made stage 2 follow the jitter (measured:
    rotation error above "hold" after 500 steps, before stage 2 was told the error), so samples mix both."""
    t = shape[0]
    slow = rng.normal(0, 1, (1,) + tuple(shape[1:])) + np.cumsum(rng.normal(0, 0.1, shape), axis=0) / np.sqrt(
        max(t, 1)) * 2.0
    return sigma * ((1.0 - white) * slow + white * rng.normal(0, 1, shape))


CROP_FULL_SHARE = 0.2  # share of clips seen whole (what the run-time first pass sees); the rest through a crop
CROP_SHIFT, CROP_SCALE = 0.06, 0.12  # std of the crop's centre shift (x side) and log scale: the first pass's error


def training_box(clip: Clip, mc: ModelConfig) -> np.ndarray:
    """The square (cx, cy, side) a clip's frames are seen through in training, fixed per clip (the feature cache
    holds one): the whole frame in CROP_FULL_SHARE of the clips, else the run-time crop
    (core.preprocess.subject_box) around the true bone heads of the whole clip, moved and scaled like the error
    of the first pass that finds them at run time."""
    rng = np.random.default_rng([int.from_bytes(clip.name.encode()[-8:], "little"), 29])
    if not mc.subject_crop or rng.random() < CROP_FULL_SHARE:
        return np.array(preprocess.WHOLE_FRAME)
    cx, cy, side = preprocess.subject_box(clip.uv, mc.crop_margin, mc.crop_min_side)
    side = float(np.clip(side * np.exp(rng.normal(0, CROP_SCALE)), mc.crop_min_side, 1.0))
    cx, cy = np.array([cx, cy]) + rng.normal(0, CROP_SHIFT, 2) * side
    return np.array([cx, cy, side])


FLAT_DEPTH_ERR = 0.06  # pos_err told with positions whose depth is the reference's (above any noise level trained)


def flat_depth_positions(head_cam, tail_cam, root_rot, rig):
    """Camera-frame heads and tails (T, J, 3) / height with their x, y kept and their depth the reference pose's
    (rig["joint_feats"]'s reference heads and tails in the root's frame), carried by the root orientation root_rot
    (T, 3, 3): what a reader of the image plane alone gives, with the reference for the rest."""
    sl = preprocess.feature_slices()
    feats = rig["joint_feats"].astype(np.float64)
    heads, tails = np.array(head_cam, dtype=np.float64), np.array(tail_cam, dtype=np.float64)
    heads[..., 2] = np.einsum("tb,jb->tj", root_rot[:, 2], feats[:, sl["ref_head"]])
    tails[..., 2] = np.einsum("tb,jb->tj", root_rot[:, 2], feats[:, sl["ref_tail"]])
    return heads, tails


def make_sample(clip: Clip, t: int, rng, cfg: TrainConfig, feats=None, protocol=None, start=None,
                frames=None, box=None) -> dict:
    """One training window. feats: cached encoder maps of the clip (frozen encoder) and the crop they saw;
    frames: the clip's preprocessed, cropped frames (T, 3, S, S) instead, for an encoder that trains, with `box`
    the crop."""
    t = min(t, clip.n_frames)
    if start is None:
        start = int(rng.integers(0, clip.n_frames - t + 1))
    sl = slice(start, start + t)
    ref, ref_k, ref_cam = choose_reference(clip, start, t, rng, cfg, protocol)
    rig = preprocess.make_rig_inputs(clip.skel, ref, ref_cam_to_arm=ref_cam)
    s = {k: rig[k] for k in ("joint_feats", "ref_rot6d", "hops", "edge_type", "local_mask")}
    s["rig_parents"] = rig["parents"]
    s["ref_flag"] = preprocess.make_ref_flag(t, ref_k)
    s.update({k: v for k, v in clip.geom.items()})
    s.update(head_cam=clip.head_cam[sl], tail_cam=clip.tail_cam[sl], head_can=clip.head_can[sl],
             tail_can=clip.tail_can[sl], root_rot=clip.root_rot[sl], uv=clip.uv[sl], tail_uv=clip.tail_uv[sl],
             log_depth=clip.log_depth[sl], rot=clip.basis[sl])
    sigma = cfg.pos_noise * rng.uniform(0, 1) if rng.random() < 0.7 else 0.0
    s["pos_err"] = np.full((t, clip.n_joints, 1), sigma * math.sqrt(3.0))  # expected error per joint
    white = rng.uniform(0.15, 1.0)
    s["noisy_head_can"] = clip.head_can[sl] + smooth_noise(rng, clip.head_can[sl].shape, sigma, white)
    s["noisy_tail_can"] = clip.tail_can[sl] + smooth_noise(rng, clip.tail_can[sl].shape, sigma, white)
    s["noisy_head_cam"] = clip.head_cam[sl] + smooth_noise(rng, clip.head_cam[sl].shape, sigma, white)
    if cfg.flat_depth and rng.random() < cfg.flat_depth:
        heads, tails = flat_depth_positions(clip.head_cam[sl], clip.tail_cam[sl], clip.root_rot[sl], rig)
        heads[..., :2] += smooth_noise(rng, heads[..., :2].shape, sigma, white)
        tails[..., :2] += smooth_noise(rng, tails[..., :2].shape, sigma, white)
        s["noisy_head_cam"] = heads
        s["noisy_head_can"] = np.einsum("tba,tjb->tja", clip.root_rot[sl], heads)  # camera -> root frame
        s["noisy_tail_can"] = np.einsum("tba,tjb->tja", clip.root_rot[sl], tails)
        s["pos_err"] = np.full((t, clip.n_joints, 1), FLAT_DEPTH_ERR)
    if feats is not None:
        s["f8"], s["f16"], s["f32"] = feats[0][sl], feats[1][sl], feats[2][sl]
        box = feats[3]
    if box is not None:  # image truth in the crop's coordinates; the crop magnifies by 1 / side
        s["uv"], s["tail_uv"] = preprocess.uv_to_crop(s["uv"], box), preprocess.uv_to_crop(s["tail_uv"], box)
        s["log_depth"] = s["log_depth"] + math.log(box[2])
    if frames is not None:
        s["frames"] = frames[sl]
    return s


PAD_VALUES = {"hops": 8, "edge_type": 4, "local_mask": preprocess.MASK_VALUE}


def collate(samples: list[dict], max_hops: int = 8) -> dict:
    """Pad joints to the largest rig of the batch; add joint_pad (B, J) additive and joint_valid (B, J)."""
    b = len(samples)
    j = max(s["joint_feats"].shape[0] for s in samples)
    t = min(s["ref_flag"].shape[0] for s in samples)
    out = {}
    for key in samples[0]:
        arrs = []
        for s in samples:
            a = np.asarray(s[key])
            if key in ("frames", "f8", "f16", "f32", "ref_flag", "root_rot", "log_depth"):
                arrs.append(a[:t])
                continue
            jj = s["joint_feats"].shape[0]
            if key in ("hops", "edge_type", "local_mask"):
                pad = np.full((j, j), PAD_VALUES[key] if key != "hops" else max_hops, dtype=a.dtype)
                pad[:jj, :jj] = a
                if key == "local_mask":
                    np.fill_diagonal(pad, 0.0)  # padded rows attend to themselves (no empty softmax)
            elif key in ("joint_feats", "ref_rot6d", "rest_rel_rot", "rest_rel_loc", "parents", "depth",
                         "tail_local", "rig_parents"):
                pad = np.zeros((j,) + a.shape[1:], dtype=a.dtype)
                if key == "ref_rot6d":
                    pad[:] = np.array([1, 0, 0, 0, 1, 0], dtype=a.dtype)
                if key == "rest_rel_rot":
                    pad[:] = np.eye(3, dtype=a.dtype)
                pad[:jj] = a
            else:  # (T, J, ...) arrays
                a = a[:t]
                pad = np.zeros((t, j) + a.shape[2:], dtype=a.dtype)
                if key == "rot":
                    pad[:] = np.eye(3, dtype=a.dtype)
                pad[:, :jj] = a
            arrs.append(pad)
        out[key] = torch.from_numpy(np.stack(arrs))
        if out[key].dtype == torch.float64 or out[key].dtype == torch.float16:
            out[key] = out[key].float()
    valid = np.zeros((b, j), dtype=np.float32)
    for i, s in enumerate(samples):
        valid[i, :s["joint_feats"].shape[0]] = 1.0
    out["joint_valid"] = torch.from_numpy(valid)
    out["joint_pad"] = torch.from_numpy(np.where(valid > 0, 0.0, preprocess.MASK_VALUE).astype(np.float32))
    return out


# ----------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------

def _masked_mean(x, m):
    return (x * m).sum() / m.sum().clamp_min(1.0)


def heatmap_loss(logits, uv, grid_xy, sigma: float):
    """Cross-entropy of the joint-finding heatmap against a Gaussian around the true image position.
    logits (B, T, J, N8), uv (B, T, J, 2) in [0, 1], grid_xy (N8, 2) -> (B, T, J)."""
    d2 = ((uv[..., None, :] - grid_xy) ** 2).sum(-1)  # (B, T, J, N8)
    target = torch.softmax(-d2 / (2 * sigma * sigma), dim=-1)
    return -(target * torch.log_softmax(logits, dim=-1)).sum(-1)


def snap_targets(uv, tail_uv, valid, grid_xy, reach: float):
    """The snap field's truth: for each fine-grid cell, the offset (in cells) to the nearest point of any valid
    bone (head to tail, image coordinates), at most `reach` cells long, and whether that point is within reach.
    uv, tail_uv (B, T, J, 2) in [0, 1], valid (B, J), grid_xy (N, 2) -> (B, T, N, 2), (B, T, N)."""
    g = math.sqrt(grid_xy.shape[0])
    a, ab = uv[:, :, None], (tail_uv - uv)[:, :, None]  # (B, T, 1, J, 2)
    p = grid_xy[:, None]  # (N, 1, 2)
    s = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)  # (B, T, N, J)
    d = (a + s[..., None] * ab - p) * g  # (B, T, N, J, 2) in cells
    n2 = (d * d).sum(-1) + (1.0 - valid[:, None, None]) * 1e6
    i = n2.argmin(-1)  # (B, T, N)
    off = torch.gather(d, 3, i[..., None, None].expand(*i.shape, 1, 2))[..., 0, :]  # (B, T, N, 2)
    n = off.norm(dim=-1, keepdim=True)
    return off * (reach / n.clamp_min(reach)), (n[..., 0] < reach).float()


def aligned_error(pred, true, m):
    """Per-point distance (B, T, P) after the rotation that best maps each frame's predicted points onto the true
    ones (Kabsch about the origin, weights m (B, 1 or T, P); found without gradient, applied with it).
    pred, true (B, T, P, 3)."""
    with torch.no_grad():
        w = m.expand(pred.shape[:3])[..., None]
        h = (w * pred).transpose(-1, -2) @ true  # (B, T, 3, 3)
        u, _, vt = torch.linalg.svd(h)
        d = torch.sign(torch.det(vt.transpose(-1, -2) @ u.transpose(-1, -2)))
        fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
        rot = vt.transpose(-1, -2) @ fix @ u.transpose(-1, -2)  # (B, T, 3, 3): rot @ pred ~ true
    return ((rot[:, :, None] @ pred[..., None])[..., 0] - true).norm(dim=-1)


def stage1_losses(out, b, grid_xy=None, pa_weight: float = 0.0) -> dict:
    m = b["joint_valid"][:, None]  # (B, 1, J)
    m = m.expand_as(out["confidence"])
    err = (out["head_cam"] - b["head_cam"]).norm(dim=-1)  # (B, T, J)
    l_pos = _masked_mean(err + (out["tail_cam"] - b["tail_cam"]).norm(dim=-1), m)
    inside = ((b["uv"] > 0) & (b["uv"] < 1)).all(-1).float() * m
    inside_t = ((b["tail_uv"] > 0) & (b["tail_uv"] < 1)).all(-1).float() * m
    def uv_loss(head, tail):
        return _masked_mean((head - b["uv"]).abs().sum(-1), inside) + _masked_mean(
            (tail - b["tail_uv"]).abs().sum(-1), inside_t)
    l_uv = uv_loss(out["uv"], out["tail_uv"])
    for uv in out.get("uv_steps", []):  # the refinement cascade's earlier rounds, at half weight
        l_uv = l_uv + 0.5 * uv_loss(uv[..., 0, :], uv[..., 1, :]) / len(out["uv_steps"])
    l_heat = 0.0
    if grid_xy is not None:
        cell = float(1.0 / math.sqrt(grid_xy.shape[0]))
        lg = out["loc_logits"]  # (B, T, J, 2, N8)
        l_heat = _masked_mean(heatmap_loss(lg[..., 0, :], b["uv"], grid_xy, cell), inside) + _masked_mean(
            heatmap_loss(lg[..., 1, :], b["tail_uv"], grid_xy, cell), inside_t)
    l_snap = 0.0
    if out.get("snap_field") is not None:  # every cell: where the nearest bone is (far from the body: towards it)
        off, near = snap_targets(b["uv"], b["tail_uv"], b["joint_valid"], grid_xy, SNAP_REACH)
        pred = out["snap_field"].flatten(-2).transpose(-1, -2)  # (B, T, N, 2)
        l_snap = ((pred - off).abs().sum(-1) * (0.3 + 0.7 * near)).mean()
    l_pa = 0.0
    if pa_weight:
        pts, mm = torch.cat([out["head_cam"], out["tail_cam"]], 2), torch.cat([m, m], 2)
        l_pa = _masked_mean(aligned_error(pts, torch.cat([b["head_cam"], b["tail_cam"]], 2), mm),
                            mm) * 2  # per joint, head + tail, as l_pos
    l_root = geodesic(out["root_rot"], b["root_rot"]).mean()
    l_depth = (out["log_root_depth"] - b["log_depth"]).abs().mean()
    vel = (out["head_cam"][:, 1:] - out["head_cam"][:, :-1]) - (b["head_cam"][:, 1:] - b["head_cam"][:, :-1])
    l_vel = _masked_mean(vel.norm(dim=-1), m[:, 1:])
    target = torch.exp(-err.detach() / 0.05)
    l_conf = _masked_mean(torch.nn.functional.binary_cross_entropy(
        out["confidence"].clamp(1e-4, 1 - 1e-4), target, reduction="none"), m)
    return {"pos": 5 * l_pos, "uv": 5 * l_uv, "heat": 0.2 * l_heat, "root": l_root, "depth": 0.5 * l_depth,
            "vel": 5 * l_vel, "conf": 0.1 * l_conf, **({"snap": l_snap} if out.get("snap_field") is not None else {}),
            **({"pa": pa_weight * l_pa} if pa_weight else {})}


def stage2_losses(out, b) -> dict:
    m = b["joint_valid"].clone()
    m[:, 0] = 0.0  # the root's rotation comes from the root orientation
    m = m[:, None].expand(out["rot"].shape[:3])  # (B, T, J)
    l_rot = _masked_mean(geodesic(out["rot"], b["rot"]), m)
    heads, tails, _ = fk_canonical(b["rest_rel_rot"], b["rest_rel_loc"], b["parents"], b["depth"], out["rot"],
                                   b["tail_local"])
    mv = b["joint_valid"][:, None].expand(m.shape)
    l_fk = _masked_mean((heads - b["head_can"]).norm(dim=-1) + (tails - b["tail_can"]).norm(dim=-1), mv)
    dr = (out["rot"][:, 1:] - out["rot"][:, :-1]) - (b["rot"][:, 1:] - b["rot"][:, :-1])
    l_rvel = _masked_mean(dr.flatten(-2).norm(dim=-1), m[:, 1:])
    return {"rot": l_rot, "fk": 2 * l_fk, "rvel": l_rvel}


def rig_args(b):
    return (b["joint_feats"], b["ref_rot6d"], b["rig_parents"], b["hops"], b["edge_type"], b["local_mask"],
            b["ref_flag"], b["joint_pad"])


def run_batch(net: MocapNet, b: dict, stage: str, p_gt: float = 0.0, rng=None,
              pa_weight: float = 0.0, given_uv: bool = False) -> tuple[torch.Tensor, dict, dict]:
    """One forward pass and the losses of a stage ('a' skeletal, 'b' video->pose, 'c' joint). In stage C, a share
    p_gt of the batches feeds stage 2 the given positions, with the bones' true image places if `given_uv`."""
    override = {"head_can": b["noisy_head_can"], "tail_can": b["noisy_tail_can"], "head_cam": b["noisy_head_cam"],
                "pos_err": b["pos_err"]}
    if stage == "a":
        out = net(None, *rig_args(b), pose_override=override)
        losses = stage2_losses(out, b)
    else:
        if "frames" in b:  # an encoder that trains
            img = net.image_tokens(*net.encode(b["frames"]), *b["frames"].shape[:2])
        else:  # cached maps of the frozen encoder
            img = net.image_tokens(b["f8"].flatten(0, 1), b["f16"].flatten(0, 1), b["f32"].flatten(0, 1),
                                   *b["f16"].shape[:2])
        if stage == "b":
            out = net(img, *rig_args(b), stages=1)
            losses = stage1_losses(out, b, net.img_xy8, pa_weight)
        else:
            use_gt = rng is not None and rng.random() < p_gt
            if use_gt and given_uv:  # a reader of the image plane: the bones' true places in the image too
                override = {**override, "uv": torch.stack([b["uv"], b["tail_uv"]], -2)}
            out = net(img, *rig_args(b), pose_override=override if use_gt else None)
            losses = {**stage1_losses(out, b, net.img_xy8, pa_weight), **stage2_losses(out, b)}
    return sum(losses.values()), losses, out


# ----------------------------------------------------------------------------------------------------------
# Feature cache (frozen encoder through onnxruntime: ~1.7x faster than PyTorch on this CPU)
# ----------------------------------------------------------------------------------------------------------

def load_encoder_weights(encoder: torch.nn.Module, path: str) -> None:
    """Tuned encoder weights saved by models/probe_encoder_tune.py ({"encoder": state_dict, ...})."""
    encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["encoder"])


def check_cache_encoder(cache: Path, encoder_weights: str) -> str:
    """The tag of `encoder_weights` ("" = ImageNet's); exits if `cache` holds features of another encoder (its
    encoder_weights.txt names the file it was made with)."""
    want = str(Path(encoder_weights).resolve()) if encoder_weights else ""
    p = cache / "encoder_weights.txt"
    have = p.read_text().strip() if p.exists() else ""
    if have != want and any(cache.glob("clip_*.npz")):
        sys.exit(f"{cache} holds features of the encoder {have or '(ImageNet)'}, not {want or '(ImageNet)'}: pass "
                 "the same --encoder-weights to `cache` and `fit`, or use another --cache")
    return want


def export_encoder(cfg: ModelConfig, path: Path, encoder_weights: str = "") -> Path:
    from .encoder import EfficientNetLite0
    from .export import _onnxscript_compat
    _onnxscript_compat()
    if path.exists():
        return path
    enc = EfficientNetLite0()
    enc.load_pretrained()
    if encoder_weights:
        load_encoder_weights(enc, encoder_weights)
    enc.eval()
    n = torch.export.Dim("N", min=1, max=4096)
    with torch.no_grad():
        prog = torch.onnx.export(enc, (torch.randn(2, 3, cfg.img_size, cfg.img_size),), dynamo=True,
                                 opset_version=18, input_names=["x"], output_names=["f8", "f16", "f32"],
                                 dynamic_shapes={"x": {0: n}}, optimize=True)
    tmp = path.with_suffix(".tmp.onnx")
    prog.save(str(tmp))
    os.replace(tmp, path)
    return path


def cache_features(data_dirs, cache: Path, cfg: ModelConfig, loop: bool = False, threads: int = 2,
                   idle_minutes: float = 20.0, encoder_weights: str = "") -> None:
    import onnxruntime as ort
    from tqdm import tqdm
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "encoder_weights.txt").write_text(check_cache_encoder(cache, encoder_weights))
    enc_path = export_encoder(cfg, cache / f"encoder_{cfg.img_size}.onnx", encoder_weights)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(enc_path), so, providers=["CPUExecutionProvider"])
    last_new = time.time()
    while True:
        todo = [p for d in data_dirs for p in sorted(Path(d).glob("clip_*.npz"))
                if not (cache / f"{p.stem}.npz").exists()]
        for p in tqdm(todo, desc="features", unit="clip", mininterval=10):
            try:
                frames = np.load(p)["frames"]
                box = training_box(Clip(p), cfg) if cfg.subject_crop else np.array(preprocess.WHOLE_FRAME)
            except Exception:
                continue  # being written
            x = preprocess.model_inputs(frames, cfg.img_size, cfg.mean, cfg.std, box)
            maps = {"f8": [], "f16": [], "f32": []}
            for i in range(0, len(x), 16):
                for k, a in zip(maps, sess.run(list(maps), {"x": x[i:i + 16]})):
                    maps[k].append(a.astype(np.float16))
            tmp = cache / f"{p.stem}.tmp.npz"
            np.savez(tmp, box=box, **{k: np.concatenate(v) for k, v in maps.items()})
            os.replace(tmp, cache / f"{p.stem}.npz")
            last_new = time.time()
        if not loop or time.time() - last_new > idle_minutes * 60:
            return
        time.sleep(30)


def load_feats(cache: Path, name: str):
    p = cache / f"{name}.npz"
    if not p.exists():
        return None
    d = np.load(p)
    box = d["box"] if "box" in d.files else np.array(preprocess.WHOLE_FRAME)  # caches made before subject crops
    return d["f8"], d["f16"], d["f32"], box


# ----------------------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------------------

def lr_at(step: int, tc: TrainConfig, forked_at: int = 0) -> float:
    warm = 50
    start = 0 if step < tc.steps_a else tc.steps_a  # warm up again when the image stages begin
    s = step - max(start, forked_at)  # and after a fork (fresh optimizer state, fresh layers)
    w = min(1.0, (s + 1) / warm)
    frac = step / max(1, tc.total)
    return tc.lr * w * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * frac)))


def save(path: Path, net, opt, step, mc: ModelConfig, tc: TrainConfig, extra=None):
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": mc.to_dict(),
                "train_config": asdict(tc), **(extra or {})}, tmp)
    os.replace(tmp, path)


def fit(tc: TrainConfig, mc: ModelConfig, resume: bool = True, quiet: bool = False) -> Path:
    from tqdm import tqdm
    torch.set_num_threads(tc.threads)
    run = Path(tc.run)
    run.mkdir(parents=True, exist_ok=True)
    logf = open(run / "train.log", "a")

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        logf.write(line + "\n")
        logf.flush()
        if not quiet:
            tqdm.write(line)

    rng = np.random.default_rng(tc.seed)
    torch.manual_seed(tc.seed)
    ck_path = run / "last.pt"
    step = forked_at = 0
    if resume and ck_path.exists():
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        mc = ModelConfig.from_dict(ck["config"])
        net = MocapNet(mc, pretrained=False)
        net.load_state_dict(ck["model"])
        step = int(ck["step"])
        rng = np.random.default_rng(tc.seed + step)
        log(f"resumed from {ck_path} at step {step}")
    else:
        net = MocapNet(mc, pretrained=(mc.encoder == "lite0"))
        if tc.init_from:  # a fork (ablation, encoder comparison): the weights that fit, and the step
            ck = torch.load(tc.init_from, map_location="cpu", weights_only=False)
            own = net.state_dict()
            fit_ = {k: v for k, v in ck["model"].items() if k in own and own[k].shape == v.shape}
            net.load_state_dict(fit_, strict=False)
            step = forked_at = int(ck["step"])
            rng = np.random.default_rng(tc.seed + step)
            log(f"initialised from {tc.init_from} (step {step}): {len(fit_)} of {len(own)} tensors; "
                f"fresh: {sorted({k.split('.')[0] for k in own if k not in fit_})}")
        if tc.encoder_weights:  # wins over init_from's encoder
            load_encoder_weights(net.encoder, tc.encoder_weights)
            log(f"encoder weights from {tc.encoder_weights}")
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    if resume and ck_path.exists():
        opt.load_state_dict(ck["optimizer"])
    log(f"config {json.dumps(mc.to_dict())}")
    log(f"train {json.dumps(asdict(tc))}")

    clips: dict = {}
    feats: dict = {}
    cache = Path(tc.cache)

    def refresh():
        known = set(clips)
        for d in tc.data:
            for p in sorted(Path(d).glob("clip_*.npz")):
                if p.stem not in known:
                    try:
                        clips[p.stem] = Clip(p, tc.tiny_bones)
                    except Exception as e:
                        log(f"skip {p.name}: {type(e).__name__}: {e}")
        for name in clips:
            if name not in feats and (cache / f"{name}.npz").exists():
                try:
                    feats[name] = load_feats(cache, name)
                except Exception:
                    pass

    trains_encoder = not (mc.encoder == "lite0" and mc.freeze_encoder)
    if not trains_encoder:
        check_cache_encoder(cache, tc.encoder_weights)
    refresh()
    log(f"{len(clips)} clips, {len(feats)} with cached image features"
        + ("; the encoder trains, so frames are read from the shards" if trains_encoder else ""))
    net.train()
    if not trains_encoder:
        net.encoder.eval()  # frozen: its batch-norm statistics stay ImageNet's
    t0 = time.time()
    bar = tqdm(total=tc.total, initial=step, desc="train", unit="step", mininterval=5, disable=quiet)
    running: dict = {}
    while step < tc.total:
        stage = tc.stage(step)
        if step % 200 == 0 and step:
            refresh()
        if stage == "a" or trains_encoder:
            pool = list(clips)
        else:
            pool = [n for n in clips if n in feats]
            if not pool:
                log("no cached image features yet; waiting 60 s (run `python -m models.train cache`)")
                save(ck_path, net, opt, step, mc, tc)
                time.sleep(60)
                refresh()
                continue
        names = [pool[int(rng.integers(0, len(pool)))] for _ in range(tc.batch)]
        if trains_encoder and stage != "a":
            samples = []
            for n in names:
                box = training_box(clips[n], mc)
                x = preprocess.model_inputs(np.load(clips[n].path)["frames"], mc.img_size, mc.mean, mc.std, box)
                samples.append(make_sample(clips[n], tc.window, rng, tc, frames=x, box=box))
        else:
            samples = [make_sample(clips[n], tc.window, rng, tc, feats.get(n) if stage != "a" else None)
                       for n in names]
        b = collate(samples, mc.max_hops)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc, forked_at)
        p_gt = 0.5 * max(0.0, 1.0 - (step - tc.steps_a - tc.steps_b) / max(1, 0.7 * tc.steps_c))
        p_gt = tc.p_given if tc.p_given >= 0 else p_gt
        loss, parts, _ = run_batch(net, b, stage, p_gt, rng, tc.pa_weight, tc.p_given >= 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        for k, v in parts.items():
            v = float(v.detach())
            running[k] = 0.9 * running.get(k, v) + 0.1 * v
        bar.update(1)
        if step % tc.log_every == 0:
            msg = " ".join(f"{k}={v:.4f}" for k, v in running.items())
            bar.set_postfix_str(f"{stage} {msg}"[:120])
            log(f"step {step} stage {stage} lr {lr_at(step, tc, forked_at):.2e} {msg} "
                f"({(time.time() - t0) / 60:.1f} min, {len(pool)} clips)")
        boundary = step in (tc.steps_a, tc.steps_a + tc.steps_b, tc.total)
        if step % tc.save_every == 0 or boundary:
            save(ck_path, net, opt, step, mc, tc)
        if boundary:
            save(run / f"stage_{stage}.pt", net, opt, step, mc, tc)
            log(f"stage {stage} done at step {step}")
            running = {}
        if tc.stop_at and step >= tc.stop_at:
            save(ck_path, net, opt, step, mc, tc)
            log(f"stopped at step {step} (--stop-at)")
            break
        if (time.time() - t0) / 60 > tc.max_minutes:
            save(ck_path, net, opt, step, mc, tc)
            log(f"time budget reached at step {step}; resume with the same command")
            break
    bar.close()
    logf.close()
    return ck_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="cache frozen-encoder features of every shard")
    c.add_argument("--data", nargs="+", default=["data/train"])
    c.add_argument("--cache", default="runs/featcache")
    c.add_argument("--loop", action="store_true", help="keep watching for new shards")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--model", default="{}", help='JSON overrides of ModelConfig (e.g. {"subject_crop": true})')
    c.add_argument("--encoder-weights", default="", help="tuned encoder (models/probe_encoder_tune.py OUT)")
    f = sub.add_parser("fit", help="train (resumes from RUN/last.pt)")
    for k, v in asdict(TrainConfig()).items():
        if isinstance(v, list):
            f.add_argument(f"--{k}", nargs="+", default=v)
        else:
            f.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    f.add_argument("--model", default="{}", help="JSON overrides of ModelConfig")
    f.add_argument("--fresh", action="store_true", help="ignore RUN/last.pt")
    a = ap.parse_args(argv)
    torch.set_num_threads(getattr(a, "threads", 2))
    if a.cmd == "cache":
        mc = ModelConfig.from_dict({**ModelConfig().to_dict(), **json.loads(a.model)})
        cache_features(a.data, Path(a.cache), mc, loop=a.loop, threads=a.threads, encoder_weights=a.encoder_weights)
        return
    tc = TrainConfig(**{k: getattr(a, k) for k in asdict(TrainConfig())})
    mc = ModelConfig.from_dict({**ModelConfig().to_dict(), **json.loads(a.model)})
    fit(tc, mc, resume=not a.fresh)


if __name__ == "__main__":
    main()
