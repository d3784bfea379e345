"""Random rigs and poses shared by the core tests (numpy only; seeds come from hypothesis or parametrize)."""
import numpy as np

from mocap_blender.core import rotations as R
from mocap_blender.core.skeleton import Skeleton

ROTATION_MODES = ("QUATERNION",) + R.EULER_ORDERS + ("AXIS_ANGLE",)  # Blender's pose-bone rotation modes


def random_rotations(rng, shape) -> np.ndarray:
    q = rng.normal(size=tuple(shape) + (4,))
    return R.quat_to_matrix(q / np.linalg.norm(q, axis=-1, keepdims=True))


def random_parents(rng, n_joints: int) -> np.ndarray:
    """A random tree in parent-first order: chains, fans and everything between."""
    parents = [-1]
    for i in range(1, n_joints):
        parents.append(i - 1 if rng.random() < 0.5 else int(rng.integers(0, i)))
    return np.array(parents, dtype=np.int64)


def random_skeleton(rng, n_joints: int | None = None, max_joints: int = 12, connected: float = 0.5) -> Skeleton:
    """Bones with random rolls (any rest rotation), random lengths, some heads on the parent's tail."""
    j = int(n_joints or rng.integers(1, max_joints + 1))
    parents = random_parents(rng, j)
    rot = random_rotations(rng, (j,))
    lengths = rng.uniform(0.05, 1.0, size=j)
    heads = np.zeros((j, 3))
    tails = np.zeros((j, 3))
    for i in range(j):
        p = parents[i]
        if p < 0:
            heads[i] = rng.uniform(-1, 1, 3)
        elif rng.random() < connected:
            heads[i] = tails[p]
        else:
            heads[i] = heads[p] + rng.uniform(-0.6, 0.6, 3)
        tails[i] = heads[i] + rot[i][:, 1] * lengths[i]  # Blender: the bone axis is the rest matrix's Y column
    rest = np.zeros((j, 4, 4))
    rest[:, :3, :3] = rot
    rest[:, :3, 3] = heads
    rest[:, 3, 3] = 1.0
    return Skeleton.from_arrays([f"bone_{i}" for i in range(j)], parents, rest, tails)


def random_mode_params(rng, mode: str, shape=()) -> np.ndarray:
    """Random values of a Blender rotation mode: quaternion (w,x,y,z), Euler (x,y,z) or axis-angle (angle,x,y,z)."""
    shape = tuple(shape)
    if mode == "QUATERNION":
        q = rng.normal(size=shape + (4,))
        return q / np.linalg.norm(q, axis=-1, keepdims=True)
    if mode == "AXIS_ANGLE":
        return np.concatenate([rng.uniform(-2 * np.pi, 2 * np.pi, shape + (1,)), rng.normal(size=shape + (3,))], -1)
    return rng.uniform(-np.pi, np.pi, shape + (3,))


def mode_to_matrix(mode: str, params) -> np.ndarray:
    if mode == "QUATERNION":
        return R.quat_to_matrix(params)
    if mode == "AXIS_ANGLE":
        return R.axis_angle_to_matrix(params)
    return R.euler_to_matrix(params, mode)


def random_basis(rng, skel: Skeleton, n_frames: int | None = None):
    """Local rotations through each bone's own random rotation mode, and a root location.

    Returns (modes, rotations (F, J, 3, 3) or (J, 3, 3), root_location (F, 3) or (3,))."""
    shape = () if n_frames is None else (n_frames,)
    modes = [ROTATION_MODES[int(rng.integers(len(ROTATION_MODES)))] for _ in range(skel.n_joints)]
    rots = np.stack([mode_to_matrix(m, random_mode_params(rng, m, shape)) for m in modes], axis=-3)
    return modes, rots, rng.uniform(-1, 1, shape + (3,))


def legs_rig() -> Skeleton:
    """Hips 1 m up (+Z), two legs (thigh, shin, foot pointing forward, -Y), an arm that never touches the ground,
    and a 1 cm stub under the hips (too short a chain to pin). Bones get arbitrary rolls."""
    rng = np.random.default_rng(5)
    bones = [  # name, parent, head, tail
        ("hips", -1, (0, 0, 1.0), (0, 0, 1.2)),
        ("thigh.L", 0, (0.15, 0, 1.0), (0.15, 0, 0.55)), ("shin.L", 1, (0.15, 0, 0.55), (0.15, 0, 0.1)),
        ("foot.L", 2, (0.15, 0, 0.1), (0.15, -0.15, 0.0)),
        ("thigh.R", 0, (-0.15, 0, 1.0), (-0.15, 0, 0.55)), ("shin.R", 4, (-0.15, 0, 0.55), (-0.15, 0, 0.1)),
        ("foot.R", 5, (-0.15, 0, 0.1), (-0.15, -0.15, 0.0)),
        ("arm", 0, (0.2, 0, 1.5), (0.5, 0, 1.5)), ("forearm", 7, (0.5, 0, 1.5), (0.8, 0, 1.5)),
        ("stub", 0, (0, 0, 0.99), (0, 0, 0.98)),
    ]
    n = len(bones)
    rest = np.zeros((n, 4, 4))
    for j, (_, _, head, tail) in enumerate(bones):
        y = np.subtract(tail, head) / np.linalg.norm(np.subtract(tail, head))
        x = np.cross(y, rng.normal(size=3))
        x /= np.linalg.norm(x)
        rest[j, :3, :3] = np.stack([x, y, np.cross(x, y)], axis=1)
        rest[j, :3, 3] = head
        rest[j, 3, 3] = 1.0
    return Skeleton.from_arrays([b[0] for b in bones], [b[1] for b in bones], rest, [b[3] for b in bones])
