"""Seeded procedural rigs of many families, as plain arrays first (testable without Blender).

A `Rig` holds, per bone: name, parent, rest head and tail (armature space, Z up, the creature faces -Y),
roll, deform flag, a cross-section shape for the body, a colour pattern, and the motion hints that
`motions.py` reads (role, limb group, side, position along its chain). `make_rig(seed)` picks a family;
`make_rig(seed, family)` forces one. Bones come out in the core `Skeleton` order (parent first, depth first),
so `rig.skeleton()` (= `Skeleton.from_arrays(names, parents, rest, tails)`) keeps that order unchanged.

Rest matrices follow Blender's own rule for an edit bone (head, tail, roll) -> `bone.matrix_local`
(`vec_roll_to_mat3`), so the arrays agree with the armature Blender builds from them.
"""
from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass, field

import numpy as np

from mocap_blender.core.rotations import axis_angle_to_matrix
from mocap_blender.core.skeleton import Skeleton

FAMILIES = ("biped", "quadruped", "manylegged", "winged", "snake", "fish", "tentacled", "longtailed", "machine",
            "tree")
MIN_JOINTS, MAX_JOINTS = 5, 150

# Cross-section kinds of a body segment (none is round, so twist about the bone shows).
SHAPE_BOX, SHAPE_FLAT, SHAPE_FIN, SHAPE_HORN, SHAPE_TRI = 0, 1, 2, 3, 4
SHAPE_NAMES = ("box", "flat", "fin", "horn", "tri")
# Columns of Rig.shape.
SH_KIND, SH_RADIUS, SH_ASPECT, SH_TAPER, SH_FEATURE, SH_ANGLE = range(6)


@dataclass
class Rig:
    family: str
    seed: int
    names: list
    parents: np.ndarray  # (J,) int64, -1 root, parent first
    heads: np.ndarray  # (J, 3) float64 rest heads, armature space
    tails: np.ndarray  # (J, 3)
    rolls: np.ndarray  # (J,) radians (Blender edit-bone roll)
    deform: np.ndarray  # (J,) bool; helper bones do not deform and have no body
    shape: np.ndarray  # (J, 6): kind, radius, aspect (depth/width), taper, feature size, shape angle
    color: np.ndarray  # (J, 3) base colour (linear RGB 0-1) of the segment
    pattern: np.ndarray  # (J, 4) int: side-stripe sector, ring-stripe every n, spot seed, second-colour index
    palette: np.ndarray  # (4, 3) colours the patterns use
    roles: list  # per bone motion role (see motions.py)
    limb: np.ndarray  # (J,) int group id for gait phases (-1 none)
    side: np.ndarray  # (J,) float -1 right, 0 centre, +1 left (+X is the creature's left)
    chain_pos: np.ndarray  # (J,) int index along its chain (0 at the chain's base)
    info: dict = field(default_factory=dict)

    @property
    def n_joints(self) -> int:
        return len(self.names)

    @property
    def rest(self) -> np.ndarray:
        return rest_matrices(self.heads, self.tails, self.rolls)

    def skeleton(self) -> Skeleton:
        return Skeleton.from_arrays(self.names, self.parents, self.rest, self.tails)

    @property
    def topology(self) -> str:
        return topology_hash(self.parents)

    @property
    def height(self) -> float:
        pts = np.concatenate([self.heads, self.tails])
        return float(np.max(pts.max(0) - pts.min(0)))


def topology_hash(parents) -> str:
    """16 hex digits naming the parent structure (parent-first, depth-first order)."""
    p = np.asarray(parents, dtype=np.int64).tobytes()
    return hashlib.sha1(p).hexdigest()[:16]


# --- Blender's edit-bone rule --------------------------------------------------------------------

def roll_frames(heads, tails, rolls) -> np.ndarray:
    """(J, 3, 3) bone rest rotations exactly as Blender's vec_roll_to_mat3 (Y along the bone, roll about Y)."""
    d = np.asarray(tails, np.float64) - np.asarray(heads, np.float64)
    n = d / np.linalg.norm(d, axis=-1, keepdims=True)
    x, y, z = n[:, 0], n[:, 1], n[:, 2]
    safe, crit = 6.1e-3, 2.5e-4
    theta = 1.0 + y
    theta_alt = x * x + z * z
    ok = (theta > safe) | (theta_alt > crit * crit)
    theta = np.where(theta <= safe, 0.5 * theta_alt + 0.125 * theta_alt * theta_alt, theta)
    theta = np.where(ok, theta, 1.0)
    b = np.zeros(d.shape[:-1] + (3, 3))
    b[:, 0, 0] = 1 - x * x / theta
    b[:, 2, 2] = 1 - z * z / theta
    b[:, 0, 2] = b[:, 2, 0] = -x * z / theta
    b[:, 1, 0] = -x
    b[:, 0, 1] = x
    b[:, 1, 1] = y
    b[:, 2, 1] = z
    b[:, 1, 2] = -z
    b[~ok] = np.diag([-1.0, -1.0, 1.0])
    r = axis_angle_to_matrix(np.concatenate([np.asarray(rolls, np.float64)[:, None], n], axis=-1))
    return r @ b


def rest_matrices(heads, tails, rolls) -> np.ndarray:
    m = np.zeros((len(heads), 4, 4))
    m[:, :3, :3] = roll_frames(heads, tails, rolls)
    m[:, :3, 3] = heads
    m[:, 3, 3] = 1.0
    return m


# --- building ------------------------------------------------------------------------------------

def _unit(v):
    v = np.asarray(v, np.float64)
    return v / max(np.linalg.norm(v), 1e-12)


class _Builder:
    def __init__(self, rng: np.random.Generator, scale: float):
        self.rng = rng
        self.s = scale
        self.b: list[dict] = []
        self.kind_pool = rng.choice(5, size=rng.integers(2, 5), replace=False)
        self.roll_style = rng.choice(["zero", "right", "random", "mixed"])
        self.n_limbs = 0
        # some bodies are bulky (a bee, a manta, a fox: the real rigs are mostly volume, not sticks)
        self.bulk = float(rng.uniform(1.6, 3.2)) if rng.random() < 0.4 else 1.0

    def new_limb(self) -> int:
        self.n_limbs += 1
        return self.n_limbs - 1

    def add(self, name, parent, head, tail, role, *, radius, deform=True, limb=-1, side=0.0, pos=0, kind=None,
            aspect=None) -> int:
        rng = self.rng
        head, tail = np.asarray(head, np.float64), np.asarray(tail, np.float64)
        if np.linalg.norm(tail - head) < 1e-4:
            tail = head + np.array([0, 0, 1e-2 * self.s])
        if kind is None:
            kind = int(rng.choice(self.kind_pool))
        if aspect is None:
            aspect = rng.uniform(0.35, 0.8)
        self.b.append(dict(name=name, parent=parent, head=head, tail=tail, role=role, deform=deform, limb=limb,
                           side=side, pos=pos, kind=kind, radius=max(1.4 * radius * self.bulk, 0.012 * self.s),
                           aspect=aspect))
        return len(self.b) - 1

    def chain(self, name, parent, start, dirs, lengths, role, *, radius, limb=-1, side=0.0, taper=1.0,
              kind=None) -> list[int]:
        """Connected bones from `start` along directions `dirs` (one per bone)."""
        ids = []
        p = np.asarray(start, np.float64)
        r = radius
        for i, (d, ln) in enumerate(zip(dirs, lengths)):
            q = p + _unit(d) * ln
            ids.append(self.add(f"{name}{i + 1:02d}" if len(lengths) > 1 else name, parent, p, q, role,
                                radius=r, limb=limb, side=side, pos=i, kind=kind))
            parent, p, r = ids[-1], q, r * taper
        return ids

    def curve_dirs(self, d0, n, bend=0.0, wiggle=0.1, axis=None):
        """n directions starting at d0, turning by `bend` radians per bone about `axis`, plus noise."""
        rng = self.rng
        d = _unit(d0)
        axis = _unit(axis if axis is not None else np.cross(d, [0, 0, 1]) + 1e-6)
        out = []
        for _ in range(n):
            out.append(d.copy())
            rot = axis_angle_to_matrix(np.r_[bend + rng.normal(0, wiggle), axis])
            d = _unit(rot @ d + rng.normal(0, wiggle, 3) * 0.3)
        return out

    def mirror_pair(self, fn, **kw):
        """Call fn(side=+1) and fn(side=-1) with the same random draws (symmetric limbs)."""
        state = self.rng.bit_generator.state
        a = fn(side=1.0, **kw)
        after = self.rng.bit_generator.state
        self.rng.bit_generator.state = state
        b = fn(side=-1.0, **kw)
        self.rng.bit_generator.state = after
        return a, b


def _sfx(side):
    return ".L" if side > 0 else (".R" if side < 0 else "")


def _leg(B, parent, hip, side, n, length, radius, *, name="leg", forward_foot=True, spread=0.0, splay=0.0,
         digitigrade=False, role="leg"):
    """A leg from `hip` down to the ground (z = 0), n bones, optional foot pointing forward (-Y)."""
    rng = B.rng
    limb = B.new_limb()
    hip = np.asarray(hip, np.float64)
    out = np.array([side * spread, 0, 0])
    n_up = max(n - (1 if forward_foot else 0), 1)
    seg = length / n_up
    dirs = []
    for i in range(n_up):
        zig = (0.35 if i % 2 == 0 else -0.35) if digitigrade else rng.normal(0, 0.12)
        dirs.append(_unit(np.array([side * splay, zig, -1.0]) + out))
    ids = B.chain(f"{name}{_sfx(side)}_", parent, hip, dirs, [seg * rng.uniform(0.8, 1.2) for _ in dirs], role,
                  radius=radius, limb=limb, side=side, taper=0.8)
    if forward_foot:
        tip = B.b[ids[-1]]["tail"]
        ids.append(B.add(f"foot{_sfx(side)}_{name}", ids[-1], tip, tip + np.array([0, -seg * 0.6, -0.02 * B.s]),
                         "foot", radius=radius * 0.7, limb=limb, side=side, pos=len(ids)))
    return ids


def _arm(B, parent, shoulder, side, n, length, radius, *, name="arm", droop=0.6, fingers=0, finger_len=0.0,
         role="arm"):
    rng = B.rng
    limb = B.new_limb()
    d0 = _unit([side, rng.normal(0, 0.2), -droop])
    dirs = B.curve_dirs(d0, n, bend=0.0, wiggle=0.08)
    ids = B.chain(f"{name}{_sfx(side)}_", parent, shoulder, dirs, [length / n * rng.uniform(0.85, 1.15)
                                                                   for _ in dirs], role, radius=radius, limb=limb,
                  side=side, taper=0.85)
    tip = B.b[ids[-1]]["tail"]
    d = dirs[-1]
    for f in range(fingers):
        fan = _unit(d + np.array([0, (f - (fingers - 1) / 2) * 0.35, 0]))
        nb = int(rng.integers(1, 4))
        B.chain(f"finger{f}{_sfx(side)}_", ids[-1], tip, B.curve_dirs(fan, nb, bend=-0.2, wiggle=0.05),
                [finger_len / nb] * nb, "digit", radius=radius * 0.3, limb=limb, side=side)
    return ids


def _spine(B, parent, start, d0, n, length, radius, *, name="spine", role="spine", bend=0.0, taper=0.95,
           axis=None, wiggle=0.05):
    dirs = B.curve_dirs(d0, n, bend=bend, wiggle=wiggle, axis=axis)
    lens = [length / n * B.rng.uniform(0.8, 1.2) for _ in range(n)]
    return B.chain(f"{name}_", parent, start, dirs, lens, role, radius=radius, taper=taper)


def _head(B, parent, start, d, length, radius, *, jaw=True, extras=0):
    rng = B.rng
    h = B.add("head", parent, start, np.asarray(start) + _unit(d) * length, "head", radius=radius)
    if jaw and rng.random() < 0.6:
        B.add("jaw", h, np.asarray(start) + _unit(d) * length * 0.2 - np.array([0, 0, radius * 0.5]),
              np.asarray(start) + _unit(d) * length * 0.9 - np.array([0, 0, radius * 0.6]), "jaw",
              radius=radius * 0.45)
    for e in range(extras):  # ears, horns, antennae
        def one(side, e=e):
            base = np.asarray(start) + _unit(d) * length * rng.uniform(0.2, 0.6) + np.array([side * radius * 0.6, 0,
                                                                                              radius * 0.6])
            nb = int(rng.integers(1, 4))
            return B.chain(f"ear{e}{_sfx(side)}_", h, base, B.curve_dirs([side * 0.5, rng.normal(0, .5), 1], nb,
                                                                        bend=0.2, wiggle=0.1),
                           [length * rng.uniform(0.2, 0.6) / nb] * nb, "antenna", radius=radius * 0.25, side=side,
                           limb=B.new_limb())
        B.mirror_pair(one)
    return h


def _tail(B, parent, start, d, n, length, radius, *, name="tail", role="tail"):
    if n <= 0:
        return []
    limb = B.new_limb()
    dirs = B.curve_dirs(d, n, bend=B.rng.uniform(-0.15, 0.15), wiggle=0.06)
    return B.chain(f"{name}_", parent, start, dirs, [length / n] * n, role, radius=radius, limb=limb, taper=0.9)


# --- families ------------------------------------------------------------------------------------

def _biped(B):
    rng, s = B.rng, B.s
    leg_len = s * rng.uniform(0.4, 0.55)
    hip_w = s * rng.uniform(0.06, 0.14)
    r = s * rng.uniform(0.05, 0.1)
    root = B.add("hips", -1, [0, 0, leg_len], [0, 0, leg_len + s * 0.08], "root", radius=r * 1.3)
    sp = _spine(B, root, [0, 0, leg_len + s * 0.08], [0, rng.normal(0, 0.1), 1], int(rng.integers(2, 6)),
                s * rng.uniform(0.22, 0.32), r * 1.2)
    top = B.b[sp[-1]]["tail"]
    nk = _spine(B, sp[-1], top, [0, -0.15, 1], int(rng.integers(1, 4)), s * rng.uniform(0.04, 0.1), r * 0.5,
                name="neck", role="neck")
    _head(B, nk[-1], B.b[nk[-1]]["tail"], [0, -0.1, 1], s * rng.uniform(0.1, 0.16), r * 0.9,
          extras=int(rng.integers(0, 2)))
    sh_w = s * rng.uniform(0.08, 0.16)
    fingers = int(rng.choice([0, 0, 1, 3, 4, 5]))

    def arm(side):
        cl = B.add(f"clavicle{_sfx(side)}", sp[-1], top + [side * s * 0.02, 0, -s * 0.03],
                   top + [side * sh_w, 0, -s * 0.03], "clavicle", radius=r * 0.5, side=side)
        return _arm(B, cl, top + [side * sh_w, 0, -s * 0.03], side, int(rng.integers(2, 5)),
                    s * rng.uniform(0.28, 0.4), r * 0.55, droop=rng.uniform(0.0, 2.0), fingers=fingers,
                    finger_len=s * 0.06)
    B.mirror_pair(arm)
    nleg = int(rng.integers(2, 5))
    B.mirror_pair(lambda side: _leg(B, root, [side * hip_w, 0, leg_len], side, nleg, leg_len, r * 0.7,
                                    spread=0.03))
    if rng.random() < 0.2:
        _tail(B, root, [0, s * 0.05, leg_len], [0, 1, -0.5], int(rng.integers(2, 8)), s * 0.4, r * 0.4)


def _quadruped(B):
    rng, s = B.rng, B.s
    body_len = s * rng.uniform(0.45, 0.75)
    leg_len = s * rng.uniform(0.25, 0.45)
    r = s * rng.uniform(0.05, 0.1)
    root = B.add("pelvis", -1, [0, body_len / 2, leg_len], [0, body_len / 2 - s * 0.08, leg_len], "root",
                 radius=r * 1.3)
    sp = _spine(B, root, B.b[root]["tail"], [0, -1, rng.normal(0, 0.1)], int(rng.integers(2, 7)),
                body_len - s * 0.08, r * 1.2, taper=1.0)
    chest = B.b[sp[-1]]["tail"]
    nk = _spine(B, sp[-1], chest, [0, -0.6, rng.uniform(0.3, 1.0)], int(rng.integers(1, 6)),
                s * rng.uniform(0.1, 0.3), r * 0.7, name="neck", role="neck")
    _head(B, nk[-1], B.b[nk[-1]]["tail"], [0, -1, rng.uniform(-0.4, 0.2)], s * rng.uniform(0.12, 0.2), r * 0.8,
          extras=int(rng.integers(0, 3)))
    nleg = int(rng.integers(2, 5))
    w = r * rng.uniform(0.6, 1.2)
    dig = rng.random() < 0.5
    B.mirror_pair(lambda side: _leg(B, sp[-1], chest + [side * w, 0, 0], side, nleg, leg_len, r * 0.55,
                                    name="front", digitigrade=dig))
    B.mirror_pair(lambda side: _leg(B, root, [side * w, body_len / 2, leg_len], side, nleg, leg_len, r * 0.6,
                                    name="hind", digitigrade=dig))
    _tail(B, root, [0, body_len / 2, leg_len], [0, 1, rng.uniform(-0.5, 0.8)], int(rng.integers(0, 12)),
          s * rng.uniform(0.1, 0.5), r * 0.4)


def _manylegged(B):
    rng, s = B.rng, B.s
    nseg = int(rng.integers(1, 5))
    r = s * rng.uniform(0.06, 0.12)
    h = s * rng.uniform(0.15, 0.35)
    root = B.add("thorax", -1, [0, 0, h], [0, -s * 0.12, h], "root", radius=r * 1.2)
    body = _spine(B, root, [0, 0, h], [0, 1, rng.uniform(-0.2, 0.3)], nseg, s * rng.uniform(0.2, 0.45), r * 1.3,
                  name="abdomen", role="spine", taper=rng.uniform(0.8, 1.1))
    _head(B, root, B.b[root]["tail"], [0, -1, 0.1], s * 0.08, r * 0.8, jaw=False, extras=int(rng.integers(0, 2)))
    pairs = int(rng.choice([3, 4]))
    nb = int(rng.integers(3, 6))
    leg_len = s * rng.uniform(0.3, 0.6)
    for k in range(pairs):
        att = root if (k < 2 or not body) else body[min(k - 2, len(body) - 1)]
        y = np.interp(k, [0, pairs - 1], [-s * 0.1, s * 0.08])

        def leg(side, k=k, att=att, y=y):
            limb = B.new_limb()
            base = np.array([side * r * 0.8, y, h])
            d = [_unit([side, (k - pairs / 2) * 0.3, 0.6])] + [_unit([side * 0.4, (k - pairs / 2) * 0.2, -1])] * (nb - 1)
            lens = [leg_len * 0.35] + [leg_len * 0.65 / (nb - 1)] * (nb - 1)
            return B.chain(f"leg{k}{_sfx(side)}_", att, base, d, lens, "leg", radius=r * 0.3, limb=limb,
                           side=side, taper=0.85)
        B.mirror_pair(leg)


def _winged(B):
    rng, s = B.rng, B.s
    r = s * rng.uniform(0.05, 0.09)
    h = s * rng.uniform(0.25, 0.4)
    root = B.add("body", -1, [0, s * 0.1, h], [0, -s * 0.05, h + s * 0.02], "root", radius=r * 1.4)
    sp = _spine(B, root, B.b[root]["tail"], [0, -1, 0.3], int(rng.integers(1, 4)), s * 0.15, r * 1.2)
    nk = _spine(B, sp[-1], B.b[sp[-1]]["tail"], [0, -0.3, 1], int(rng.integers(1, 6)), s * rng.uniform(0.05, 0.25),
                r * 0.5, name="neck", role="neck")
    _head(B, nk[-1], B.b[nk[-1]]["tail"], [0, -1, 0.2], s * 0.1, r * 0.7, extras=int(rng.integers(0, 2)))
    span = s * rng.uniform(0.4, 0.9)
    nw = int(rng.integers(2, 5))
    nfing = int(rng.integers(0, 5))

    def wing(side):
        limb = B.new_limb()
        base = B.b[sp[-1]]["tail"] + np.array([side * r, 0, 0])
        dirs = B.curve_dirs([side, 0.1, 0.3], nw, bend=0, wiggle=0.1)
        ids = B.chain(f"wing{_sfx(side)}_", sp[-1], base, dirs, [span / nw] * nw, "wing", radius=r * 0.45,
                      limb=limb, side=side, taper=0.8, kind=SHAPE_FLAT)
        tip = B.b[ids[-1]]["tail"]
        for f in range(nfing):
            fd = _unit([side, 0.3 + 0.4 * f, -0.1])
            nf = int(rng.integers(1, 4))
            B.chain(f"feather{f}{_sfx(side)}_", ids[-1], tip, B.curve_dirs(fd, nf, wiggle=0.05),
                    [span * 0.3 / nf] * nf, "wing", radius=r * 0.35, limb=limb, side=side, kind=SHAPE_FLAT)
        return ids
    B.mirror_pair(wing)
    nleg = int(rng.integers(2, 4))
    B.mirror_pair(lambda side: _leg(B, root, [side * r * 0.7, s * 0.08, h], side, nleg, h, r * 0.35,
                                    digitigrade=True))
    _tail(B, root, B.b[root]["head"], [0, 1, -0.2], int(rng.integers(0, 6)), s * rng.uniform(0.1, 0.4), r * 0.5)


def _snake(B):
    rng, s = B.rng, B.s
    n = int(rng.integers(8, 61))
    r = s * rng.uniform(0.025, 0.06)
    root = B.add("root", -1, [0, 0, r], [0, -s * 0.04, r], "root", radius=r * 1.1)
    body = _spine(B, root, B.b[root]["tail"], [0, -1, 0], n, s, r, name="body", role="chain",
                  taper=rng.uniform(0.97, 1.0), axis=[0, 0, 1], bend=0.0, wiggle=0.08)
    # point the body mostly in the ground plane
    for i in body:
        B.b[i]["head"][2] = max(B.b[i]["head"][2], r)
        B.b[i]["tail"][2] = max(B.b[i]["tail"][2], r)
    _head(B, body[len(body) // 2] if rng.random() < 0.1 else body[-1], B.b[body[-1]]["tail"], [0, -1, 0.1],
          s * 0.06, r * 1.3, extras=int(rng.integers(0, 2)))
    tail = _tail(B, root, [0, 0, r], [0, 1, 0], int(rng.integers(0, 6)), s * 0.15, r * 0.8)
    if rng.random() < 0.4:  # eel fins along the body
        for k in range(0, len(body), max(len(body) // 3, 1)):
            hd = B.b[body[k]]["head"]
            B.add(f"fin{k}", body[k], hd, hd + [0, 0, r * 2.5], "fin", radius=r * 0.3, kind=SHAPE_FLAT)
    return tail


def _fish(B):
    rng, s = B.rng, B.s
    ray = rng.random() < 0.35
    r = s * rng.uniform(0.05, 0.12)
    h = s * 0.3
    root = B.add("root", -1, [0, 0, h], [0, -s * 0.1, h], "root", radius=r * 1.3, kind=SHAPE_FLAT)
    n = int(rng.integers(2, 6))
    front = _spine(B, root, B.b[root]["tail"], [0, -1, 0], n, s * 0.25, r * 1.1, name="front", role="chain",
                   taper=0.85)
    _head(B, front[-1], B.b[front[-1]]["tail"], [0, -1, 0], s * 0.1, r * 0.9, extras=0)
    nt = int(rng.integers(3, 12))
    tail = _tail(B, root, [0, 0, h], [0, 1, 0], nt, s * (0.6 if ray else 0.4), r * (0.4 if ray else 0.9),
                 role="chain")
    if not ray:
        def lobe(side):
            tip = B.b[tail[-1]]["tail"]
            return B.chain(f"caudal{_sfx(side)}_", tail[-1], tip, B.curve_dirs([0, 1, side * 0.8], 2, wiggle=0.05),
                           [s * 0.08] * 2, "fin", radius=r * 0.4, side=side, kind=SHAPE_FLAT)
        lobe(1.0), lobe(-1.0)
    nwing = int(rng.integers(3, 9)) if ray else int(rng.integers(1, 3))
    nchains = int(rng.integers(1, 4)) if ray else 1
    for c in range(nchains):
        def fin(side, c=c):
            limb = B.new_limb()
            base = np.array([side * r, -s * 0.05 * c, h])
            d = _unit([side, (c - 1) * 0.4, 0])
            span = s * (rng.uniform(0.3, 0.6) if ray else 0.12)
            return B.chain(f"pectoral{c}{_sfx(side)}_", root, base, B.curve_dirs(d, nwing, wiggle=0.05),
                           [span / nwing] * nwing, "wing" if ray else "fin", radius=r * (0.4 if ray else 0.3),
                           limb=limb, side=side, taper=0.85, kind=SHAPE_FLAT)
        B.mirror_pair(fin)
    if rng.random() < 0.6:
        B.chain("dorsal_", root, [0, 0, h + r], B.curve_dirs([0, 0.5, 1], int(rng.integers(1, 4))), [s * 0.05] * 3,
                "fin", radius=r * 0.3, kind=SHAPE_FIN)


def _tentacled(B):
    rng, s = B.rng, B.s
    r = s * rng.uniform(0.08, 0.14)
    h = s * rng.uniform(0.2, 0.4)
    root = B.add("body", -1, [0, 0, h], [0, 0, h + s * 0.1], "root", radius=r * 1.5)
    mantle = _spine(B, root, B.b[root]["tail"], [0, rng.uniform(0, 0.5), 1], int(rng.integers(1, 4)),
                    s * rng.uniform(0.15, 0.35), r * 1.3, name="mantle", role="spine", taper=0.8)
    if rng.random() < 0.5:
        _head(B, root, [0, 0, h], [0, -1, 0.2], s * 0.08, r, jaw=False)
    nt = int(rng.integers(4, 11))
    nb = int(rng.integers(4, min(16, (MAX_JOINTS - 10) // nt) + 1))
    length = s * rng.uniform(0.35, 0.8)
    for k in range(nt):
        ang = 2 * np.pi * k / nt + rng.normal(0, 0.1)
        limb = B.new_limb()
        base = np.array([np.cos(ang) * r, np.sin(ang) * r, h])
        d0 = _unit([np.cos(ang), np.sin(ang), rng.uniform(-1.5, 0.2)])
        axis = _unit(np.cross(d0, [0, 0, 1]))
        B.chain(f"tentacle{k}_", root, base, B.curve_dirs(d0, nb, bend=rng.uniform(-0.2, 0.2), wiggle=0.05,
                                                           axis=axis),
                [length / nb] * nb, "tentacle", radius=r * 0.45, limb=limb, side=np.sign(np.cos(ang)), taper=0.88)


def _longtailed(B):
    rng, s = B.rng, B.s
    leg_len = s * rng.uniform(0.3, 0.45)
    r = s * rng.uniform(0.05, 0.09)
    root = B.add("pelvis", -1, [0, 0, leg_len], [0, -s * 0.08, leg_len + 0.02 * s], "root", radius=r * 1.4)
    sp = _spine(B, root, B.b[root]["tail"], [0, -1, 0.4], int(rng.integers(2, 5)), s * rng.uniform(0.15, 0.3),
                r * 1.2)
    nk = _spine(B, sp[-1], B.b[sp[-1]]["tail"], [0, -0.7, 0.7], int(rng.integers(2, 9)), s * rng.uniform(0.1, 0.5),
                r * 0.6, name="neck", role="neck", bend=rng.uniform(-0.1, 0.1))
    _head(B, nk[-1], B.b[nk[-1]]["tail"], [0, -1, 0], s * rng.uniform(0.1, 0.18), r * 0.8,
          extras=int(rng.integers(0, 2)))
    top = B.b[sp[-1]]["tail"]
    na = int(rng.integers(2, 5))
    B.mirror_pair(lambda side: _arm(B, sp[-1], top + [side * r * 0.6, 0, -r * 0.5], side, na,
                                    s * rng.uniform(0.08, 0.2), r * 0.3, droop=1.0, fingers=int(rng.integers(0, 3)),
                                    finger_len=s * 0.03))
    nleg = int(rng.integers(3, 6))
    B.mirror_pair(lambda side: _leg(B, root, [side * r * 0.8, 0, leg_len], side, nleg, leg_len, r * 0.6,
                                    digitigrade=True))
    _tail(B, root, [0, 0, leg_len], [0, 1, rng.uniform(-0.3, 0.2)], int(rng.integers(6, 26)),
          s * rng.uniform(0.4, 0.9), r * 0.8)


def _machine(B):
    rng, s = B.rng, B.s
    r = s * rng.uniform(0.04, 0.08)
    axes = [np.array(a, float) for a in ([1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1])]
    h = s * rng.uniform(0.1, 0.45)
    root = B.add("base", -1, [0, 0, h], [0, 0, h + s * rng.uniform(0.05, 0.15)], "root", radius=r * 2,
                 kind=SHAPE_BOX, aspect=rng.uniform(0.5, 1))
    torso = B.chain("turret_", root, B.b[root]["tail"], [[0, 0, 1]] * int(rng.integers(1, 3)),
                    [s * 0.12] * 3, "spine", radius=r * 1.5, kind=SHAPE_BOX)
    n_arms = int(rng.integers(1, 4))
    for a in range(n_arms):
        def arm(side, a=a):
            limb = B.new_limb()
            base = B.b[torso[-1]]["tail"] + np.array([side * r * 1.5, 0, -a * r])
            nl = int(rng.integers(2, 7))
            dirs, d = [], axes[0] * side
            for _ in range(nl):
                dirs.append(d)
                d = axes[int(rng.integers(6))]
                if np.dot(d, dirs[-1]) < -0.5:
                    d = -d
                d = _unit(d + rng.normal(0, 0.25, 3))  # odd axes
            ids = B.chain(f"arm{a}{_sfx(side)}_", torso[-1], base, dirs,
                          [s * rng.uniform(0.06, 0.18) for _ in dirs], "arm", radius=r * 0.6, limb=limb,
                          side=side, kind=SHAPE_BOX)
            for g in range(int(rng.integers(0, 4))):
                tip = B.b[ids[-1]]["tail"]
                B.chain(f"grip{a}{g}{_sfx(side)}_", ids[-1], tip, [_unit(dirs[-1] + axes[2 + g % 4] * 0.6)] * 2,
                        [s * 0.03] * 2, "digit", radius=r * 0.25, limb=limb, side=side, kind=SHAPE_BOX)
            return ids
        if rng.random() < 0.8:
            B.mirror_pair(arm)
        else:
            arm(1.0)
    n_legs = int(rng.choice([0, 2, 4, 6]))
    for k in range(n_legs // 2):
        B.mirror_pair(lambda side, k=k: _leg(B, root, [side * r * 1.5, (k - n_legs / 4) * s * 0.15, h], side,
                                             int(rng.integers(2, 4)), h, r * 0.6, name=f"strut{k}",
                                             digitigrade=True))
    if rng.random() < 0.7:
        B.add("sensor", torso[-1], B.b[torso[-1]]["tail"], B.b[torso[-1]]["tail"] + _unit(rng.normal(0, 1, 3) +
                                                                                         [0, -1, 1]) * s * 0.1,
              "head", radius=r, kind=SHAPE_BOX)


def _tree(B):
    rng, s = B.rng, B.s
    n = int(np.clip(rng.lognormal(np.log(30), 0.8), MIN_JOINTS, MAX_JOINTS - 6))
    r = s * rng.uniform(0.02, 0.06)
    root = B.add("root", -1, [0, 0, s * 0.3], [0, 0, s * 0.3 + s * 0.08], "root", radius=r * 1.5)
    dirs = {root: np.array([0, 0, 1.0])}
    prefer_leaf = rng.uniform(0.3, 0.9)
    leaves = {root}
    for i in range(1, n):
        if rng.random() < prefer_leaf:
            p = int(rng.choice(sorted(leaves)))
        else:
            p = int(rng.integers(len(B.b)))
        d = _unit(dirs[p] + rng.normal(0, 0.9, 3))
        t = rng.uniform(0.5, 1.0)
        head = B.b[p]["head"] + (B.b[p]["tail"] - B.b[p]["head"]) * t
        ln = s * rng.uniform(0.04, 0.15)
        j = B.add(f"b{i:03d}", p, head, head + d * ln, rng.choice(["chain", "arm", "tentacle", "tail"]),
                  radius=r * rng.uniform(0.5, 1.2), limb=B.new_limb() if p not in leaves or p == root else
                  B.b[p]["limb"], pos=B.b[p]["pos"] + 1)
        dirs[j] = d
        leaves.discard(p)
        leaves.add(j)


_FAMILY_FN = dict(biped=_biped, quadruped=_quadruped, manylegged=_manylegged, winged=_winged, snake=_snake,
                  fish=_fish, tentacled=_tentacled, longtailed=_longtailed, machine=_machine, tree=_tree)


def _add_helpers(B):
    """Non-deforming helper bones lying on the body (twist helpers, mechanism and socket bones)."""
    rng = B.rng
    n = int(rng.choice([0, 0, 1, 2, 3, 4]))
    deforming = [i for i, b in enumerate(B.b) if b["deform"]]
    for k in range(n):
        p = int(rng.choice(deforming))
        b = B.b[p]
        t = rng.uniform(0.2, 0.8)
        head = b["head"] + (b["tail"] - b["head"]) * t
        d = b["tail"] - b["head"]
        tail = head + (d * rng.uniform(0.15, 0.4) if rng.random() < 0.6 else
                       _unit(rng.normal(0, 1, 3)) * b["radius"] * 0.8)
        B.add(f"helper{k}_{b['name']}"[:60], p, head, tail, "helper", radius=b["radius"] * 0.5, deform=False,
              side=b["side"], limb=b["limb"])
    if rng.random() < 0.2:  # a non-deforming top-level bone at the body centre (a "root"/"master" control)
        b0 = B.b[0]
        B.b.insert(0, dict(b0, name="ctrl_root", parent=-1, tail=b0["head"] + (b0["tail"] - b0["head"]) * 0.5,
                           role="root", deform=False))
        for b in B.b[1:]:
            b["parent"] = b["parent"] + 1
        B.b[1]["parent"] = 0
        B.b[1]["role"] = "spine"


def make_rig(seed: int, family: str | None = None) -> Rig:
    """One seeded rig. Same seed (and family) -> identical arrays."""
    rng = np.random.default_rng([int(seed), 7919])
    if family is None:
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    if family not in _FAMILY_FN:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    scale = float(rng.uniform(0.6, 2.5))
    B = _Builder(rng, scale)
    _FAMILY_FN[family](B)
    _add_helpers(B)
    return _finish(B, family, int(seed))


def _finish(B: _Builder, family: str, seed: int) -> Rig:
    rng = B.rng
    bones = B.b
    names = []
    seen = set()
    for b in bones:
        nm = b["name"]
        k = 1
        while nm in seen:
            nm = f"{b['name']}.{k:03d}"
            k += 1
        seen.add(nm)
        names.append(nm)
    parents = np.array([b["parent"] for b in bones], np.int64)
    heads = np.array([b["head"] for b in bones])
    tails = np.array([b["tail"] for b in bones])
    j = len(bones)
    style = B.roll_style
    rolls = np.zeros(j)
    if style in ("right", "mixed"):
        rolls = rng.integers(-2, 3, j) * (np.pi / 2)
    if style == "random":
        rolls = rng.uniform(-np.pi, np.pi, j)
    if style == "mixed":
        rolls = np.where(rng.random(j) < 0.5, rolls, rng.uniform(-np.pi, np.pi, j))
    # depth-first, parent-first order: exactly the core Skeleton's order
    skel = Skeleton.from_arrays(names, parents, rest_matrices(heads, tails, rolls), tails)
    order = np.array([names.index(n) for n in skel.names])
    if len(order) > MAX_JOINTS:  # a prefix of a depth-first order is a connected tree
        order = order[:MAX_JOINTS]
    inv = -np.ones(j, np.int64)
    inv[order] = np.arange(len(order))
    bones = [bones[i] for i in order]
    names = [names[i] for i in order]
    parents = np.array([inv[b["parent"]] if b["parent"] >= 0 else -1 for b in bones], np.int64)
    kinds = np.array([b["kind"] for b in bones], float)
    radius = np.array([b["radius"] for b in bones])
    lengths = np.linalg.norm(tails[order] - heads[order], axis=-1)
    radius = np.minimum(radius, np.maximum(lengths * 0.9, 0.02 * B.s))
    shape = np.stack([kinds, radius, [b["aspect"] for b in bones], rng.uniform(0.6, 1.0, len(bones)),
                      rng.uniform(0.5, 1.5, len(bones)), rng.uniform(-np.pi, np.pi, len(bones))], axis=-1)
    # colours: a palette per creature, segments mostly the base colour with patterns that turn with the bone
    hue = rng.random()
    palette = np.array([_hsv(hue + rng.normal(0, 0.04), rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.9)),
                        _hsv(hue + rng.uniform(0.25, 0.75), rng.uniform(0.5, 1.0), rng.uniform(0.2, 1.0)),
                        _hsv(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.05, 0.95)),
                        _hsv(hue + 0.5, rng.uniform(0.6, 1), rng.uniform(0.6, 1))])
    color, texture = _segment_colours(palette[0], np.array([b["limb"] for b in bones]),
                                      np.array([b["pos"] for b in bones]), seed)
    pattern = np.stack([rng.integers(0, 8, len(bones)), rng.integers(0, 4, len(bones)),
                        rng.integers(0, 2 ** 31, len(bones)), rng.integers(1, 4, len(bones))], axis=-1)
    return Rig(family=family, seed=seed, names=names, parents=parents, heads=heads[order], tails=tails[order],
               rolls=rolls[order], deform=np.array([b["deform"] for b in bones]), shape=shape, color=color,
               pattern=pattern.astype(np.int64), palette=palette, roles=[b["role"] for b in bones],
               limb=np.array([b["limb"] for b in bones], np.int64), side=np.array([b["side"] for b in bones], float),
               chain_pos=np.array([b["pos"] for b in bones], np.int64),
               info=dict(scale=B.s, roll_style=str(style), texture=texture))


def _segment_colours(base, limb, chain_pos, seed):
    """(J, 3) segment colours and a per-face texture amplitude, so that body parts show apart in the pictures.

    A creature's "variety" (none for a fifth of them: one-colour animals exist) shifts each limb's hue, makes
    segments along a chain alternately lighter and darker (a colour edge at every joint) and jitters the
    brightness face by face. Drawn from their own generator: the rest of what a seed makes is unchanged."""
    rng = np.random.default_rng([int(seed), 0xC0])
    J = len(limb)
    variety = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.2, 1.0))
    h, s, v = colorsys.rgb_to_hsv(*np.clip(base, 0, 1))
    limb_ids = np.unique(limb)
    limb_hue = dict(zip(limb_ids.tolist(), rng.normal(0, 0.12, len(limb_ids)) * variety))
    band = rng.uniform(0.5, 1.0) * variety * 0.35  # light/dark alternation along a chain
    color = np.empty((J, 3))
    for j in range(J):
        light = 1 + band * (1 if chain_pos[j] % 2 else -1) + rng.normal(0, 0.08)
        color[j] = _hsv(h + limb_hue[int(limb[j])], s * rng.uniform(0.85, 1.15), v * light)
    texture = variety * float(rng.uniform(0.05, 0.25))
    return color, texture


def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))
