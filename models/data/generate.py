"""Generate clips: `python -m models.data.generate --out DIR --n N --seed S [--size 160] [--frames 48]
[--engine workbench|cycles] [--workers 2] [--real-fraction F]`.

Clip k uses seed S+k and is written to DIR/clip_<seed>.npz (one compressed shard per clip, format in README.md).
Deterministic by seed, resumable (finished clips are skipped; files are written to a temporary name and renamed),
sharded by seed (machines given disjoint seed ranges make disjoint sets). Each worker is a separate process with
its own bpy. A contact sheet of sample frames with the projected skeleton is written to DIR/contact_sheet.png.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

_W: dict = {}


def clip_path(out: Path, seed: int) -> Path:
    return Path(out) / f"clip_{int(seed):010d}.npz"


def is_real(seed: int, real_fraction: float) -> bool:
    return real_fraction > 0 and np.random.default_rng([int(seed), 99]).random() < real_fraction


def make_clip(seed: int, size: int = 160, frames: int = 48, engine: str = "workbench", real_fraction: float = 0.0,
              floor: bool = True, threads: int = 1, fps: float | None = None) -> dict:
    """One clip as a shard dict (imports bpy)."""
    from mocap_blender.core.skeleton import Skeleton, forward_kinematics

    from . import render
    rng = np.random.default_rng([int(seed), 5])
    if fps is None:
        fps = float(rng.choice([24.0, 25.0, 30.0]))
    if is_real(seed, real_fraction):
        from . import real
        d = real.render_real_clip(seed, size=size, n_frames=frames, engine=engine, floor=floor, threads=threads,
                                  fps=fps)
    else:
        from .motions import make_motion
        from .rigs import make_rig
        rig = make_rig(seed)
        motion = make_motion(rig, seed, frames, fps)
        d = render.render_clip(rig, motion, seed, size=size, engine=engine, floor=floor, threads=threads)
    # truth check: the saved local rotations reproduce the saved heads through the core FK
    skel = Skeleton.from_arrays(d["names"], d["parents"], d["rest"], d["tails"])
    pose = forward_kinematics(skel, d["basis_rot"].astype(np.float64), d["root_loc"].astype(np.float64))
    err = float(np.abs(pose[..., :3, 3] - d["heads"]).max())
    if err > 1e-4 * max(skel.height, 1.0):
        raise RuntimeError(f"clip {seed}: FK of the saved rotations misses the saved heads by {err:.2e}")
    return d


def write_shard(path: Path, d: dict):
    tmp = Path(str(path) + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **d)
    os.replace(tmp, path)


def _init(threads):
    # A parent that imported bpy passes Blender's own script folders on sys.path; there `import bpy` would find
    # the inner scripts package instead of the bpy module. Drop them: this process imports bpy afresh.
    sys.path[:] = [p for p in sys.path if not (f"{os.sep}bpy{os.sep}" in p and f"{os.sep}scripts" in p)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _W["threads"] = threads
    try:  # die with the parent (Linux), so stopping the generator stops its workers
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)
    except Exception:
        pass
    fd = os.open(os.devnull, os.O_WRONLY)  # Blender prints a line per rendered frame; keep the bar readable
    os.dup2(fd, 1)


def _job(args):
    seed, out, size, frames, engine, real_fraction = args
    t0 = time.time()
    try:
        d = make_clip(seed, size, frames, engine, real_fraction, threads=_W.get("threads", 1))
        write_shard(clip_path(out, seed), d)
        return seed, str(d["family"]), len(d["names"]), time.time() - t0, None
    except Exception:  # one bad clip must not stop a long run
        return seed, "", 0, time.time() - t0, traceback.format_exc()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--engine", choices=["workbench", "cycles"], default="workbench")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="render threads per worker (default: cores/workers)")
    ap.add_argument("--real-fraction", type=float, default=0.0)
    ap.add_argument("--sheet", type=int, default=16, help="clips on the contact sheet (0: none)")
    a = ap.parse_args(argv)
    from tqdm import tqdm
    a.out.mkdir(parents=True, exist_ok=True)
    seeds = [a.seed + k for k in range(a.n)]
    todo = [s for s in seeds if not clip_path(a.out, s).exists()]
    threads = a.threads or max(1, (os.cpu_count() or 2) // max(a.workers, 1))
    print(f"{len(seeds) - len(todo)} of {len(seeds)} clips already present in {a.out}; making {len(todo)} "
          f"({a.engine}, {a.size}px, {a.frames} frames, {a.workers} worker(s) x {threads} thread(s))", flush=True)
    jobs = [(s, a.out, a.size, a.frames, a.engine, a.real_fraction) for s in todo]
    failed = 0
    t0 = time.time()
    bar = tqdm(total=len(jobs), unit="clip", dynamic_ncols=True, mininterval=2.0)
    if jobs:
        ctx = mp.get_context("spawn")
        # workers are not recycled: with maxtasksperchild the pool's exit deadlocked after the last clip (30 Nov:
        # 3,200 clips; 10 clips at 2 per worker), and a worker's memory stays flat (481-490 MB over 80 clips)
        with ctx.Pool(a.workers, initializer=_init, initargs=(threads,)) as pool:
            for seed, fam, nj, dt, err in pool.imap_unordered(_job, jobs):
                bar.update(1)
                if err:
                    failed += 1
                    tqdm.write(f"clip {seed} failed:\n{err}", file=sys.stderr)
                else:
                    bar.set_postfix_str(f"{fam} J={nj} {dt:.1f}s", refresh=False)
    bar.close()
    dt = time.time() - t0
    made = len(jobs) - failed
    if made:
        print(f"made {made} clips in {dt:.0f}s ({made * a.frames / dt:.1f} frames/s overall); {failed} failed")
    if a.sheet:
        from .contact_sheet import contact_sheet
        paths = [clip_path(a.out, s) for s in seeds if clip_path(a.out, s).exists()][:a.sheet]
        if paths:
            contact_sheet(paths, a.out / "contact_sheet.png")
            print(f"contact sheet: {a.out / 'contact_sheet.png'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
