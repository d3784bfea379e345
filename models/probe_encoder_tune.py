"""Probe: can the image encoder learn to tell body parts apart on the renders? Tunes the pretrained EfficientNet-Lite0
(BatchNorm statistics kept) so that a joint's feature on one frame matches the same joint's on another frame of the
clip better than the other joints' and the pixels a few pixels away (InfoNCE), on training clips; then
`python -m models.probe_tracking --encoder-weights OUT` measures how well the tuned features follow joints on the
evaluation clips (unseen rigs), beside the frozen ones.

    python -m models.probe_encoder_tune --data data/train --out runs/encoder_tuned.pt [--minutes 15] [--steps N]
        [--init EARLIER]

A probe of whether the encoder is what stage 1 lacks, not part of the product.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mocap_blender.core.preprocess import preprocess_frames
from .encoder import IMAGENET_MEAN, IMAGENET_STD, build_encoder
from .train import Clip


def point_features(encoder, images, pts):
    """images (N, 3, S, S) normalised, pts (N, K, 2) pixels -> (N, K, C) unit stride-8 + stride-16 features there
    (the same features `probe_tracking.feature_maps` compares, sampled at points instead of every pixel)."""
    s = images.shape[-1]
    f8, f16, _ = encoder(images)
    grid = ((pts + 0.5) / s * 2 - 1)[:, None]  # (N, 1, K, 2)
    take = lambda f: F.normalize(F.grid_sample(f, grid, align_corners=False)[:, :, 0].transpose(1, 2), dim=-1)
    return torch.cat([take(f8), take(f16)], -1)


def contrastive_loss(encoder, frames_a, frames_b, px_a, px_b, rng, n_near: int = 8, temp: float = 0.07):
    """One pair of frames of a clip: frames (S, S, 3) uint8, px (J, 2) true joint pixels on each. Each joint's
    feature on frame a must pick the same joint on frame b among all joints and `n_near` pixels 2-6 px around it."""
    s = frames_a.shape[0]
    x = torch.from_numpy(preprocess_frames(np.stack([frames_a, frames_b]), s, IMAGENET_MEAN, IMAGENET_STD))
    j = len(px_a)
    ang = rng.uniform(0, 2 * np.pi, (j, n_near))
    rad = rng.uniform(2.0, 6.0, (j, n_near))
    near = px_b[:, None] + np.stack([np.cos(ang), np.sin(ang)], -1) * rad[..., None]  # (J, n_near, 2)
    pts_b = np.concatenate([px_b, near.reshape(-1, 2)]).clip(0, s - 1)
    pts_a = np.concatenate([px_a, np.repeat(px_a[:1], len(pts_b) - j, 0)])  # padding to one shape
    pts = torch.from_numpy(np.stack([pts_a, pts_b]).astype(np.float32))
    feats = point_features(encoder, x, pts)  # (2, K, C)
    fa, fb = feats[0, :j], feats[1]  # (J, C), (J + J*n_near, C)
    logits = fa @ fb.T / temp  # (J, J + J*n_near)
    own_near = torch.zeros_like(logits, dtype=torch.bool)  # each joint sees only its own near pixels
    own_near[:, j:] = torch.from_numpy(np.repeat(np.eye(j, dtype=bool), n_near, axis=1))
    logits = logits.masked_fill(~(own_near | (torch.arange(logits.shape[1]) < j)), float("-inf"))
    return F.cross_entropy(logits, torch.arange(j))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["data/train"])
    ap.add_argument("--out", default="runs/encoder_tuned.pt")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps too (0: time only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="go on from an earlier OUT (its encoder weights; a fresh optimiser)")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    paths = sorted(p for d in a.data for p in Path(d).glob("clip_*.npz"))
    if not paths:
        raise SystemExit(f"no clips under {a.data}")
    encoder = build_encoder("lite0", pretrained=True)[0].eval()  # eval: BatchNorm statistics stay ImageNet's
    done = 0
    if a.init:
        ck = torch.load(a.init, map_location="cpu")
        encoder.load_state_dict(ck["encoder"])
        done = int(ck["steps"])
    opt = torch.optim.AdamW(encoder.parameters(), lr=a.lr, weight_decay=0.01)
    uv = {}  # path -> (T, J, 2) true joint positions in [0, 1], computed once per clip
    t0, step, losses = time.time(), 0, []
    while time.time() - t0 < a.minutes * 60 and not (a.steps and step >= a.steps):
        path = paths[int(rng.integers(len(paths)))]
        if path not in uv:
            uv[path] = Clip(path).uv
        frames = np.load(path)["frames"]
        ta, tb = rng.choice(len(frames), 2, replace=False)
        s = frames.shape[1]
        px = uv[path] * s  # (T, J, 2)
        inside = ((px[[ta, tb]] >= 0) & (px[[ta, tb]] < s)).all(-1).all(0)  # joints inside both frames
        if inside.sum() < 3:
            continue
        loss = contrastive_loss(encoder, frames[ta], frames[tb], px[ta, inside], px[tb, inside], rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 100 == 0:
            print(f"step {step} ({time.time() - t0:.0f} s): loss {np.mean(losses[-100:]):.3f}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder": encoder.state_dict(), "steps": done + step, "args": vars(a)}, a.out)
    print(f"saved {a.out} after {done + step} steps; loss first 100 {np.mean(losses[:100]):.3f}, "
          f"last 100 {np.mean(losses[-100:]):.3f}")


if __name__ == "__main__":
    main()
