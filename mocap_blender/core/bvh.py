"""BVH motion files: read, write, and turn into a core `Skeleton` with local rotations (no bpy).

A BVH joint's local transform is `T(position) @ R`, where `position` is its OFFSET unless it has position channels
(then the channel values replace it, missing axes being 0, as Blender's importer reads them) and `R` is the
product of its rotation channels in the order listed, the first listed outermost: "Zrotation Xrotation Yrotation"
is R = Rz @ Rx @ Ry, i.e. Blender Euler order "YXZ". Angles are in degrees in the file and in `BvhMotion.values`.

`BvhMotion.to_skeleton_motion()` gives a `Skeleton` whose rest matrices have the identity rotation (in BVH axes)
at the BVH rest heads, so each joint's `matrix_basis` rotation is exactly its BVH rotation and the core FK
reproduces the BVH joint positions; with `blender_axes=True` everything is carried into Blender's Z-up armature
space the way `bpy.ops.import_anim.bvh` does by default (BVH -Z forward, Y up).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MocapError
from .rotations import EULER_ORDERS, euler_to_matrix, euler_unwrap, matrix_to_euler
from .skeleton import Skeleton, forward_kinematics

POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")
ROTATION_CHANNELS = ("Xrotation", "Yrotation", "Zrotation")
_CANONICAL = {c.lower(): c for c in POSITION_CHANNELS + ROTATION_CHANNELS}

# BVH axes (Y up, -Z forward) -> Blender armature space (Z up, Y forward): the matrix Blender's BVH importer applies
# with its default axis_forward='-Z', axis_up='Y' (a +90 degree turn about X).
BVH_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _axis_matrix(ch: str, angle_deg: np.ndarray) -> np.ndarray:
    e = np.zeros(angle_deg.shape + (3,))
    e[..., "XYZ".index(ch[0])] = np.radians(angle_deg)
    return euler_to_matrix(e, "XYZ")


@dataclass(eq=False)
class BvhMotion:
    """Everything a BVH file holds. Joints are in file (depth-first) order; the root is joint 0.

    names (J,), parents (J,) int64 (-1 for the root), offsets (J, 3), channels: per joint a tuple of channel names
    ("Xposition", ..., "Zrotation") in file order, end_sites: {joint index: (3,) offset}, values (F, C): per frame
    all channel values in file order (rotations in degrees), frame_time: seconds per frame.
    """
    names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)
    values: np.ndarray | None = None
    frame_time: float = 1.0 / 30.0

    def __post_init__(self):
        self.names = tuple(str(n) for n in self.names)
        j = len(self.names)
        if j == 0:
            raise MocapError("The BVH motion has no joints; it needs at least a ROOT.")
        self.parents = np.asarray(self.parents, dtype=np.int64).reshape(-1)
        self.offsets = np.asarray(self.offsets, dtype=np.float64)
        if self.parents.shape != (j,) or self.offsets.shape != (j, 3) or len(self.channels) != j:
            raise MocapError(f"BVH arrays disagree: {j} names, parents {self.parents.shape}, offsets "
                             f"{self.offsets.shape}, {len(self.channels)} channel lists.")
        if self.parents[0] != -1 or np.any(self.parents[1:] < 0):
            raise MocapError("A BVH motion needs exactly one root, joint 0; the file format cannot hold several.")
        if np.any(self.parents[1:] >= np.arange(1, j)):
            raise MocapError("Every BVH joint's parent must come before it.")
        chans = []
        for n, ch in zip(self.names, self.channels):
            canon = tuple(_canonical_channel(c, n) for c in ch)
            if len(set(canon)) != len(canon):
                raise MocapError(f"BVH joint {n!r} lists a channel twice: {' '.join(canon)}.")
            chans.append(canon)
        self.channels = tuple(chans)
        self.end_sites = {int(k): np.asarray(v, dtype=np.float64).reshape(3) for k, v in dict(self.end_sites).items()}
        if any(k < 0 or k >= j for k in self.end_sites):
            raise MocapError("An end site belongs to a joint index that does not exist.")
        c = sum(len(ch) for ch in self.channels)
        self.values = np.zeros((0, c)) if self.values is None else np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2 or self.values.shape[1] != c:
            raise MocapError(f"BVH values must be (frames, {c}), one column per channel; got {self.values.shape}.")
        self.frame_time = float(self.frame_time)
        if not (math.isfinite(self.frame_time) and self.frame_time >= 0):
            raise MocapError(f"BVH frame time must be a non-negative number of seconds, got {self.frame_time}.")
        if not (np.all(np.isfinite(self.offsets)) and np.all(np.isfinite(self.values))
                and all(np.all(np.isfinite(v)) for v in self.end_sites.values())):
            raise MocapError("The BVH motion holds non-finite numbers (NaN or infinity).")

    # --- layout ---------------------------------------------------------------------------------
    @property
    def n_joints(self) -> int:
        return len(self.names)

    @property
    def n_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def channel_starts(self) -> np.ndarray:
        """(J,) index of each joint's first column in `values`."""
        return np.concatenate([[0], np.cumsum([len(c) for c in self.channels])[:-1]]).astype(np.int64)

    def joint_values(self, j: int) -> np.ndarray:
        """(F, n) the columns of joint j, in its channel order."""
        s = int(self.channel_starts[j])
        return self.values[:, s:s + len(self.channels[j])]

    def rotation_order(self, j: int) -> str:
        """Blender Euler order equal to joint j's rotation channels (axes without a channel go last)."""
        listed = [c[0] for c in self.channels[j] if c in ROTATION_CHANNELS]
        order = "".join(reversed(listed))
        return order + "".join(a for a in "XYZ" if a not in order)

    # --- transforms -----------------------------------------------------------------------------
    def local_rotations(self) -> np.ndarray:
        """(F, J, 3, 3) each joint's rotation relative to its parent (identity without rotation channels)."""
        out = np.broadcast_to(np.eye(3), (self.n_frames, self.n_joints, 3, 3)).copy()
        for j, ch in enumerate(self.channels):
            vals = self.joint_values(j)
            for col, c in enumerate(ch):
                if c in ROTATION_CHANNELS:
                    out[:, j] = out[:, j] @ _axis_matrix(c, vals[:, col])
        return out

    def has_position(self) -> np.ndarray:
        """(J,) bool: the joint has at least one position channel."""
        return np.array([any(c in POSITION_CHANNELS for c in ch) for ch in self.channels])

    def local_translations(self) -> np.ndarray:
        """(F, J, 3): each joint's translation from its parent: its OFFSET, or its position channels if it has any."""
        out = np.broadcast_to(self.offsets, (self.n_frames, self.n_joints, 3)).copy()
        for j, ch in enumerate(self.channels):
            if not any(c in POSITION_CHANNELS for c in ch):
                continue
            vals = self.joint_values(j)
            out[:, j] = 0.0  # missing position axes are 0 (as Blender's importer reads them)
            for col, c in enumerate(ch):
                if c in POSITION_CHANNELS:
                    out[:, j, "XYZ".index(c[0])] = vals[:, col]
        return out

    def world_transforms(self) -> np.ndarray:
        """(F, J, 4, 4) BVH-space joint transforms, straight from the file's definition (no Skeleton)."""
        local = np.zeros((self.n_frames, self.n_joints, 4, 4))
        local[..., :3, :3] = self.local_rotations()
        local[..., :3, 3] = self.local_translations()
        local[..., 3, 3] = 1.0
        world = np.empty_like(local)
        for j, p in enumerate(self.parents):
            world[:, j] = local[:, j] if p < 0 else world[:, p] @ local[:, j]
        return world

    def joint_positions(self) -> np.ndarray:
        """(F, J, 3) BVH-space joint positions per frame."""
        return self.world_transforms()[..., :3, 3]

    # --- to the core rig --------------------------------------------------------------------------
    def rest_heads(self) -> np.ndarray:
        """(J, 3) BVH-space rest positions (offsets accumulated)."""
        heads = np.zeros((self.n_joints, 3))
        for j, p in enumerate(self.parents):
            heads[j] = self.offsets[j] + (heads[p] if p >= 0 else 0.0)
        return heads

    def rest_tails(self) -> np.ndarray:
        """(J, 3) BVH-space tails, as Blender's importer places them: the end site, else the single child's head,
        else the mean of the children's heads; a tail within 0.001 of its head moves 0.1 along +Y."""
        heads = self.rest_heads()
        tails = heads.copy()
        kids: list[list[int]] = [[] for _ in range(self.n_joints)]
        for j, p in enumerate(self.parents):
            if p >= 0:
                kids[p].append(j)
        for j in range(self.n_joints):
            if j in self.end_sites:
                tails[j] = heads[j] + self.end_sites[j]
            elif kids[j]:
                tails[j] = heads[kids[j]].mean(axis=0)
            if np.linalg.norm(tails[j] - heads[j]) <= 0.001:
                tails[j, 1] += 0.1
        return tails

    def to_skeleton_motion(self, *, blender_axes: bool = False, scale: float = 1.0) -> "SkeletonMotion":
        """The core rig and its motion: rest matrices with the identity rotation (in BVH axes) at the BVH heads,
        local rotations (F, J, 3, 3) equal to the BVH rotations, and basis translations, so that
        `forward_kinematics(skeleton, rotations, basis_loc=locations)` reproduces the BVH joint positions
        (times `scale`, and turned into Blender's Z-up armature space when `blender_axes`)."""
        if not (math.isfinite(scale) and scale > 0):
            raise MocapError(f"The BVH scale must be a positive number, got {scale}.")
        g = BVH_TO_BLENDER if blender_axes else np.eye(3)
        heads, tails = self.rest_heads(), self.rest_tails()
        rest = np.zeros((self.n_joints, 4, 4))
        rest[:, :3, :3] = g
        rest[:, :3, 3] = scale * heads @ g.T
        rest[:, 3, 3] = 1.0
        skel = Skeleton.from_arrays(_unique_names(self.names), self.parents, rest, scale * tails @ g.T)
        rotations = self.local_rotations()
        # matrix_basis translation, in the joint's rest frame (= BVH axes): the position channels minus the offset.
        locations = scale * (self.local_translations() - self.offsets)
        return SkeletonMotion(skel, rotations, locations, self.frame_time)


@dataclass(eq=False)
class SkeletonMotion:
    """A core rig with a motion: rotations (F, J, 3, 3) = `matrix_basis` rotations; locations (F, J, 3) =
    `matrix_basis` translations (zero except for joints with position channels)."""
    skeleton: Skeleton
    rotations: np.ndarray
    locations: np.ndarray
    frame_time: float

    @property
    def root_location(self) -> np.ndarray:
        """(F, 3) the root's `matrix_basis` translation (its `pose_bone.location`)."""
        return self.locations[:, self.skeleton.root]

    @property
    def has_joint_translation(self) -> bool:
        """True when a non-root joint translates (the rotations and root location alone do not give the pose)."""
        return bool(np.any(np.abs(np.delete(self.locations, self.skeleton.root, axis=1)) > 0))

    def pose(self) -> np.ndarray:
        """(F, J, 4, 4) armature-space pose matrices by the core FK."""
        return forward_kinematics(self.skeleton, self.rotations, basis_loc=self.locations)


def _unique_names(names) -> tuple[str, ...]:
    """Blender's importer rule for repeated joint names: "name", "name.001", ..."""
    seen: set[str] = set()
    out = []
    for n in names:
        if n in seen:
            i = 1
            while f"{n}.{i:03d}" in seen:
                i += 1
            n = f"{n}.{i:03d}"
        seen.add(n)
        out.append(n)
    return tuple(out)


def _canonical_channel(c: str, joint: str) -> str:
    try:
        return _CANONICAL[str(c).lower()]
    except KeyError:
        raise MocapError(f"BVH joint {joint!r} has an unknown channel {c!r}; channels are X/Y/Z position and "
                         "X/Y/Z rotation.") from None


# --- reading -------------------------------------------------------------------------------------------

class _Tokens:
    def __init__(self, lines: list[str], path: str):
        self.toks: list[tuple[str, int]] = []
        for n, line in enumerate(lines, 1):
            for t in line.replace("{", " { ").replace("}", " } ").split():
                self.toks.append((t, n))
        self.i = 0
        self.path = path

    def error(self, msg: str, line: int | None = None) -> MocapError:
        if line is None:
            line = self.toks[min(self.i, len(self.toks) - 1)][1] if self.toks else 1
        return MocapError(f"{self.path}, line {line}: {msg} Check that the file is a complete, valid BVH file.")

    def next(self, what: str) -> tuple[str, int]:
        if self.i >= len(self.toks):
            raise self.error(f"the hierarchy ends early (expected {what}).")
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, word: str) -> int:
        t, n = self.next(repr(word))
        if t.lower() != word.lower():
            raise self.error(f"expected {word!r}, found {t!r}.", n)
        return n

    def number(self, what: str) -> float:
        t, n = self.next(what)
        try:
            v = float(t)
        except ValueError:
            raise self.error(f"expected a number for {what}, found {t!r}.", n) from None
        if not math.isfinite(v):
            raise self.error(f"{what} is not finite ({t}).", n)
        return v

    def rest_of_line(self, line: int) -> list[str]:
        out = []
        while self.i < len(self.toks) and self.toks[self.i][1] == line and self.toks[self.i][0] not in "{}":
            out.append(self.toks[self.i][0])
            self.i += 1
        return out


_MOTION = re.compile(r"^[ \t]*MOTION[ \t]*$", re.IGNORECASE | re.MULTILINE)
_FRAMES = re.compile(r"^\s*Frames\s*:\s*(\S+)\s*$", re.IGNORECASE)
_FRAME_TIME = re.compile(r"^\s*Frame\s+Time\s*:\s*(\S+)\s*$", re.IGNORECASE)


def read_bvh(path) -> BvhMotion:
    """Read a BVH file (any channel order per joint, end sites, one root). Raises MocapError on malformed files."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MocapError(f"Cannot read the BVH file {str(path)!r}: {e.strerror or e}. Check the path.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return parse_bvh(text, str(path))


def parse_bvh(text: str, source: str = "<bvh>") -> BvhMotion:
    """Parse BVH text (see `read_bvh`); `source` names the file in error messages."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    m = _MOTION.search(text)
    head_lines = lines if m is None else text[:m.start()].split("\n")
    tok = _Tokens(head_lines, source)
    if not tok.toks or tok.toks[0][0].upper() != "HIERARCHY":
        raise MocapError(f"{source} is not a BVH file: it does not start with HIERARCHY. Choose a .bvh motion file.")
    tok.i = 1
    if m is None:
        raise MocapError(f"{source}: no MOTION section after the hierarchy; the file is incomplete or not a BVH file.")

    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    end_sites: dict[int, np.ndarray] = {}
    stack: list[int | None] = []  # open blocks: joint index, or None for an end site
    while tok.i < len(tok.toks):
        t, n = tok.next("a joint")
        word = t.upper()
        if word in ("ROOT", "JOINT"):
            name_toks = tok.rest_of_line(n)
            name = " ".join(name_toks)
            if not name:
                raise tok.error(f"{t} without a name.", n)
            if word == "ROOT":
                if stack:
                    raise tok.error(f"ROOT {name!r} inside another joint's braces; a missing '}}'?", n)
                if names:
                    raise MocapError(
                        f"{source}, line {n}: the file has several root joints ({names[0]!r}, {name!r}, ...). "
                        "Only one skeleton per file is supported: split the file into one BVH per root.")
                parent = -1
            else:
                if not stack:
                    raise tok.error(f"JOINT {name!r} outside the ROOT's braces.", n)
                if stack[-1] is None:
                    raise tok.error(f"JOINT {name!r} inside an End Site.", n)
                parent = stack[-1]
            tok.expect("{")
            tok.expect("OFFSET")
            off = [tok.number(f"the OFFSET of {name!r}") for _ in range(3)]
            t2, n2 = tok.next("CHANNELS")
            if t2.upper() != "CHANNELS":
                raise tok.error(f"joint {name!r} has no CHANNELS line (found {t2!r}).", n2)
            t3, n3 = tok.next("the channel count")
            try:
                count = int(t3)
            except ValueError:
                raise tok.error(f"the channel count of {name!r} is not a whole number ({t3!r}).", n3) from None
            if not 0 <= count <= 6:
                raise tok.error(f"joint {name!r} declares {count} channels; a joint has 0 to 6.", n3)
            ch = []
            for _ in range(count):
                c, nc = tok.next(f"a channel name of {name!r}")
                if c.lower() not in _CANONICAL:
                    raise tok.error(f"joint {name!r} has an unknown channel {c!r} (or fewer channels than the "
                                    f"{count} declared).", nc)
                ch.append(_CANONICAL[c.lower()])
            if len(set(ch)) != len(ch):
                raise tok.error(f"joint {name!r} lists a channel twice: {' '.join(ch)}.", n3)
            names.append(name)
            parents.append(parent)
            offsets.append(off)
            channels.append(tuple(ch))
            stack.append(len(names) - 1)
        elif word == "END":
            tok.rest_of_line(n)  # "Site" and sometimes a name
            if not stack or stack[-1] is None:
                raise tok.error("End Site outside a joint.", n)
            owner = stack[-1]
            if owner in end_sites:
                raise tok.error(f"joint {names[owner]!r} has two End Sites.", n)
            tok.expect("{")
            tok.expect("OFFSET")
            end_sites[owner] = np.array([tok.number(f"the End Site OFFSET of {names[owner]!r}") for _ in range(3)])
            stack.append(None)
        elif t == "}":
            if not stack:
                raise tok.error("an unmatched '}'.", n)
            stack.pop()
        else:
            raise tok.error(f"unexpected {t!r} in the hierarchy.", n)
    if not names:
        raise MocapError(f"{source}: the hierarchy has no ROOT joint. Choose a BVH file with a skeleton.")
    if stack:
        raise MocapError(f"{source}: the hierarchy has {len(stack)} unclosed '{{' before MOTION; the file is "
                         "damaged.")

    # MOTION: "Frames: N", "Frame Time: t", then one line of numbers per frame.
    first = text[:m.start()].count("\n") + 1  # 0-based index of the line after MOTION
    rest = lines[first:]
    k = 0
    header: list[tuple[str, int]] = []
    while k < len(rest) and len(header) < 2:
        if rest[k].strip():
            header.append((rest[k], first + k + 1))
        k += 1
    if len(header) < 2:
        raise MocapError(f"{source}: the MOTION section lacks its 'Frames:' and 'Frame Time:' lines.")
    fm, tm = _FRAMES.match(header[0][0]), _FRAME_TIME.match(header[1][0])
    if fm is None:
        raise MocapError(f"{source}, line {header[0][1]}: expected 'Frames: <count>', found {header[0][0].strip()!r}.")
    if tm is None:
        raise MocapError(f"{source}, line {header[1][1]}: expected 'Frame Time: <seconds>', "
                         f"found {header[1][0].strip()!r}.")
    try:
        n_frames = int(fm.group(1))
        frame_time = float(tm.group(1))
    except ValueError:
        raise MocapError(f"{source}: the frame count or frame time is not a number "
                         f"({fm.group(1)!r}, {tm.group(1)!r}).") from None
    if n_frames < 0 or not (math.isfinite(frame_time) and frame_time >= 0):
        raise MocapError(f"{source}: bad MOTION header (Frames: {n_frames}, Frame Time: {frame_time}).")
    n_ch = sum(len(c) for c in channels)
    data = [(line, first + idx + 1) for idx, line in enumerate(rest[k:], start=k) if line.strip()]
    if n_ch == 0:
        if data:
            raise MocapError(f"{source}, line {data[0][1]}: frame data, but no joint has channels.")
        values = np.zeros((n_frames, 0))
    else:
        rows = [line.split() for line, _ in data]
        for (line, ln), r in zip(data, rows):
            if len(r) != n_ch:
                raise MocapError(f"{source}, line {ln}: a frame has {len(r)} numbers; the hierarchy declares "
                                 f"{n_ch} channels. The file is damaged or its hierarchy does not match its motion.")
        if len(rows) != n_frames:
            raise MocapError(f"{source}: the header says {n_frames} frames but {len(rows)} frame lines follow. "
                             "The file is truncated or damaged (or fix its 'Frames:' line).")
        try:
            values = np.array(rows, dtype=np.float64).reshape(n_frames, n_ch)
        except ValueError:
            for (line, ln), r in zip(data, rows):
                for v in r:
                    try:
                        float(v)
                    except ValueError:
                        raise MocapError(f"{source}, line {ln}: {v!r} is not a number.") from None
            raise
        if not np.all(np.isfinite(values)):
            f = int(np.flatnonzero(~np.all(np.isfinite(values), axis=1))[0])
            raise MocapError(f"{source}, line {data[f][1]}: frame {f} holds a non-finite number (nan or inf).")
    return BvhMotion(tuple(names), np.array(parents, dtype=np.int64), np.array(offsets, dtype=np.float64).reshape(-1, 3),
                     tuple(channels), end_sites, values, frame_time)


# --- writing -------------------------------------------------------------------------------------------

def _fmt(x: float, precision: int | None) -> str:
    if precision is None:
        return repr(float(x))
    s = f"{x:.{precision}f}"
    return "0" if float(s) == 0.0 else s


def write_bvh(path, motion: BvhMotion, *, precision: int | None = None) -> None:
    """Write `motion` as a BVH file. `precision=None` writes every number exactly (shortest round-trip form), an
    int writes that many decimals. Joints are written depth-first (the order `read_bvh` gives back)."""
    if not isinstance(motion, BvhMotion):
        raise TypeError(f"write_bvh needs a BvhMotion, got {type(motion).__name__}")
    j = motion.n_joints
    kids: list[list[int]] = [[] for _ in range(j)]
    for i, p in enumerate(motion.parents):
        if p >= 0:
            kids[p].append(i)
    out: list[str] = ["HIERARCHY"]
    order: list[int] = []

    def fmt3(v) -> str:
        return " ".join(_fmt(x, precision) for x in v)

    def emit(i: int, depth: int) -> None:
        ind = "\t" * depth
        order.append(i)
        out.append(f"{ind}{'ROOT' if motion.parents[i] < 0 else 'JOINT'} {motion.names[i]}")
        out.append(f"{ind}{{")
        out.append(f"{ind}\tOFFSET {fmt3(motion.offsets[i])}")
        out.append(f"{ind}\tCHANNELS {len(motion.channels[i])}" + "".join(" " + c for c in motion.channels[i]))
        for k in kids[i]:
            emit(k, depth + 1)
        if i in motion.end_sites:
            out.append(f"{ind}\tEnd Site")
            out.append(f"{ind}\t{{")
            out.append(f"{ind}\t\tOFFSET {fmt3(motion.end_sites[i])}")
            out.append(f"{ind}\t}}")
        out.append(f"{ind}}}")

    for name in motion.names:
        if not name or name != " ".join(name.split()) or any(c in name for c in "{}"):
            raise MocapError(f"BVH joint name {name!r} cannot be written: it is empty, holds braces, or has leading, "
                             "trailing or repeated white space. Rename the joint.")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * j + 100))
    try:
        emit(0, 0)
    finally:
        sys.setrecursionlimit(limit)
    starts = motion.channel_starts
    cols = np.concatenate([np.arange(starts[i], starts[i] + len(motion.channels[i])) for i in order]) \
        if motion.n_channels else np.zeros(0, dtype=np.int64)
    values = motion.values[:, cols]
    out.append("MOTION")
    out.append(f"Frames: {motion.n_frames}")
    out.append(f"Frame Time: {_fmt(motion.frame_time, None if precision is None else max(precision, 8))}")
    if precision is None:
        out.extend(" ".join(map(repr, row)) for row in values.tolist())
    else:
        out.extend(" ".join(_fmt(x, precision) for x in row) for row in values.tolist())
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


# --- from a core rig ------------------------------------------------------------------------------------

def motion_from_skeleton(skel: Skeleton, rotations, root_location=None, *, frame_time: float = 1.0 / 30.0,
                         order: str = "ZXY", blender_axes: bool = False, scale: float = 1.0,
                         end_sites: bool = True) -> BvhMotion:
    """A BVH of a core rig's motion: `rotations` (F, J, 3, 3) and `root_location` (F, 3) are `matrix_basis`
    values as for `forward_kinematics`. BVH joints get the identity rest rotation, so every bone's rest roll is
    folded into the written rotations; the joint positions of the result equal the core FK's heads (divided by
    `scale`, and turned from Blender's Z-up into BVH Y-up axes when `blender_axes`). Leaf bones get an end site
    at their tail. `order` is the Blender Euler order of every joint's rotation channels."""
    if order.upper() not in EULER_ORDERS:
        raise MocapError(f"Unknown Euler order {order!r}; use one of {', '.join(EULER_ORDERS)}.")
    order = order.upper()
    rotations = np.asarray(rotations, dtype=np.float64)
    if rotations.ndim != 4 or rotations.shape[1:] != (skel.n_joints, 3, 3):
        raise MocapError(f"Rotations must be (frames, {skel.n_joints}, 3, 3); got {rotations.shape}.")
    n_frames = rotations.shape[0]
    root_location = np.zeros((n_frames, 3)) if root_location is None else \
        np.broadcast_to(np.asarray(root_location, dtype=np.float64), (n_frames, 3))
    pose = forward_kinematics(skel, rotations, root_location)  # (F, J, 4, 4)
    g = BVH_TO_BLENDER if blender_axes else np.eye(3)
    # BVH world rotation of joint j: W = G^T P R_rest^T G (the identity at rest); positions G^T p / scale.
    world = np.swapaxes(g, 0, 1) @ pose[..., :3, :3] @ np.swapaxes(skel.rest[:, :3, :3], -1, -2) @ g
    heads = skel.heads @ g / scale  # (J, 3) rest heads in BVH axes (row vectors: h @ g == g^T h)
    p = skel.parents
    local = world.copy()
    local[:, 1:] = np.swapaxes(world[:, p[1:]], -1, -2) @ world[:, 1:]
    eul = np.degrees(euler_unwrap(matrix_to_euler(local, order), order, axis=0))  # (F, J, 3)
    offsets = heads.copy()
    offsets[1:] = heads[1:] - heads[p[1:]]
    rot_names = tuple(f"{a}rotation" for a in reversed(order))  # listed outermost first
    channels = [tuple(POSITION_CHANNELS) + rot_names] + [rot_names] * (skel.n_joints - 1)
    idx = ["XYZ".index(a) for a in reversed(order)]
    root_pos = pose[:, 0, :3, 3] @ g / scale
    values = np.concatenate([root_pos, eul[:, 0, idx], eul[:, 1:][:, :, idx].reshape(n_frames, -1)], axis=1)
    ends = {}
    if end_sites:
        tails = skel.tails @ g / scale
        ends = {j: tails[j] - heads[j] for j in range(skel.n_joints) if skel.is_leaf[j]}
    return BvhMotion(skel.names, p.copy(), offsets, tuple(channels), ends, values, frame_time)
