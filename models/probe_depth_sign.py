"""Probe: can motion continuity choose each bone's depth sign, given the body's layout in the image plane?

With a bone's image-plane offset known and its length fixed by the rig, only the sign of its depth offset is left
(|dz| = sqrt(length^2 - |dxy|^2)). `models.evaluate` prints the ceiling "IK, true image plane, depth from lengths",
which takes every sign from the reference pose. Here the signs are chosen instead by a second-order Viterbi along
the clip: a bone's depth offset should move with a continuous velocity, so a bone that passes through the image plane
(|dz| falls to 0 and rises again) crosses to the other side rather than bouncing back. The first frame's sign comes
from the reference (matched protocol: the reference is that frame). Rows, matched protocol, IK with the true root:
hold, reference signs (evaluate's ceiling), continuity signs, true signs (what perfect signs would give), each with
the image-plane layout exact and with Gaussian noise on it (fractions of the rig's height).

    python -m models.probe_depth_sign --data data/eval [--max-clips 40] [--noise 0 0.005 0.01]

Nothing learned, nothing from images: the layout is the truth's (plus noise). Not part of the product.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from mocap_blender.core import ik, metrics, preprocess
from mocap_blender.core.skeleton import forward_kinematics
from .evaluate import _arm, _row, load_eval

SIGN_RULES = ("reference", "continuity", "true")


def continuity_signs(mag: np.ndarray, first: np.ndarray, smooth: float = 0.1) -> np.ndarray:
    """Signs (T, N) of N depth offsets of magnitudes `mag` (T, N), the first frame's given (`first` (N,) +-1),
    chosen so the signed offsets z_t = s_t mag_t change with the least acceleration (z_t - 2 z_{t-1} + z_{t-2})^2,
    plus `smooth` times the squared velocity. Exact second-order Viterbi (states: the last two signs)."""
    t_len, n = mag.shape
    if t_len < 2:
        return np.broadcast_to(first, mag.shape).copy()
    sgn = np.array([-1.0, 1.0])
    # state k = (previous sign index, current sign index) = (k // 2, k % 2); frame 1's states, frame 0 fixed
    z0 = first * mag[0]  # (N,)
    cost = np.full((4, n), np.inf)
    back = np.zeros((t_len, 4, n), dtype=np.int64)
    for k in range(4):
        p, c = divmod(k, 2)
        ok = sgn[p] == first
        z1 = sgn[c] * mag[1]
        cost[k] = np.where(ok, smooth * (z1 - z0) ** 2, np.inf)
    for t in range(2, t_len):
        new = np.full((4, n), np.inf)
        arg = np.zeros((4, n), dtype=np.int64)
        for k in range(4):
            p, c = divmod(k, 2)  # signs at t-1 and t
            z_t, z_p = sgn[c] * mag[t], sgn[p] * mag[t - 1]
            for pp in range(2):  # sign at t-2
                prev = pp * 2 + p
                z_pp = sgn[pp] * mag[t - 2]
                total = cost[prev] + (z_t - 2 * z_p + z_pp) ** 2 + smooth * (z_t - z_p) ** 2
                better = total < new[k]
                new[k] = np.where(better, total, new[k])
                arg[k] = np.where(better, prev, arg[k])
        cost, back[t] = new, arg
    out = np.zeros((t_len, n))
    k = np.argmin(cost, axis=0)  # (N,)
    cols = np.arange(n)
    for t in range(t_len - 1, 0, -1):
        out[t] = sgn[k % 2]
        if t >= 2:
            k = back[t, k, cols]
    out[0] = first
    return out


def rebuild(heads_xy, tails_xy, head_cam0, tail_cam0, parents, sign_of):
    """Camera-frame heads and tails (T, J, 3) from image-plane x, y (T, J, 2), the lengths of frame 0's pose
    (head_cam0, tail_cam0 (J, 3)) and `sign_of(offset_name, magnitudes (T, N)) -> signs (T, N)` for the parent-head
    -> head offsets ("heads") and the head -> tail offsets ("tails"). The root head keeps depth 0."""
    t_len, j_len = heads_xy.shape[:2]
    kids = np.arange(1, j_len)
    par = np.asarray(parents)[kids]
    len_h = np.linalg.norm(head_cam0[kids] - head_cam0[par], axis=-1)
    mag_h = np.sqrt(np.maximum(len_h ** 2 - ((heads_xy[:, kids] - heads_xy[:, par]) ** 2).sum(-1), 0.0))
    len_t = np.linalg.norm(tail_cam0 - head_cam0, axis=-1)
    mag_t = np.sqrt(np.maximum(len_t ** 2 - ((tails_xy - heads_xy) ** 2).sum(-1), 0.0))
    dz_h = sign_of("heads", mag_h) * mag_h  # (T, J-1)
    dz_t = sign_of("tails", mag_t) * mag_t  # (T, J)
    z = np.zeros((t_len, j_len))
    for i, j in enumerate(kids):  # parents first
        z[:, j] = z[:, parents[j]] + dz_h[:, i]
    heads = np.concatenate([heads_xy, z[..., None]], -1)
    tails = np.concatenate([tails_xy, (z + dz_t)[..., None]], -1)
    return heads, tails


def window_truth(c, source: str, window: int):
    """A clip's first window: (w, group, skeleton, height, true local rotations (w, J, 3, 3), true root
    orientation in the camera frame (w, 3, 3), true heads in armature space, `to_arm`: camera-frame positions / height
    -> armature space with the true root)."""
    w = min(window, c.n_frames)
    group = "real" if source != "procedural" else "procedural"
    skel, h = c.skel, c.skel.height
    true_rot, true_root = c.basis[:w], c.root_rot[:w]
    true_heads = _arm(c.cam_to_arm[:w], c.head_cam[:w], h)
    g0 = forward_kinematics(skel, true_rot)[:, 0, :3, :3]  # root frame -> armature
    to_arm = lambda x: np.einsum("tab,tbc,tjc->tja", g0, np.swapaxes(true_root, -1, -2), x) * h
    return w, group, skel, h, true_rot, true_root, true_heads, to_arm


def probe(data, max_clips, noises, window, seed):
    clips, sources = load_eval([data], max_clips)
    rng = np.random.default_rng(seed)
    acc = defaultdict(list)  # (group, row) -> [(mean, n)]
    flips = defaultdict(lambda: [0, 0])  # noise -> [wrong signs by continuity, wrong by reference], |dz| > 5% len
    for i, c in enumerate(clips):
        w, group, skel, h, true_rot, true_root, true_heads, to_arm = window_truth(c, sources[i], window)
        head_cam = c.head_cam[:w] - c.head_cam[:w, :1]  # root-relative, camera frame, / height
        tail_cam = c.tail_cam[:w] - c.head_cam[:w, :1]
        ref = true_rot[0]  # matched protocol: the reference is frame 0's pose
        # the reference pose carried by the true root orientation, in the camera frame (its depth signs), as
        # models.evaluate builds it
        rig = preprocess.make_rig_inputs(skel, ref, ref_cam_to_arm=c.cam_to_arm[0])
        sl = preprocess.feature_slices()
        ref_h = np.einsum("tab,jb->tja", true_root, rig["joint_feats"][:, sl["ref_head"]].astype(np.float64))
        ref_t = np.einsum("tab,jb->tja", true_root, rig["joint_feats"][:, sl["ref_tail"]].astype(np.float64))
        kids = np.arange(1, c.n_joints)
        par = np.asarray(skel.parents)[kids]
        true_dz = {"heads": head_cam[:, kids, 2] - head_cam[:, par, 2], "tails": tail_cam[..., 2] - head_cam[..., 2]}
        ref_dz = {"heads": ref_h[:, kids, 2] - ref_h[:, par, 2], "tails": ref_t[..., 2] - ref_h[..., 2]}
        hold = metrics.hold_baseline(ref, w)
        acc[(group, "hold")].append(metrics.rotation_errors(hold, true_rot)["moving"])
        for nz in noises:
            hxy = head_cam[..., :2] + (rng.normal(0, nz, head_cam[..., :2].shape) if nz else 0)
            txy = tail_cam[..., :2] + (rng.normal(0, nz, tail_cam[..., :2].shape) if nz else 0)
            for rule in SIGN_RULES:
                def sign_of(name, mag, rule=rule):
                    s_true = np.where(true_dz[name] < 0, -1.0, 1.0)
                    s_ref = np.where(ref_dz[name] < 0, -1.0, 1.0)
                    if rule == "true":
                        return s_true
                    if rule == "reference":
                        s = s_ref
                    else:
                        s = continuity_signs(mag, s_ref[0])
                    big = np.abs(true_dz[name]) > 0.05 * np.abs(true_dz[name]).max(0, keepdims=True).clip(1e-9)
                    if rule == "continuity":
                        flips[nz][0] += int(((s != s_true) & big).sum())
                        flips[nz][1] += int(((s_ref != s_true) & big).sum())
                    return s
                hx, tx = rebuild(hxy, txy, head_cam[0], tail_cam[0], skel.parents, sign_of)
                rot = ik.ik_factorized(skel, to_arm(hx), to_arm(tx), ref, root_rot=true_rot[:, 0])
                r = _row(rot, true_rot, true_root, true_root, skel, true_heads)
                acc[(group, f"IK, {rule} signs, noise {nz:g}")].append(r["moving"])
                acc[(group, f"IK, {rule} signs, noise {nz:g} (all)")].append(r["all"])
        print(f"  [{i + 1}/{len(clips)}] {c.name} {group} J={c.n_joints}", flush=True)
    print(f"\nmatched protocol, {len(clips)} clips, window {window}; moving-bone degrees (all-bone for IK rows)")
    for group in ("procedural", "real"):
        print(f"{group}:")
        for (g, row), vals in acc.items():
            if g != group or row.endswith("(all)"):
                continue
            m = _mean(vals)
            extra = f" ({_mean(acc[(g, row + ' (all)')]):.2f})" if (g, row + " (all)") in acc else ""
            print(f"  {row:38s} {m:7.2f}{extra}")
    for nz, (a, b) in flips.items():
        print(f"wrong signs where |dz| > 5% of the offset's largest, noise {nz:g}: continuity {a}, reference {b}")


def _mean(vals):
    """Mean over clips of per-clip (mean, count) pairs or plain values, weighted by count like `models.evaluate`."""
    pairs = [v if isinstance(v, tuple) else (v, 1) for v in vals]
    pairs = [(m, n) for m, n in pairs if n and np.isfinite(m)]
    tot = sum(n for _, n in pairs)
    return sum(m * n for m, n in pairs) / tot if tot else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/eval")
    ap.add_argument("--max-clips", type=int, default=40)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.005, 0.01])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    probe(a.data, a.max_clips, a.noise, a.window, a.seed)


if __name__ == "__main__":
    main()
