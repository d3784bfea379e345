"""Rendered frames per second at 224 px with both cores: `python -m models.data.bench [--frames 48] [--clips 4]`.

Runs the generator itself (rig, motion, render, truth read-back, occlusion) in 2 worker processes (one per core).
Each worker first makes a warm-up clip (shader compilation is a one-off per process), then all workers start
together and make their share of the clips; the figure is all frames made / wall time from that common start to
the last worker's end, so it is what both cores deliver at once. Also printed: CPU time per frame and where the
time of one frame goes (summed over the workers). Workbench, then Cycles.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time


def _work(engine, size, frames, seeds, barrier, results):
    from . import render
    from .generate import _init, make_clip
    _init(1)
    make_clip(seeds[0] + 10_000, size, 2, engine)  # warm-up: compiles shaders
    render.STAGE_SECONDS.clear()
    barrier.wait()
    t0, c0 = time.monotonic(), time.process_time()
    for seed in seeds:
        make_clip(seed, size, frames, engine, threads=1)
    t1 = time.monotonic()
    results.put(dict(frames=frames * len(seeds), start=t0, end=t1, busy=t1 - t0, cpu=time.process_time() - c0,
                     stages=dict(render.STAGE_SECONDS)))


def bench(engine: str, size: int = 224, frames: int = 48, clips: int = 4, workers: int = 2) -> float:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    seeds = [900_000 + k for k in range(clips)]
    procs = [ctx.Process(target=_work, args=(engine, size, frames, seeds[w::workers], barrier, results))
             for w in range(workers)]
    for p in procs:
        p.start()
    res = [results.get() for _ in procs]
    for p in procs:
        p.join()
    n = sum(r["frames"] for r in res)
    wall = max(r["end"] for r in res) - min(r["start"] for r in res)
    fps = n / wall
    print(f"{engine}: {fps:.1f} frames/s at {size}px with {workers} workers ({n} frames in {wall:.1f}s wall, all "
          f"workers at once after a warm-up clip each; {1000 * sum(r['cpu'] for r in res) / n:.1f} ms CPU per "
          f"frame, all threads)", flush=True)
    stages = {}
    for r in res:
        for k, v in r["stages"].items():
            stages[k] = stages.get(k, 0.0) + v
    stages["other (rig, motion, scene build, camera, FK check)"] = sum(r["busy"] for r in res) - sum(stages.values())
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {k:52s} {1000 * v / n:7.2f} ms per frame (wall, per worker)", flush=True)
    return fps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engines", default="workbench,cycles")
    a = ap.parse_args(argv)
    for e in a.engines.split(","):
        bench(e, a.size, a.frames if e == "workbench" else max(4, a.frames // 6), a.clips, a.workers)


if __name__ == "__main__":
    main()
