"""Headless capture, one clip per job (for a render farm manager such as Flamenco or Deadline).

    python -m mocap_blender.batch --blend rig.blend --armature Armature --video clip.mp4 --out out.blend \
        [--bvh out.bvh] [--frame-start 1] [--reference-frame 1] [--camera Camera] [--action-name Walk] \
        [--smoothing 1.0] [--no-root-motion] [--contacts] [--first 0 --last 99]

Runs with the `bpy` module (pip install bpy), from the repository root or wherever `mocap_blender` is importable.
Exit status: 0 on success, 2 on bad input (the message, starting with "error:", on stderr), 1 on an unexpected
failure. The input .blend is never overwritten unless --out names it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mocap_blender.batch",
                                description="Capture the motion in a video onto an armature in a .blend file.")
    p.add_argument("--blend", required=True, help="the .blend file holding the rig")
    p.add_argument("--armature", required=True, help="name of the armature object")
    p.add_argument("--video", required=True, help="the video file")
    p.add_argument("--out", required=True, help="the .blend file to write (with the new action)")
    p.add_argument("--bvh", help="also write the captured motion as BVH")
    p.add_argument("--frame-start", type=int, help="scene frame of the first video frame (default: scene start)")
    p.add_argument("--reference-frame", type=int, help="scene frame of the reference pose (default: current)")
    p.add_argument("--camera", help="name of the camera object the video was shot from (default: front view)")
    p.add_argument("--action-name", help="name of the new action (default: the video's file name)")
    p.add_argument("--smoothing", type=float, default=1.0, help="temporal smoothing in frames (0: off)")
    p.add_argument("--no-root-motion", action="store_true", help="do not key the root bone's location")
    p.add_argument("--contacts", action="store_true",
                   help="pin the end bones (feet, claws, tips) where they rest on the ground (no foot skate)")
    p.add_argument("--first", type=int, help="first video frame to capture (from 0)")
    p.add_argument("--last", type=int, help="last video frame to capture (inclusive)")
    return p.parse_args(argv)


def _export_bvh(obj, path, frame_start, frame_end) -> None:
    import addon_utils
    import bpy
    addon_utils.enable("io_anim_bvh", default_set=False)
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    res = bpy.ops.export_anim.bvh(filepath=os.path.abspath(path), frame_start=frame_start, frame_end=frame_end,
                                  rotate_mode='NATIVE', root_transform_only=False)
    if 'FINISHED' not in res:
        raise RuntimeError(f"BVH export failed: {res}")


def run(args: argparse.Namespace) -> dict:
    import bpy

    from . import api
    from .core.errors import MocapError

    for label, path in (("--blend", args.blend), ("--video", args.video)):
        if not os.path.isfile(path):
            raise MocapError(f"{label} {path!r} does not exist. Check the path.")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise MocapError(f"--out folder {out_dir!r} does not exist. Create it first.")
    video = os.path.abspath(args.video)
    bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.blend), load_ui=False)
    obj = bpy.data.objects.get(args.armature)
    if obj is None:
        arms = [o.name for o in bpy.data.objects if o.type == 'ARMATURE']
        raise MocapError(f"No object named {args.armature!r} in {args.blend!r}. Armatures there: "
                         f"{', '.join(arms) if arms else 'none'}.")
    camera = None
    if args.camera:
        camera = bpy.data.objects.get(args.camera)
        if camera is None:
            raise MocapError(f"No camera named {args.camera!r} in {args.blend!r}.")
    if bpy.context.view_layer.objects.get(obj.name) is not None:
        bpy.context.view_layer.objects.active = obj
    frame_range = None
    if args.first is not None or args.last is not None:
        from .core.video import VideoReader
        n = VideoReader(video).n_frames
        frame_range = (args.first or 0, n - 1 if args.last is None else args.last)
    t0 = time.perf_counter()
    last = [-1.0]

    def progress(done, total, message):
        now = time.perf_counter()
        if now - last[0] > 2.0 or done == total:
            last[0] = now
            print(f"[mocap] {message}", flush=True)

    gen = api.capture_iter(obj, video, frame_start=args.frame_start, reference_frame=args.reference_frame,
                           camera=camera, action_name=args.action_name, smoothing=args.smoothing,
                           root_motion=not args.no_root_motion, frame_range=frame_range, contacts=args.contacts)
    try:
        while True:
            progress(*next(gen))
    except StopIteration as stop:
        outcome = stop.value
    secs = time.perf_counter() - t0
    n = outcome.result.n_frames
    bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(args.out), check_existing=False)
    if args.bvh:
        _export_bvh(obj, args.bvh, outcome.frame_start, outcome.frame_start + n - 1)
    for note in outcome.notes:
        print(f"[mocap] {note}")
    print(f"[mocap] {n} frames -> action {outcome.action.name!r} on {obj.name!r} in {secs:.1f} s "
          f"({n / max(secs, 1e-9):.1f} frames/s on the {api.MODEL.device or 'CPU'}); wrote {args.out}"
          + (f" and {args.bvh}" if args.bvh else ""))
    return {"action": outcome.action.name, "frames": n, "seconds": secs}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from .core.errors import MocapError
    except ImportError:  # pragma: no cover
        raise
    try:
        run(args)
    except MocapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # unexpected: still a clear one-line message, plus the traceback for a bug report
        import traceback
        traceback.print_exc()
        print(f"error: unexpected failure ({type(exc).__name__}: {exc}). Please report it.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
