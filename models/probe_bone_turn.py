"""Probe: does a bone's own picture tell how it has turned since the reference frame?

Stage 1 reads no articulation, and joints found in the image plane would not be enough anyway (perfect image
positions with the reference's depth leave procedural rigs about 10 degrees off, models/README.md). This probe
asks a network for each bone's direction (its +Y axis, camera frame) on a frame, from two patches: the bone on the
reference frame, where its direction is known, and the same bone on the frame, where the reference pose carried by
the root's turn puts it. Both patches are turned so that the bone points up in them (in-plane turns of the picture
become turns of the vectors about the camera axis) and scaled to the bone's length at the root's depth, so
foreshortening and shading (depth) are there to be read. The network gives a correction to the carried direction
(nearly zero at the start: the untrained probe is nearly "hold").

    python -m models.probe_bone_turn --data data/train data/train_b --out runs/bone_turn.pt [--minutes 40]
    python -m models.probe_bone_turn --rotations data/eval --out runs/bone_turn.pt

`--rotations` (matched reference: the clip's first frame; the true root orientation and depth) turns each bone of
the reference pose by the shortest arc onto the found direction (the reference keeps the twist) and scores local
rotations beside hold and beside the same made from the true directions (the ceiling of any direction reader).
A probe of the signal a stage 1 could be given, not part of the product.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .probe_patch_tracker import conv, fit, layout_from, normalise, probe_parser
from .train import Clip

PATCH = 32  # pixels of each (resampled) patch
MIN_PX = 3.0  # bones shorter than this in the picture are left as carried


def side_px(length, scale):
    """A patch side (pixels of the frame) for a bone of 3D `length` (/ height) at `scale` pixels per height."""
    return np.clip(1.6 * length * scale + 12.0, 16.0, 120.0)


def up_angle(d):
    """(..., 3) camera-frame vectors -> (...,) the turn about the camera axis that points their image direction up."""
    return np.arctan2(d[..., 0], d[..., 1])


def turn_z(d, phi):
    """Camera-frame vectors (..., 3) turned by phi (...,) about the camera axis."""
    c, s = np.cos(phi), np.sin(phi)
    return np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1], d[..., 2]], -1)


def oriented_patches(frames, centres, sides, phis, n: int = PATCH):
    """frames (N, 3, S, S) normalised; centres (N, 2), sides (N,), phis (N,) -> (N, 3, n, n): squares of `sides`
    pixels around `centres`, turned so that a camera-frame vector turned by `phis` (`turn_z`) points up in them."""
    s = frames.shape[-1]
    k = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2) / n  # (n,) fractions of the side
    cu, cv = torch.meshgrid(k, k, indexing="xy")  # (n, n) canonical offsets: x right, y down
    c, si = torch.cos(phis)[:, None, None], torch.sin(phis)[:, None, None]
    w = sides[:, None, None]
    gx = centres[:, 0, None, None] + w * (c * cu - si * cv)
    gy = centres[:, 1, None, None] + w * (si * cu + c * cv)
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(frames, (grid + 0.5) / s * 2 - 1, align_corners=False)


class BoneTurn(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        # the two patches side by side in the channels (early fusion): the convolutions compare them where they
        # overlap, as a flow network does
        self.feat = nn.Sequential(conv(6, width), conv(width, width, 2), conv(width, 2 * width),
                                  conv(2 * width, 2 * width, 2), conv(2 * width, 2 * width),
                                  conv(2 * width, 2 * width, 2))  # (B, 2w, 4, 4)
        self.mlp = nn.Sequential(nn.Linear(2 * width * 16 + 6, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, 3))
        # nearly zero at the start, so the untrained probe is nearly "hold"; not zero: a zero last layer passes no
        # gradient back, and on fresh pictures every step its weights random-walk around zero and never open
        # (run bt1/bt2, 3 Dec: 1,000 steps level with the carried direction to 0.01 degree)
        nn.init.normal_(self.mlp[-1].weight, std=1e-3)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, tmpl, search, d_ref, d_prior):
        """patches (B, 3, n, n); d_ref, d_prior (B, 3) unit, in their patches' turned frames -> (B, 3) the found
        direction (unit, in the search patch's frame)."""
        x = torch.cat([self.feat(torch.cat([tmpl, search], 1)).flatten(1), d_ref, d_prior], -1)
        return F.normalize(d_prior + self.mlp(x), dim=-1)


class ClipBones:
    """What the probe needs from one clip: frames, bone directions, image ends, lengths, layouts."""

    def __init__(self, path):
        c = Clip(path)
        self.clip, self.frames = c, np.load(path)["frames"]
        self.size = s = self.frames.shape[1]
        v = c.tail_cam - c.head_cam  # (T, J, 3)
        self.length = np.linalg.norm(v[0], axis=-1)  # (J,) / height
        self.d = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)
        self.head_px, self.tail_px = c.uv * s, c.tail_uv * s
        self.scale = s * np.exp(-c.log_depth)  # (T,) pixels per height at the root's depth
        self._layouts = {}

    def layout(self, a: int):
        """-> (head, tail) (T, J, 2) pixels: frame a's pose carried by the root's turn (the prior)."""
        if a not in self._layouts:
            c = self.clip
            self._layouts[a] = (layout_from(c, a, self.size), layout_from(c, a, self.size, c.tail_cam))
        return self._layouts[a]

    def inside(self, t: int):
        pts = np.stack([self.head_px[t], self.tail_px[t]], 1)  # (J, 2, 2)
        return ((pts > 0) & (pts < self.size)).all(-1).all(-1)

    def inputs(self, a: int, b: int, bones):
        """Patches and turned vectors for bones `bones` from reference frame a to frame b, and the turn of frame b's
        patch (`phi_b`: the found direction is turned back by it)."""
        turn = self.clip.root_rot[b] @ self.clip.root_rot[a].T
        d_a = self.d[a, bones]
        d_prior = d_a @ turn.T
        lh, lt = self.layout(a)
        phi_a, phi_b = up_angle(d_a), up_angle(d_prior)
        x = normalise(self.frames[[a, b]])
        f = lambda arr: torch.from_numpy(np.asarray(arr, np.float32))
        n = len(bones)
        tmpl = oriented_patches(x[:1].expand(n, -1, -1, -1), f((self.head_px[a, bones] + self.tail_px[a, bones]) / 2),
                                f(side_px(self.length[bones], self.scale[a])), f(phi_a))
        search = oriented_patches(x[1:].expand(n, -1, -1, -1), f((lh[b, bones] + lt[b, bones]) / 2),
                                  f(side_px(self.length[bones], self.scale[b])), f(phi_b))
        return tmpl, search, f(turn_z(d_a, phi_a)), f(turn_z(d_prior, phi_b)), phi_b


def batch(cache, paths, rng, clips_per_batch: int, bones_per_clip: int, max_gap: int):
    parts = []
    for _ in range(clips_per_batch):
        path = paths[int(rng.integers(len(paths)))]
        if path not in cache:
            cache[path] = ClipBones(path)
        cb = cache[path]
        t = len(cb.frames)
        a = int(rng.integers(t))
        b = int(np.clip(a + rng.integers(-max_gap, max_gap + 1), 0, t - 1))
        ok = cb.inside(a) & cb.inside(b) & (cb.length * cb.scale[a] >= MIN_PX)
        ok[0] = False  # the root's turn is given
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            continue
        idx = rng.choice(idx, min(bones_per_clip, len(idx)), replace=False)
        tmpl, search, d_ref, d_prior, phi_b = cb.inputs(a, b, idx)
        target = torch.from_numpy(turn_z(cb.d[b, idx], phi_b).astype(np.float32))
        parts.append((tmpl, search, d_ref, d_prior, target))
    return [torch.cat(p) for p in zip(*parts)]


def shortest_arc(u, v) -> np.ndarray:
    """Rotations (..., 3, 3) taking unit vectors u onto v (..., 3) the shortest way (quaternion (1 + u.v, u x v); a
    half turn about an axis across u where they are opposite)."""
    from mocap_blender.core.rotations import quat_to_matrix
    u, v = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
    q = np.concatenate([1.0 + (u * v).sum(-1, keepdims=True), np.cross(u, v)], -1)
    half = q[..., 0] < 1e-9
    side = np.cross(u, np.where(np.abs(u[..., :1]) < 0.9, [1.0, 0, 0], [0, 1.0, 0]))
    q[half] = np.concatenate([np.zeros_like(side[half][..., :1]), side[half]], -1)
    return quat_to_matrix(q / np.linalg.norm(q, axis=-1, keepdims=True))


def angle_deg(u, v):
    return torch.rad2deg(torch.acos((u * v).sum(-1).clamp(-1.0, 1.0)))


def loss_fn(net, tmpl, search, d_ref, d_prior, target):
    pred = net(tmpl, search, d_ref, d_prior)
    return (pred - target).norm(dim=-1).mean(), angle_deg(pred, target).mean(), angle_deg(d_prior, target).mean()


def rotation_probe(path, data_dirs, max_clips=None, window=32):
    from collections import defaultdict

    from mocap_blender.core import metrics
    from mocap_blender.core.skeleton import basis_from_pose, forward_kinematics
    from .evaluate import load_eval
    ck = torch.load(path, map_location="cpu", weights_only=False)
    net = BoneTurn(ck["width"])
    net.load_state_dict(ck["net"])
    net.eval()
    clips, sources = load_eval(data_dirs, max_clips)
    acc = defaultdict(list)

    for i, c in enumerate(clips):
        group = "real" if sources[i] != "procedural" else "procedural"
        cb = ClipBones(c.path)
        w = min(window, c.n_frames)
        skel = c.skel
        pose = forward_kinematics(skel, c.basis[:w])[..., :3, :3]  # (T, J, 3, 3) armature space
        a2c = np.swapaxes(c.cam_to_arm[:w], -1, -2)
        g_cam = a2c[:, None] @ pose  # (T, J, 3, 3) camera frame
        turn = c.root_rot[:w] @ c.root_rot[:1].transpose(0, 2, 1)  # (T, 3, 3)
        carried = turn[:, None] @ g_cam[:1]  # the reference pose carried by the root (hold)
        d_found = np.einsum("tab,jb->tja", turn, cb.d[0])  # (T, J, 3) starts as carried
        with torch.no_grad():
            for b in range(1, w):
                ok = cb.inside(0) & cb.inside(b) & (cb.length * cb.scale[0] >= MIN_PX)
                ok[0] = False
                idx = np.flatnonzero(ok)
                if len(idx):
                    tmpl, search, d_ref, d_prior, phi_b = cb.inputs(0, b, idx)
                    pred = net(tmpl, search, d_ref, d_prior).double().numpy()
                    d_found[b, idx] = turn_z(pred, -phi_b)
        rows = {}
        for tag, d in (("hold", None), ("found directions", d_found), ("true directions", cb.d[:w])):
            g = carried.copy() if d is None else shortest_arc(carried[..., :, 1], d) @ carried  # +Y: the bone
            g[:, 0] = g_cam[:, 0]  # the root: given
            arm = np.zeros(g.shape[:2] + (4, 4))
            arm[..., :3, :3] = c.cam_to_arm[:w, None] @ g
            arm[..., 3, 3] = 1.0
            rot = basis_from_pose(skel, arm)[..., :3, :3]
            e = metrics.rotation_errors(rot, c.basis[:w])
            acc[(group, tag, "moving")].append(e["moving"])
            acc[(group, tag, "all")].append(e["all"])
            dd = carried[..., :, 1] if d is None else d
            ang = np.degrees(np.arccos(np.clip((dd[1:, 1:] * cb.d[1:w, 1:]).sum(-1), -1, 1)))
            acc[(group, tag, "dir")].append((float(ang.mean()), int(ang.size)))
        print(f"  [{i + 1}/{len(clips)}] {c.name} {group} J={c.n_joints}", flush=True)
    print("\nmatched reference (frame 0), true root orientation; bone directions found from the bone's patches")
    print(f"{'group':<11}{'method':<20}{'dir° off':>9}{'moving°':>9}{'all°':>8}")
    for group in ("procedural", "real"):
        for m in ("hold", "found directions", "true directions"):
            if acc[(group, m, "moving")]:
                print(f"{group:<11}{m:<20}" + "".join(f"{metrics.pool(acc[(group, m, col)]):>{wd}.2f}"
                                                    for col, wd in (("dir", 9), ("moving", 9), ("all", 8))))


def main(argv=None):
    ap = probe_parser(__doc__, "runs/bone_turn.pt", 1e-3, 32, "bones")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    if a.rotations:
        return rotation_probe(a.out, a.rotations, a.max_clips)
    fit(BoneTurn(a.width), a, lambda cache, paths, rng: batch(cache, paths, rng, a.clips, a.bones, a.max_gap),
        lambda net, b: loss_fn(net, *b),
        "loss {0:.3f}, train {1:.2f} deg (carried {2:.2f}); held-out {4:.2f} deg (carried {5:.2f})")


if __name__ == "__main__":
    main()
