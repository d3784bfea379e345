"""Benchmark of the contact clean-up (`mocap_blender.core.contacts`) on known motions with capture-like errors.

    .venv/bin/python tests/bench_contacts.py [--data data/eval] [--max-clips 40] [--degrees 2 4 8]

The clips' true motions (procedural rigs and the real rigs and motions of ../shared/mocap-dev, made by
`python -m models.data.generate --out data/eval --n 40 --seed 1000000 --size 160 --frames 48 --real-fraction 0.3`)
get smooth random errors like a capture's: every non-root bone turned by D degrees (standard deviation, smooth over
about 3 frames) and the root's location moved by 1% of the rig's height. The true contacts are the detector's on the
true motion. Printed per error size and group, over clips with true contacts: how many true contact frames the
detector finds on the erroneous motion (recall) and how many of its finds are true (precision); foot skate (mean
movement of the end points between consecutive true contact frames, % of the rig's height) of the truth, of the
erroneous motion and after clean-up; the rotation error of all non-root bones before and after (degrees); the time.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mocap_blender.core import contacts as C, rotations as R  # noqa: E402
from mocap_blender.core.skeleton import Skeleton, forward_kinematics, pose_tails  # noqa: E402
from mocap_blender.core.smoothing import smooth_positions  # noqa: E402


def smooth_noise(rng, shape, sigma=3.0):
    n = smooth_positions(rng.normal(0.0, 1.0, shape), sigma)
    return n / n.std()


def end_points(skel, rot, loc, leaves):
    return pose_tails(skel, forward_kinematics(skel, rot, loc))[:, list(leaves)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/eval")
    ap.add_argument("--max-clips", type=int, default=40)
    ap.add_argument("--degrees", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    ap.add_argument("--root-error", type=float, default=0.01, help="root location error, share of the height")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    files = sorted(glob.glob(os.path.join(a.data, "clip_*.npz")))[:a.max_clips]
    if not files:
        sys.exit(f"no clips in {a.data!r}: make them with models.data.generate (see this file's docstring)")
    print(f"{len(files)} clips of {a.data}; errors: bones D degrees, root {100 * a.root_error:g}% of the height")
    print("| D | group | clips with contacts | recall | precision | skate: truth / with errors / cleaned "
          "| rotation error: with errors -> cleaned | ms per 100 frames |")
    print("|---|---|---|---|---|---|---|---|")
    for deg in a.degrees:
        rng = np.random.default_rng(a.seed)
        rows = {"procedural": [], "real": []}
        for f in files:
            d = np.load(f, allow_pickle=True)
            skel = Skeleton.from_arrays(list(d["names"]), d["parents"], d["rest"].astype(float),
                                        d["tails"].astype(float))
            rot, loc, fps = d["basis_rot"].astype(float), d["root_loc"].astype(float), float(d["fps"])
            up = np.linalg.inv(d["armature_world"][:3, :3].astype(float)) @ np.array([0.0, 0.0, 1.0])
            n_frames, n_joints = rot.shape[:2]
            noisy = rot @ R.rotvec_to_matrix(smooth_noise(rng, (n_frames, n_joints, 3)) * np.radians(deg))
            noisy[:, skel.root] = rot[:, skel.root]
            noisy_loc = loc + smooth_noise(rng, (n_frames, 3)) * a.root_error * skel.height
            _, truth = C.clean_contacts(skel, rot, loc, fps, up)
            t0 = time.perf_counter()
            fixed, found = C.clean_contacts(skel, noisy, noisy_loc, fps, up)
            ms = 1000.0 * (time.perf_counter() - t0) * 100.0 / n_frames
            if not truth.planted.any():
                continue
            both = truth.planted[1:] & truth.planted[:-1]

            def skate(r, l):
                p = end_points(skel, r, l, truth.leaves)
                return float((np.linalg.norm(np.diff(p, axis=0), axis=-1)[both] / skel.height).mean() * 100)

            err = lambda r: float(np.degrees(R.geodesic_angle(np.delete(r, skel.root, 1),
                                                              np.delete(rot, skel.root, 1))).mean())
            hit = (truth.planted & found.planted).sum()
            group = "procedural" if str(d["source"]) == "procedural" else "real"
            rows[group].append((truth.planted.sum(), hit, found.planted.sum(), skate(rot, loc),
                                skate(noisy, noisy_loc), skate(fixed, noisy_loc), err(noisy), err(fixed), ms))
        for group, r in rows.items():
            if not r:
                continue
            r = np.array(r)
            recall = r[:, 1].sum() / r[:, 0].sum()
            precision = r[:, 1].sum() / max(r[:, 2].sum(), 1)
            m = r.mean(axis=0)
            print(f"| {deg:g} | {group} | {len(r)} | {100 * recall:.0f}% | {100 * precision:.0f}% | {m[3]:.3f} / "
                  f"{m[4]:.3f} / {m[5]:.3f} | {m[6]:.2f} -> {m[7]:.2f} | {m[8]:.1f} |")


if __name__ == "__main__":
    main()
