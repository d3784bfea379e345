"""Probe: a small learned tracker that finds a joint on a frame from the joint's patch on the reference frame.

Stage 1 reads no articulation, and neither dense optical flow nor matching single encoder features (tuned or not)
follows the joints of unseen procedural rigs better than the reference layout does (models/README.md). This probe
asks whether the most direct supervised signal does: a Siamese network, trained from scratch on the renders, sees a
32 px template around the joint on the reference frame and an 80 px search window on another frame centred where a
prior puts the joint, correlates their feature maps (stride 4) and gives a heatmap whose soft-argmax is the joint's
offset from the prior (up to 24 px). It is run in rounds, each one centred where the last one ended.

    python -m models.probe_patch_tracker --data data/train data/train_b --out runs/patch_tracker.pt [--minutes 40]
    python -m models.probe_tracking --data data/eval --patch-tracker runs/patch_tracker.pt
    python -m models.probe_patch_tracker --rotations data/eval --out runs/patch_tracker.pt [--stage2 CHECKPOINT]

`--rotations` asks what the found joints are worth as rotations (matched reference, the clip's first frame): heads
and tails found from their frame-0 patches are lifted to the camera frame (weak perspective at the true root depth,
the reference's depth carried by the true root orientation) and given to stage 2 (the untrained network's
analytic part, or a checkpoint's), beside the same lift of the true image positions and of the layout, IK on the
found positions, and hold; and the same for heads and tails carried by dense optical flow from frame 0 (`--flow`,
models/probe_tracking.py, chained frame to frame).

Training priors are the layout `probe_tracking` starts from (the reference frame's pose carried by the true root
orientation, placed on the true root) or the truth jittered by a few pixels (what a later round starts from).
A probe of the signal a stage 1 could be given, not part of the product.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .train import Clip

TEMPLATE = 32  # pixels of the template patch (reference frame)
SEARCH = 80  # pixels of the search window (other frame)
STRIDE = 4  # the feature maps' stride
REACH = (SEARCH - TEMPLATE) // 2  # the largest offset the heatmap can give (pixels)


def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Lite0Front(nn.Module):
    """The pretrained EfficientNet-Lite0's stem and first three blocks, frozen (ImageNet weights and BatchNorm
    statistics): frames normalised as `normalise` gives them -> (N, 24, S/4, S/4)."""

    def __init__(self):
        super().__init__()
        from .encoder import IMAGENET_MEAN, IMAGENET_STD, build_encoder
        enc = build_encoder("lite0", pretrained=True)[0]
        self.layers = nn.Sequential(enc.stem, *enc.blocks[:3]).eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) - 0.5)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True):
        return super().train(False)  # BatchNorm statistics stay ImageNet's

    def forward(self, x):
        return self.layers((x - self.mean) / self.std)


class PatchTracker(nn.Module):
    def __init__(self, width: int = 48, backbone: str = "scratch"):
        super().__init__()
        self.width, self.backbone = width, backbone
        if backbone == "lite0":  # ImageNet features, a trained adapter on top
            self.feat = nn.Sequential(Lite0Front(), conv(24, width), conv(width, width), conv(width, width))
        else:
            self.feat = nn.Sequential(conv(3, 24, 2), conv(24, width), conv(width, width, 2), conv(width, width),
                                      conv(width, width))  # stride 4
        self.head = nn.Sequential(conv(width, width), nn.Conv2d(width, 1, 1))
        cells = (SEARCH - TEMPLATE) // STRIDE + 1  # 13 offsets per axis
        off = (torch.arange(cells, dtype=torch.float32) - (cells - 1) / 2) * STRIDE
        self.register_buffer("offsets", torch.stack(torch.meshgrid(off, off, indexing="xy"), -1).reshape(-1, 2))

    def forward(self, template, search):
        """template (B, 3, TEMPLATE, TEMPLATE), search (B, 3, SEARCH, SEARCH), normalised -> logits (B, N) over the
        offsets `self.offsets` (N, 2) pixels, and the soft-argmax offset (B, 2) pixels (x, y)."""
        b = template.shape[0]
        kt = self.feat(template)  # (B, C, 8, 8)
        fs = self.feat(search)  # (B, C, 20, 20)
        corr = F.conv2d(fs.reshape(1, -1, *fs.shape[-2:]), kt.reshape(-1, 1, *kt.shape[-2:]), groups=b * self.width)
        corr = corr.reshape(b, self.width, *corr.shape[-2:]) / kt.shape[-1] ** 2  # (B, C, 13, 13) depthwise xcorr
        logits = self.head(corr).flatten(1)  # (B, 169)
        return logits, torch.softmax(logits, -1) @ self.offsets


def patches(frames, centres, size: int):
    """frames (N, 3, S, S) normalised, centres (N, 2) pixels -> (N, 3, size, size) square patches around them
    (bilinear; outside the frame reads as 0)."""
    s = frames.shape[-1]
    r = torch.arange(size, dtype=frames.dtype) - (size - 1) / 2
    gx = centres[:, 0, None, None] + r[None, None, :]  # (N, 1, size)
    gy = centres[:, 1, None, None] + r[None, :, None]  # (N, size, 1)
    grid = torch.stack(torch.broadcast_tensors(gx, gy), -1)  # (N, size, size, 2)
    return F.grid_sample(frames, (grid + 0.5) / s * 2 - 1, align_corners=False)


def normalise(frames_uint8) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float in [-0.5, 0.5]."""
    return torch.from_numpy(np.ascontiguousarray(frames_uint8)).permute(0, 3, 1, 2).float() / 255.0 - 0.5


def layout_from(clip: Clip, a: int, size: int, points=None) -> np.ndarray:
    """Frame a's camera-frame pose (`points` (T, J, 3), root-relative / height; the heads by default) carried by the
    true root's turn to every frame and placed on the true root (weak perspective) -> (T, J, 2) pixels: the prior
    `probe_tracking` calls the reference layout."""
    turn = clip.root_rot @ np.swapaxes(clip.root_rot[a:a + 1], -1, -2)  # (T, 3, 3)
    pts = np.einsum("tab,jb->tja", turn, (clip.head_cam if points is None else points)[a])
    flat = np.stack([pts[..., 0], -pts[..., 1]], -1) * np.exp(-clip.log_depth)[:, None, None]
    return (clip.uv[:, :1] + flat) * size


@torch.no_grad()
def track(net: PatchTracker, frames_uint8, pts0, prior, rounds: int = 2) -> np.ndarray:
    """frames (T, S, S, 3) uint8, pts0 (J, 2) the joints on frame 0, prior (T, J, 2) pixels -> (T, J, 2): each
    joint found on each frame from its frame-0 template, starting at the prior, `rounds` times."""
    net.eval()
    x = normalise(frames_uint8)
    t, j = prior.shape[:2]
    tmpl = patches(x[:1].expand(j, -1, -1, -1), torch.as_tensor(pts0, dtype=torch.float32), TEMPLATE)  # (J, 3, ...)
    out = torch.as_tensor(prior, dtype=torch.float32).clone()
    for _ in range(rounds):
        for k in range(1, t):
            search = patches(x[k:k + 1].expand(j, -1, -1, -1), out[k], SEARCH)
            out[k] = out[k] + net(tmpl, search)[1]
    out[0] = torch.as_tensor(pts0, dtype=torch.float32)
    return out.double().numpy()


def batch(cache, paths, rng, clips_per_batch: int, joints_per_clip: int, max_gap: int):
    """Templates, search windows and the true offsets (pixels) for a batch drawn from random clips."""
    tmpl, search, target = [], [], []
    for _ in range(clips_per_batch):
        path = paths[int(rng.integers(len(paths)))]
        if path not in cache:
            clip = Clip(path)
            cache[path] = (np.load(path)["frames"], clip, {})
        frames, clip, layouts = cache[path]
        t, s = len(frames), frames.shape[1]
        a = int(rng.integers(t))
        b = int(np.clip(a + rng.integers(-max_gap, max_gap + 1), 0, t - 1))
        px = clip.uv * s  # (T, J, 2)
        inside = ((px[[a, b]] > 0) & (px[[a, b]] < s)).all(-1).all(0)
        idx = np.flatnonzero(inside)
        if len(idx) == 0:
            continue
        idx = rng.choice(idx, min(joints_per_clip, len(idx)), replace=False)
        if a not in layouts:
            layouts[a] = layout_from(clip, a, s)
        truth = px[b, idx]
        if rng.random() < 0.5:  # the layout (a first round), a little jittered
            prior = layouts[a][b, idx] + rng.normal(0, 1.0, (len(idx), 2))
        else:  # near the truth (a later round)
            prior = truth + rng.normal(0, 4.0, (len(idx), 2))
        prior = truth + np.clip(prior - truth, -REACH, REACH)
        x = normalise(frames[[a, b]])
        tmpl.append(patches(x[:1].expand(len(idx), -1, -1, -1), torch.from_numpy(px[a, idx]).float(), TEMPLATE))
        search.append(patches(x[1:].expand(len(idx), -1, -1, -1), torch.from_numpy(prior).float(), SEARCH))
        target.append(torch.from_numpy(truth - prior).float())
    return torch.cat(tmpl), torch.cat(search), torch.cat(target)


def loss_fn(net, tmpl, search, target):
    logits, off = net(tmpl, search)
    cell = ((target / STRIDE).round() + (net.offsets.shape[0] ** 0.5 - 1) / 2).long().clamp(0, 12)  # (B, 2)
    n = int(round(net.offsets.shape[0] ** 0.5))
    ce = F.cross_entropy(logits, cell[:, 1] * n + cell[:, 0])
    l1 = F.smooth_l1_loss(off, target, beta=1.0)
    return ce + 0.5 * l1, (off - target).norm(dim=-1).mean()


def lift(clip: Clip, px, ref_cam, size: int) -> np.ndarray:
    """Image points (T, J, 2) pixels -> camera-frame points (T, J, 3) / height, relative to the root head's image
    point (weak perspective at the true root depth ratio), depth taken from ref_cam (T, J, 3) (the reference pose
    carried by the root, root-relative)."""
    t = len(px)
    flat = (px - px[:, :1]) / size * np.exp(clip.log_depth[:t])[:, None, None]
    return np.stack([flat[..., 0], -flat[..., 1], ref_cam[..., 2]], -1)


def stage2_rows(c: Clip, frames, found: dict, net, model, pos_err: float, acc, group: str, window: int) -> dict:
    """Rotation rows of one clip (matched reference: frame 0; true root orientation and depth): hold, and stage 2
    (and IK) on the true image positions, on the layout and on each entry of `found` ({tag: (heads, tails) (T, J, 2)
    pixels}) lifted to the camera frame; image distances of the found heads go into `acc`."""
    from mocap_blender.core import ik, metrics, preprocess
    from .evaluate import _arm, _px2d, _px2d_aligned, _row, stage2_rotations
    w = window
    size, skel, h = frames.shape[1], c.skel, c.skel.height
    true_rot, true_root, cam = c.basis[:w], c.root_rot[:w], c.cam_to_arm[:w]
    true_heads = _arm(cam, c.head_cam[:w], h)
    ref = c.basis[0]
    rig = preprocess.make_rig_inputs(skel, ref, ref_cam_to_arm=cam[0])
    fs = preprocess.feature_slices()
    ref_cam = [np.einsum("tab,jb->tja", true_root, rig["joint_feats"][:, fs[k]].astype(np.float64))
               for k in ("ref_head", "ref_tail")]  # (T, J, 3) each
    true_px = [c.uv[:w] * size, c.tail_uv[:w] * size]
    layout = [layout_from(c, 0, size)[:w], layout_from(c, 0, size, c.tail_cam)[:w]]
    for tag, pts in found.items():
        acc[(group, f"{tag} heads", "px")].append(_px2d(pts[0], true_px[0], size))
        acc[(group, f"{tag} heads", "sim")].append(_px2d_aligned(pts[0], true_px[0], size))
    acc[(group, "layout", "px")].append(_px2d(layout[0], true_px[0], size))
    acc[(group, "layout", "sim")].append(_px2d_aligned(layout[0], true_px[0], size))
    rows = {"hold": _row(metrics.hold_baseline(ref, w), true_rot, true_root, true_root, skel, true_heads)}
    g0 = true_rot[:, 0]
    for tag, (hp, tp), err in [("true 2D", true_px, 0.0), ("layout", layout, pos_err)] + [
            (k, v, pos_err) for k, v in found.items()]:
        root = hp[:, :1]
        hcam = lift(c, hp, ref_cam[0], size)
        tcam = lift(c, np.concatenate([root, tp], 1), np.concatenate([ref_cam[0][:, :1], ref_cam[1]], 1),
                    size)[:, 1:]
        rt = np.swapaxes(true_root, -1, -2)
        hc, tc = np.einsum("tab,tjb->tja", rt, hcam), np.einsum("tab,tjb->tja", rt, tcam)
        rot2 = stage2_rotations(net, model, frames, rig, 0, hc, tc, hcam, err)
        rot2[:, 0] = true_rot[:, 0]
        rows[f"stage 2 on {tag}"] = _row(rot2, true_rot, true_root, true_root, skel, true_heads)
        if tag != "layout":
            to_arm = lambda x: np.einsum("tab,tjb->tja", g0, x) * h  # root frame -> armature
            rows[f"IK on {tag}"] = _row(ik.ik_factorized(skel, to_arm(hc), to_arm(tc), ref, root_rot=g0),
                                        true_rot, true_root, true_root, skel, true_heads)
    return rows


def print_rows(acc, methods, heads, title: str):
    """The pooled table of `stage2_rows`' rows (`methods`) and image distances (`heads`), per group."""
    from mocap_blender.core import metrics
    print(f"\n{title}")
    for label, names, cols in (("method", methods, (("moving", 9), ("all", 8))),
                               ("heads", heads, (("px", 9), ("sim", 11)))):
        head = {"moving": "moving°", "all": "all°", "px": "2D px", "sim": "2D sim px"}
        print(f"{'group':<11}{label:<24}" + "".join(f"{head[col]:>{wd}}" for col, wd in cols))
        for group in ("procedural", "real"):
            for m in names:
                if acc[(group, m, cols[0][0])]:
                    print(f"{group:<11}{m:<24}" + "".join(f"{metrics.pool(acc[(group, m, col)]):>{wd}.2f}"
                                                        for col, wd in cols))
        print()


def stage2_net(stage2=None):
    """The ONNX runtime (for its preprocessing) and the stage-2 network: a checkpoint's, or the untrained
    network's analytic part."""
    from mocap_blender.core.runtime import MocapModel
    from .export import load_checkpoint
    from .model import MocapNet, ModelConfig
    model = MocapModel(Path(__file__).parents[1] / "mocap_blender" / "weights" / "mocap.onnx", threads=2)
    return (load_checkpoint(stage2) if stage2 else MocapNet(ModelConfig())).eval(), model


def rotation_probe(tracker_path, data_dirs, max_clips=None, window=32, rounds=2, stage2=None, pos_err=0.03,
                   flow=False):
    """Prints moving / all-bone rotation errors (degrees) and image distances of the found joints, matched
    reference, per group (see the module's doc)."""
    from collections import defaultdict

    from .evaluate import load_eval
    ck = torch.load(tracker_path, map_location="cpu", weights_only=False)
    tracker = PatchTracker(ck["width"], ck.get("backbone", "scratch"))
    tracker.load_state_dict(ck["net"])
    net, model = stage2_net(stage2)
    clips, sources = load_eval(data_dirs, max_clips)
    acc = defaultdict(list)
    for i, c in enumerate(clips):
        group = "real" if sources[i] != "procedural" else "procedural"
        w = min(window, c.n_frames)
        frames = np.load(c.path)["frames"][:w]
        size = frames.shape[1]
        true_px = [c.uv[:w] * size, c.tail_uv[:w] * size]
        layout = [layout_from(c, 0, size)[:w], layout_from(c, 0, size, c.tail_cam)[:w]]
        found = {"found": [track(tracker, frames, tp[0], lay, rounds) for tp, lay in zip(true_px, layout)]}
        if flow:
            from .probe_tracking import track as flow_track
            found["flow"] = [flow_track(frames, tp[0], True) for tp in true_px]
        rows = stage2_rows(c, frames, found, net, model, pos_err, acc, group, w)
        for method, r in rows.items():
            for col in ("moving", "all"):
                acc[(group, method, col)].append(r[col])
        print(f"  [{i + 1}/{len(clips)}] {c.name} {group} J={c.n_joints}", flush=True)
    print_rows(acc, ["hold", "stage 2 on true 2D", "IK on true 2D", "stage 2 on layout", "stage 2 on found",
                     "IK on found", "stage 2 on flow", "IK on flow"], ("layout", "found heads", "flow heads"),
               f"matched reference (frame 0), true root orientation and depth; stage 2 told positions are {pos_err} "
               f"of the height off (0 on the true 2D)")


def probe_parser(doc: str, out: str, lr: float, width: int, per_clip: str) -> argparse.ArgumentParser:
    """The arguments both probes share (training by `fit`, `--rotations` to measure); `per_clip` names the option
    for how many joints or bones each clip gives a batch."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["data/train"])
    ap.add_argument("--out", default=out)
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--width", type=int, default=width)
    ap.add_argument("--clips", type=int, default=8, help="clips per batch")
    ap.add_argument(f"--{per_clip}", type=int, default=12, help=f"{per_clip} per clip in a batch")
    ap.add_argument("--max-gap", type=int, default=31, help="frames between the reference frame and the other")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rotations", nargs="+", help="evaluation clips: measure --out as rotations instead of training")
    ap.add_argument("--max-clips", type=int, default=None)
    return ap


def main(argv=None):
    ap = probe_parser(__doc__, "runs/patch_tracker.pt", 2e-3, 48, "joints")
    ap.add_argument("--backbone", choices=("scratch", "lite0"), default="scratch",
                    help="lite0: the frozen pretrained encoder's first blocks under a trained adapter")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--stage2", help="a checkpoint whose stage 2 turns the found positions into rotations")
    ap.add_argument("--pos-err", type=float, default=0.03, help="what stage 2 is told the found positions are off")
    ap.add_argument("--flow", action="store_true", help="--rotations: also positions carried by dense optical flow")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    if a.rotations:
        return rotation_probe(a.out, a.rotations, a.max_clips, rounds=a.rounds, stage2=a.stage2, pos_err=a.pos_err,
                              flow=a.flow)
    fit(PatchTracker(a.width, a.backbone), a,
        lambda cache, paths, rng: batch(cache, paths, rng, a.clips, a.joints, a.max_gap),
        lambda net, b: [*loss_fn(net, *b), b[2].norm(dim=-1).mean()],
        "loss {0:.3f}, train px {1:.2f}; held-out px {4:.2f} (prior {5:.2f})")


def fit(net, a, draw, measure, report: str, n_held: int = 20):
    """The probes' training loop. The clips under `a.data` less `n_held` rigs kept out; AdamW at `a.lr` on a cosine
    schedule over `a.minutes`; resumable from `a.out` (weights, optimiser, step; saved every 500 steps and at the
    end, with `a.width` and the arguments). draw(cache, paths, rng) -> a batch; measure(net, batch) -> [loss,
    figures...] (scalar tensors; the loss is trained); every 100 steps `report` is formatted with the training
    means of measure's values followed by their held-out means."""
    rng = np.random.default_rng(a.seed)
    paths = sorted(p for d in a.data for p in Path(d).glob("clip_*.npz"))
    if not paths:
        raise SystemExit(f"no clips under {a.data}")
    rng.shuffle(paths)
    held, paths = paths[:n_held], paths[n_held:]
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    out, step, t0, cache, log = Path(a.out), 0, time.time(), {}, []
    if out.exists():  # resume
        ck = torch.load(out, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        print(f"resumed {out} at step {step}")
    val = [draw({}, held, np.random.default_rng(12345 + k)) for k in range(4)]

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "width": a.width,
                    "backbone": getattr(a, "backbone", "scratch"), "args": vars(a)}, out)

    total = a.minutes * 60
    while time.time() - t0 < total:
        lr = float(a.lr * 0.5 * (1 + np.cos(np.pi * min((time.time() - t0) / total, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        net.train()
        values = measure(net, draw(cache, paths, rng))
        opt.zero_grad()
        values[0].backward()
        opt.step()
        log.append([x.item() for x in values])
        step += 1
        if step % 100 == 0:
            net.eval()
            with torch.no_grad():
                v = np.mean([[x.item() for x in measure(net, vb)] for vb in val], 0)
            print(f"step {step} ({time.time() - t0:.0f} s, lr {lr:.1e}): "
                  + report.format(*np.mean(log[-100:], 0), *v), flush=True)
            if step % 500 == 0:
                save()
    save()
    print(f"saved {out} after {step} steps")


if __name__ == "__main__":
    main()
