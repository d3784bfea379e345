"""Breadth of a set: `python -m models.data.stats DIR` (generated shards) or `python -m models.data.stats --rigs 10000
[--seed 0]` (the rig generator alone, no rendering: the rig of clip k is make_rig(seed + k)).

Prints the number of clips, distinct topologies (parent structures), the joint-count histogram and family shares.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

BINS = (5, 10, 20, 30, 40, 60, 80, 100, 125, 151)


def summarise(records) -> str:
    """records: iterable of (family, topology, n_joints, source)."""
    recs = list(records)
    n = len(recs)
    if not n:
        return "no clips"
    fams = collections.Counter(r[0] for r in recs)
    tops = {r[1] for r in recs}
    joints = np.array([r[2] for r in recs])
    real = sum(1 for r in recs if r[3] != "procedural")
    hist, _ = np.histogram(joints, bins=BINS)
    lines = [f"clips: {n} ({real} real)", f"distinct topologies: {len(tops)}",
             f"joints: min {joints.min()}, median {int(np.median(joints))}, max {joints.max()}",
             "joint-count histogram:"]
    for lo, hi, c in zip(BINS[:-1], BINS[1:], hist):
        lines.append(f"  {lo:4d}-{hi - 1:<4d} {c:6d}  {'#' * int(round(60 * c / max(hist.max(), 1)))}")
    lines.append("family shares:")
    for f, c in sorted(fams.items(), key=lambda x: -x[1]):
        lines.append(f"  {f:12s} {c:6d}  {100 * c / n:5.1f}%")
    return "\n".join(lines)


def shard_records(folder: Path):
    for p in sorted(Path(folder).glob("clip_*.npz")):
        with np.load(p) as z:
            yield str(z["family"]), str(z["topology"]), int(z["parents"].shape[0]), str(z["source"])


def rig_records(n: int, seed: int = 0):
    from .rigs import make_rig
    for k in range(n):
        r = make_rig(seed + k)
        yield r.family, r.topology, r.n_joints, "procedural"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", type=Path)
    ap.add_argument("--rigs", type=int, default=0, help="summarise the rig generator over this many seeds instead")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.rigs:
        print(f"rig generator, seeds {a.seed}..{a.seed + a.rigs - 1} (no rendering)")
        print(summarise(rig_records(a.rigs, a.seed)))
    elif a.dir:
        print(f"set {a.dir}")
        print(summarise(shard_records(a.dir)))
    else:
        ap.error("give a folder of shards or --rigs N")


if __name__ == "__main__":
    main()
