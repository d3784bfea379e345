"""How much articulation a classical tracker reads from the clips: the true joint positions of the window's first
frame carried through the window by dense optical flow (OpenCV DIS), against the reference layout (the first
frame's pose carried by the true root orientation, weak perspective; what a stage 1 that reads nothing but the root
gets under the matched protocol).

    python -m models.probe_tracking --data data/eval [--max-clips 40] [--window 32]

Image distances as in models/evaluate.py (pixels of a 160 px frame, in-frame joints): raw, and after the 2D
similarity that best maps each frame's predicted joints onto the true ones ("sim": articulation only). Flow is
taken frame to frame ("chained", points carried along) or from the first frame straight to each frame ("direct").
"Encoder features" matches instead the frozen image encoder's own features (stride 8 and 16, upsampled to pixels,
cosine): each joint's feature on the first frame, found again on each frame within `--radius` pixels of the layout
(what stage 1 could read by attention from the matched reference frame). "Patch tracker" runs a tracker trained by
`models/probe_patch_tracker.py` (`--patch-tracker FILE`): each joint's frame-0 patch found again on each frame,
starting at the layout.
A probe of the signal a tracker-fed stage 1 could start from, not part of the product.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import cv2
import numpy as np

from mocap_blender.core import metrics
from .evaluate import _px2d, _px2d_aligned, at_true_root, load_eval


def track(frames, pts0, chained: bool) -> np.ndarray:
    """frames (T, S, S, 3) uint8, pts0 (J, 2) pixels on frame 0 -> (T, J, 2) the points carried by DIS flow."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    p0 = np.asarray(pts0, np.float32)
    out, p = [p0], p0
    for t in range(1, len(frames)):
        flow = dis.calc(gray[t - 1] if chained else gray[0], gray[t], None)  # (S, S, 2)
        q = p if chained else p0
        mx, my = (q[:, 0].reshape(1, -1), q[:, 1].reshape(1, -1))
        d = np.stack([cv2.remap(flow[..., c], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
                      for c in (0, 1)], -1)
        p = q + d
        out.append(p)
    return np.stack(out)


def feature_maps(frames, encoder, mean, std):
    """frames (T, S, S, 3) uint8 -> (T, C, S, S) the encoder's stride-8 and stride-16 maps at every pixel, each
    unit-normalised over its channels."""
    import torch
    import torch.nn.functional as F

    from mocap_blender.core.preprocess import preprocess_frames
    s = frames.shape[1]
    with torch.no_grad():
        f8, f16, _ = encoder(torch.from_numpy(preprocess_frames(frames, s, mean, std)))
    up = lambda f: F.normalize(F.interpolate(f, size=(s, s), mode="bilinear", align_corners=False), dim=1)
    return torch.cat([up(f8), up(f16)], 1)


def match(fmaps, pts0, prior, radius: float) -> np.ndarray:
    """fmaps (T, C, S, S), pts0 (J, 2) pixels on frame 0, prior (T, J, 2) -> (T, J, 2): on each frame, the pixel
    within `radius` of the prior whose feature is most like the joint's on frame 0."""
    import torch
    import torch.nn.functional as F
    t, _, s, _ = fmaps.shape
    grid = torch.from_numpy((np.asarray(pts0, np.float32) + 0.5) / s * 2 - 1)[None, None]  # (1, 1, J, 2)
    ref = F.normalize(F.grid_sample(fmaps[:1], grid, align_corners=False)[0, :, 0].T, dim=-1)  # (J, C)
    yy, xx = np.mgrid[0:s, 0:s]
    out = [np.asarray(pts0, np.float64)]
    for k in range(1, t):
        sim = torch.einsum("jc,chw->jhw", ref, fmaps[k]).numpy()  # (J, S, S)
        near = (xx - prior[k, :, 0, None, None]) ** 2 + (yy - prior[k, :, 1, None, None]) ** 2 <= radius ** 2
        best = np.where(near, sim, -np.inf).reshape(len(ref), -1).argmax(1)
        out.append(np.stack([best % s, best // s], -1).astype(np.float64))
    return np.stack(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--max-clips", type=int, default=None)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--radius", type=float, default=6.0, help="encoder features: search radius (pixels)")
    ap.add_argument("--encoder-weights", help="also match with an encoder tuned by models/probe_encoder_tune.py")
    ap.add_argument("--patch-tracker", help="also track with a network trained by models/probe_patch_tracker.py")
    ap.add_argument("--rounds", type=int, default=2, help="patch tracker: rounds per frame")
    a = ap.parse_args(argv)
    import torch

    from .encoder import IMAGENET_MEAN, IMAGENET_STD, build_encoder
    torch.set_num_threads(2)
    encoder = build_encoder("lite0", pretrained=True)[0].eval()
    tuned = None
    if a.encoder_weights:
        tuned = build_encoder("lite0", pretrained=False)[0].eval()
        tuned.load_state_dict(torch.load(a.encoder_weights, map_location="cpu")["encoder"])
    patch = None
    if a.patch_tracker:
        from . import probe_patch_tracker
        ck = torch.load(a.patch_tracker, map_location="cpu", weights_only=False)
        patch = probe_patch_tracker.PatchTracker(ck["width"], ck.get("backbone", "scratch"))
        patch.load_state_dict(ck["net"])
    clips, sources = load_eval(a.data, a.max_clips)
    acc = defaultdict(list)  # (group, method, col) -> [(mean, n)]
    for i, c in enumerate(clips):
        group = "real" if sources[i] != "procedural" else "procedural"
        w = min(a.window, c.n_frames)
        frames = np.load(c.path)["frames"][:w]
        size = frames.shape[1]
        true_px = c.uv[:w] * size
        turn = c.root_rot[:w] @ np.swapaxes(c.root_rot[:1], -1, -2)  # (T, 3, 3) the root's turn since frame 0
        layout = at_true_root(c, np.einsum("tab,jb->tja", turn, c.head_cam[0]), size)  # frame 0's pose, turned
        preds = {"reference layout": layout, "flow, chained": track(frames, true_px[0], True),
                 "flow, direct": track(frames, true_px[0], False),
                 "encoder features": match(feature_maps(frames, encoder, IMAGENET_MEAN, IMAGENET_STD), true_px[0],
                                           layout, a.radius)}
        if tuned is not None:
            preds["tuned encoder features"] = match(feature_maps(frames, tuned, IMAGENET_MEAN, IMAGENET_STD),
                                                    true_px[0], layout, a.radius)
        if patch is not None:
            preds["patch tracker"] = probe_patch_tracker.track(patch, frames, true_px[0], layout, a.rounds)
        for method, px in preds.items():
            acc[(group, method, "px")].append(_px2d(px, true_px, size))
            acc[(group, method, "sim")].append(_px2d_aligned(px, true_px, size))
        print(f"  [{i + 1}/{len(clips)}] {c.name} {group}", flush=True)
    print(f"\n{'group':<11}{'method':<24}{'2D px':>8}{'2D sim px':>11}")
    for group in ("procedural", "real"):
        for method in ("reference layout", "flow, chained", "flow, direct", "encoder features",
                       "tuned encoder features", "patch tracker"):
            if acc[(group, method, "px")]:
                px, sim = (metrics.pool(acc[(group, method, col)]) for col in ("px", "sim"))
                print(f"{group:<11}{method:<24}{px:>8.2f}{sim:>11.2f}")


if __name__ == "__main__":
    main()
