"""The capture network: video -> pose -> rotation for any rig, anchored by a reference pose-rotation pair.

Read top to bottom:
  1. ModelConfig: every hyperparameter, saved inside checkpoints and the ONNX metadata.
  2. Image tokens: EfficientNet-Lite0 stride-16 and stride-32 maps of each frame, projected to `dim`; a finer
     stride-8 grid (stride-8 map + upsampled stride-16 tokens) where joints are found.
  3. Joint tokens: rest features + reference pair (mocap_blender/core/preprocess.py::make_rig_inputs) + a flag
     on the frame the reference pose shows.
  4. Blocks: skeleton attention (GL-GMHA: learned biases by hop distance and edge type, local heads masked to the
     kinematic neighbourhood, global heads unrestricted), cross-attention to the frame's image tokens (stage 2:
     biased towards the image around the bone), temporal attention along each joint's track, MLP.
  5. Stage 1 (video -> pose): the root orientation in the camera frame and the root depth, and a first guess
     of the pose (the reference carried by that orientation + a residual); then each joint's head and tail is
     found on the stride-8 grid: a heatmap over the grid cells, biased towards where the guess lands in the
     picture (its layout at the root's depth, centred on where the joints are seen; with `stage1_local`, after one
     more block that reads the image around where the guess puts each bone), read out by soft-argmax,
     trained with a cross-entropy towards the true cell; with `refine_rounds`, a cascade then moves each head
     and tail by 2D offsets read from the image around it and along its bone (`Refine`); with `snap_rounds`, each
     head and tail moves by a dense field (`SnapField`: per cell, the offset to the nearest projected bone, trained
     on every cell); the found image positions move the pose in the camera frame by weak perspective, by a
     learned amount; the image features there and those image coordinates refine the heads and tails per joint
     in the camera frame (root-relative, / rig height) and a confidence.
     When the reference shows a frame of the window, the root turn and the pose residuals are taken relative
     to theirs on that frame: it gets the reference exactly, and a bias the network reads into every frame of
     an unfamiliar body cancels (`anchor_ref_frame`).
  6. Stage 2 (pose -> rotation): the stage-1 pose turned into the root's frame (canonical), plus the stage-1
     tokens and the image. Each bone's rotation starts from the reference's local rotation carried by its
     parent as placed (so a bone keeps its twist relative to its parent, as IK from the reference does),
     swung (shortest arc) so that the bone points where the pose says, and turned about its axis so that its
     children sit where the pose puts them (a bone with one child only with `turn_one_child`), each by a learned
     amount in [0, 1] times a prior on how far a direction of that length can be trusted under the position
     error (the analytic solution: IK's, but swung from the reference's direction); then a learned residual
     (twist and corrections, read from image and context) and a per-clip twist about the bone axis pooled over
     the whole window (with `anchor_stage2`, both relative to their value on the frame the reference shows).
     Where stage 2 is told the positions are exact (`exact_ik`), the learned amounts are 1 and the residual is
     dropped: the analytic solution (with `exact_twist`, plus the residual's twist about the bone's aim). Parents are
     placed before children by parallel passes over all bones, as many as the rig is deep (`chain_levels`; an
     ONNX Loop in the exported file); local rotation = rest_relative^T @ parent^T @ own.
     Stage 2 is told how wrong the positions may be (per joint, fraction of rig height): from stage 1's
     confidence at run time, the known noise level when it is trained or measured on given positions; where
     they are noisy it aims at their average over nearby frames (`smooth_frames`).
     Gradients flow from stage 2 into stage 1.

Shapes: B batch, T frames, J joints, N image tokens per frame, D = cfg.dim. Masks are additive floats.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mocap_blender.core.preprocess import N_JOINT_FEATURES, feature_slices
from .encoder import IMAGENET_MEAN, IMAGENET_STD, build_encoder
from .geometry import (across, matrix_to_sixd, mm3, mv3, perpendicular, sixd_to_matrix, swing_between, twist_towards,
                       twist_y)

FORMAT_VERSION = 3  # bump when inputs/outputs/metadata change meaning; the runtime refuses other versions
N_EDGE_TYPES = 6
GEO = 100.0  # stage 2 aims and turns bones in hundredths of the rig height (geometry.EPS is 1e-8 on squared lengths)


@dataclass
class ModelConfig:
    img_size: int = 160  # square model input (pixels); frames are letterboxed to it
    encoder: str = "lite0"  # "lite0" (ImageNet EfficientNet-Lite0, packaged weights) or "small<width>" (scratch)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    dim: int = 128  # token width
    heads: int = 4  # attention heads per layer
    local_heads: int = 2  # of which restricted to the kinematic neighbourhood
    ffn_mult: int = 2
    stage1_layers: int = 2
    stage2_layers: int = 2
    max_hops: int = 8  # hop distances are capped here (core.graph.graph_tensors)
    max_rel_time: int = 16  # temporal relative-position bias buckets: -max..+max (clipped)
    window: int = 32  # frames per window in training and at run time
    max_joints: int = 160
    n_joint_features: int = N_JOINT_FEATURES
    stage2_images: bool = True  # rotation tokens cross-attend to the image (False = image-free ablation)
    clip_twist: bool = True  # per-clip twist offset pooled over the window
    swing_err: float = 1.0  # the pose is followed where a bone is long against swing_err x its position error...
    swing_floor: float = 0.002  # ... + this (fraction of rig height): exact positions are followed even on tiny bones
    aim_children_below: float = 0.02  # bones shorter than this (fraction of height) aim at their children's heads
    smooth_frames: float = 1.0  # stage 2 aims at positions averaged over nearby frames (Gaussian std, frames)
    # where they are noisy (by pos_err^2 / (pos_err^2 + swing_floor^2)); 0 = off
    # exact positions fix each bone's direction (and, with children off its axis, its turn about it): where stage
    # 2 is told they are exact (pos_err well below exact_err, fraction of height), its learned gates open fully,
    # the swing_floor prior is lifted and its residual is dropped (but for a twist about the bone's aim with
    # `exact_twist`), so it gives the analytic solution; as the error grows past exact_err the learned gates and
    # the whole residual take over.
    # Without it (configs before 1 Dec), stage 2 on perfect positions measured 5.39 degrees against IK's 4.90
    # (procedural) and 16.81 against 14.90 (real rigs)
    exact_ik: bool = True
    exact_err: float = 0.005
    # with exact_ik, whether the residual's twist about the aim of a bone whose children do not show its turn is
    # kept on exact positions. Off by default (the bone keeps the reference's twist there): the learned twist never
    # read anything from the images. Run v11 (1 Dec) on perfect positions scored what the untrained network scores
    # (2 Dec, same 40 eval clips), other / matched reference: 5.26 / 4.59 degrees (procedural), 17.41 / 9.67
    # (real rigs). On positions told to be off by more than exact_err the residual keeps its twist either way
    exact_twist: bool = False
    # a bone with one child is turned about its axis so that the child sits where the pose puts it, as IK does
    # where the child is off the bone's axis; off (configs before 2 Dec), only bones with two or more children are.
    # The untrained network on perfect positions of the real rigs (2 Dec, `python -m models.evaluate`, 40 eval
    # clips), other / matched reference: 13.92 / 6.15 degrees with it, 14.36 / 6.43 without (IK 14.91 / 8.73)
    turn_one_child: bool = True
    anchor_ref_frame: bool = True  # on the frame the reference shows, stage 1 gives the reference exactly (root
    # orientation and pose); its residuals elsewhere are taken relative to that frame's
    # stage 2's residual (with the per-clip twist) taken relative to its value on the frame the reference shows, as
    # stage 1's are. Off by default: three stage-A runs (1 Dec, 1,000 steps on the same 560 clips) measured on
    # perfect positions without images (as trained), matched references: 4.68 degrees anchored against 4.59 not
    # (procedural), 10.24 against 9.67 (real rigs); the residual is not a constant bias, and subtracting its value
    # on one frame adds that frame's error to every other
    anchor_stage2: bool = False
    # subject crop: the subject is found on the whole frame, then the network runs again on a square around it (a
    # finer grid on the subject: subjects of 40-100 px in a 160 px frame put one stride-8 cell at ~10% of their
    # height). Off by default: run v8 (30 Nov) against v7 on the same eval clips found joints better on
    # procedural rigs (2D 5.75 / 6.61 px) but not rotations (15.40 / 15.40 degrees), and on the real rigs its root
    # orientation under "other" references went from 3.5 to 24.0 degrees off (models/README.md)
    subject_crop: bool = False
    crop_margin: float = 0.2  # training crops: added on each side, times the extent of the true heads
    # (core.preprocess.subject_box)
    crop_min_side: float = 0.3  # fraction of the frame: a tiny subject is not magnified beyond ~3x
    find_margin: float = 0.4  # the first pass's margin (run time): its joints under-reach the subject (soft-argmax
    # pulls inwards). On 24 unseen procedural clips (seeds 2000000+) its box was a median 0.76 of the training box
    # around the true heads with 0.2, and 0.97 with 0.4
    # 2D refinement cascade (0 = off): after the heatmap, each round moves every head and tail by a 2D offset read
    # from the image around it (a patch of the fine grid) and along its bone, after skeleton and temporal attention
    # between the joints; the found image positions then move the pose in the camera frame directly (weak
    # perspective at the root's depth, by a learned amount per joint) instead of only through the tokens. Off by
    # default: run v9 (1 Dec, 2 rounds) found joints far better on procedural rigs (2D 4.65 px against 6.47 without,
    # below the 6.17 of the reference placed at the true root) but its rotations did not follow (15.58 against
    # 15.45 degrees), and on the unseen real rigs it moved joints the wrong way (2D 10.67 against 8.67 px)
    refine_rounds: int = 0
    refine_dim: int = 16  # width of the image features each round samples
    # snap field (0 = off): a small conv head on the stride-8 and stride-16 maps gives, for every cell of the fine
    # grid, the offset to the nearest point of the body's projected bones (heads to tails; at most SNAP_REACH cells
    # long), trained on every cell of every frame; each found head and tail then moves by the field where it is,
    # `snap_rounds` times, and the found image positions move the pose in the camera frame (as the cascade's).
    # A probe on the frozen maps (1 Dec, 600 training clips, 100 held out): heads 4 px off moved to 1.05 px from the
    # nearest bone (2.33 before) after 400 steps. Off by default: run v12 (1 Dec, v11 + 2 rounds) moved joints closer
    # on procedural rigs (2D 5.89 against 6.41 px) but not their articulation ("2D sim px" 3.93 against 3.92), and
    # on the real rigs it was worse (6.76 against 5.15): from a whole placement error away, the nearest bone is often
    # another limb
    snap_rounds: int = 0
    snap_width: int = 64  # channels of the snap field's convolutions
    # a stage-1 block whose image cross-attention is biased towards where the first guess puts each bone in the
    # picture (as stage 2's is towards the found bone), run before the joints are found: the joint tokens read the
    # image where they are expected rather than the whole frame by content. Off by default: run v15 (1 Dec, 1,500
    # stage-B steps from v11's end of stage B) against the same training without it: "2D sim px" 3.82 against 3.91
    # on procedural rigs (the reference layout's 3.84), rotations level (15.88 against 15.87 degrees)
    stage1_local: bool = False
    lift_align: bool = False  # lift only what the found positions add to the guess's layout beyond the 2D similarity
    # (scale, in-plane turn, shift) that best maps the layout onto them: a wrong depth or placement of the whole
    # body is then not read as articulation. Tried (run v10, 1 Dec): procedural rigs unchanged, real rigs worse
    prior_width: float = 0.15  # std (input units) of the joint heatmap's prior around where the first guess puts
    # each joint (its learned sharpness scales it)
    freeze_encoder: bool = True
    dropout: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known.setdefault("subject_crop", False)  # configs saved before the subject crop saw whole frames
        known.setdefault("refine_rounds", 0)  # and before the refinement cascade had none
        known.setdefault("exact_ik", False)  # and before 1 Dec stage 2 did not lock onto exact positions
        known.setdefault("exact_twist", True)  # and kept its learned twist there until 2 Dec
        known.setdefault("turn_one_child", False)  # and turned only bones with two or more children
        known.setdefault("snap_rounds", 0)  # and had no snap field
        known.setdefault("stage1_local", False)  # nor the local stage-1 block
        for k in ("mean", "std"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)


def sq_dist(pts, xy):
    """Squared distances (..., P, N) from points (..., P, 2) to grid centres (N, 2), as |a|^2 - 2 a.b + |b|^2
    (matmuls, no (..., P, N, 2) temporary)."""
    return ((pts * pts).sum(-1, keepdim=True) - 2.0 * pts @ xy.T + (xy * xy).sum(-1)).clamp_min(0.0)


def chain_levels(parents, joint_pad=None):
    """parents (B, J) int64 (the root its own parent) -> () int64: the most ancestors any real joint has (joint_pad
    (B, J) additive, 0 on real joints), by pointer doubling: enough levels for any chain of up to 2^16 bones."""
    idx = torch.arange(parents.shape[1], device=parents.device).expand_as(parents)
    jump, depth = parents, (parents != idx).to(torch.int64)  # one step up; the root stays put
    for _ in range(16):  # after step s, depth counts the ancestors up to 2^(s+1) levels above
        depth, jump = depth + torch.gather(depth, 1, jump), torch.gather(jump, 1, jump)
    if joint_pad is not None:
        depth = depth * (joint_pad > -1.0).to(torch.int64)
    return depth.flatten().max().clamp_min(1)


def mlp(din: int, dout: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, hidden), nn.GELU(), nn.Linear(hidden, dout))


def attention(q, k, v, bias=None):
    """q (..., H, Lq, dh), k/v (..., H, Lk, dh), bias broadcastable to (..., H, Lq, Lk) -> (..., H, Lq, dh)."""
    s = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        s = s + bias
    return torch.softmax(s, dim=-1) @ v


class SkeletonAttention(nn.Module):
    """GL-GMHA over the joints of one frame: biases by hop distance and edge type; local heads masked."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.h, self.hl = cfg.heads, cfg.local_heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.hop_bias = nn.Embedding(cfg.max_hops + 1, cfg.heads)
        self.edge_bias = nn.Embedding(N_EDGE_TYPES, cfg.heads)
        nn.init.zeros_(self.hop_bias.weight), nn.init.zeros_(self.edge_bias.weight)

    def graph_bias(self, hops, edge_type, local_mask, joint_pad):
        """(B, J, J) x3, (B, J) -> (B, 1, H, J, J) additive bias shared by every frame."""
        bias = (self.hop_bias(hops) + self.edge_bias(edge_type)).permute(0, 3, 1, 2)  # (B, H, J, J)
        is_local = (torch.arange(self.h) < self.hl).to(bias.dtype)[None, :, None, None]  # (1, H, 1, 1)
        bias = bias + is_local * local_mask[:, None] + joint_pad[:, None, None, :]
        return bias[:, None]

    def forward(self, x, bias):  # x (B, T, J, D)
        b, t, j, d = x.shape
        q, k, v = self.qkv(x).view(b, t, j, 3, self.h, d // self.h).permute(3, 0, 1, 4, 2, 5)  # (B, T, H, J, dh)
        y = attention(q, k, v, bias)  # (B, T, H, J, dh)
        return self.out(y.transpose(2, 3).reshape(b, t, j, d))


class TemporalAttention(nn.Module):
    """Each joint's track over the window, with a learned bias by (clipped) relative time."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.h, self.r = cfg.heads, cfg.max_rel_time
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.rel_bias = nn.Embedding(2 * cfg.max_rel_time + 1, cfg.heads)
        nn.init.zeros_(self.rel_bias.weight)

    def time_bias(self, t: int, device=None):
        idx = torch.arange(t, device=device)
        rel = (idx[None, :] - idx[:, None]).clamp(-self.r, self.r) + self.r  # (T, T)
        return self.rel_bias(rel).permute(2, 0, 1)[None, None]  # (1, 1, H, T, T)

    def forward(self, x, bias):  # x (B, T, J, D)
        b, t, j, d = x.shape
        q, k, v = self.qkv(x).view(b, t, j, 3, self.h, d // self.h).permute(3, 0, 2, 4, 1, 5)  # (B, J, H, T, dh)
        y = attention(q, k, v, bias)  # (B, J, H, T, dh)
        return self.out(y.permute(0, 3, 1, 2, 4).reshape(b, t, j, d))


class ImageCrossAttention(nn.Module):
    """Joint tokens of frame t attend to the image tokens of frame t, optionally biased towards their bone."""

    def __init__(self, cfg: ModelConfig, local: bool):
        super().__init__()
        self.h = cfg.heads
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        # per-head sharpness of the "near the bone" bias (softplus); heads start from broad to sharp
        self.sharp = nn.Parameter(torch.linspace(-2.0, 3.0, cfg.heads)) if local else None

    def forward(self, x, img, bone_d2=None):
        # x (B, T, J, D); img (B, T, N, D); bone_d2 (B, T, J, N) squared image distance token <-> bone
        b, t, j, d = x.shape
        n = img.shape[2]
        dh = d // self.h
        q = self.q(x).view(b, t, j, self.h, dh).transpose(2, 3)  # (B, T, H, J, dh)
        k, v = self.kv(img).view(b, t, n, 2, self.h, dh).permute(3, 0, 1, 4, 2, 5)  # (B, T, H, N, dh)
        bias = None
        if self.sharp is not None and bone_d2 is not None:
            bias = -F.softplus(self.sharp)[None, None, :, None, None] * 50.0 * bone_d2[:, :, None]  # (B,T,H,J,N)
        y = attention(q, k, v, bias)  # (B, T, H, J, dh)
        return self.out(y.transpose(2, 3).reshape(b, t, j, d))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, images: bool, local_image: bool):
        super().__init__()
        dim = cfg.dim
        self.n1, self.skel = nn.LayerNorm(dim), SkeletonAttention(cfg)
        self.cross = ImageCrossAttention(cfg, local_image) if images else None
        self.n2 = nn.LayerNorm(dim) if images else None
        self.n3, self.time = nn.LayerNorm(dim), TemporalAttention(cfg)
        self.n4, self.ffn = nn.LayerNorm(dim), mlp(dim, dim, cfg.ffn_mult * dim)

    def forward(self, x, skel_bias, time_bias, img=None, bone_d2=None):
        x = x + self.skel(self.n1(x), skel_bias)
        if self.cross is not None and img is not None:
            x = x + self.cross(self.n2(x), img, bone_d2)
        x = x + self.time(self.n3(x), time_bias)
        return x + self.ffn(self.n4(x))


def as_map(fine):
    """Fine-grid tokens (B, T, G*G, C) (row-major: v then u) -> (B*T, C, G, G), the layout grid_sample reads."""
    b, t, n, c = fine.shape
    g = int(round(math.sqrt(n)))
    return fine.reshape(b * t, g, g, c).permute(0, 3, 1, 2)


def sample_grid(fmap, pts):
    """fmap (B*T, C, G, G) a map over the input (cell centres at (i + 0.5) / G), pts (B, T, ..., 2) (u, v) in input
    units -> (B, T, ..., C) bilinear samples (zero outside the frame)."""
    b, t = pts.shape[:2]
    g = (2.0 * pts - 1.0).reshape(b * t, -1, 1, 2)  # grid_sample's [-1, 1], align_corners=False
    out = F.grid_sample(fmap, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (BT, C, P, 1)
    return out[..., 0].transpose(1, 2).reshape(*pts.shape[:-1], fmap.shape[1])


def similar(p, q, w):
    """The 2D similarity (scale, turn, shift) of points p that best matches q (least squares, weights w), applied
    to p. p, q (B, T, J, K, 2), w broadcastable to (B, T, J, K, 1) -> (B, T, J, K, 2)."""
    w = w.expand(*p.shape[:-1], 1)
    n = w.sum((2, 3), keepdim=True).clamp_min(1e-6)
    mp, mq = (w * p).sum((2, 3), keepdim=True) / n, (w * q).sum((2, 3), keepdim=True) / n
    p0, q0 = p - mp, q - mq
    den = (w * p0 * p0).sum((2, 3, 4), keepdim=True)[..., 0] + 1e-9  # (B, T, 1, 1)
    re = (w[..., 0] * (p0[..., 0] * q0[..., 0] + p0[..., 1] * q0[..., 1])).sum((2, 3), keepdim=True) / den
    im = (w[..., 0] * (p0[..., 0] * q0[..., 1] - p0[..., 1] * q0[..., 0])).sum((2, 3), keepdim=True) / den
    return mq + torch.stack([re * p0[..., 0] - im * p0[..., 1], im * p0[..., 0] + re * p0[..., 1]], -1)


class Refine(nn.Module):
    """One round of the 2D cascade: every head and tail reads a PATCH x PATCH patch of the fine grid around where
    it is (spaced `spacing` cells) and SEG points along its bone; the joints exchange what they saw (skeleton and
    temporal attention) and each moves its head and tail by an offset in units of the patch spacing."""
    PATCH, SEG = 5, 5

    def __init__(self, cfg: ModelConfig, spacing: float):
        super().__init__()
        d, c, g = cfg.dim, cfg.refine_dim, cfg.img_size // 8
        self.proj = nn.Linear(d, c)
        self.inp = mlp(d + (2 * self.PATCH ** 2 + self.SEG) * c + 4, d, 2 * d)
        self.block = Block(cfg, images=False, local_image=False)
        self.norm = nn.LayerNorm(d)
        self.delta = nn.Linear(d, 4)  # head du dv, tail du dv
        nn.init.zeros_(self.delta.weight), nn.init.zeros_(self.delta.bias)  # untrained: no move
        self.step = spacing / g  # input units per patch spacing
        o = (torch.arange(self.PATCH, dtype=torch.float32) - (self.PATCH - 1) / 2) * self.step
        self.register_buffer("offsets", torch.stack(torch.meshgrid(o, o, indexing="xy"), -1).reshape(-1, 2),
                             persistent=False)  # (P*P, 2)
        self.register_buffer("along", torch.linspace(0.1, 0.9, self.SEG)[:, None], persistent=False)  # (SEG, 1)

    def forward(self, h, uv, fine, skel_bias, time_bias):
        """h (B, T, J, D) joint tokens, uv (B, T, J, 2[head, tail], 2), fine (B, T, N8, D) -> h, moved uv."""
        b, t, j = h.shape[:3]
        fmap = as_map(self.proj(fine))  # (BT, C, G, G)
        at = uv.detach()  # where to look; the offset's gradient comes from the loss on the moved positions
        ends = at[..., None, :] + self.offsets  # (B, T, J, 2, P*P, 2)
        seg = at[..., :1, :] + self.along * (at[..., 1:, :] - at[..., :1, :])  # (B, T, J, SEG, 2)
        pts = torch.cat([ends.flatten(3, 4), seg], 3)  # (B, T, J, 2*P*P + SEG, 2)
        seen = sample_grid(fmap, pts).flatten(3)  # (B, T, J, K*C)
        h = h + self.inp(torch.cat([h, seen, at.flatten(-2)], -1))
        h = self.block(h, skel_bias, time_bias)
        return h, uv + self.step * self.delta(self.norm(h)).view(b, t, j, 2, 2)


SNAP_REACH = 2.5  # cells: the snap field's offsets are at most this long (far from the body it points towards it)


class SnapField(nn.Module):
    """Raw stride-8 and stride-16 maps -> (BT, 2, G, G): per fine-grid cell, the offset (in cells) to the nearest
    point of the body's projected bones, at most SNAP_REACH long. Offsets to a line are linear in position, so
    reading the field bilinearly between cell centres is sharp to a fraction of a cell."""

    def __init__(self, c8: int, c16: int, width: int):
        super().__init__()
        self.a, self.b = nn.Conv2d(c8, width, 1), nn.Conv2d(c16, width, 1)
        conv = lambda: nn.Conv2d(width, width, 3, padding=1)
        self.net = nn.Sequential(nn.GELU(), conv(), nn.GELU(), conv(), nn.GELU(), conv(), nn.GELU(),
                                 nn.Conv2d(width, 2, 1))

    def forward(self, f8, f16):
        x = self.a(f8) + F.interpolate(self.b(f16), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.net(x)


class MocapNet(nn.Module):
    def __init__(self, cfg: ModelConfig, pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        # --- image tokens ---
        self.encoder, (c8, c16, c32) = build_encoder(cfg.encoder, pretrained)
        if cfg.freeze_encoder and cfg.encoder == "lite0":
            self.encoder.requires_grad_(False)
        self.proj16 = nn.Sequential(nn.Conv2d(c16, d, 1), nn.GELU(), nn.Conv2d(d, d, 1))
        self.proj32 = nn.Sequential(nn.Conv2d(c32, d, 1), nn.GELU(), nn.Conv2d(d, d, 1))
        g16, g32 = cfg.img_size // 16, cfg.img_size // 32
        self.pos16 = nn.Parameter(torch.randn(g16 * g16, d) * 0.02)
        self.pos32 = nn.Parameter(torch.randn(g32 * g32, d) * 0.02)
        self.level = nn.Parameter(torch.randn(2, d) * 0.02)
        self.proj8 = nn.Sequential(nn.Conv2d(c8, d, 1), nn.GELU(), nn.Conv2d(d, d, 1))
        self.pos8 = nn.Parameter(torch.randn((2 * g16) ** 2, d) * 0.02)
        grid = lambda g: torch.stack(torch.meshgrid(*(((torch.arange(g) + 0.5) / g),) * 2, indexing="xy"), -1)
        self.register_buffer("img_xy", torch.cat([grid(g16).reshape(-1, 2), grid(g32).reshape(-1, 2)]),
                             persistent=False)  # (N, 2) (u, v) token centres
        self.register_buffer("img_xy8", grid(2 * g16).reshape(-1, 2), persistent=False)  # (N8, 2)
        # --- joint tokens ---
        self.joint_in = mlp(cfg.n_joint_features, d, 2 * d)
        self.ref_frame_emb = nn.Parameter(torch.zeros(2, d))  # [not the reference frame, the reference frame]
        # --- stage 1: video -> pose ---
        self.stage1 = nn.ModuleList([Block(cfg, True, False) for _ in range(cfg.stage1_layers)])
        self.n1 = nn.LayerNorm(d)
        self.local1 = Block(cfg, True, True) if cfg.stage1_local else None
        self.n1b = nn.LayerNorm(d) if cfg.stage1_local else None
        self.loc_q = nn.Linear(d, 2 * d)  # queries for the bone's head and tail on the stride-8 grid
        self.loc_k = nn.Linear(d, d)
        self.guess_head = nn.Linear(d, 6)  # first guess of head xyz, tail xyz (camera), before finding the joints
        nn.init.zeros_(self.guess_head.weight), nn.init.zeros_(self.guess_head.bias)
        self.prior_sharp = nn.Parameter(torch.tensor(0.5413))  # softplus -> 1: a prior of `prior_width`
        self.loc_in = mlp(2 * d + 8, d, 2 * d)  # image features at the found head and tail, where, and how far
        # from where the first guess put them
        # the cascade: patch spacing 1 cell, then half a cell, ...
        self.refine = nn.ModuleList([Refine(cfg, 0.5 ** i) for i in range(cfg.refine_rounds)])
        self.snap = SnapField(c8, c16, cfg.snap_width) if cfg.snap_rounds else None
        if cfg.refine_rounds or cfg.snap_rounds:
            self.lift_gate = nn.Linear(d, 2)  # how far the found image positions move the head and tail (camera)
            nn.init.zeros_(self.lift_gate.weight), nn.init.zeros_(self.lift_gate.bias)
        self.pose_head = nn.Linear(d, 6 + 1)  # head xyz, tail xyz (camera), confidence
        with torch.no_grad():
            self.pose_head.weight[:6].zero_(), self.pose_head.bias[:6].zero_()  # start at the reference pose
        self.root_head = mlp(2 * d, 6 + 1, d)  # root orientation residual 6D, log root depth ratio
        self.zero_root_residual()
        # --- stage 2: pose -> rotation ---
        self.pose_in = mlp(13, d, 2 * d)  # canonical head, tail, bone vector, camera head, position error
        self.tok12 = nn.Linear(d, d)
        self.stage2 = nn.ModuleList([Block(cfg, cfg.stage2_images, True) for _ in range(cfg.stage2_layers)])
        self.n2 = nn.LayerNorm(d)
        self.rot_head = nn.Linear(d, 6 + 2)  # residual 6D (in the bone's frame), swing and turn amount logits
        nn.init.zeros_(self.rot_head.weight), nn.init.zeros_(self.rot_head.bias)
        with torch.no_grad():
            self.rot_head.bias[6:8] = 1.5  # follow the pose mostly at first (times the length / error prior)
        self.fs = feature_slices()
        self.twist_pool = nn.Linear(d, 1)
        self.twist_head = mlp(d, 2, d)
        nn.init.zeros_(self.twist_head[2].weight), nn.init.zeros_(self.twist_head[2].bias)

    def zero_root_residual(self) -> None:
        """Root orientation starts at the reference's (in the camera frame): the untrained model holds it."""
        with torch.no_grad():
            self.root_head[2].weight[:6].zero_(), self.root_head[2].bias[:6].zero_()

    def anchored(self, x, ref_flag):
        """x (B, T, J, C) a residual on the reference pose -> x less its value on the frame the reference shows
        (ref_flag (B, T)), so that frame gets the reference exactly; unchanged without a reference frame."""
        if not self.cfg.anchor_ref_frame:
            return x
        return x - (ref_flag[..., None, None] * x).sum(1, keepdim=True)

    def smoothed(self, x, pos_err):
        """x (B, T, J, 3) positions over the window -> averaged over nearby frames (Gaussian, `smooth_frames`)
        where they are noisy (pos_err (B, T, J, 1)): independent jitter shrinks, exact positions are kept."""
        sd = self.cfg.smooth_frames
        if sd <= 0:
            return x
        idx = torch.arange(x.shape[1], dtype=x.dtype)
        k = torch.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sd) ** 2)  # (T, T)
        k = k / k.sum(-1, keepdim=True)
        avg = (k @ x.flatten(2)).view_as(x)
        e2 = pos_err * pos_err
        return x + e2 / (e2 + self.cfg.swing_floor ** 2 + 1e-12) * (avg - x)

    def aim_fn(self, parents, length, joint_pad):
        """Where each bone points, as a function of (heads, tails) (B, T, J, 3): its tail, or, for a bone too
        short to show a direction (imported rigs often have them: glTF has no tails), the mean of its
        children's heads. parents (B, J), length (B, J, 1) rest length / height, joint_pad (B, J).
        Also returns `spread(heads)`: for a bone with two or more children, the vector from its last child's
        head to its first's, which shows the bone's turn about its own axis (hips, chest, a head with ears);
        with `turn_one_child`, for a bone with one child, the vector from its head to the child's (its turn
        shows where the child sits off the bone's axis: a collarbone off the chest's); and `has_turn`
        (B, 1, J, 1), 1 where `spread` is defined."""
        j = parents.shape[1]
        valid = ((joint_pad > -1.0) & (torch.arange(j) > 0)).to(length.dtype)  # (B, J) real non-root joints
        idx = torch.arange(j, device=parents.device)
        child = (parents[:, None, :] == idx[None, :, None]).to(length.dtype) * valid[:, None, :]  # (B, J par, J kid)
        n_kids = child.sum(-1, keepdim=True)  # (B, J, 1)
        use_kids = ((n_kids > 0) & (length < self.cfg.aim_children_below)).to(length.dtype)[:, None]  # (B,1,J,1)
        count = torch.cumsum(child, -1)  # (B, J, J) children of the row up to each column
        first = (child * (count == 1).to(child.dtype))[:, None]  # (B, 1, J, J) the lowest-index child
        last = (child * (count == n_kids).to(child.dtype))[:, None]  # and the highest
        has_two = (n_kids >= 2).to(length.dtype)[:, None]  # (B, 1, J, 1)
        one = (n_kids == 1).to(length.dtype)[:, None] if self.cfg.turn_one_child else torch.zeros_like(has_two)
        mean_kid = (child / n_kids.clamp_min(1.0))[:, None]  # (B, 1, J, J)

        def aim(heads, tails):
            return use_kids * (mean_kid @ heads - heads) + (1.0 - use_kids) * (tails - heads)

        def spread(heads):
            return (first - last) @ heads + one * (first @ heads - heads)
        return aim, spread, has_two + one

    def bone_distance(self, uv):
        """uv (B, T, J, 2[head, tail], 2) -> (B, T, J, N): squared distance from each image token centre to the
        nearest of the bone's head, middle and tail (expanded as |a|^2 - 2 a.b + |b|^2: matmuls, no big temp)."""
        pts = torch.cat([uv, uv.mean(3, keepdim=True)], 3)  # (B, T, J, 3, 2)
        xy = self.img_xy  # (N, 2)
        return sq_dist(pts, xy).amin(3)  # (B, T, J, N)

    # ---- pieces that training calls separately -------------------------------------------------------
    def encode(self, frames):
        """frames (B, T, 3, S, S) normalised -> raw encoder maps (B*T, C8, S/8, S/8), (B*T, C16, S/16, S/16),
        (B*T, C32, S/32, S/32)."""
        b, t = frames.shape[:2]
        return self.encoder(frames.reshape(b * t, *frames.shape[2:]))

    def image_tokens(self, f8, f16, f32, b: int, t: int):
        """Raw maps -> image tokens (B, T, N, D) (N = (S/16)^2 + (S/32)^2), the finer grid where joints are
        found (B, T, N8, D) (N8 = (S/8)^2: the stride-8 map plus the stride-16 tokens upsampled) and, with
        `snap_rounds`, the snap field (B, T, 2, S/8, S/8) (else None)."""
        p16 = self.proj16(f16)  # (BT, D, S/16, S/16)
        a = p16.flatten(2).transpose(1, 2) + self.pos16 + self.level[0]  # (BT, N16, D)
        c = self.proj32(f32).flatten(2).transpose(1, 2) + self.pos32 + self.level[1]  # (BT, N32, D)
        tok = torch.cat([a, c], dim=1)
        fine = self.proj8(f8) + F.interpolate(p16, scale_factor=2.0, mode="nearest")  # (BT, D, S/8, S/8)
        fine = fine.flatten(2).transpose(1, 2) + self.pos8  # (BT, N8, D)
        field = None if self.snap is None else self.snap(f8, f16)
        return (tok.reshape(b, t, *tok.shape[1:]), fine.reshape(b, t, *fine.shape[1:]),
                None if field is None else field.reshape(b, t, *field.shape[1:]))

    def forward(self, img, joint_feats, ref_rot6d, parents, hops, edge_type, local_mask, ref_flag, joint_pad=None,
                pose_override=None, stages: int = 2):
        """
        img: (tokens (B, T, N, D), fine grid (B, T, N8, D), snap field or None) from `image_tokens`, or None
        (skeleton-only training).
        joint_feats (B, J, F); ref_rot6d (B, J, 6); parents (B, J) int64 (root: 0); hops, edge_type (B, J, J) int64;
        local_mask (B, J, J) additive;
        ref_flag (B, T) 1 on the frame the reference shows; joint_pad (B, J) additive (0 real, -1e4 padding).
        pose_override: optional dict(head_can (B, T, J, 3), tail_can, head_cam, pos_err (B, T, J, 1) how wrong
        they may be, fraction of rig height) feeding stage 2 instead of stage 1's prediction (skeleton-only
        training, scheduled sampling, measuring stage 2 alone), and optionally uv (B, T, J, 2, 2), the bones' heads
        and tails in the image, for stage 2's look at the image around each bone. stages=1 stops after stage 1.
        Returns a dict of (B, T, ...) tensors.
        """
        b, j = joint_feats.shape[:2]
        t = ref_flag.shape[1]
        if joint_pad is None:
            joint_pad = torch.zeros(b, j, dtype=joint_feats.dtype)
        # each block learns its own hop/edge bias tables (GL-GMHA), applied to every frame
        jt = self.joint_in(joint_feats)[:, None]  # (B, 1, J, D)
        flag = ref_flag[..., None, None]  # (B, T, 1, 1)
        x = jt + self.ref_frame_emb[0] * (1 - flag) + self.ref_frame_emb[1] * flag  # (B, T, J, D)
        out = {}

        # ---- stage 1: video -> pose ----
        if img is not None:
            img, fine, field = img
            for blk in self.stage1:
                x = blk(x, blk.skel.graph_bias(hops, edge_type, local_mask, joint_pad),
                        blk.time.time_bias(t), img)
            h1 = self.n1(x)  # (B, T, J, D)
            valid = (joint_pad > -1.0).to(h1.dtype)[:, None, :, None]  # (B, 1, J, 1)
            pooled = (h1 * valid).sum(2) / valid.sum(2)  # (B, T, D)
            r = self.root_head(torch.cat([h1[:, :, 0], pooled], -1))  # (B, T, 7)
            # root orientation (camera frame) = a turn in the camera frame (what the picture shows, whatever way
            # the rig's root bone is set up) @ the reference's; a first guess of the pose = the reference pose
            # carried by it + a residual, so that the untrained network holds the reference pose
            ref_root = sixd_to_matrix(joint_feats[:, 0, self.fs["ref_root_cam6d"]])[:, None]  # (B, 1, 3, 3)
            turn = sixd_to_matrix(r[..., :6] + torch.tensor([1.0, 0, 0, 0, 1.0, 0]))  # (B, T, 3, 3)
            if self.cfg.anchor_ref_frame:  # the turn relative to the reference frame's (none without one)
                has_ref = ref_flag.sum(1)[:, None, None, None]  # (B, 1, 1, 1)
                at_ref = (ref_flag[..., None, None] * turn).sum(1, keepdim=True) + (1.0 - has_ref) * torch.eye(3)
                turn = mm3(turn, at_ref.transpose(-1, -2))
            root_rot = mm3(turn, ref_root)  # (B, T, 3, 3)
            g = self.anchored(self.guess_head(h1), ref_flag)  # (B, T, J, 6)
            head0 = mv3(root_rot[:, :, None], joint_feats[:, None, :, self.fs["ref_head"]]) + g[..., :3] - g[..., :1, :3]
            tail0 = mv3(root_rot[:, :, None], joint_feats[:, None, :, self.fs["ref_tail"]]) + g[..., 3:] - g[..., :1, :3]
            # find the head and tail on the fine grid: a heatmap over its cells, biased towards where the guess
            # lands in the picture (its layout at the root's depth, centred where the joints are seen), soft-argmax
            q = self.loc_q(h1).view(b, t, j * 2, -1)  # (B, T, 2J, D)
            keys = self.loc_k(fine).transpose(-1, -2)  # (B, T, D, N8)
            logits = (q @ keys) * (1.0 / math.sqrt(q.shape[-1]))  # (B, T, 2J, N8)
            seen_uv = (torch.softmax(logits, dim=-1) @ self.img_xy8).view(b, t, j, 2, 2)
            vj = valid[..., None]  # (B, 1, J, 1, 1)
            centre = (seen_uv * vj).sum(2, keepdim=True) / (2.0 * vj.sum(2, keepdim=True)) # (B, T, 1, 1, 2)
            centre = centre.sum(3, keepdim=True)
            ends = torch.stack([head0, tail0], 3)  # (B, T, J, 2, 3)
            layout = torch.stack([ends[..., 0], -ends[..., 1]], -1) * torch.exp(-r[..., 6])[:, :, None, None, None]
            layout = layout - ((layout * vj).sum((2, 3), keepdim=True) / (2.0 * vj.sum(2, keepdim=True)))
            prior = (centre + layout).view(b, t, j * 2, 2)  # (B, T, 2J, 2)
            if self.local1 is not None:  # read the image where the guess puts each bone, then look again
                h1 = self.n1b(self.local1(h1, self.local1.skel.graph_bias(hops, edge_type, local_mask, joint_pad),
                                          self.local1.time.time_bias(t), img,
                                          self.bone_distance(prior.view(b, t, j, 2, 2))))
                q = self.loc_q(h1).view(b, t, j * 2, -1)
                logits = (q @ keys) * (1.0 / math.sqrt(q.shape[-1]))
            d2 = sq_dist(prior, self.img_xy8)  # (B, T, 2J, N8)
            logits = logits - F.softplus(self.prior_sharp) * d2 / (2 * self.cfg.prior_width ** 2)
            heat = torch.softmax(logits, dim=-1)
            uv = (heat @ self.img_xy8).view(b, t, j, 2, 2)  # (B, T, J, 2[head, tail], 2)
            seen = (heat @ fine).view(b, t, j, -1)  # (B, T, J, 2D) image features at the head and tail
            prior = prior.view(b, t, j, 2, 2)
            uv_steps = [uv]
            if len(self.refine):  # the cascade, then the features where it ended
                for rf in self.refine:
                    h1, uv = rf(h1, uv, fine, rf.block.skel.graph_bias(hops, edge_type, local_mask, joint_pad),
                                rf.block.time.time_bias(t))
                    uv_steps.append(uv)
            if field is not None:  # each head and tail moves by the snap field where it is
                fmap = field.flatten(0, 1)  # (BT, 2, G, G)
                for _ in range(self.cfg.snap_rounds):
                    uv = uv + sample_grid(fmap, uv) / fmap.shape[-1]
                uv_steps.append(uv)
            if len(self.refine) or field is not None:
                seen = sample_grid(as_map(fine), uv).flatten(3)
            h1 = h1 + self.loc_in(torch.cat([seen, uv.flatten(-2), (uv - prior).flatten(-2)], -1))
            p = self.pose_head(h1)  # (B, T, J, 7)
            if len(self.refine) or field is not None:
                # where the image puts the head and tail against the guess's layout, in the camera frame (weak
                # perspective: x = u * depth ratio, y = -v * depth ratio), by a learned amount
                base = similar(prior, uv, valid[..., None]) if self.cfg.lift_align else prior
                duv = (uv - base) * torch.exp(r[..., 6])[:, :, None, None, None]  # (B, T, J, 2, 2)
                lift = torch.cat([duv[..., :1], -duv[..., 1:], torch.zeros_like(duv[..., :1])], -1)
                lift = (self.lift_gate(h1)[..., None] * lift).flatten(-2)  # (B, T, J, 6)
                p = torch.cat([p[..., :6] + lift, p[..., 6:]], -1)
            p = torch.cat([self.anchored(p[..., :6], ref_flag), p[..., 6:]], -1)
            head_cam = head0 + p[..., 0:3] - p[..., :1, 0:3]  # root-relative (B, T, J, 3)
            tail_cam = tail0 + p[..., 3:6] - p[..., :1, 0:3]
            confidence = torch.sigmoid(p[..., 6])
            out.update(head_cam=head_cam, tail_cam=tail_cam, uv=uv[..., 0, :], tail_uv=uv[..., 1, :],
                       confidence=confidence, root_rot=root_rot, log_root_depth=r[..., 6],
                       loc_logits=logits.view(b, t, j, 2, -1), uv_steps=uv_steps[:-1], uv_prior=prior,
                       snap_field=field)
            # canonical (root frame) pose: O^T p
            rt = root_rot.transpose(-1, -2)[:, :, None]  # (B, T, 1, 3, 3)
            head_can = mv3(rt, head_cam)
            tail_can = mv3(rt, tail_cam)
            bone_d2 = self.bone_distance(uv)  # (B, T, J, N)
            tok1 = self.tok12(h1)
            # expected position error from the confidence (trained towards exp(-error / 0.05))
            pos_err = (-0.05 * torch.log(confidence.detach().clamp_min(1e-3)))[..., None].clamp(max=0.2)
        else:
            head_cam = head_can = tail_can = bone_d2 = pos_err = None
            tok1 = 0.0
        if stages == 1:
            return out
        if pose_override is not None:
            head_can, tail_can = pose_override["head_can"], pose_override["tail_can"]
            head_cam = pose_override.get("head_cam", head_cam)
            if head_cam is None:
                head_cam = torch.zeros_like(head_can)
            pos_err = pose_override.get("pos_err", pos_err)
            if pos_err is None:
                pos_err = torch.zeros_like(head_can[..., :1])
            if "uv" in pose_override:  # where the bones are in the image (B, T, J, 2[head, tail], 2), if known
                bone_d2 = self.bone_distance(pose_override["uv"])

        # ---- stage 2: pose -> rotation ----
        pos_err = pos_err.expand(*head_can.shape[:-1], 1)
        y = torch.cat([head_can, tail_can, tail_can - head_can, head_cam, 20.0 * pos_err], -1)  # (B, T, J, 13)
        x = jt + self.pose_in(y) + tok1 + self.ref_frame_emb[0] * (1 - flag) + self.ref_frame_emb[1] * flag
        use_img = img if self.cfg.stage2_images else None
        for blk in self.stage2:
            x = blk(x, blk.skel.graph_bias(hops, edge_type, local_mask, joint_pad), blk.time.time_bias(t),
                    use_img, bone_d2)
        h2 = self.n2(x)  # (B, T, J, D)
        r = self.rot_head(h2)  # (B, T, J, 8)
        fs = self.fs
        ref_head, ref_tail = joint_feats[..., fs["ref_head"]][:, None], joint_feats[..., fs["ref_tail"]][:, None]
        aim, spread, has_turn = self.aim_fn(parents, joint_feats[..., fs["length"]], joint_pad)
        ref_glob = sixd_to_matrix(joint_feats[..., fs["ref_global6d"]])[:, None]  # (B, 1, J, 3, 3) root frame
        rest_rel = sixd_to_matrix(joint_feats[..., fs["rest_relative6d"]])[:, None]  # (B, 1, J, 3, 3)
        ref_local = mm3(rest_rel, sixd_to_matrix(ref_rot6d)[:, None])  # the bone in its parent's frame, reference
        # where the bone aims and how its children spread, in its own frame (the reference's: fixed to the bone)
        # (in hundredths of the rig height, so that the directions of bones of 0.01-0.1% of it normalise exactly)
        ref_glob_t = ref_glob.transpose(-1, -2)
        own_dir = GEO * mv3(ref_glob_t, aim(ref_head, ref_tail))  # (B, 1, J, 3)
        own_x = GEO * mv3(ref_glob_t, spread(ref_head))
        obs_head, obs_tail = self.smoothed(head_can, pos_err), self.smoothed(tail_can, pos_err)
        obs_dir, obs_x = GEO * aim(obs_head, obs_tail), GEO * spread(obs_head)  # (B, T, J, 3)
        # how far to follow the pose (the IK solution): learned, times a prior on how far a direction of this
        # length can be trusted given the position error (a bone of 1% of the height turns wildly under 2% noise
        # and keeps the reference unless the network is sure; exact positions are followed on any bone)
        follow, turn_follow = torch.sigmoid(r[..., 6:7]), torch.sigmoid(r[..., 7:8])  # (B, T, J, 1)
        floor = self.cfg.swing_floor
        if self.cfg.exact_ik:  # 0 where the positions are exact, ~1 once they are off by a few exact_err
            e2 = pos_err * pos_err
            loose = e2 / (e2 + self.cfg.exact_err ** 2)
            follow, turn_follow = 1.0 - loose * (1.0 - follow), 1.0 - loose * (1.0 - turn_follow)
            floor = floor * loose  # exact positions are followed fully on any bone, however short
        err2 = (GEO * (self.cfg.swing_err * pos_err + floor)) ** 2 + 1e-8  # (B, T, J, 1)
        length2 = torch.minimum((obs_dir * obs_dir).sum(-1, keepdim=True), (own_dir * own_dir).sum(-1, keepdim=True))
        amount = follow * length2 / (length2 + err2)  # (B, T, J, 1)
        turn_gate = has_turn * amount * turn_follow
        delta = sixd_to_matrix(r[..., :6] + torch.tensor([1.0, 0, 0, 0, 1.0, 0]))  # (B, T, J, 3, 3)
        if self.cfg.clip_twist:
            w = torch.softmax(self.twist_pool(h2), dim=1)  # (B, T, J, 1) attention over the window
            clip = (w * h2).sum(1)  # (B, J, D)
            cs = self.twist_head(clip) + torch.tensor([1.0, 0.0])  # (B, J, 2)
            delta = mm3(delta, twist_y(cs)[:, None])  # per-clip twist about each bone's own axis
        if self.cfg.exact_ik:
            # the residual = its swing of the bone's aim (kept by `loose`) @ its twist about the aim (kept by
            # `loose` too; with exact_twist, kept fully on bones whose children's spread does not show their turn)
            aim_dir = own_dir.expand(b, t, j, 3)
            aimed = mv3(delta, aim_dir)
            swing = swing_between(aim_dir, aimed, torch.ones_like(loose))
            twist = mm3(swing.transpose(-1, -2), delta)  # about the aim
            across_aim = perpendicular(aim_dir)
            twist_kept = loose + (1.0 - has_turn) * (1.0 - loose) if self.cfg.exact_twist else loose
            twist = twist_towards(aim_dir, across_aim, mv3(twist, across_aim), twist_kept)
            split = mm3(swing_between(aim_dir, aimed, loose), twist)
            has_aim = ((own_dir * own_dir).sum(-1, keepdim=True) > 1e-8)[..., None]  # (B, 1, J, 1, 1)
            delta = torch.where(has_aim, split, delta)
        if self.cfg.anchor_stage2:  # relative to the residual on the reference frame (unchanged without one)
            has_ref = ref_flag.sum(1)[:, None, None, None, None]  # (B, 1, 1, 1, 1)
            at_ref = (ref_flag[:, :, None, None, None] * delta).sum(1, keepdim=True) + (1.0 - has_ref) * torch.eye(3)
            delta = mm3(delta, at_ref.transpose(-1, -2))  # (B, T, J, 3, 3)
        # (copies, not views: the ONNX Loop below takes them as inputs)
        eye = torch.eye(3, dtype=delta.dtype).expand(b, t, 1, 3, 3).contiguous()
        idx = parents[:, None, :, None, None].expand(b, t, j, 3, 3).contiguous()

        def place(parent_glob):
            """Each bone's rotation in the (posed) root frame given its parent's: the reference's local rotation
            carried by the parent, swung so that the bone points where the pose says, turned about its axis so
            that its children's spread matches (each by the amounts above), then the learned residual."""
            base = mm3(parent_glob, ref_local)  # (B, T, J, 3, 3)
            swing = swing_between(mv3(base, own_dir), obs_dir, amount)
            sb = mm3(swing, base)
            axis, bx = mv3(sb, own_dir), mv3(sb, own_x)
            bx, ox = across(bx, axis), across(obs_x, axis)
            spread2 = torch.minimum((bx * bx).sum(-1, keepdim=True), (ox * ox).sum(-1, keepdim=True))
            turn = twist_towards(axis, bx, obs_x, turn_gate * spread2 / (spread2 + err2))
            g = mm3(mm3(turn, sb), delta)
            return torch.cat([eye, g[:, :, 1:]], 2)  # the root frame itself

        # parents first as in the reference pose, then as placed: each pass makes one more level of every chain
        # exact (a bone's twist follows its parent's, as a twist relative to the parent does; no loop over joints),
        # as many passes as the rig is deep
        glob = place(torch.gather(ref_glob.expand(b, t, j, 3, 3), 2, idx))
        more = chain_levels(parents, joint_pad) - 1  # () int64
        if torch.compiler.is_exporting():  # an ONNX Loop: the file places rigs of any depth exactly
            glob = torch.while_loop(lambda i, g: i < more, lambda i, g: (i + 1, place(torch.gather(g, 2, idx))),
                                    (torch.zeros((), dtype=torch.int64), glob))[1]
        else:
            for _ in range(int(more)):
                glob = place(torch.gather(glob, 2, idx))
        parent_glob = torch.gather(glob, 2, idx)  # (B, T, J, 3, 3)
        rot = mm3(mm3(rest_rel.transpose(-1, -2), parent_glob.transpose(-1, -2)), glob)  # local (matrix_basis)
        out.update(rot=rot, rot6d=matrix_to_sixd(rot), head_can=head_can, tail_can=tail_can)
        return out

    def forward_frames(self, frames, *rig, **kw):
        """frames (B, T, 3, S, S) -> forward(image tokens, *rig, **kw)."""
        b, t = frames.shape[:2]
        return self.forward(self.image_tokens(*self.encode(frames), b, t), *rig, **kw)
