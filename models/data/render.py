"""Blender side of the data engine: build a rig and its skinned body, pose it, render it, record the truth.

Everything here needs `bpy` (one instance per process; bpy is not thread safe). `render_clip(...)` returns the
shard dict documented in models/data/README.md.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="mocap_data_user_"))

import bpy  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from mathutils import Matrix, Vector  # noqa: E402
from mathutils.bvhtree import BVHTree  # noqa: E402

from mocap_blender.core.rotations import matrix_to_quat  # noqa: E402
from mocap_blender.core.skeleton import Skeleton, forward_kinematics, pose_tails  # noqa: E402

from .motions import Motion  # noqa: E402
from .rigs import (SH_ANGLE, SH_ASPECT, SH_FEATURE, SH_KIND, SH_RADIUS, SH_TAPER, SHAPE_BOX, SHAPE_FIN,  # noqa: E402
                   SHAPE_FLAT, SHAPE_HORN, Rig, roll_frames, topology_hash)

SENSOR_MM = 36.0
BODY_SIDES = 12  # vertices around each body segment's cross-section (build_body, body_reach)
DATA_VERSION = "6"  # bump when what a seed produces changes (3: bulky bodies; 4: real clips seed-only; 5: part
# colours; 6: procedural subjects framed by each bone's own reach, so larger in the frame)
_STATE: dict = {}
# Seconds spent per stage of the per-frame loop in this process (summed over clips): see `stage` and bench.py.
STAGE_SECONDS: defaultdict[str, float] = defaultdict(float)
FRAMES_DONE = [0]


@contextmanager
def stage(name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS[name] += time.perf_counter() - t0


def _frame_dir() -> str:
    """Where the temporary frame file goes: shared memory when there is some (no disk write per frame)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


# --- scene ---------------------------------------------------------------------------------------

def reset_scene():
    """Remove every object and data-block a previous clip made (keeps the GPU context and shader caches)."""
    if not _STATE.get("init"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        _STATE["init"] = True
    for coll in (bpy.data.objects, bpy.data.meshes, bpy.data.armatures, bpy.data.materials, bpy.data.cameras,
                 bpy.data.lights, bpy.data.images, bpy.data.actions, bpy.data.worlds, bpy.data.textures):
        for block in list(coll):
            coll.remove(block)
    for c in list(bpy.data.collections):
        bpy.data.collections.remove(c)
    sc = bpy.context.scene
    sc.world = bpy.data.worlds.new("world")
    return sc


def setup_render(sc, size: int, engine: str, rng: np.random.Generator, bg: np.ndarray, threads: int = 1):
    r = sc.render
    r.resolution_x = r.resolution_y = int(size)
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.dither_intensity = 0.0
    r.film_transparent = False
    r.use_border = False
    r.image_settings.file_format = "BMP"  # temporary frame file: uncompressed, read back with cv2 (same pixels as PNG)
    r.image_settings.color_mode = "RGB"
    r.threads_mode = "FIXED"
    r.threads = max(int(threads), 1)
    sc.view_settings.view_transform = "Standard"
    sc.view_settings.look = "None"
    sc.view_settings.exposure = 0.0
    sc.view_settings.gamma = 1.0
    sc.world.color = tuple(bg)
    if engine == "workbench":
        r.engine = "BLENDER_WORKBENCH"
        sc.display.render_aa = "FXAA"
        sh = sc.display.shading
        sh.light = str(rng.choice(["STUDIO", "STUDIO", "STUDIO", "FLAT"])) if rng.random() < 0.9 else "STUDIO"
        if sh.light == "STUDIO":
            sh.studio_light = str(rng.choice(["Default", "basic.sl", "outdoor.sl", "paint.sl", "rim.sl",
                                              "studio.sl"]))
            sh.studiolight_rotate_z = float(rng.uniform(-np.pi, np.pi))
        sh.color_type = "VERTEX"
        sh.show_shadows = bool(rng.random() < 0.5)
        sh.shadow_intensity = float(rng.uniform(0.2, 0.6))
        sc.display.light_direction = tuple(_unit(rng.normal(0, 1, 3) + [0, 0, 1.5]))
        sh.show_cavity = bool(rng.random() < 0.3)
        sh.show_specular_highlight = bool(rng.random() < 0.7)
        sh.background_type = "WORLD"
    elif engine == "cycles":
        r.engine = "CYCLES"
        cy = sc.cycles
        cy.device = "CPU"
        cy.samples = 16
        cy.use_adaptive_sampling = True
        cy.use_denoising = True
        try:
            cy.denoiser = "OPENIMAGEDENOISE"
        except TypeError:
            pass
        cy.max_bounces = 3
        cy.diffuse_bounces = 2
        cy.glossy_bounces = 1
        cy.transmission_bounces = 0
        cy.volume_bounces = 0
        cy.transparent_max_bounces = 2
        r.filter_size = 1.0
        sc.world.use_nodes = True
        nt = sc.world.node_tree
        bgn = nt.nodes.get("Background") or nt.nodes.new("ShaderNodeBackground")
        bgn.inputs[0].default_value = (*bg, 1.0)
        bgn.inputs[1].default_value = float(rng.uniform(0.3, 1.0))
        if not bgn.outputs[0].is_linked:
            out = nt.nodes.get("World Output") or nt.nodes.new("ShaderNodeOutputWorld")
            nt.links.new(bgn.outputs[0], out.inputs[0])
        sun = bpy.data.lights.new("sun", "SUN")
        sun.energy = float(rng.uniform(2.0, 5.0))
        sun.angle = float(rng.uniform(0.05, 0.5))
        so = bpy.data.objects.new("sun", sun)
        sc.collection.objects.link(so)
        d = _unit(rng.normal(0, 1, 3) + [0, 0, 1.2])
        so.matrix_world = Matrix(_look_at(d * 10, np.zeros(3)))
    else:
        raise ValueError(f"unknown engine {engine!r}; use 'workbench' or 'cycles'")


def _vertex_color_material(name, roughness=0.5):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    bsdf = nt.nodes.get("Principled BSDF")
    ca = nt.nodes.new("ShaderNodeVertexColor")
    ca.layer_name = "Col"
    nt.links.new(ca.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = roughness
    return mat


# --- rig and body --------------------------------------------------------------------------------

def build_armature(rig: Rig, world: np.ndarray):
    sc = bpy.context.scene
    arm = bpy.data.armatures.new("rig")
    ob = bpy.data.objects.new("rig", arm)
    sc.collection.objects.link(ob)
    ob.matrix_world = Matrix(world)
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    ebs = []
    for j, name in enumerate(rig.names):
        eb = arm.edit_bones.new(name)
        eb.head = tuple(rig.heads[j])
        eb.tail = tuple(rig.tails[j])
        eb.roll = float(rig.rolls[j])
        eb.use_deform = bool(rig.deform[j])
        eb.use_connect = False
        if rig.parents[j] >= 0:
            eb.parent = ebs[rig.parents[j]]
        ebs.append(eb)
    bpy.ops.object.mode_set(mode="OBJECT")
    for pb in ob.pose.bones:
        pb.rotation_mode = "QUATERNION"
    return ob


def _profile(kind, n, aspect, feature):
    """(n, 2) cross-section (u, v) of unit width; none of them is round."""
    th = np.linspace(0, 2 * np.pi, n, endpoint=False) + np.pi / n
    c, s = np.cos(th), np.sin(th)
    if kind < 0:
        u, v = c, s * aspect
    elif kind == SHAPE_BOX:
        u, v = np.sign(c) * np.abs(c) ** 0.3, np.sign(s) * np.abs(s) ** 0.3 * aspect
    elif kind == SHAPE_FLAT:
        u, v = c, s * max(aspect * 0.6, 0.3)
    elif kind == SHAPE_FIN:
        u, v = c * 0.8, s * aspect
        k = np.argmax(s)
        v = v.copy()
        v[k] = aspect * (1.0 + 1.6 * feature)
    elif kind == SHAPE_HORN:
        u, v = c, s * aspect
        u = u.copy()
        u[np.argmax(c)] = 1.0 + 1.2 * feature
        v = v + 0.25 * aspect * np.cos(2 * th)
    else:  # triangle-ish
        r = 1 + 0.35 * np.cos(3 * th)
        u, v = r * c, r * s * aspect
    return np.stack([u, v], -1)


def body_reach(rig: Rig) -> np.ndarray:
    """(J,) how far `build_body`'s segment of each bone reaches from its bone's line (0 for bones without one)."""
    reach = np.zeros(rig.n_joints)
    for j in np.flatnonzero(rig.deform):
        sh = rig.shape[j]
        prof = _profile(int(sh[SH_KIND]), BODY_SIDES, float(sh[SH_ASPECT]), float(sh[SH_FEATURE]))
        # the widest point of the cross-section, and the segment's overlap past head and tail (at most 0.6 radius)
        reach[j] = sh[SH_RADIUS] * np.hypot(np.linalg.norm(prof, axis=1).max(), 0.6)
    return reach


def build_body(rig: Rig, arm_ob, rng: np.random.Generator, n_side: int = BODY_SIDES, n_ring: int = 5):
    """One mesh: a segment per deforming bone with a non-round cross-section, rigidly skinned to its bone, and
    per-face colours (a side stripe, rings, a lighter belly) that turn with the bone."""
    J = rig.n_joints
    frames = roll_frames(rig.heads, rig.tails, rig.shape[:, SH_ANGLE])  # shape frame, independent of the roll
    verts, faces, fcols, groups = [], [], [], []
    nv = 0
    sh = rig.shape
    texture = float(rig.info.get("texture", 0.0))  # per-face brightness jitter (rigs.py::_segment_colours)
    for j in range(J):
        if not rig.deform[j]:
            continue
        h, tl = rig.heads[j], rig.tails[j]
        L = float(np.linalg.norm(tl - h))
        e1, n, e2 = frames[j][:, 0], frames[j][:, 1], frames[j][:, 2]
        kind = int(sh[j, SH_KIND])
        rad = float(sh[j, SH_RADIUS])
        prof = _profile(kind, n_side, float(sh[j, SH_ASPECT]), float(sh[j, SH_FEATURE]))
        base_prof = _profile(SHAPE_FLAT if kind == SHAPE_FLAT else -1, n_side, float(sh[j, SH_ASPECT]), 0.0)
        ov = min(0.12, rad / max(L, 1e-6) * 0.6)
        ts = np.linspace(-ov, 1 + ov, n_ring)
        for i, t in enumerate(ts):
            taper = 1 - (1 - sh[j, SH_TAPER]) * np.clip(t, 0, 1)
            inner = 0 < i < n_ring - 1
            p = prof if (inner or kind in (SHAPE_BOX,)) else 0.5 * (prof + base_prof)
            if kind == SHAPE_FIN and not inner:
                p = base_prof
            ring = h + n * (t * L) + rad * taper * (p[:, :1] * e1 + p[:, 1:] * e2)
            verts.append(ring)
        pat = rig.pattern[j]
        col_base = rig.color[j]
        col_mark = rig.palette[int(pat[3])]
        belly = np.clip(col_base * 1.35 + 0.1, 0, 1)
        grain = 1 + texture * np.random.default_rng(int(pat[2])).standard_normal((n_ring - 1, n_side))
        for i in range(n_ring - 1):
            for k in range(n_side):
                a, b = nv + i * n_side + k, nv + i * n_side + (k + 1) % n_side
                faces.append((a, b, b + n_side, a + n_side))
                c = col_base
                if prof[k, 1] < 0 and prof[(k + 1) % n_side, 1] < 0:
                    c = belly
                if pat[1] > 0 and i % (pat[1] + 1) == 1:
                    c = rig.palette[2]
                if k == pat[0] % n_side or (k == (pat[0] + 1) % n_side and pat[2] % 2):
                    c = col_mark
                if (pat[2] >> (i * n_side + k) % 29) & 1 and (pat[2] % 5 == 0):
                    c = rig.palette[3]
                fcols.append(np.clip(c * grain[i, k], 0, 1))
        faces.append(tuple(nv + k for k in reversed(range(n_side))))
        fcols.append(rig.palette[2])
        faces.append(tuple(nv + (n_ring - 1) * n_side + k for k in range(n_side)))
        fcols.append(rig.palette[2])
        groups.append((rig.names[j], nv, n_ring * n_side))
        nv += n_ring * n_side
    verts = np.concatenate(verts)
    me = bpy.data.meshes.new("body")
    me.from_pydata(verts.tolist(), [], faces)
    me.update()
    attr = me.color_attributes.new("Col", "FLOAT_COLOR", "CORNER")
    loop_cols = np.repeat(np.asarray(fcols), [len(f) for f in faces], axis=0)
    attr.data.foreach_set("color", np.concatenate([loop_cols, np.ones((len(loop_cols), 1))], 1).ravel())
    me.color_attributes.active_color = attr
    me.color_attributes.render_color_index = 0
    ob = bpy.data.objects.new("body", me)
    bpy.context.scene.collection.objects.link(ob)
    ob.matrix_world = arm_ob.matrix_world.copy()
    for name, start, count in groups:
        vg = ob.vertex_groups.new(name=name)
        vg.add(list(range(start, start + count)), 1.0, "REPLACE")
    mod = ob.modifiers.new("Armature", "ARMATURE")
    mod.object = arm_ob
    ob.data.materials.append(_vertex_color_material("body", float(rng.uniform(0.2, 0.9))))
    return ob


def build_floor(z: float, size: float, rng, world_xy=(0.0, 0.0)):
    n = 8
    xs = np.linspace(-size, size, n + 1)
    vx, vy = np.meshgrid(xs + world_xy[0], xs + world_xy[1], indexing="ij")
    verts = np.stack([vx.ravel(), vy.ravel(), np.full(vx.size, z)], -1)
    faces = [(i * (n + 1) + k, (i + 1) * (n + 1) + k, (i + 1) * (n + 1) + k + 1, i * (n + 1) + k + 1)
             for i in range(n) for k in range(n)]
    me = bpy.data.meshes.new("floor")
    me.from_pydata(verts.tolist(), [], faces)
    me.update()
    c1 = rng.uniform(0.05, 0.9, 3)
    c2 = np.clip(c1 * rng.uniform(0.6, 1.4), 0, 1) if rng.random() < 0.6 else c1
    cols = np.array([c1 if (i + k) % 2 else c2 for i in range(n) for k in range(n)])
    attr = me.color_attributes.new("Col", "FLOAT_COLOR", "CORNER")
    attr.data.foreach_set("color", np.concatenate([np.repeat(cols, 4, 0), np.ones((4 * len(cols), 1))], 1).ravel())
    me.color_attributes.active_color = attr
    ob = bpy.data.objects.new("floor", me)
    bpy.context.scene.collection.objects.link(ob)
    ob.data.materials.append(_vertex_color_material("floor", 0.8))
    return ob


# --- camera --------------------------------------------------------------------------------------

def _unit(v):
    v = np.asarray(v, np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _look_at(eye, target, up=(0, 0, 1.0), roll=0.0):
    """Camera-to-world 4x4 for a Blender camera (looks along local -Z, +Y up) at `eye` looking at `target`."""
    f = _unit(np.asarray(target) - np.asarray(eye))
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-6:
        r = np.cross(f, [0, 1.0, 0])
    r = _unit(r)
    u = np.cross(r, f)
    c, s = np.cos(roll), np.sin(roll)
    r, u = c * r + s * u, -s * r + c * u
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = r, u, -f, eye
    return m


def intrinsics(focal_mm: float, size: int) -> np.ndarray:
    f = focal_mm / SENSOR_MM * size
    return np.array([[f, 0, size / 2.0], [0, f, size / 2.0], [0, 0, 1.0]])


def project(points_world, cam_world, K):
    """(..., N, 3) world points, (..., 4, 4) camera-to-world -> (..., N, 2) pixels (x right, y down), depth."""
    w2c = np.linalg.inv(cam_world)
    pc = np.einsum("...ab,...nb->...na", w2c[..., :3, :3], points_world) + w2c[..., None, :3, 3]
    x, y, z = pc[..., 0], -pc[..., 1], -pc[..., 2]  # OpenCV camera: x right, y down, z forward
    zz = np.where(np.abs(z) < 1e-9, 1e-9, z)
    uv = np.stack([K[0, 0] * x / zz + K[0, 2], K[1, 1] * y / zz + K[1, 2]], -1)
    return uv, z


def plan_camera(points_world, extent, rng, size, n_frames):
    """Random yaw, elevation, focal length; a distance that keeps every point (plus its `extent`, one radius for
    all or (N,) per point) in view on every frame; the camera follows the body partly. points_world (T, N, 3).
    Returns (cam_world (T,4,4), K, focal)."""
    extent = np.broadcast_to(np.asarray(extent, np.float64), points_world.shape[1:2])  # (N,)
    focal = float(np.exp(rng.uniform(np.log(18), np.log(85))))
    half = np.arctan(SENSOR_MM / 2 / focal)
    centre_t = 0.5 * (points_world.min(1) + points_world.max(1))  # (T, 3)
    follow = float(rng.choice([0.0, rng.uniform(0, 1), 1.0]))
    k = max(1, n_frames // 6)
    sm = np.stack([centre_t[max(0, i - k):i + k + 1].mean(0) for i in range(n_frames)])
    target = (1 - follow) * centre_t.mean(0) + follow * sm
    R = float(np.max(np.linalg.norm(points_world - target[:, None], axis=-1) + extent))
    dist = R / np.sin(half) * rng.uniform(1.0, 1.25)
    yaw = rng.uniform(-np.pi, np.pi)
    elev = np.deg2rad(rng.uniform(-5, 50))
    d = np.array([np.cos(elev) * np.sin(yaw), -np.cos(elev) * np.cos(yaw), np.sin(elev)])
    roll = float(np.deg2rad(rng.normal(0, 4)))
    off = rng.normal(0, 0.04, 2) * R  # the body is not always dead centre
    fill = rng.uniform(0.6, 0.92)  # the largest |coordinate| of the body, as a fraction of the half frame

    def cams_at(dist):
        cams = []
        for i in range(n_frames):
            m = _look_at(target[i] + d * dist, target[i], roll=roll)
            m[:3, 3] += m[:3, 0] * off[0] + m[:3, 1] * off[1]
            cams.append(m)
        return np.stack(cams)

    tan_h = np.tan(half)
    for _ in range(6):  # move in until the body (plus its thickness) fills `fill` of the frame on its worst frame
        cams = cams_at(dist)
        w2c = np.linalg.inv(cams)
        pc = np.einsum("tab,tnb->tna", w2c[:, :3, :3], points_world) + w2c[:, None, :3, 3]
        z = -pc[..., 2]
        if np.any(z < 2 * extent + 1e-3):
            dist *= 1.3
            continue
        m = float(np.max((np.abs(pc[..., :2]) + extent[:, None]) / z[..., None])) / tan_h
        dist = max(dist * (0.5 + 0.5 * m / fill), R * 0.3)
    cams = cams_at(dist)
    return cams, intrinsics(focal, size), focal


# --- one clip ------------------------------------------------------------------------------------

def _read_bones(arm_ob, names):
    """Rest (J,4,4) and tails (J,3) from Blender, in `names` order."""
    bones = arm_ob.data.bones
    bl_names = [b.name for b in bones]
    idx = np.array([bl_names.index(n) for n in names])
    nb = len(bones)
    ml = np.zeros(nb * 16, np.float32)
    bones.foreach_get("matrix_local", ml)
    tl = np.zeros(nb * 3, np.float32)
    bones.foreach_get("tail_local", tl)
    return ml.reshape(nb, 4, 4).transpose(0, 2, 1)[idx], tl.reshape(nb, 3)[idx], idx


def render_clip(rig: Rig, motion: Motion, seed: int, size: int = 160, engine: str = "workbench",
                floor: bool = True, threads: int = 1, source: str = "procedural", tmpdir: str | None = None,
                body_fn=None) -> dict:
    """Build, animate and render one clip of `rig` doing `motion`; return the shard dict."""
    rng = np.random.default_rng([int(seed), 271828])
    sc = reset_scene()
    T = motion.basis_rot.shape[0]
    bg = rng.uniform(0.02, 0.95, 3) ** 1.5
    setup_render(sc, size, engine, rng, bg, threads)
    yaw = rng.uniform(-np.pi, np.pi)
    world = np.eye(4)
    world[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    world[:3, 3] = rng.normal(0, 1, 3) * [1, 1, 0]
    arm_ob = build_armature(rig, world)
    body = body_fn(rig, arm_ob, rng) if body_fn else build_body(rig, arm_ob, rng)
    rest, tails, bl_idx = _read_bones(arm_ob, rig.names)
    skel = Skeleton.from_arrays(rig.names, rig.parents, rest.astype(np.float64), tails.astype(np.float64))
    if list(skel.names) != list(rig.names):
        raise RuntimeError("rig order is not the core Skeleton order")
    # plan the camera from the motion (numpy FK), body extent included
    pose = forward_kinematics(skel, motion.basis_rot, motion.root_loc)
    pts = np.concatenate([pose[..., :3, 3], pose_tails(skel, pose)], axis=1)
    pts_w = pts @ world[:3, :3].T + world[:3, 3]
    # each bone's own reach around its head and tail (a head also sits in its parent's segment); the widest
    # bone's reach around every point (data version 5 and before) left most subjects a third of the frame tall
    reach = body_reach(rig)
    head_reach = reach.copy()
    head_reach[1:] = np.maximum(reach[1:], reach[rig.parents[1:]])
    cam_world, K, focal = plan_camera(pts_w, np.concatenate([head_reach, reach]), rng, size, T)
    extent = float(reach.max())
    if floor:
        zmin = float(pts_w[..., 2].min()) - 0.5 * extent
        build_floor(zmin, float(np.ptp(pts_w[..., :2].reshape(-1, 2), 0).max()) * 3 + 10 * extent, rng,
                    world_xy=tuple(pts_w[..., :2].reshape(-1, 2).mean(0)))
    # per-joint occlusion tolerance: how far the body surface can lie in front of the joint
    r_ext = rig.shape[:, SH_RADIUS] * (1 + 1.6 * rig.shape[:, SH_FEATURE] * (rig.shape[:, SH_KIND] >= SHAPE_FIN))
    tol = r_ext.copy()
    par = rig.parents
    tol[1:] = np.maximum(tol[1:], r_ext[par[1:]])
    tol = 1.5 * tol + 0.01 * rig.height
    bl_names = [p.name for p in arm_ob.pose.bones]
    d = animate_and_render(sc, arm_ob, [body], list(rig.names), bl_names, motion.basis_rot, motion.root_loc, None,
                           cam_world, K, focal, size, tol, world_space_occlusion=False, tmpdir=tmpdir)
    d.update(
        names=np.array(rig.names), parents=rig.parents.astype(np.int64), rest=rest.astype(np.float32),
        tails=tails.astype(np.float32), deform=rig.deform.astype(bool), armature_world=world.astype(np.float32),
        K=K.astype(np.float32), fps=np.float64(motion.fps), family=np.array(rig.family),
        topology=np.array(topology_hash(rig.parents)), seed=np.int64(seed), source=np.array(source),
        style=np.array(motion.style), version=np.array(DATA_VERSION),
    )
    return d


def evaluated_vertices(meshes, space=None) -> np.ndarray:
    """The deformed (evaluated) vertices of `meshes` on the current pose, world space (V, 3), or carried by the
    4x4 matrix `space` (e.g. the inverse of the armature's matrix_world: armature space)."""
    dg = bpy.context.evaluated_depsgraph_get()
    out = []
    for ob in meshes:
        ev = ob.evaluated_get(dg)
        me = ev.to_mesh()
        co = np.zeros(len(me.vertices) * 3, np.float32)
        me.vertices.foreach_get("co", co)
        m = np.array(ev.matrix_world, np.float64)
        if space is not None:
            m = np.asarray(space, np.float64) @ m
        out.append(co.reshape(-1, 3).astype(np.float64) @ m[:3, :3].T + m[:3, 3])
        ev.to_mesh_clear()
    return np.concatenate(out)


def _world_bvh(meshes, depsgraph):
    """BVH of the evaluated (posed) meshes in world space."""
    verts, polys, off = [], [], 0
    for ob in meshes:
        ev = ob.evaluated_get(depsgraph)
        me = ev.to_mesh()
        n = len(me.vertices)
        co = np.zeros(n * 3, np.float32)
        me.vertices.foreach_get("co", co)
        m = np.array(ev.matrix_world)
        verts.append(co.reshape(n, 3) @ m[:3, :3].T + m[:3, 3])
        polys.extend([tuple(v + off for v in p.vertices) for p in me.polygons])
        off += n
        ev.to_mesh_clear()
    return BVHTree.FromPolygons(np.concatenate(verts).tolist(), polys)


def animate_and_render(sc, arm_ob, meshes, names, bl_names, basis_rot, root_loc, other_basis, cam_world, K, focal,
                       size, tol, *, world_space_occlusion=False, tmpdir=None, adaptive_floor=0.0) -> dict:
    """Pose the skeleton bones (`names`, core order) with `basis_rot` (T,J,3,3) and the root with `root_loc`,
    every other pose bone with `other_basis` (T,B,4,4 in Blender order; identity if None), render each frame and
    read the truth back from Blender. `tol` (J,) is how far in front of a joint the body surface may be before the
    joint counts as occluded; None: 3 x the joint's distance to the nearest surface + `adaptive_floor` (for real
    meshes, whose thickness is unknown)."""
    T = basis_rot.shape[0]
    J = len(names)
    cam = bpy.data.cameras.new("cam")
    cam.lens = focal
    cam.sensor_width = SENSOR_MM
    cam.sensor_fit = "HORIZONTAL"
    cam.clip_start = 0.01
    cam.clip_end = 1e5
    cam_ob = bpy.data.objects.new("cam", cam)
    sc.collection.objects.link(cam_ob)
    sc.camera = cam_ob
    world = np.array(arm_ob.matrix_world, np.float64)
    pbs = arm_ob.pose.bones
    B = len(pbs)
    for pb in pbs:
        pb.rotation_mode = "QUATERNION"
    bl_idx = np.array([bl_names.index(n) for n in names])
    quats = matrix_to_quat(basis_rot)  # (T, J, 4) in skeleton order
    q_all = np.tile(np.array([1.0, 0, 0, 0]), (T, B, 1))
    l_all = np.zeros((T, B, 3))
    s_all = np.ones((T, B, 3))
    if other_basis is not None:
        from mocap_blender.core.rotations import orthonormalize
        q_all = matrix_to_quat(orthonormalize(other_basis[..., :3, :3]))
        l_all = other_basis[..., :3, 3].copy()
        s_all = np.linalg.norm(other_basis[..., :3, :3], axis=-2)
    q_all[:, bl_idx] = quats
    l_all[:, bl_idx] = 0.0
    l_all[:, bl_idx[0]] = root_loc
    s_all[:, bl_idx] = 1.0
    frames = np.zeros((T, size, size, 3), np.uint8)
    basis = np.zeros((T, J, 4, 4), np.float32)
    heads = np.zeros((T, J, 3), np.float32)
    ptails = np.zeros((T, J, 3), np.float32)
    visible = np.zeros((T, J), bool)
    frame_file = os.path.join(tmpdir or _frame_dir(), f"mb_frame_{os.getpid()}.bmp")
    sc.render.filepath = frame_file
    w2a = np.linalg.inv(world)
    mb = np.zeros(B * 16, np.float32)
    hh = np.zeros(B * 3, np.float32)
    for t in range(T):
        with stage("pose + view-layer update"):
            pbs.foreach_set("rotation_quaternion", q_all[t].ravel())
            pbs.foreach_set("location", l_all[t].ravel())
            pbs.foreach_set("scale", s_all[t].ravel())
            arm_ob.update_tag()
            cam_ob.matrix_world = Matrix(cam_world[t])
            bpy.context.view_layer.update()
        with stage("truth read-back"):
            pbs.foreach_get("matrix_basis", mb)
            basis[t] = mb.reshape(B, 4, 4).transpose(0, 2, 1)[bl_idx]
            pbs.foreach_get("head", hh)
            heads[t] = hh.reshape(B, 3)[bl_idx]
            pbs.foreach_get("tail", hh)
            ptails[t] = hh.reshape(B, 3)[bl_idx]
        with stage("render + write frame"):
            bpy.ops.render.render(write_still=True)
        with stage("read frame"):
            frames[t] = cv2.imread(frame_file, cv2.IMREAD_COLOR)[..., ::-1]
        # occlusion: cast a ray from the camera to each joint against the posed body
        with stage("occlusion BVH"):
            depsgraph = bpy.context.evaluated_depsgraph_get()
            if world_space_occlusion:
                tree = _world_bvh(meshes, depsgraph)
                cam_p = cam_world[t][:3, 3]
                targets = heads[t].astype(np.float64) @ world[:3, :3].T + world[:3, 3]
            else:  # the body object sits at the armature's transform: work in armature space
                tree = BVHTree.FromObject(meshes[0], depsgraph)
                cam_p = (w2a @ cam_world[t])[:3, 3]
                targets = heads[t].astype(np.float64)
        with stage("occlusion rays"):
            for j in range(J):
                dv = targets[j] - cam_p
                dist = float(np.linalg.norm(dv))
                hit = tree.ray_cast(Vector(cam_p), Vector(dv / dist), dist)
                if tol is None:
                    near = tree.find_nearest(Vector(targets[j]))
                    tj = 3.0 * (near[3] if near[0] is not None else 0.0) + adaptive_floor
                else:
                    tj = tol[j]
                visible[t, j] = hit[0] is None or hit[3] > dist - tj
        FRAMES_DONE[0] += 1
    heads_w = heads.astype(np.float64) @ world[:3, :3].T + world[:3, 3]
    uv, z = project(heads_w, cam_world, K)
    inframe = (uv[..., 0] >= 0) & (uv[..., 0] < size) & (uv[..., 1] >= 0) & (uv[..., 1] < size) & (z > 0)
    visible &= inframe
    return dict(frames=frames, basis_rot=basis[..., :3, :3].copy(), root_loc=basis[:, 0, :3, 3].copy(),
                heads=heads, pose_tails=ptails, cam_world=cam_world.astype(np.float32),
                joints2d=uv.astype(np.float32), visible=visible)
