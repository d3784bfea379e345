"""One command, one run, every row: the model against "factorized" (IK) and "hold", both reference protocols.

    python -m models.evaluate --onnx mocap_blender/weights/mocap.onnx --checkpoint runs/main/last.pt \
        --data data/eval [--max-clips N] [--speed] [--figure models/figures/overlay.png]

Rows (all computed in this run, on the same clips and windows):
  full video -> rotation: model (the ONNX file through core/runtime.py), factorized (the model's positions turned
    into rotations by core/ik.py, twist from the reference, root from the model), hold (the reference pose);
    under two protocols: "other" (reference from another clip of the same rig when the eval set has one -- real
    rigs -- else from another moment of the clip outside the window) and "matched" (the window's first frame,
    flagged to the model).
  pose -> rotation alone (PyTorch checkpoint, stage 2 given the positions): perfect positions and positions with
    2% of rig height noise, beside IK on the same positions.
  --variant LABEL=FILE.onnx (repeatable): another network's full video -> rotation rows on the same clips and
    references ("model [LABEL]"): the image-free ablation of stage 2, the encoder trained from scratch.
  --variant-checkpoint LABEL=CKPT.pt (repeatable): another checkpoint's pose -> rotation rows on the same given
    positions ("pose->rot model [LABEL]"), e.g. the image-free ablation of stage 2.
Metrics (core/metrics.py): moving-bone and all-bone local rotation error (deg), root orientation error in the
camera frame (deg, camera given), MPJPE of the rig posed by the predicted rotations (% of rig height), and for
methods that predict positions, MPJPE of those positions and the mean image distance of the in-frame bone heads
(in pixels of a 160 px frame whatever the clips' size, `PX_FRAME`; what a user sees as the overlay), and that
distance after the 2D similarity that best maps each frame's predicted heads onto the true ones ("2D sim px":
articulation, placement removed). The row "reference at the true root (2D)" has only those image distances: the
reference pose carried by the TRUE root orientation, scaled by the true depth and placed on the true root (weak
perspective), what a stage 1 that reads nothing but the root from the image gets.
--long-window W: whole clips through core/pipeline.py in windows of W frames, reference matched to the first frame,
given to every window (`anchor_windows`) or only to the first; errors after the first window.
--speed: onnxruntime frames/s for a 50-joint rig at 2 threads (decode excluded), for one network pass and through
MocapModel.predict (two passes with the subject crop), and the ONNX-vs-PyTorch max difference.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mocap_blender.core import ik, metrics, preprocess
from mocap_blender.core.graph import ancestor_mask
from mocap_blender.core.runtime import MocapModel
from mocap_blender.core.skeleton import forward_kinematics, pose_tails
from mocap_blender.core.video import VideoReader
from .train import Clip, TrainConfig

COLS = ("moving", "all", "root", "mpjpe", "pos_mpjpe", "px2d", "px2d_sim")


def _rig_key(clip: Clip, src: str) -> str:
    return src.split("#")[0] + "|" + ",".join(clip.skel.names) if src != "procedural" else clip.name


def _arm(cam_to_arm, x_cam, h):
    return np.einsum("tab,tjb->tja", cam_to_arm, x_cam) * h


PX_FRAME = 160  # image distances are given in pixels of a frame this wide, whatever the clips' size (160 or 320)


def _px2d(pred_px, true_px, size) -> tuple[float, int]:
    """Mean image distance (in pixels of a PX_FRAME-wide frame) of the bone heads that are in the frame."""
    inside = ((true_px > 0) & (true_px < size)).all(-1)
    d = np.linalg.norm(pred_px - true_px, axis=-1)[inside] * (PX_FRAME / size)
    return (float(d.mean()) if d.size else float("nan"), int(d.size))


def _px2d_aligned(pred_px, true_px, size) -> tuple[float, int]:
    """As `_px2d`, after the 2D similarity (scale, turn, shift) that best maps each frame's predicted in-frame
    heads onto the true ones (`models.model.similar`): what is left is articulation, not placement. Frames with
    fewer than 3 heads in the frame are left out."""
    import torch
    from .model import similar
    inside = ((true_px > 0) & (true_px < size)).all(-1)  # (T, J)
    inside &= inside.sum(-1, keepdims=True) >= 3
    f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))[None, :, :, None]  # (1, T, J, 1, ...)
    fit = similar(f(pred_px), f(true_px), f(inside[..., None]))[0, :, :, 0].numpy()  # (T, J, 2)
    d = np.linalg.norm(fit - true_px, axis=-1)[inside] * (PX_FRAME / size)
    return (float(d.mean()) if d.size else float("nan"), int(d.size))


def at_true_root(clip: Clip, heads_cam, size: int) -> np.ndarray:
    """Camera-frame heads (T, J, 3) / height placed in the image as a weak-perspective layout: scaled by the true
    root depth and put on the true root -> (T, J, 2) pixels of a `size` frame (the first T frames of `clip`)."""
    t = len(heads_cam)
    flat = np.stack([heads_cam[..., 0], -heads_cam[..., 1]], -1) * np.exp(-clip.log_depth[:t])[:, None, None]
    return (clip.uv[:t, :1] + flat) * size


def depth_from_lengths(head_cam, tail_cam, parents, ref_head_cam, ref_tail_cam):
    """Camera-frame heads and tails (T, J, 3) with their true x, y kept and their depth rebuilt from the rig's fixed
    lengths alone (parent head -> head, head -> tail: |dz| = sqrt(length^2 - |dxy|^2)), each offset's sign taken
    from the reference pose in the same frame (ref_head_cam, ref_tail_cam (T, J, 3)); the root head keeps its depth.
    A ceiling for methods that find the body's layout in the image plane exactly and take the rest from the rig and
    the reference. Parents come before children (`Skeleton` order)."""
    def dz(dxy, length, ref_dz):
        return np.where(ref_dz < 0, -1.0, 1.0) * np.sqrt(np.maximum(length ** 2 - (dxy ** 2).sum(-1), 0.0))
    heads, tails = np.array(head_cam, dtype=np.float64), np.array(tail_cam, dtype=np.float64)
    for j in range(1, len(parents)):
        p = parents[j]
        length = np.linalg.norm(head_cam[0, j] - head_cam[0, p])
        heads[:, j, 2] = heads[:, p, 2] + dz(heads[:, j, :2] - heads[:, p, :2], length,
                                             ref_head_cam[:, j, 2] - ref_head_cam[:, p, 2])
    length = np.linalg.norm(tail_cam[0] - head_cam[0], axis=-1)  # (J,)
    tails[..., 2] = heads[..., 2] + dz(tails[..., :2] - heads[..., :2], length, ref_tail_cam[..., 2] - ref_head_cam[..., 2])
    return heads, tails


def _row(pred_rot, true_rot, pred_root_cam, true_root_cam, skel, true_heads_arm, pos_arm=None):
    e = metrics.rotation_errors(pred_rot, true_rot)
    fk = forward_kinematics(skel, pred_rot)[..., :3, 3]
    r = {"moving": e["moving"], "all": e["all"],
         "root": metrics.root_orientation_error(pred_root_cam, true_root_cam),
         "mpjpe": metrics.mpjpe_percent(fk, true_heads_arm, skel.height)}
    if pos_arm is not None:
        r["pos_mpjpe"] = metrics.mpjpe_percent(pos_arm, true_heads_arm, skel.height)
    return r


def load_eval(data_dirs, max_clips=None):
    clips, sources = [], []
    for d in data_dirs:
        for p in sorted(Path(d).glob("clip_*.npz")):
            try:
                c = Clip(p)
            except Exception as e:
                print(f"skip {p.name}: {e}")
                continue
            clips.append(c)
            sources.append(str(np.load(p)["source"]))
            if max_clips and len(clips) >= max_clips:
                return clips, sources
    return clips, sources


def reference_for(i, clips, sources, window, protocol):
    """-> (ref_rot, ref_frame in window or None, ref_cam_to_arm, label)."""
    c = clips[i]
    if protocol == "matched":
        return c.basis[0], 0, c.cam_to_arm[0], "matched"
    key = _rig_key(c, sources[i])
    others = [k for k in range(len(clips)) if k != i and sources[k] != "procedural"
              and _rig_key(clips[k], sources[k]) == key and sources[k].split("#")[:2] != sources[i].split("#")[:2]
              and np.allclose(clips[k].skel.rest, c.skel.rest, atol=1e-4)]
    if others:
        o = clips[others[0]]
        return o.basis[o.n_frames // 2], None, c.cam_to_arm[0], "other clip"
    k = window + (c.n_frames - window) // 2 if c.n_frames > window else c.n_frames // 2
    return c.basis[k], None, c.cam_to_arm[0], "other moment"


def evaluate(onnx_path, data_dirs, checkpoint=None, max_clips=None, window=None, noise=0.02, seed=0,
             variants=None, variant_checkpoints=None):
    model = MocapModel(onnx_path, threads=2)
    others = {label: MocapModel(path, threads=2) for label, path in (variants or {}).items()}
    window = window or model.window_length
    clips, sources = load_eval(data_dirs, max_clips)
    nets = {}  # row label -> checkpoint measured on given positions (stage 2 alone)
    if checkpoint or variant_checkpoints:
        import torch
        from .export import load_checkpoint
        torch.set_num_threads(2)
        if checkpoint:
            nets["pose->rot model"] = load_checkpoint(checkpoint)
        for label, path in (variant_checkpoints or {}).items():
            nets[f"pose->rot model [{label}]"] = load_checkpoint(path)
    rng = np.random.default_rng(seed)
    acc = defaultdict(lambda: defaultdict(list))  # (group, protocol-label, method) -> col -> [(mean, n)]
    labels = {}
    for i, c in enumerate(clips):
        w = min(window, c.n_frames)
        group = "real" if sources[i] != "procedural" else "procedural"
        frames = np.load(c.path)["frames"][:w]
        skel, h = c.skel, c.skel.height
        cam = c.cam_to_arm[:w]
        true_rot = c.basis[:w]
        true_root = c.root_rot[:w]
        true_heads = _arm(cam, c.head_cam[:w], h)
        true_tails = _arm(cam, c.tail_cam[:w], h)
        for protocol in ("other", "matched"):
            ref, ref_k, ref_cam, label = reference_for(i, clips, sources, w, protocol)
            labels[protocol] = labels.get(protocol, set()) | {label}
            rig = preprocess.make_rig_inputs(skel, ref, ref_cam_to_arm=ref_cam)
            out = model.predict(frames, rig, ref_frame=ref_k, cam_to_arm=cam)
            pos = _arm(cam, out["positions"], h)
            tails = _arm(cam, out["tails"], h)
            true_px, size = c.uv[:w] * frames.shape[1], frames.shape[1]
            rows = {"model": _row(out["rotation"], true_rot, out["root_orientation"], true_root, skel, true_heads,
                                  pos)}
            rows["model"]["px2d"] = _px2d(out["joints2d"], true_px, size)
            rows["model"]["px2d_sim"] = _px2d_aligned(out["joints2d"], true_px, size)
            for label, m in others.items():
                o = m.predict(frames, rig, ref_frame=ref_k, cam_to_arm=cam)
                rows[f"model [{label}]"] = _row(o["rotation"], true_rot, o["root_orientation"], true_root, skel,
                                                true_heads, _arm(cam, o["positions"], h))
                rows[f"model [{label}]"]["px2d"] = _px2d(o["joints2d"], true_px, size)
                rows[f"model [{label}]"]["px2d_sim"] = _px2d_aligned(o["joints2d"], true_px, size)
            fac = ik.ik_factorized(skel, pos, tails, ref, root_rot=out["rotation"][:, 0])
            rows["factorized (IK on model positions)"] = _row(fac, true_rot, out["root_orientation"], true_root,
                                                              skel, true_heads, pos)
            ref_head = rig["joint_feats"][:, preprocess.feature_slices()["ref_head"]].astype(np.float64)
            ref_cam_heads = np.einsum("tab,jb->tja", true_root, ref_head)  # (T, J, 3) / height, camera frame
            at_root = at_true_root(c, ref_cam_heads, size)
            rows["reference at the true root (2D)"] = {"px2d": _px2d(at_root, true_px, size),
                                                       "px2d_sim": _px2d_aligned(at_root, true_px, size)}
            # ceilings of the image plane: IK on the true camera-frame x, y with the reference's depth, and with depth
            # rebuilt from the rig's lengths (reference signs)
            ref_tail = rig["joint_feats"][:, preprocess.feature_slices()["ref_tail"]].astype(np.float64)
            ref_cam_tails = np.einsum("tab,jb->tja", true_root, ref_tail)
            flat_h, flat_t = c.head_cam[:w].copy(), c.tail_cam[:w].copy()
            flat_h[..., 2], flat_t[..., 2] = ref_cam_heads[..., 2], ref_cam_tails[..., 2]
            g0 = forward_kinematics(skel, true_rot)[:, 0, :3, :3]  # root frame -> armature
            to_arm = lambda x: np.einsum("tab,tbc,tjc->tja", g0, np.swapaxes(true_root, -1, -2), x) * h
            for tag, (hx, tx) in (("reference depth", (flat_h, flat_t)),
                                  ("depth from lengths", depth_from_lengths(c.head_cam[:w], c.tail_cam[:w],
                                                                            skel.parents, ref_cam_heads,
                                                                            ref_cam_tails))):
                rows[f"IK, true image plane, {tag}"] = _row(
                    ik.ik_factorized(skel, to_arm(hx), to_arm(tx), ref, root_rot=true_rot[:, 0]), true_rot, true_root,
                    true_root, skel, true_heads)
            hold = metrics.hold_baseline(ref, w)
            hold_root_cam = np.swapaxes(cam, -1, -2) @ (skel.rest[0, :3, :3] @ ref[0])
            rows["hold"] = _row(hold, true_rot, hold_root_cam, true_root, skel, true_heads)
            # pose -> rotation alone, given positions (perfect / noisy), vs IK on the same positions
            if nets:  # the same positions for every network and for IK
                for nz in (0.0, noise):
                    hc = c.head_can[:w] + (rng.normal(0, nz, c.head_can[:w].shape) if nz else 0)
                    tc_ = c.tail_can[:w] + (rng.normal(0, nz, c.tail_can[:w].shape) if nz else 0)
                    hcam = c.head_cam[:w] + np.einsum("tba,tjb->tja", true_root, hc - c.head_can[:w])
                    tag = "perfect" if nz == 0 else f"{int(round(nz * 100))}% noise"
                    for name, net in nets.items():
                        rot2 = stage2_rotations(net, model, frames, rig, ref_k, hc, tc_, hcam, nz * np.sqrt(3.0),
                                                box=out["box"])
                        rot2[:, 0] = true_rot[:, 0]  # root not measured here
                        rows[f"{name}, {tag} positions"] = _row(rot2, true_rot, true_root, true_root, skel,
                                                                true_heads)
                    # the same positions in armature space for IK (root rotation given: the truth)
                    ph = np.einsum("tab,tjb->tja", g0, hc) * h
                    pt = np.einsum("tab,tjb->tja", g0, tc_) * h
                    rows[f"pose->rot IK, {tag} positions"] = _row(
                        ik.ik_factorized(skel, ph, pt, ref, root_rot=true_rot[:, 0]), true_rot, true_root,
                        true_root, skel, true_heads)
            for method, r in rows.items():
                for col, v in r.items():
                    acc[(group, protocol, method)][col].append(v)
        print(f"  [{i + 1}/{len(clips)}] {c.name} {group} J={c.n_joints}", flush=True)
    return acc, labels, len(clips)


class FramesReader(VideoReader):
    """A clip's frames held in memory, read like a video file (for the pipeline rows)."""

    def __init__(self, frames, fps: float = 24.0):
        self.path, self.frames, self.fps = "<frames>", frames, float(fps)
        self.n_frames, self.size = len(frames), (frames.shape[2], frames.shape[1])

    def windows(self, length, overlap=0, *, start=0, stop=None, max_side=None):
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        while True:
            end = min(start + length, stop)
            yield start, self.frames[start:end].copy()
            if end >= stop:
                return
            start = end - overlap


def long_clips(onnx_path, data_dirs, max_clips=None, window=16, overlap=4):
    """Whole clips through core/pipeline.py in windows of `window` frames, the reference matched to the first
    frame: with that frame in front of every window (`anchor_windows`) and without (only the first window holds
    it). Errors over the frames after the first window; smoothing off, the camera of the first frame."""
    from mocap_blender.core.pipeline import capture
    model = MocapModel(onnx_path, threads=2)
    clips, sources = load_eval(data_dirs, max_clips)
    acc = defaultdict(lambda: defaultdict(list))
    for i, c in enumerate(clips):
        group = "real" if sources[i] != "procedural" else "procedural"
        frames = np.load(c.path)["frames"]
        true_rot, late = c.basis, slice(window, c.n_frames)
        rows = {}
        for label, anchor in (("every window anchored", True), ("first window only", False)):
            res = capture(model, c.skel, c.basis[0], FramesReader(frames), ref_video_frame=0,
                          cam_from_armature=c.cam_to_arm[0].T, smoothing=0.0, root_motion=False, window=window,
                          overlap=overlap, anchor_windows=anchor)
            rows[f"model, {label}"] = (res.raw_rotations, res.root_orientation_cam)
        rows["hold"] = (metrics.hold_baseline(c.basis[0], c.n_frames), None)
        for method, (rot, root_cam) in rows.items():
            e = metrics.rotation_errors(rot[late], true_rot[late])
            acc[(group, method)]["moving"].append(e["moving"])
            acc[(group, method)]["all"].append(e["all"])
            if root_cam is not None:
                acc[(group, method)]["root"].append(metrics.root_orientation_error(root_cam[late], c.root_rot[late]))
        print(f"  [{i + 1}/{len(clips)}] {c.name} {group} frames {c.n_frames}", flush=True)
    print(f"\nWhole clips ({len(clips)}) through the pipeline, windows of {window} overlapping by {overlap}, "
          f"reference = the first frame (matched); frames {window}+ only")
    head = f"{'group':<11}{'method':<32}" + "".join(f"{c:>11}" for c in ("moving°", "all°", "root°"))
    print(head + "\n" + "-" * len(head))
    for (group, method), cols in acc.items():
        print(f"{group:<11}{method:<32}" + "".join(f"{metrics.pool(cols[k]):>11.2f}" if k in cols else f"{'-':>11}"
                                                  for k in ("moving", "all", "root")))
    return acc


_ENC_CACHE: dict = {}


def stage2_rotations(net, model, frames, rig, ref_k, head_can, tail_can, head_cam, pos_err=0.0, box=None):
    """The checkpoint's rotations with the given (canonical, camera) positions fed to stage 2, told that they are
    `pos_err` (fraction of rig height, expected per-joint distance) wrong; the images through the crop `box` the
    runtime chose (its `predict(...)["box"]`), or whole."""
    import torch
    t = len(frames)
    box = np.array(preprocess.WHOLE_FRAME) if box is None else np.asarray(box, dtype=np.float64)
    f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))[None]
    with torch.no_grad():
        key = (id(net), frames.__array_interface__["data"][0], t, tuple(box))
        if key not in _ENC_CACHE:  # the frozen encoder once per network, clip window and crop
            for k in [k for k in _ENC_CACHE if k[1:] != key[1:]]:
                del _ENC_CACHE[k]
            x = preprocess.model_inputs(frames, model.input_size, model.mean, model.std, box)
            _ENC_CACHE[key] = net.encode(f(x))
        img = net.image_tokens(*_ENC_CACHE[key], 1, t)
        out = net(img, f(rig["joint_feats"]), f(rig["ref_rot6d"]), torch.from_numpy(rig["parents"])[None],
                  torch.from_numpy(rig["hops"])[None],
                  torch.from_numpy(rig["edge_type"])[None], f(rig["local_mask"]),
                  f(preprocess.make_ref_flag(t, ref_k)),
                  pose_override={"head_can": f(head_can), "tail_can": f(tail_can), "head_cam": f(head_cam),
                                 "pos_err": torch.full(head_can.shape[:-1] + (1,), float(pos_err))[None]})
    return out["rot"][0].double().numpy()


def print_table(acc, labels, n_clips):
    print(f"\nEvaluation on {n_clips} clips; references: " +
          "; ".join(f"{p} = {', '.join(sorted(l))}" for p, l in labels.items()))
    head = f"{'group':<11}{'protocol':<9}{'method':<48}" + "".join(f"{c:>11}" for c in
                                                                   ("moving°", "all°", "root°", "MPJPE%",
                                                                    "posMPJPE%", "2D px", "2D sim px"))
    print(head)
    print("-" * len(head))
    for (group, protocol, method), cols in acc.items():
        vals = "".join(f"{metrics.pool(cols[c]):>11.2f}" if c in cols else f"{'-':>11}" for c in COLS)
        print(f"{group:<11}{protocol:<9}{method:<48}{vals}")


def speed(onnx_path, checkpoint=None, j=50, t=32, repeats=5):
    import onnxruntime as ort
    from .export import INPUT_NAMES, dummy_inputs, max_difference, load_checkpoint
    from .model import ModelConfig
    m = MocapModel(onnx_path, threads=2)
    cfg = ModelConfig(img_size=m.input_size)
    sess = m.session

    def one_pass(inputs):
        sess.run(None, inputs)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, inputs)
            ts.append(time.perf_counter() - t0)
        return f"median {np.median(ts) * 1000:.0f} ms -> {t / np.median(ts):.1f} frames/s (best {t / min(ts):.1f})"
    inp = dict(zip(INPUT_NAMES, dummy_inputs(cfg, t=t, j=j)))
    levels = int(ancestor_mask(np.r_[-1, inp["parents"][1:]]).sum(1).max()) - 1  # (the root is its own parent there)
    print(f"\nspeed: {t} frames x {j} joints ({levels} levels deep), onnxruntime {ort.__version__}, 2 threads: one "
          f"network pass {one_pass(inp)}")
    # stage 2 places parents first, one pass per level: a rig that is one long chain costs the most
    chain = dict(zip(INPUT_NAMES, dummy_inputs(cfg, t=t, j=j, chain=True)))
    print(f"speed, the same for one chain {j - 1} levels deep (a snake): {one_pass(chain)}")
    # what a video frame costs through the runtime: preprocessing and, with the subject crop, two passes
    frames = np.random.default_rng(0).integers(0, 256, (t, m.input_size, m.input_size, 3), dtype=np.uint8)
    rig = {k: v for k, v in zip(INPUT_NAMES[1:-1], list(inp.values())[1:-1])}
    rig["root_rest"] = np.eye(3)
    m.predict(frames, rig, ref_frame=0)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m.predict(frames, rig, ref_frame=0)
        ts.append(time.perf_counter() - t0)
    passes = "2 passes (subject crop)" if m.subject_crop else "1 pass"
    print(f"speed through MocapModel.predict ({passes}, preprocessing included, decode excluded): median "
          f"{np.median(ts) * 1000:.0f} ms -> {t / np.median(ts):.1f} frames/s (best {t / min(ts):.1f})")
    if checkpoint:
        import torch
        torch.set_num_threads(2)
        net = load_checkpoint(checkpoint)
        for tt, jj in ((11, 17), (32, 50)):
            print(f"ONNX vs PyTorch max abs difference (T={tt}, J={jj}): {max_difference(net, onnx_path, tt, jj):.2e}")


def figure(onnx_path, clip_path, out_path, n=4, scale=3):
    """Frames of a clip with the true (green) and predicted (magenta) skeletons drawn over them.

    Predicted 2D = the model's image positions of the bone heads (stage 1), matched-frame reference protocol."""
    import cv2
    model = MocapModel(onnx_path, threads=2)
    c = Clip(Path(clip_path))
    w = min(model.window_length, c.n_frames)
    frames = np.load(c.path)["frames"][:w]
    rig = preprocess.make_rig_inputs(c.skel, c.basis[0], ref_cam_to_arm=c.cam_to_arm[0])
    out = model.predict(frames, rig, ref_frame=0, cam_to_arm=c.cam_to_arm[:w])
    s = frames.shape[1]
    tiles = []
    for k in np.linspace(0, w - 1, n).astype(int):
        img = cv2.resize(frames[k], (s * scale, s * scale), interpolation=cv2.INTER_NEAREST)
        for pts, col in ((c.uv[k] * s, (0, 220, 0)), (out["joints2d"][k], (255, 0, 255))):
            p = np.round(pts * scale).astype(int)
            for j, par in enumerate(c.skel.parents):
                if par >= 0:
                    cv2.line(img, tuple(p[par]), tuple(p[j]), col, 1, cv2.LINE_AA)
            for q in p:
                cv2.circle(img, tuple(q), 2, col, -1)
        cv2.putText(img, f"frame {k}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(img)
    grid = np.concatenate(tiles, axis=1)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {out_path} (green: truth, magenta: model) from {Path(clip_path).name}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", default="mocap_blender/weights/mocap.onnx")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", nargs="+", default=["data/eval"])
    ap.add_argument("--max-clips", type=int, default=None)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--figure", default=None, help="write an overlay picture (PNG) here")
    ap.add_argument("--figure-clip", default=None, help="clip for the picture (default: first eval clip)")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FILE.onnx",
                    help="another network evaluated on the same clips and references (repeatable)")
    ap.add_argument("--variant-checkpoint", action="append", default=[], metavar="LABEL=CKPT.pt",
                    help="another checkpoint measured on given positions beside --checkpoint (repeatable)")
    ap.add_argument("--long-window", type=int, default=0, metavar="W",
                    help="also run whole clips through the pipeline in windows of W frames, the reference frame "
                         "in every window or only in its own")
    a = ap.parse_args(argv)
    if a.figure:
        clip = a.figure_clip or str(sorted(Path(a.data[0]).glob("clip_*.npz"))[0])
        figure(a.onnx, clip, a.figure)
    if not a.no_eval:
        variants = dict(v.split("=", 1) for v in a.variant)
        acc, labels, n = evaluate(a.onnx, a.data, a.checkpoint, a.max_clips, a.window, variants=variants,
                                  variant_checkpoints=dict(v.split("=", 1) for v in a.variant_checkpoint))
        print_table(acc, labels, n)
    if a.long_window:
        long_clips(a.onnx, a.data, a.max_clips, a.long_window)
    if a.speed:
        speed(a.onnx, a.checkpoint)


if __name__ == "__main__":
    main()
