"""Benchmark of the capture on this machine (not collected by pytest), with the bpy module and the real model:

    .venv/bin/python tests/bench_capture.py [--frames 300] [--size 256] [--bones 50] [--long-frames 3000]

Prints, honestly, whatever the figures are:
  1. end to end (video decode, model, smoothing, bake into a new action): seconds and frames/s for a 300-frame
     256 px clip on a 50-bone rig (target >= 30 frames/s); model loading is timed separately;
  2. bake alone, 300 frames x 50 bones (target < 50 ms);
  3. peak resident memory (RSS) of a whole capture process for a short and a long clip (target < 1.5 GB whatever
     the length), each in a fresh subprocess.
The clip is drawn with OpenCV (mp4v); the model is whatever `mocap_blender/weights/mocap.onnx` holds (the
untrained export has the trained network's architecture and cost).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="mocap_bench_user_"))


def write_clip(path, n_frames, size):
    import cv2
    import numpy as np
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (size, size))
    for i in range(n_frames):
        img = np.full((size, size, 3), 35, np.uint8)
        a = 2 * math.pi * i / 60
        c = size // 2
        cv2.circle(img, (c, size // 6), size // 14, (220, 220, 230), -1)
        cv2.line(img, (c, size // 4), (c, size // 2 + size // 10), (200, 180, 160), max(2, size // 30))
        for s in (-1, 1):
            cv2.line(img, (c, size // 4 + 4), (int(c + s * size * 0.3 * math.cos(a)),
                                               int(size // 4 - s * size * 0.2 * math.sin(a))), (80, 200, 90), 4)
            cv2.line(img, (c, size // 2 + size // 10), (int(c + s * size * 0.15 * (1 + 0.3 * math.sin(a))),
                                                        size - size // 12), (200, 80, 90), 4)
        w.write(img)
    w.release()
    return str(path)


def make_rig(n_bones, seed=0):
    """A random tree rig (spine-like trunk with branches) of n_bones bones, in a factory-empty scene."""
    import bpy
    import numpy as np
    bpy.ops.wm.read_factory_settings(use_empty=True)
    rng = np.random.default_rng(seed)
    arm = bpy.data.armatures.new("Bench")
    obj = bpy.data.objects.new("Bench", arm)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode='EDIT')
    bones = []
    for i in range(n_bones):
        b = arm.edit_bones.new(f"bone{i:03d}")
        if i == 0:
            b.head, b.tail = (0, 0, 1.0), (0, 0, 1.15)
        else:
            p = bones[int(rng.integers(max(0, i - 4), i))]  # mostly chains, some branching
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            b.parent = p
            b.head = p.tail
            b.tail = np.array(p.tail) + d * rng.uniform(0.05, 0.2)
        bones.append(b)
    bpy.ops.object.mode_set(mode='OBJECT')
    modes = ["QUATERNION", "XYZ", "ZXY", "AXIS_ANGLE", "YZX"]
    for i, pb in enumerate(obj.pose.bones):
        pb.rotation_mode = modes[i % len(modes)]
    return obj


def peak_rss_child(frames, size, bones) -> None:
    """Run one whole capture in this (fresh) process and print its peak RSS as JSON."""
    import mocap_blender
    from mocap_blender import api
    api.MODEL.threads = 2  # the design measures on 2 threads, whatever the machine has
    tmp = tempfile.mkdtemp(prefix="mocap_bench_")
    clip = write_clip(Path(tmp) / "long.mp4", frames, size)
    mocap_blender.register()
    obj = make_rig(bones)
    t = time.perf_counter()
    api.capture(obj, clip)
    secs = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"frames": frames, "seconds": secs, "peak_rss_mb": peak_kb / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--bones", type=int, default=50)
    ap.add_argument("--long-frames", type=int, default=3000)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--_child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        peak_rss_child(args._child, args.size, args.bones)
        return

    import bpy
    import numpy as np
    import onnxruntime
    import mocap_blender
    from mocap_blender import api
    from mocap_blender.blender import bake, rig
    from mocap_blender.core import rotations as R

    api.MODEL.threads = 2  # the design measures on 2 threads, whatever the machine has
    print(f"machine: {os.cpu_count()} cores visible (shared), Blender {bpy.app.version_string}, "
          f"onnxruntime {onnxruntime.__version__}, model threads {api.MODEL.threads}")
    tmp = tempfile.mkdtemp(prefix="mocap_bench_")
    clip = write_clip(Path(tmp) / "clip.mp4", args.frames, args.size)
    mocap_blender.register()
    obj = make_rig(args.bones)

    t = time.perf_counter()
    model = api.MODEL.get()
    print(f"model load: {time.perf_counter() - t:.2f} s (once per session)  [{model.path.name}, input "
          f"{model.input_size} px, window {model.window_length}]")
    load0 = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    action = api.capture(obj, clip)
    secs, cpu = time.perf_counter() - t, time.process_time() - c
    fps = args.frames / secs
    print(f"end to end: {args.frames} frames {args.size} px, {args.bones} bones: {secs:.2f} s = {fps:.1f} frames/s "
          f"(target >= 30) {'OK' if fps >= 30 else 'BELOW TARGET'}  [action {action.name!r}; process CPU "
          f"{cpu:.1f} s over {api.MODEL.threads} threads; load average {load0:.1f} -> {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores]")

    info = rig.read_rig(obj)
    rng = np.random.default_rng(0)
    rots = R.rotvec_to_matrix(np.cumsum(rng.normal(0, 0.05, (args.frames, info.skeleton.n_joints, 3)), 0))
    loc = np.cumsum(rng.normal(0, 0.01, (args.frames, 3)), 0)
    times, cpus = [], []
    for _ in range(7):
        t, c = time.perf_counter(), time.process_time()
        bake.bake(obj, info, rots, 1, "bench", root_location=loc)
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    best, med = min(times) * 1000, sorted(times)[len(times) // 2] * 1000
    print(f"bake: {args.frames} frames x {info.skeleton.n_joints} bones (+ root location): median {med:.1f} ms, "
          f"best {best:.1f} ms wall (target < 50 ms) {'OK' if med < 50 else 'ABOVE TARGET'}; CPU median "
          f"{sorted(cpus)[len(cpus) // 2] * 1000:.1f} ms; load average {os.getloadavg()[0]:.1f}")

    if args.skip_memory:
        return
    for frames in sorted({args.frames, args.long_frames}):
        res = subprocess.run([sys.executable, __file__, "--_child", str(frames), "--size", str(args.size),
                              "--bones", str(args.bones)], capture_output=True, text=True)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not line:
            print(f"peak memory run for {frames} frames failed:\n{res.stderr[-2000:]}")
            continue
        r = json.loads(line[-1])
        print(f"peak RSS, whole process, {frames} frames ({frames / 30:.0f} s of video): {r['peak_rss_mb']:.0f} MB "
              f"(target < 1536 MB) {'OK' if r['peak_rss_mb'] < 1536 else 'ABOVE TARGET'}; "
              f"{r['frames'] / r['seconds']:.1f} frames/s")


if __name__ == "__main__":
    main()
