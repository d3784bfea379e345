"""Seeded procedural motions for procedural rigs: gaits, waves down chains, flapping, idle noise, reaching.

Every bone gets a swing (two angles about axes perpendicular to the bone, chosen from the world direction its
role moves in: legs swing fore-aft, wings flap about the forward axis, tails and snakes undulate sideways), limited
per joint, and a twist about the bone axis that is a per-bone function of its swing (correlated with swing and
limited per joint, as real twist is), plus a little slow noise. Local rotation = swing @ twist, in the bone's rest
frame; this is Blender's `matrix_basis` rotation. The root also translates and turns (root motion).
All rotation maths comes from the core (`mocap_blender.core.rotations`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mocap_blender.core.rotations import rotvec_to_matrix

from .rigs import Rig

DEG = np.pi / 180.0

# role: (primary amplitude, secondary amplitude, twist limit) in degrees, primary world axis, one-sided primary
_ROLE = {
    "root": (8, 6, 8, "x", False),
    "spine": (12, 10, 12, "x", False),
    "neck": (25, 25, 30, "x", False),
    "head": (30, 30, 45, "x", False),
    "jaw": (25, 3, 5, "x", True),
    "antenna": (35, 35, 20, "perp", False),
    "clavicle": (12, 12, 8, "y", False),
    "arm": (55, 40, 60, "x", False),
    "digit": (45, 10, 10, "perp", True),
    "leg": (40, 15, 25, "x", False),
    "foot": (30, 10, 15, "x", False),
    "wing": (50, 20, 25, "y", False),
    "fin": (35, 15, 20, "perp", False),
    "chain": (20, 10, 12, "z", False),
    "tail": (25, 20, 15, "z", False),
    "tentacle": (30, 30, 35, "perp", False),
    "helper": (5, 5, 30, "x", False),
}
_AXES = dict(x=np.array([1.0, 0, 0]), y=np.array([0, 1.0, 0]), z=np.array([0, 0, 1.0]))

STYLES = dict(
    biped=("walk", "run", "idle", "reach", "random"),
    quadruped=("walk", "trot", "gallop", "idle", "random"),
    manylegged=("walk", "idle", "random"),
    winged=("flap", "walk", "idle", "random"),
    snake=("slither", "idle", "random"),
    fish=("swim", "idle", "random"),
    tentacled=("swim", "reach", "idle", "random"),
    longtailed=("walk", "run", "idle", "reach", "random"),
    machine=("walk", "reach", "idle", "random"),
    tree=("wave", "reach", "idle", "random"),
)


@dataclass
class Motion:
    basis_rot: np.ndarray  # (T, J, 3, 3) local rotations (matrix_basis)
    root_loc: np.ndarray  # (T, 3) root matrix_basis translation (in the root's rest frame)
    style: str
    fps: float


def _smooth_noise(rng, t, n, amp, fmin=0.1, fmax=0.8, k=3):
    """(T, n) sums of k random sinusoids, unit-ish variance times amp."""
    f = rng.uniform(fmin, fmax, (k, n))
    ph = rng.uniform(0, 2 * np.pi, (k, n))
    w = rng.uniform(0.5, 1.0, (k, n))
    return amp * (w[None] * np.sin(2 * np.pi * f[None] * t[:, None, None] + ph[None])).sum(1) / np.sqrt(k / 2)


def _perp(v, axis):
    """v projected perpendicular to unit `axis`, normalised (None if degenerate)."""
    p = v - np.dot(v, axis) * axis
    n = np.linalg.norm(p)
    return p / n if n > 0.25 else None


def make_motion(rig: Rig, seed: int, n_frames: int, fps: float, style: str | None = None) -> Motion:
    rng = np.random.default_rng([int(seed), 104729])
    if style is None:
        style = str(rng.choice(STYLES[rig.family]))
    J, T = rig.n_joints, n_frames
    t = np.arange(T) / fps
    rest = rig.rest[:, :3, :3]
    dirs = rest[:, :, 1]  # bone axes in armature space
    ones = np.ones(J)
    amp1, amp2, tlim = np.zeros(J), np.zeros(J), np.zeros(J)
    one_sided = np.zeros(J, bool)
    a1 = np.zeros((J, 3))  # local swing axes (perpendicular to local Y)
    a2 = np.zeros((J, 3))
    y = np.array([0, 1.0, 0])
    for j, role in enumerate(rig.roles):
        p1, p2, tl, ax, os_ = _ROLE.get(role, _ROLE["chain"])
        amp1[j], amp2[j], tlim[j], one_sided[j] = p1 * DEG, p2 * DEG, tl * DEG, os_
        if ax == "perp":
            w = np.cross(dirs[j], [0, 0, 1.0])
            w = w if np.linalg.norm(w) > 0.2 else np.cross(dirs[j], [1.0, 0, 0])
        else:
            w = _AXES[ax]
        loc = rest[j].T @ w
        l1 = _perp(loc, y)
        for alt in ("z", "x", "y"):
            if l1 is None:
                l1 = _perp(rest[j].T @ _AXES[alt], y)
        a1[j] = l1
        a2[j] = np.cross(y, l1)
    # per-joint limits (random, asymmetric) and twist coupling
    scale = rng.uniform(0.6, 1.2, J)
    lo1 = -amp1 * scale * np.where(one_sided, 0.05, rng.uniform(0.5, 1.0, J))
    hi1 = amp1 * scale
    lim2 = amp2 * rng.uniform(0.5, 1.0, J)
    tlim = tlim * rng.uniform(0.5, 1.0, J)
    c1 = rng.uniform(-0.6, 0.6, J)
    c2 = rng.uniform(-0.6, 0.6, J)
    c12 = rng.uniform(-0.8, 0.8, J)

    s1 = np.zeros((T, J))
    s2 = np.zeros((T, J))
    freq = rng.uniform(0.6, 1.6)
    if style in ("run", "gallop", "trot"):
        freq *= 1.6
    w = 2 * np.pi * freq
    limb = rig.limb
    n_limb = max(int(limb.max()) + 1, 1)
    limb_phase = rng.uniform(0, 2 * np.pi, n_limb)
    # gait phases: alternate left/right; front/back offset by the limb's fore-aft position
    cy = np.zeros(n_limb)
    cs = np.zeros(n_limb)
    for k in range(n_limb):
        m = limb == k
        if m.any():
            cy[k] = rig.heads[m, 1].min()
            cs[k] = np.sign(rig.side[m].mean())
    order = np.argsort(np.argsort(cy))
    gait_lag = {"walk": 0.5, "trot": 1.0, "gallop": 0.15, "run": 0.5}.get(style, 0.5)
    gait_phase = np.pi * (cs > 0) + gait_lag * np.pi * order
    pos = rig.chain_pos.astype(float)
    lag = rng.uniform(0.3, 1.0)
    roles = np.array(rig.roles)
    legish = np.isin(roles, ["leg", "foot"])
    armish = np.isin(roles, ["arm", "clavicle", "digit"])
    chainish = np.isin(roles, ["chain", "tail", "tentacle", "spine", "neck", "fin", "antenna"])
    wingish = roles == "wing"
    amp = rng.uniform(0.4, 1.0)

    if style in ("walk", "run", "trot", "gallop"):
        ph = gait_phase[np.maximum(limb, 0)]
        base = np.sin(w * t[:, None] + ph[None] - 0.6 * pos[None])
        flex = 0.5 + 0.5 * np.sin(w * t[:, None] + ph[None] + 1.2 - 0.6 * pos[None])
        s1 += np.where(legish & (pos == 0), amp * base, 0) * hi1
        s1 += np.where(legish & (pos > 0), amp * (2 * flex - 1), 0) * np.maximum(hi1, -lo1)
        s1 += np.where(armish, -0.6 * amp * base, 0) * hi1
        s1 += np.where(chainish, 0.3 * np.sin(w * t[:, None] - lag * pos[None]), 0) * hi1
        s1 += np.where(wingish, 0.2 * base, 0) * hi1
        s2 += np.where(roles == "spine", 0.4 * np.sin(w * t[:, None]), 0) * lim2
    elif style in ("slither", "swim", "wave"):
        ph = limb_phase[np.maximum(limb, 0)]
        wave = np.sin(w * t[:, None] - lag * pos[None] + ph[None] * (style == "wave"))
        grow = np.clip(0.4 + 0.15 * pos, 0, 1.0)[None]
        s1 += amp * wave * grow * hi1 * np.where(roles == "helper", 0.2, 1.0)
        s2 += 0.3 * amp * np.cos(w * t[:, None] - lag * pos[None]) * lim2 * np.isin(roles, ["tentacle", "wing"])
        s1 += np.where(wingish, np.sin(w * t[:, None] - 0.8 * pos[None]) * cs[np.maximum(limb, 0)] * 0.8, 0) * hi1
    elif style == "flap":
        side = np.where(rig.side == 0, 1.0, rig.side)
        flap = np.sin(w * 1.8 * t[:, None] - 0.7 * pos[None])
        s1 += np.where(wingish, amp * flap * side[None], 0) * hi1
        s2 += np.where(wingish, 0.4 * np.cos(w * 1.8 * t[:, None]), 0) * lim2
        s1 += np.where(legish, 0.5, 0) * hi1 + np.where(chainish, 0.3 * flap, 0) * hi1
    elif style == "random":
        s1 += _smooth_noise(rng, t, J, 0.7, 0.2, 1.5) * np.maximum(hi1, -lo1)
        s2 += _smooth_noise(rng, t, J, 0.7, 0.2, 1.5) * lim2
    if style == "reach":
        pick = rng.random(n_limb) < 0.6
        tgt1 = rng.uniform(-0.3, 1.0, J)
        tgt2 = rng.uniform(-1.0, 1.0, J)
        t0, t1 = np.sort(rng.uniform(0, t[-1] + 1e-6, 2))
        ramp = np.clip((t - t0) / max(t1 - t0, 0.2), 0, 1)
        ramp = ramp * ramp * (3 - 2 * ramp)
        sel = pick[np.maximum(limb, 0)] & (limb >= 0)
        s1 += ramp[:, None] * np.where(sel, tgt1, 0.2 * tgt1)[None] * hi1
        s2 += ramp[:, None] * np.where(sel, tgt2, 0.2 * tgt2)[None] * lim2
    # idle noise everywhere (breathing, small shifts)
    idle = 0.6 if style == "idle" else 0.12
    s1 += _smooth_noise(rng, t, J, idle, 0.1, 0.8) * np.maximum(hi1, -lo1) * ones
    s2 += _smooth_noise(rng, t, J, idle, 0.1, 0.8) * lim2
    s1 += rng.uniform(-0.15, 0.3, J)[None] * hi1  # a per-clip pose offset
    # limits
    s1 = np.clip(s1, lo1, hi1)
    s2 = np.clip(s2, -lim2, lim2)
    n1 = s1 / np.maximum(np.maximum(hi1, -lo1), 1e-6)
    n2 = s2 / np.maximum(lim2, 1e-6)
    twist = tlim * np.clip(c1 * n1 + c2 * n2 + c12 * n1 * n2 + _smooth_noise(rng, t, J, 0.05), -1, 1)
    swing = s1[..., None] * a1[None] + s2[..., None] * a2[None]
    rot = rotvec_to_matrix(swing) @ rotvec_to_matrix(twist[..., None] * y)

    # root motion: travel along the facing direction, turn, bob
    r0 = rest[0]
    h = rig.height
    speed = {"walk": 0.4, "run": 0.9, "trot": 0.7, "gallop": 1.2, "slither": 0.4, "swim": 0.4, "flap": 0.3}.get(
        style, 0.05) * h * rng.uniform(0.3, 1.0)
    yaw_rate = rng.normal(0, 0.25)
    yaw = yaw_rate * t + 0.05 * np.sin(0.7 * w * t)
    fwd = np.stack([np.sin(yaw), -np.cos(yaw), 0 * yaw], -1)
    travel = np.cumsum(fwd * speed / fps, axis=0)
    travel -= travel[0]
    bob = (0.02 * h * np.sin(2 * w * t) * (style in ("walk", "run", "trot", "gallop")) +
           0.04 * h * np.sin(w * 1.8 * t) * (style == "flap") + 0.01 * h * np.sin(w * 0.5 * t))
    disp = travel + bob[:, None] * np.array([0, 0, 1.0])
    root_loc = disp @ r0  # = (r0.T @ d) per frame: the displacement in the root's rest frame
    turn_world = np.stack([0.03 * np.sin(w * t), 0.02 * np.sin(w * t + 1), yaw], -1)
    turn = rotvec_to_matrix(turn_world @ r0)  # world-axis rotation expressed in the root's frame
    rot[:, 0] = turn @ rot[:, 0]
    return Motion(basis_rot=rot, root_loc=root_loc, style=style, fps=float(fps))
