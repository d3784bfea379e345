"""Real rigs and motions from ../shared/mocap-dev (read in place, never copied): glTF through Blender's glTF importer
(the real mesh is rendered), BVH through Blender's BVH importer (a procedural body is skinned to it). Clips are
re-timed (speed 0.7-1.4, looped or ping-ponged) and mirrored left/right when the rig has named L/R pairs.

The skeleton in the shard is the tree of the armature's main root (the root with the most bones under it); other
root bones (IK targets, detached feet) keep their own animation in the images but are not in the truth. Only the
root keeps a translation: the other bones' keyed translations (glTF writes rest offsets there) are dropped before
rendering, so images and truth agree exactly.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from mocap_blender.core.rotations import orthonormalize
from mocap_blender.core.skeleton import Skeleton, basis_from_pose, forward_kinematics

REPO = Path(__file__).resolve().parents[2]
MOCAP_DEV = Path(os.environ.get("MOCAP_DEV", REPO.parent / "shared" / "mocap-dev"))
FILES = {  # path under mocap-dev: family of the creature
    "khronos/Fox.glb": "quadruped",
    "threejs/RobotExpressive.glb": "biped",
    "threejs/pirouette_cmu.bvh": "biped",
    "quaternius/Husky.glb": "quadruped",
    "quaternius/Snake.glb": "snake",
    "quaternius/Spider.glb": "manylegged",
    "quaternius/Wasp.glb": "winged",
    "quaternius/Trex.glb": "longtailed",
    "quaternius/Manta_ray.glb": "fish",
    "quaternius/Leela.glb": "machine",
    "quaternius/Bee.glb": "winged",
}
_CYCLIC = re.compile(r"walk|run|gallop|fly|swim|idle|trot|dance", re.I)
_SIDE = [(r"\.L$", ".R"), (r"\.R$", ".L"), (r"_L$", "_R"), (r"_R$", "_L"), (r"Left", "Right"), (r"Right", "Left"),
         (r"left", "right"), (r"right", "left"), (r"^L_", "R_"), (r"^R_", "L_"), (r"_l$", "_r"), (r"_r$", "_l")]


def available() -> list[str]:
    return [f for f in FILES if (MOCAP_DEV / f).exists()]


def mirror_map(names) -> np.ndarray | None:
    """Index of each bone's left/right partner (itself on the midline); None if the rig has no named pairs."""
    idx = {n: i for i, n in enumerate(names)}
    out = np.arange(len(names))
    pairs = 0
    for i, n in enumerate(names):
        for pat, rep in _SIDE:
            if re.search(pat, n):
                m = re.sub(pat, rep, n)
                if m in idx:
                    out[i] = idx[m]
                    pairs += 1
                break
    return out if pairs >= 2 else None


def _import(path: Path):
    import bpy
    before = set(bpy.data.objects)
    if path.suffix.lower() == ".bvh":
        bpy.ops.import_anim.bvh(filepath=str(path), update_scene_fps=False, update_scene_duration=False,
                                rotate_mode="NATIVE")
    else:
        bpy.ops.import_scene.gltf(filepath=str(path))
    new = [o for o in bpy.data.objects if o not in before]
    arm = next(o for o in new if o.type == "ARMATURE")
    meshes = [o for o in new if o.type == "MESH"]
    return arm, meshes


def _main_tree(arm_ob):
    bones = arm_ob.data.bones
    roots = [b for b in bones if b.parent is None]

    def size(b):
        return 1 + sum(size(c) for c in b.children)
    root = max(roots, key=lambda b: (sum(1 for _ in b.children_recursive) + 1, b.use_deform))
    names = [root.name] + [b.name for b in root.children_recursive]
    return names


def _sample(arm_ob, action, times):
    """matrix_basis (T, B, 4, 4) of every pose bone (Blender order) at action frames `times`."""
    import bpy
    ad = arm_ob.animation_data or arm_ob.animation_data_create()
    for tr in ad.nla_tracks:
        tr.mute = True
    ad.action = action
    if getattr(ad, "action_slot", None) is None and hasattr(action, "slots") and len(action.slots):
        ad.action_slot = action.slots[0]
    sc = bpy.context.scene
    pbs = arm_ob.pose.bones
    B = len(pbs)
    # channels the action does not key keep whatever was set before (the importer's pose, an earlier evaluation):
    # start from the rest pose, as glTF means for an unanimated node, so a clip depends on its seed alone
    for pb in pbs:
        pb.location, pb.scale = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        pb.rotation_quaternion, pb.rotation_euler = (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
        pb.rotation_axis_angle = (0.0, 0.0, 1.0, 0.0)
    out = np.zeros((len(times), B, 4, 4), np.float64)
    buf = np.zeros(B * 16, np.float32)
    for k, f in enumerate(times):
        fi = int(np.floor(f))
        sc.frame_set(fi, subframe=float(f - fi))
        pbs.foreach_get("matrix_basis", buf)
        out[k] = buf.reshape(B, 4, 4).transpose(0, 2, 1)
    ad.action = None
    return out


def render_real_clip(seed: int, size: int = 160, n_frames: int = 48, engine: str = "workbench", floor: bool = True,
                     threads: int = 1, fps: float = 24.0, file: str | None = None, clip: str | None = None,
                     mirror: bool | None = None, speed: float | None = None) -> dict:
    import bpy

    from . import render
    from .rigs import Rig, _hsv, topology_hash

    rng = np.random.default_rng([int(seed), 4242])
    files = available()
    if not files:
        raise FileNotFoundError(f"no real clips under {MOCAP_DEV}")
    rel = file or files[int(rng.integers(len(files)))]
    path = MOCAP_DEV / rel
    sc = render.reset_scene()
    bg = rng.uniform(0.02, 0.95, 3) ** 1.5
    render.setup_render(sc, size, engine, rng, bg, threads)
    arm_ob, meshes = _import(path)
    actions = sorted({a.name for a in bpy.data.actions})
    name = clip or actions[int(rng.integers(len(actions)))]
    action = bpy.data.actions[name]
    speed = float(speed if speed is not None else rng.uniform(0.7, 1.4))
    src_fps = 120.0 if path.suffix.lower() == ".bvh" else 24.0
    f0, f1 = action.frame_range
    length = max(f1 - f0, 1.0)
    x = rng.uniform(0, length) + np.arange(n_frames) * speed * src_fps / fps
    if _CYCLIC.search(name):
        times = f0 + np.mod(x, length)
    else:
        times = f0 + length - np.abs(np.mod(x, 2 * length) - length)
    full = _sample(arm_ob, action, times)  # (T, B, 4, 4), Blender bone order

    names = _main_tree(arm_ob)
    bl_names = [p.name for p in arm_ob.pose.bones]
    rest_all, tails_all, _ = render._read_bones(arm_ob, bl_names)
    idx0 = np.array([bl_names.index(n) for n in names])
    parents0 = []
    for n in names:
        p = arm_ob.data.bones[n].parent
        parents0.append(names.index(p.name) if p is not None else -1)
    skel = Skeleton.from_arrays(names, parents0, rest_all[idx0].astype(np.float64), tails_all[idx0].astype(np.float64))
    names = list(skel.names)
    bl_idx = np.array([bl_names.index(n) for n in names])
    basis = full[:, bl_idx]
    rot = orthonormalize(basis[..., :3, :3])
    root_loc = basis[:, 0, :3, 3].copy()
    mirrored = False
    mm = mirror_map(names)
    if mirror is None:
        mirror = bool(rng.random() < 0.5)
    n_roots = sum(1 for b in arm_ob.data.bones if b.parent is None)
    if mirror and mm is not None and n_roots == 1:
        heads = skel.heads
        lat = int(np.argmax(np.abs(heads - heads[mm]).sum(0)))  # the axis on which the pairs differ
        M = np.eye(4)
        M[lat, lat] = -1
        pose = forward_kinematics(skel, rot, root_loc)
        pose_m = M @ pose[:, mm] @ M
        # keep each bone's own rest frame: mirror the pose, then express it against this bone's rest
        b = basis_from_pose(skel, pose_m)
        rot = orthonormalize(b[..., :3, :3])
        root_loc = b[:, 0, :3, 3]
        mirrored = True

    # the body: the real mesh (glTF) or a procedural one (BVH)
    J = len(names)
    has_mesh = bool(meshes)
    if not meshes:
        h = skel.height
        lengths = skel.lengths
        radius = np.clip(0.05 * h * rng.uniform(0.6, 1.3, J), 0.01 * h, np.maximum(lengths * 0.7, 0.02 * h))
        hue = rng.random()
        palette = np.array([_hsv(hue, rng.uniform(0.3, 0.9), rng.uniform(0.4, 0.9)),
                            _hsv(hue + 0.5, rng.uniform(0.5, 1.0), rng.uniform(0.2, 1.0)),
                            _hsv(rng.random(), 0.2, rng.uniform(0.1, 0.9)), _hsv(hue + 0.25, 0.8, 0.9)])
        body_rig = Rig(family=FILES.get(rel, "biped"), seed=int(seed), names=names, parents=skel.parents,
                       heads=skel.heads, tails=skel.tails, rolls=np.zeros(J), deform=np.ones(J, bool),
                       shape=np.stack([rng.integers(0, 5, J), radius, rng.uniform(0.35, 0.8, J),
                                       rng.uniform(0.6, 1.0, J), rng.uniform(0.5, 1.5, J),
                                       rng.uniform(-np.pi, np.pi, J)], -1),
                       color=np.repeat(palette[:1], J, 0), palette=palette,
                       pattern=np.stack([rng.integers(0, 8, J), rng.integers(0, 4, J), rng.integers(0, 2 ** 31, J),
                                         rng.integers(1, 4, J)], -1), roles=["chain"] * J,
                       limb=np.zeros(J, np.int64), side=np.zeros(J), chain_pos=np.zeros(J, np.int64))
        # BVH bones are tiny at the leaves; lengthen nothing, just skin a body to the real bones
        meshes = [render.build_body(body_rig, arm_ob, rng)]
        for ob in meshes:
            ob.matrix_world = arm_ob.matrix_world.copy()
        tol = 1.5 * radius
        tol[1:] = np.maximum(tol[1:], 1.5 * radius[skel.parents[1:]])
        tol = tol + 0.01 * h
    else:
        sh = sc.display.shading
        sh.color_type = "TEXTURE"
        tol = None  # adaptive: from each joint's distance to the nearest surface (see render.animate_and_render)
        if engine == "cycles":
            pass  # the imported materials render as they are

    world = np.array(arm_ob.matrix_world, np.float64)
    wscale = float(np.cbrt(abs(np.linalg.det(world[:3, :3]))))
    pose = forward_kinematics(skel, rot, root_loc)
    from mocap_blender.core.skeleton import pose_tails
    pts = np.concatenate([pose[..., :3, 3], pose_tails(skel, pose)], 1)
    pts_w = pts @ world[:3, :3].T + world[:3, 3]
    extent = 0.08 * skel.height * wscale
    if has_mesh:  # the real mesh reaches further than its bones: measure how far, on the first posed frame
        extent = max(extent, _mesh_reach(arm_ob, meshes, bl_names, names, rot[0], root_loc[0], full[0], pts_w[0]))
    cam_world, K, focal = render.plan_camera(pts_w, extent, rng, size, n_frames)
    if floor:
        zmin = float(pts_w[..., 2].min()) - 0.3 * extent
        render.build_floor(zmin, float(np.ptp(pts_w[..., :2].reshape(-1, 2), 0).max()) * 3 + 10 * extent, rng,
                           world_xy=tuple(pts_w[..., :2].reshape(-1, 2).mean(0)))
    motion_full = full.copy()
    d = render.animate_and_render(sc, arm_ob, meshes, names, bl_names, rot, root_loc, motion_full, cam_world, K,
                                  focal, size, None if tol is None else tol * wscale,
                                  world_space_occlusion=True, adaptive_floor=0.02 * skel.height * wscale)
    src = f"{rel}#{name}" + ("#mirror" if mirrored else "")
    rest, tails, _ = render._read_bones(arm_ob, names)
    d.update(names=np.array(names), parents=skel.parents.astype(np.int64), rest=rest.astype(np.float32),
             tails=tails.astype(np.float32),
             deform=np.array([arm_ob.data.bones[n].use_deform for n in names]),
             armature_world=world.astype(np.float32), K=K.astype(np.float32), fps=np.float64(fps),
             family=np.array(FILES.get(rel, "biped")), topology=np.array(topology_hash(skel.parents)),
             seed=np.int64(seed), source=np.array(src), style=np.array("real"), version=np.array(render.DATA_VERSION))
    return d


def _mesh_reach(arm_ob, meshes, bl_names, names, rot0, root0, full0, pts0):
    """Largest distance from a vertex of the posed real mesh to the nearest bone point (world units)."""
    import bpy

    from mocap_blender.core.rotations import matrix_to_quat, orthonormalize

    from . import render
    pbs = arm_ob.pose.bones
    B = len(pbs)
    idx = np.array([bl_names.index(n) for n in names])
    q = matrix_to_quat(orthonormalize(full0[:, :3, :3]))
    loc = full0[:, :3, 3].copy()
    q[idx] = matrix_to_quat(rot0)
    loc[idx] = 0.0
    loc[idx[0]] = root0
    pbs.foreach_set("rotation_quaternion", q.ravel())
    pbs.foreach_set("location", loc.ravel())
    pbs.foreach_set("scale", np.ones(B * 3))
    arm_ob.update_tag()
    bpy.context.view_layer.update()
    v = render.evaluated_vertices(meshes)
    v = v[:: max(1, len(v) // 4000)]
    dmin = np.min(np.linalg.norm(v[:, None] - pts0[None], axis=-1), axis=1)
    return float(np.percentile(dmin, 99.5))
