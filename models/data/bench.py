"""Rendered frames per second at 224 px with both cores: `python -m models.data.bench [--frames 48] [--clips 4]`.

Runs the generator itself (rig, motion, render, truth read-back, occlusion) in 2 worker processes (one per core),
each making whole clips, after a warm-up clip per worker (shader compilation is a one-off per process), for
Workbench and then Cycles.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time


def _work(args):
    engine, seed, size, frames = args
    from .generate import _init, make_clip
    _init(1)
    make_clip(seed + 10_000, size, 2, engine)  # warm-up: compiles shaders
    t0 = time.time()
    make_clip(seed, size, frames, engine, threads=1)
    return frames, time.time() - t0


def bench(engine: str, size: int = 224, frames: int = 48, clips: int = 4, workers: int = 2) -> float:
    ctx = mp.get_context("spawn")
    jobs = [(engine, 900_000 + k, size, frames) for k in range(clips)]
    t0 = time.time()
    with ctx.Pool(workers, maxtasksperchild=1) as pool:
        res = pool.map(_work, jobs, chunksize=1)
    wall = time.time() - t0
    per_worker = sum(f for f, _ in res) / sum(dt for _, dt in res)  # warm frames/s of one worker
    print(f"{engine}: {per_worker * workers:.1f} frames/s at {size}px with {workers} workers "
          f"({per_worker:.1f} per worker, warm; {sum(f for f, _ in res) / wall:.1f} including start-up and warm-up)",
          flush=True)
    return per_worker * workers


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--engines", default="workbench,cycles")
    a = ap.parse_args(argv)
    for e in a.engines.split(","):
        bench(e, a.size, a.frames if e == "workbench" else max(4, a.frames // 6), a.clips)


if __name__ == "__main__":
    main()
