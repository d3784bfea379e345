"""Probe: can stage 2, trained on skeletal data alone, rebuild the depth an image-plane reader leaves out?

`models.evaluate` prints "IK, true image plane, reference depth": IK on the true camera-frame x, y of every joint
with the depth of the reference pose. Here the same positions go to stage 2 instead, told they are FLAT_DEPTH_ERR
off (`models/train.py`), from a checkpoint trained with `--flat-depth P` (that share of its skeletal samples given
the image plane only) and from the untrained network of the same config (stage 2's analytic part alone). No images:
stage 2 runs without image tokens, as in its skeletal training. If a learned prior over bodies and motion rebuilt
the depth, an image-plane reader (the mesh fit reads it to 1.5-2.4 px) would carry the rotations much further.

    python -m models.probe_flat_depth --checkpoint runs/flat1/last.pt --data data/eval [--max-clips 40] \
        [--images runs/evalcache]

With `--images` (a feature cache of the evaluation clips) stage 2 also runs on the flat positions WITH the image:
the frozen encoder's tokens, and the bones' true places in the image for its look around each bone, as a perfect
image-plane reader would give them; for a checkpoint trained with `train --p-given 1 --flat-depth 1` that asks
whether the images give the depth the image plane leaves out.

Rows, both reference protocols, true root: hold; IK and stage 2 (trained, untrained) on the flat positions; stage 2
on the true positions (told exact) for scale. Not part of the product.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from mocap_blender.core import ik, metrics, preprocess
from .evaluate import _row, load_eval, reference_for
from .probe_depth_sign import _mean, window_truth
from .train import FLAT_DEPTH_ERR, flat_depth_positions, load_feats


def stage2_only(net, rig, ref_k, t, head_can, tail_can, head_cam, pos_err, feats=None, uv=None):
    """Stage 2's rotations (T, J, 3, 3) from given positions; without image tokens, or with the clip's cached
    encoder maps `feats` (f8, f16, f32) and the bones' true image positions `uv` (T, J, 2, 2)."""
    f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))[None]
    override = {"head_can": f(head_can), "tail_can": f(tail_can), "head_cam": f(head_cam),
                "pos_err": torch.full(head_can.shape[:-1] + (1,), float(pos_err))[None]}
    with torch.no_grad():
        img = None
        if feats is not None:
            maps = [torch.from_numpy(np.asarray(m[:t], dtype=np.float32)) for m in feats[:3]]
            img = net.image_tokens(*maps, 1, t)
            override["uv"] = f(uv)
        out = net(img, f(rig["joint_feats"]), f(rig["ref_rot6d"]), torch.from_numpy(rig["parents"])[None],
                  torch.from_numpy(rig["hops"])[None], torch.from_numpy(rig["edge_type"])[None],
                  f(rig["local_mask"]), f(preprocess.make_ref_flag(t, ref_k)), pose_override=override)
    return out["rot"][0].double().numpy()


def probe(checkpoint, data, max_clips, window, images=None):
    from .export import load_checkpoint
    from .model import MocapNet
    torch.set_num_threads(2)
    trained = load_checkpoint(checkpoint).eval()
    untrained = MocapNet(trained.cfg, pretrained=False).eval()
    nets = {"stage 2 trained": trained, "stage 2 untrained (analytic)": untrained}
    clips, sources = load_eval([data], max_clips)
    acc = defaultdict(list)  # (group, protocol, row) -> [(mean, n)]
    for i, c in enumerate(clips):
        w, group, skel, h, true_rot, true_root, true_heads, to_arm = window_truth(c, sources[i], window)
        to_can = lambda x: np.einsum("tba,tjb->tja", true_root, x)
        feats = None if images is None else load_feats(Path(images), c.name)
        if images is not None and feats is None:
            raise SystemExit(f"no cached features of {c.name} in {images}: run models.train cache on {data}")
        uv = np.stack([c.uv[:w], c.tail_uv[:w]], -2)  # (w, J, 2, 2), whole frame (the cache's box)
        for protocol in ("other", "matched"):
            ref, ref_k, ref_cam, _ = reference_for(i, clips, sources, w, protocol)
            rig = preprocess.make_rig_inputs(skel, ref, ref_cam_to_arm=ref_cam)
            key = lambda row: (group, protocol, row)
            acc[key("hold")].append(metrics.rotation_errors(metrics.hold_baseline(ref, w), true_rot)["moving"])
            fh, ft = flat_depth_positions(c.head_cam[:w], c.tail_cam[:w], true_root, rig)
            rot = ik.ik_factorized(skel, to_arm(fh), to_arm(ft), ref, root_rot=true_rot[:, 0])
            acc[key("IK, flat")].append(_row(rot, true_rot, true_root, true_root, skel, true_heads)["moving"])
            for name, net in nets.items():
                for tag, (hc, tc, hcam, err) in {
                        "flat": (to_can(fh), to_can(ft), fh, FLAT_DEPTH_ERR),
                        "true positions": (c.head_can[:w], c.tail_can[:w], c.head_cam[:w], 0.0)}.items():
                    rot = stage2_only(net, rig, ref_k, w, hc, tc, hcam, err)
                    rot[:, 0] = true_rot[:, 0]  # root not measured here
                    acc[key(f"{name}, {tag}")].append(
                        _row(rot, true_rot, true_root, true_root, skel, true_heads)["moving"])
                    if feats is not None and tag == "flat":
                        rot = stage2_only(net, rig, ref_k, w, hc, tc, hcam, err, feats, uv)
                        rot[:, 0] = true_rot[:, 0]
                        acc[key(f"{name}, flat + images")].append(
                            _row(rot, true_rot, true_root, true_root, skel, true_heads)["moving"])
        print(f"  [{i + 1}/{len(clips)}] {c.name} {group} J={c.n_joints}", flush=True)
    print(f"\n{len(clips)} clips, window {window}; moving-bone degrees, reference other / matched")
    rows = sorted({r for _, _, r in acc}, key=lambda r: (r != "hold", "true positions" in r, r))
    for group in ("procedural", "real"):
        print(f"{group}:")
        for row in rows:
            vals = [_mean(acc[(group, p, row)]) for p in ("other", "matched")]
            print(f"  {row:48s} {vals[0]:7.2f} / {vals[1]:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="data/eval")
    ap.add_argument("--max-clips", type=int, default=40)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--images", help="feature cache of the evaluation clips (models.train cache --data DATA): "
                                     "also run stage 2 on the flat positions with image tokens and true bone places")
    a = ap.parse_args()
    probe(a.checkpoint, a.data, a.max_clips, a.window, a.images)


if __name__ == "__main__":
    main()
