"""Probe: fit the rig's own skinned mesh to the video, frame by frame, from the matched reference frame.

Every learned image reader so far (stage 1, the patch tracker, the bone-turn reader) has stayed level with "hold"
as rotations, and image positions alone cannot meet the targets: depth and twist have to be read from the pictures
(models/README.md). This probe reads them without learning anything, by analysis by synthesis with the body the
user's armature already deforms. On the reference frame (the user posed the rig to match it) every visible surface
point of the mesh gets the video's colour there. On each following frame the local rotations are searched
(L-BFGS on blurred frames, coarse to fine, started from the last frame's) so that the surface points, skinned and
projected, land on pixels of their own colour again. Foreshortening, which parts hide which, and the silhouette
against the background all enter through that one photometric loss.

    python -m models.probe_mesh_fit dump --data data/eval --out data/eval_mesh     # Blender: meshes of the clips
    python -m models.probe_mesh_fit fit --data data/eval --mesh data/eval_mesh [--max-clips 40]

`dump` rebuilds each clip's scene from its seed (the data engine's own code, stopped before it renders more than one
frame), and stores the mesh's surface points (polygon centres, armature space at rest), their normals, the area
each stands for and skin weights per skeleton bone (a weight on a bone outside the skeleton goes to its nearest
ancestor in it). It checks the skinning against Blender's own deformed mesh on the clip's first frame.

`--silhouette W` adds the region term of model-based trackers (PWP3D): the points' coverage of the image (each point
standing for its share of the surface) should match where the pixels look like the body, by colour histograms of
frame 0 in and out of the reference pose's coverage. `--oracle-silhouette` takes the coverage under the true poses
instead: a ceiling for any silhouette, not a method.

`fit` scores, with the matched reference (frame 0) and the true root (orientation and place) given as in the other
probes, the fitted local rotations beside hold, and the fitted joints' image positions (lifted through stage 2 and
IK, and as pixels) beside the true image positions and the layout. Figures: models/README.md (sessions of 3 Dec,
15:22 and 17:57). A probe of what the video holds, not part of the product.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

K_SKIN = 4  # skin weights kept per surface point


# ----------------------------------------------------------------------------------------------- dump (Blender)

class _Captured(Exception):
    def __init__(self, data):
        super().__init__("captured")
        self.data = data


def _skeleton_bone(arm_ob, names):
    """-> {Blender bone name: skeleton index}: a bone outside the skeleton goes to its nearest ancestor in it
    (the root if it has none)."""
    index = {n: i for i, n in enumerate(names)}
    out = {}
    for b in arm_ob.data.bones:
        a = b
        while a is not None and a.name not in index:
            a = a.parent
        out[b.name] = index[a.name] if a is not None else 0
    return out


def mesh_samples(arm_ob, meshes, names, corners: bool = False):
    """Surface points of `meshes` (polygon centres), armature space at rest: points (P,3), normals (P,3),
    skin_idx (P,K) skeleton bones, skin_w (P,K), areas (P,) of surface each stands for; and per vertex (V,3) rest
    points, (V,J) weights for the check."""
    to_bone = _skeleton_bone(arm_ob, names)
    deform = {b.name for b in arm_ob.data.bones if b.use_deform}
    J = len(names)
    a_inv = np.linalg.inv(np.array(arm_ob.matrix_world, np.float64))
    pts, nrm, idx, wts, area, all_v, all_w = [], [], [], [], [], [], []
    for ob in meshes:
        me = ob.data
        m = a_inv @ np.array(ob.matrix_world, np.float64)
        n = len(me.vertices)
        co = np.zeros(n * 3, np.float32)
        me.vertices.foreach_get("co", co)
        v = co.reshape(n, 3).astype(np.float64) @ m[:3, :3].T + m[:3, 3]
        groups = {g.index: g.name for g in ob.vertex_groups}
        w = np.zeros((n, J))
        for vert in me.vertices:
            for g in vert.groups:
                name = groups.get(g.group)
                if name in deform and g.weight > 0:
                    w[vert.index, to_bone[name]] += g.weight
        tot = w.sum(1, keepdims=True)
        w = np.where(tot > 0, w / np.maximum(tot, 1e-12), np.eye(J)[0])  # unweighted: moves with the root
        all_v.append(v)
        all_w.append(w)
        nm = np.linalg.inv(m[:3, :3]).T
        for p in me.polygons:
            vs = list(p.vertices)
            nn_ = np.asarray(p.normal, np.float64) @ nm.T
            centre, cw = v[vs].mean(0), w[vs].mean(0)
            a = 0.5 * np.linalg.norm(np.cross(v[vs] - centre, v[np.roll(vs, -1)] - centre).sum(0))
            # the centre, and with `corners` also half-way from it to each corner (colours are per face)
            samples = [(centre, cw)] + ([(0.5 * (centre + v[k]), 0.5 * (cw + w[k])) for k in vs] if corners else [])
            for q, pw in samples:
                pts.append(q)
                area.append(a / len(samples))
                nrm.append(nn_ / max(np.linalg.norm(nn_), 1e-12))
                top = np.argsort(-pw)[:K_SKIN]
                idx.append(top)
                wts.append(pw[top] / pw[top].sum())
    return (np.array(pts), np.array(nrm), np.array(idx), np.array(wts), np.array(area), np.concatenate(all_v),
            np.concatenate(all_w))


def dump_clip(seed: int, size: int, frames: int, real_fraction: float, frame0=None, corners: bool = False) -> dict:
    """Rebuild clip `seed`'s scene with the data engine and return its mesh samples (imports bpy); `frame0`, the
    stored clip's first frame, is compared with the rebuilt one (`frame0_diff`, mean absolute grey levels)."""
    from mocap_blender.core.skeleton import Skeleton, forward_kinematics
    from .data import generate, render
    original = render.animate_and_render

    def capture(sc, arm_ob, meshes, names, bl_names, basis_rot, root_loc, other_basis, cam_world, K, focal, size_,
                tol, **kw):
        ob1 = None if other_basis is None else other_basis[:1]
        d = original(sc, arm_ob, meshes, names, bl_names, basis_rot[:1], root_loc[:1], ob1, cam_world[:1], K, focal,
                     size_, tol, **kw)  # one frame: the scene is left posed on the clip's first frame
        pts, nrm, idx, wts, area, v, w = mesh_samples(arm_ob, meshes, names, corners)
        rest, tails, _ = render._read_bones(arm_ob, names)
        parents = [names.index(arm_ob.data.bones[n].parent.name) if arm_ob.data.bones[n].parent else -1
                   for n in names]
        skel = Skeleton.from_arrays(names, parents, rest.astype(np.float64), tails.astype(np.float64))
        pose = forward_kinematics(skel, d["basis_rot"].astype(np.float64), d["root_loc"].astype(np.float64))[0]
        mats = pose @ np.linalg.inv(skel.rest)  # (J, 4, 4) rest -> posed, armature space
        ours = np.einsum("vj,jab,vb->va", w, mats[:, :3, :3], v) + w @ mats[:, :3, 3]
        theirs = render.evaluated_vertices(meshes, np.linalg.inv(np.array(arm_ob.matrix_world, np.float64)))
        err = np.linalg.norm(ours - theirs, axis=1) / skel.height if len(theirs) == len(ours) else np.array([np.inf])
        raise _Captured(dict(points=pts.astype(np.float32), normals=nrm.astype(np.float32),
                             skin_idx=idx.astype(np.int32), skin_w=wts.astype(np.float32),
                             areas=area.astype(np.float32),
                             skin_err_mean=np.float64(err.mean()), skin_err_max=np.float64(err.max()),
                             seed=np.int64(seed), frame0_diff=np.float64(
                                 np.nan if frame0 is None else np.abs(d["frames"][0] - frame0.astype(float)).mean())))

    render.animate_and_render = capture
    try:
        generate.make_clip(seed, size=size, frames=frames, real_fraction=real_fraction)
    except _Captured as c:
        return c.data
    finally:
        render.animate_and_render = original
    raise RuntimeError(f"clip {seed}: the data engine never posed a body")


def dump(data: Path, out: Path, real_fraction: float, max_clips: int | None, corners: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(data.glob("clip_*.npz"))[:max_clips]
    for k, p in enumerate(paths):
        target = out / p.name
        if target.exists():
            continue
        d = np.load(p)
        t0 = time.time()
        m = dump_clip(int(d["seed"]), int(d["frames"].shape[1]), int(d["frames"].shape[0]), real_fraction,
                      d["frames"][0], corners)
        np.savez_compressed(target, **m)
        print(f"[{k + 1}/{len(paths)}] {p.name} {str(d['source'])[:40]:<40} P={len(m['points'])} skin error "
              f"mean {m['skin_err_mean']:.2e} max {m['skin_err_max']:.2e} (of height), frame 0 off by "
              f"{m['frame0_diff']:.2f} {time.time() - t0:.1f} s", flush=True)


# ----------------------------------------------------------------------------------------------- fit (PyTorch)

def rodrigues(w):
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3), smooth at zero."""
    th2 = (w * w).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    th = torch.sqrt(th2 + 1e-12)
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    k = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(w.shape[:-1] + (3, 3))
    a = torch.where(th2 < 1e-8, 1 - th2 / 6, torch.sin(th) / th)
    b = torch.where(th2 < 1e-8, 0.5 - th2 / 24, (1 - torch.cos(th)) / th2.clamp_min(1e-12))
    return torch.eye(3, dtype=w.dtype) + a * k + b * (k @ k)


def depth_levels(parents) -> list:
    """Joint indices grouped by depth (the root alone first)."""
    depth = np.zeros(len(parents), int)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [np.flatnonzero(depth == d) for d in range(depth.max() + 1)]


class MeshFit:
    """One clip's skinned surface points, camera and frames: poses the points, projects them, tells which the camera
    sees and reads the frames' colours where they land."""

    def __init__(self, clip, shard, mesh, zbin: float = 1.0, use_areas: bool = True):
        f = lambda a: torch.as_tensor(np.asarray(a, np.float64))
        sk = clip.skel
        self.parents, self.levels = sk.parents, depth_levels(sk.parents)
        self.rest_rel, self.rest_inv = f(sk.rest_relative), f(np.linalg.inv(sk.rest))
        self.root_loc = f(shard["root_loc"])
        aw = shard["armature_world"].astype(np.float64)
        self.cam = f(np.linalg.inv(shard["cam_world"].astype(np.float64)) @ aw)  # (T, 4, 4) armature -> Blender cam
        self.K = shard["K"].astype(np.float64)
        self.size = int(shard["frames"].shape[1])
        self.pts, self.nrm = f(mesh["points"]), f(mesh["normals"])
        self.idx, self.w = torch.as_tensor(mesh["skin_idx"].astype(np.int64)), f(mesh["skin_w"])
        self.zbin = zbin
        self.frames = torch.as_tensor(shard["frames"]).permute(0, 3, 1, 2).double() / 255.0  # (T, 3, S, S)
        scale = float(np.cbrt(np.linalg.det(aw[:3, :3])))
        self.height = sk.height * scale  # world units
        # surface each point stands for, world units^2 (dumps since 3 Dec, evening); None: points count equally
        self.areas = f(mesh["areas"]) * scale ** 2 if use_areas and "areas" in mesh else None

    def pose(self, rot, t: int):
        """Local rotations (J, 3, 3) of frame t -> armature-space bone matrices (J, 4, 4)."""
        J = rot.shape[0]
        basis = torch.zeros(J, 4, 4, dtype=rot.dtype)
        basis[:, :3, :3] = rot
        basis[:, 3, 3] = 1
        basis[0, :3, 3] = self.root_loc[t]
        local = self.rest_rel @ basis
        out = [None] * J
        out[0] = local[0]
        for lv in self.levels[1:]:
            par = torch.stack([out[p] for p in self.parents[lv]])
            for j, m in zip(lv, par @ local[lv]):
                out[j] = m
        return torch.stack(out)

    def project(self, rot, t: int, normals: bool = False):
        """-> pixel coordinates (P, 2), depth (P,), facing the camera (P,) bool [, unit normals (P, 3) in the
        camera frame (Blender's: x right, y up, z back)]."""
        m = self.pose(rot, t) @ self.rest_inv  # (J, 4, 4) rest -> posed
        mk = m[self.idx]  # (P, K, 4, 4)
        p = (self.w[..., None] * ((mk[..., :3, :3] @ self.pts[:, None, :, None])[..., 0] + mk[..., :3, 3])).sum(1)
        n = (self.w[..., None] * (mk[..., :3, :3] @ self.nrm[:, None, :, None])[..., 0]).sum(1)
        c = self.cam[t]
        pc = p @ c[:3, :3].T + c[:3, 3]  # Blender camera: looks along -Z
        z = -pc[:, 2]
        u = self.K[0, 0] * pc[:, 0] / z + self.K[0, 2]
        v = self.K[1, 1] * -pc[:, 1] / z + self.K[1, 2]
        nc = n @ c[:3, :3].T
        facing = (nc * pc).sum(-1) < 0  # the normal points towards the camera centre
        if normals:
            return torch.stack([u, v], -1), z, facing, nc / nc.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.stack([u, v], -1), z, facing

    def pixel_areas(self, z):
        """px^2 of the image each point's surface covers at depths z (P,) if it faced the camera; None without
        areas."""
        return None if self.areas is None else self.areas * (float(self.K[0, 0]) / z) ** 2

    def head_depths(self, rot, t: int):
        """Depth of every bone head along the camera's axis, relative to the root's, / the height (J,)."""
        heads = self.pose(rot, t)[:, :3, 3]
        z = -(heads @ self.cam[t, :3, :3].T)[:, 2]
        return (z - z[0]) / self.height

    def visible(self, uv, z, facing, tol: float):
        """Facing points not behind another facing point's depth + tol within the same `zbin` px cell (3x3)."""
        with torch.no_grad():
            nb = int(np.ceil(self.size / self.zbin)) + 2
            cell = (uv / self.zbin).floor().long().clamp(-1, nb - 2) + 1
            key = cell[:, 1] * nb + cell[:, 0]
            zz = torch.where(facing, z, torch.full_like(z, np.inf))
            zmin = torch.full((nb * nb,), np.inf, dtype=z.dtype).scatter_reduce(0, key, zz, "amin")
            zmin = -torch.nn.functional.max_pool2d(-zmin.view(1, 1, nb, nb), 3, 1, 1).view(-1)
            inside = (uv >= 0).all(-1) & (uv < self.size).all(-1)
            return facing & inside & (z <= zmin[key] + tol)

    def sample(self, img, uv):
        """Colours (P, 3) of `img` (3, S, S) at pixel coordinates uv (bilinear)."""
        g = (uv / self.size * 2 - 1).view(1, 1, -1, 2).to(img.dtype)
        return torch.nn.functional.grid_sample(img[None], g, align_corners=False)[0, :, 0].T


def blurred(frames, sigma: float):
    import cv2
    if sigma <= 0:
        return frames
    x = frames.permute(0, 2, 3, 1).numpy()
    return torch.as_tensor(np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in x])).permute(0, 3, 1, 2)


def _gauss_blur(x, sigma: float):
    """(N, S, S) -> the same blurred by a Gaussian of `sigma` px (separable, zero outside; none at 0),
    differentiable."""
    if sigma <= 0:
        return x
    r = max(1, int(np.ceil(3 * sigma)))
    g = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma * sigma))
    g = g / g.sum()
    x = torch.nn.functional.conv2d(x[:, None], g.view(1, 1, 1, -1), padding=(0, r))
    return torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1), padding=(r, 0))[:, 0]


def splat(uv, size: int, weights=None):
    """Bilinear splat (S, S) of the points at uv (P, 2) pixels, each carrying `weights` (P,) (default 1);
    differentiable in uv and the weights."""
    u, v = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = u.detach().floor(), v.detach().floor()
    fx, fy = u - x0, v - y0
    one = torch.ones_like(u) if weights is None else weights
    dens = torch.zeros(size * size, dtype=uv.dtype)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = (x0 + dx).long(), (y0 + dy).long()
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        dens = dens.index_add(0, (yi * size + xi)[ok], (w * one)[ok])
    return dens.view(size, size)


def coverage(uv, size: int, sigma: float, d0: float | None = None, areas=None):
    """How much of every pixel the points at uv (P, 2) cover, (S, S) in [0, 1], differentiable in uv: their splat
    blurred by `sigma` px (density D), then 1 - exp(-D / d0); `d0` None: the density itself. With `areas` (P,), the
    px^2 of surface each point stands for, the splat of the areas is filled over half the points' typical spacing
    (at least 1 px) and turned into coverage first (1 - exp(-2 D): one layer of surface covers 86%), then blurred by
    `sigma`, like the image's silhouette."""
    if areas is not None:
        fill = max(1.0, 0.5 * float(areas.detach().median().sqrt()))
        layers = _gauss_blur(splat(uv, size, areas)[None], fill)
        return _gauss_blur(1 - torch.exp(-2 * layers), sigma)[0]
    dens = _gauss_blur(splat(uv, size)[None], sigma)[0]
    return dens if d0 is None else 1 - torch.exp(-dens / d0)


def colour_posterior(frames, ref_mask, bins: int = 16, grow: int = 2) -> torch.Tensor:
    """Foreground probability (T, S, S) of every pixel of `frames` (T, 3, S, S) in [0, 1], from RGB histograms
    (`bins` per channel) of frame 0 split by `ref_mask` (S, S) bool, which is eroded (foreground) and dilated
    (background) by `grow` px so that the outline's mixed pixels train neither (as in PWP3D's region term)."""
    import cv2
    k = np.ones((2 * grow + 1,) * 2, np.uint8)
    fg = cv2.erode(ref_mask.astype(np.uint8), k) > 0
    bg = cv2.dilate(ref_mask.astype(np.uint8), k) == 0
    q = (frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.int64).clip(0, 255) * bins // 256
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]  # (T, S, S)
    pf = np.bincount(code[0][fg], minlength=bins ** 3) + 0.5
    pb = np.bincount(code[0][bg], minlength=bins ** 3) + 0.5
    pf, pb = pf / pf.sum(), pb / pb.sum()
    return torch.as_tensor((pf / (pf + pb))[code])


def silhouettes(fit: MeshFit, ref_rot, window: int, sigmas, oracle_rot=None) -> dict:
    """{sigma: (target (window, S, S), d0)} for the silhouette term: the colour posterior of the pixels (frame 0's
    colours in and out of the reference pose's coverage), blurred like the points' coverage; or, with
    `oracle_rot` (window, J, 3, 3), the coverage of the points under those (true) poses, a ceiling. `d0` scales the
    coverage of points without areas (a third of the body's typical density covers fully); None with areas."""
    def cover(rot, t, px, d0=None):
        uv, z, _ = fit.project(torch.as_tensor(rot, dtype=torch.float64), t)
        if fit.areas is not None:
            return coverage(uv, fit.size, px, areas=fit.pixel_areas(z)), None
        dens = coverage(uv, fit.size, px)
        d0 = 0.3 * float(dens[dens > 1e-3].median()) if d0 is None else d0
        return 1 - torch.exp(-dens / d0), d0

    out = {}
    with torch.no_grad():
        if oracle_rot is None:
            post = colour_posterior(fit.frames[:window], (cover(ref_rot, 0, fit.size / 160)[0] > 0.5).numpy())
        for s in sigmas:
            px = max(s, 1.0) * fit.size / 160  # sigmas: px of a 160 px frame, as the blur of the colours
            d0 = None if fit.areas is not None else cover(ref_rot, 0, px)[1]
            if oracle_rot is None:
                target = _gauss_blur(post, px)
            else:
                target = torch.stack([cover(oracle_rot[t], t, px, d0)[0] for t in range(window)])
            out[s] = (target, d0)
    return out


def silhouette_term(fit: MeshFit, uv, z, mask: tuple, sigma: float, t: int):
    """Squared difference between the coverage of the points at uv (P, 2), depths z (P,), and frame t of a
    `silhouettes` target `mask` (target, d0) at blur `sigma`, per unit of the target's area."""
    target, d0 = mask
    cover = coverage(uv, fit.size, max(sigma, 1.0) * fit.size / 160, d0, fit.pixel_areas(z))
    return ((cover - target[t]) ** 2).sum() / target[t].sum().clamp_min(1)


def fit_frame(fit: MeshFit, imgs: dict, colours: dict, has, start, t: int, iters=(15, 15, 15), lr: float = 0.03,
              smooth: float = 0.1, tol: float = 0.03, ref=None, anchor: float = 0.0, shade: float = 0.3,
              optimizer: str = "lbfgs", depth: float = 0.0, free_root: bool = False, sil: float = 0.0,
              masks: dict | None = None):
    """Local rotations (J, 3, 3) of frame t, searched from `start` (its root rotation is kept): each bone turns by an
    axis-angle so that the surface points coloured on the reference frame (`colours[sigma]`, where `has`) land on
    their colours in `imgs[sigma][t]`, coarse (large sigma) to fine, against a pull (`smooth`) back to `start` and
    one (`anchor`, chordal) towards the reference pose `ref`, which keeps what the pictures do not show as held.
    `optimizer` "adam" (steps of `lr`) or "lbfgs" (`iters` iterations per level, strong Wolfe line search).
    `colours[sigma]` is (P, 3), or (albedo (P, 3), ambient (3,), normal term (3, 3)) from `fit_light`.
    `depth`: weight of a pull of every head's depth (camera frame, relative to the root, / height) towards the
    reference pose's carried by the root: the depth the pictures show least. `free_root`: the root turns too.
    `sil`: weight of the silhouette term, the squared difference between all points' coverage and `masks[sigma]`
    (`silhouettes`) over the image, per unit of the target's area."""
    J = start.shape[0]
    mask = torch.ones(J, 1, dtype=torch.float64)
    mask[0] = float(free_root)
    w = torch.zeros(J, 3, dtype=torch.float64, requires_grad=True)
    if depth:
        held = ref.clone()
        held[0] = start[0]
        z_held = fit.head_depths(held, t).detach()

    def objective(s, vis):
        rot = start @ rodrigues(w * mask)
        uv, z, _, nc = fit.project(rot, t, normals=True)
        want = colours[s]
        if isinstance(want, tuple):  # a shading model: colour per point x light of the turned normal
            alb, a, b = want
            want = alb * (a + nc @ b.T)
        d = appearance(fit.sample(imgs[s][t], uv), shade) - appearance(want, shade)
        photo = torch.sqrt(d * d + 1e-4).sum(-1)
        loss = (photo * vis).sum() / vis.sum().clamp_min(1) + smooth * (w * w).sum()
        if anchor:
            loss = loss + anchor * ((rot - ref)[1:] ** 2).sum()
        if depth:
            loss = loss + depth * ((fit.head_depths(rot, t) - z_held) ** 2).sum()
        if sil:
            loss = loss + sil * silhouette_term(fit, uv, z, masks[s], s, t)
        return loss

    def visibility():
        with torch.no_grad():
            uv, z, facing = fit.project(start @ rodrigues(w * mask), t)
            return fit.visible(uv, z, facing, tol * fit.height) & has

    if optimizer == "lbfgs":
        for s, n_it in zip(imgs, iters):
            vis = visibility()
            opt = torch.optim.LBFGS([w], lr=1.0, max_iter=n_it, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = objective(s, vis)
                loss.backward()
                return loss
            opt.step(closure)
    else:
        opt = torch.optim.Adam([w], lr=lr)
        for s, n_it in zip(imgs, iters):
            for it in range(n_it):
                if it % 10 == 0:
                    vis = visibility()
                opt.zero_grad()
                objective(s, vis).backward()
                opt.step()
    with torch.no_grad():
        return start @ rodrigues(w * mask)


def appearance(rgb, shade: float):
    """(P, 3) colours -> what is compared: `shade` 1 keeps them as they are; 0 keeps only their direction in RGB
    (the hue and saturation, which shading changes little), scaled to the colour's own brightness in between."""
    if shade >= 1:
        return rgb
    n = rgb.norm(dim=-1, keepdim=True)
    return rgb / (n + 0.05) * (shade * n + (1 - shade) * 0.6)


def reference_colours(fit: MeshFit, ref_rot, window: int, sigmas, tol: float = 0.03):
    """Blurred frames {sigma: (T, 3, S, S)}, the surface points' colours on frame 0 under `ref_rot`, and which
    points frame 0 shows."""
    imgs = {s: blurred(fit.frames[:window], s * fit.size / 160) for s in sigmas}  # sigmas: px of a 160 px frame
    uv0, z0, f0 = fit.project(torch.as_tensor(ref_rot, dtype=torch.float64), 0)
    has = fit.visible(uv0, z0, f0, tol * fit.height)
    return imgs, {s: fit.sample(imgs[s][0], uv0).detach() for s in sigmas}, has


def fit_light(C, N, V, iters: int = 10):
    """A light fixed to the camera and a colour per point, from colours C (T, P, 3) seen with camera-frame normals
    N (T, P, 3) where V (T, P): C ~ albedo (P, 3) x (ambient (3,) + N @ normal_term.T (3, 3)), by alternating least
    squares. From one frame alone it stays at the frame's colours (normal term 0)."""
    a, b = np.ones(3), np.zeros((3, 3))
    vm = V[..., None].astype(float)
    alb = C[0].copy()
    for _ in range(iters):
        light = a + N @ b.T  # (T, P, 3)
        alb = (C * light * vm).sum(0) / np.maximum((light * light * vm).sum(0), 1e-9)
        for ch in range(3):
            x = np.concatenate([np.ones(N.shape[:2] + (1,)), N], -1)[V] * alb[np.nonzero(V)[1], ch:ch + 1]
            sol = np.linalg.solve(x.T @ x + 1e-6 * np.eye(4), x.T @ C[..., ch][V])
            a[ch], b[ch] = sol[0], sol[1:]
    return alb, a, b


def fit_window(fit: MeshFit, ref_rot, true_root, window: int, sigmas=(4.0, 2.0, 1.0), shading: bool = False,
               free_root: bool = False, oracle_rot=None, **kw):
    """Track local rotations (window, J, 3, 3) from frame 0 (given: `ref_rot`) frame by frame, each frame started
    from the last one's; the root's rotation is given on every frame (`true_root`, (window, 3, 3)). `shading`: the
    points' colours come from a light fixed to the camera (`fit_light`), refitted after every frame on the frames
    fitted so far, so that a part turning in depth is expected to change its brightness. `free_root`: the root's
    rotation is fitted too, from the reference's (`true_root` unused; its location stays the clip's). With `sil` in
    `kw`, the silhouette term's targets come from `silhouettes` (the true poses `oracle_rot` give a ceiling)."""
    tol = kw.get("tol", 0.03)
    imgs, colours, has = reference_colours(fit, ref_rot, window, sigmas, tol)
    if kw.get("sil"):
        kw["masks"] = silhouettes(fit, ref_rot, window, sigmas, oracle_rot)
    kw.setdefault("iters", (15,) * len(sigmas))
    out = [torch.as_tensor(ref_rot, dtype=torch.float64)]
    seen = {s: [] for s in sigmas}  # per sigma: (colours, normals, visible) of each fitted frame
    for t in range(window):
        if t:
            start = out[-1].clone()
            if not free_root:
                start[0] = torch.as_tensor(true_root[t])
            out.append(fit_frame(fit, imgs, colours, has, start, t, ref=out[0], free_root=free_root, **kw))
        if shading and t < window - 1:
            with torch.no_grad():
                uv, z, facing, nc = fit.project(out[t], t, normals=True)
                vis = (fit.visible(uv, z, facing, tol * fit.height) & has).numpy()
                for s in sigmas:
                    seen[s].append((fit.sample(imgs[s][t], uv).numpy(), nc.numpy(), vis))
                    c, n, v = (np.stack(x) for x in zip(*seen[s]))
                    colours[s] = tuple(torch.as_tensor(x) for x in fit_light(c, n, v))
    return torch.stack(out).numpy()


def joint_pixels(clip, shard, rot) -> tuple:
    """Heads and tails (T, J, 2) pixels of the local rotations `rot` (T, J, 3, 3) on the clip's root location."""
    from mocap_blender.core.skeleton import forward_kinematics, pose_tails
    from .data.render import project
    t = len(rot)
    pose = forward_kinematics(clip.skel, rot, shard["root_loc"][:t].astype(np.float64))
    aw = shard["armature_world"].astype(np.float64)
    cam_world, K = shard["cam_world"][:t].astype(np.float64), shard["K"].astype(np.float64)
    return tuple(project(p @ aw[:3, :3].T + aw[:3, 3], cam_world, K)[0]
                 for p in (pose[..., :3, 3], pose_tails(clip.skel, pose)))


def fit_probe(data: Path, mesh_dir: Path, max_clips: int | None, window: int, threads: int, only=None,
              pos_err: float = 0.03, oracle_silhouette: bool = False, use_areas: bool = True, **kw):
    """Prints, per group, the fitted rotations beside hold, and the fitted joints' image positions lifted through
    stage 2 and IK beside the true image positions and the layout lifted the same way (probe_patch_tracker)."""
    from collections import defaultdict

    from mocap_blender.core import metrics
    from .evaluate import _arm, _row, load_eval
    from .probe_patch_tracker import print_rows, stage2_net, stage2_rows
    torch.set_num_threads(threads)
    net, model = stage2_net()
    clips, sources = load_eval([data], max_clips)
    acc = defaultdict(list)
    t_all = time.time()
    for i, c in enumerate(clips):
        if only and i not in only:
            continue
        group = "real" if sources[i] != "procedural" else "procedural"
        shard, mesh = np.load(c.path), np.load(mesh_dir / c.path.name)
        w = min(window, c.n_frames)
        truth = c.basis[:w]
        t0 = time.time()
        fit = MeshFit(c, shard, mesh, use_areas=use_areas)
        rot = fit_window(fit, truth[0], truth[:, 0], w, oracle_rot=truth if oracle_silhouette else None, **kw)
        secs = time.time() - t0
        rows = stage2_rows(c, shard["frames"][:w], {"mesh fit": joint_pixels(c, shard, rot)}, net, model, pos_err,
                           acc, group, w)
        a2c_rest = np.swapaxes(c.cam_to_arm[:w], -1, -2) @ c.skel.rest[0, :3, :3]  # root rotation -> camera
        true_heads = _arm(c.cam_to_arm[:w], c.head_cam[:w], c.skel.height)
        rows["mesh fit rotations"] = _row(rot, truth, a2c_rest @ rot[:, 0], c.root_rot[:w], c.skel, true_heads)
        held = np.repeat(truth[:1], w, 0)  # the reference pose, root included, kept in the armature's space
        rows["hold, reference root"] = _row(held, truth, a2c_rest @ held[:, 0], c.root_rot[:w], c.skel, true_heads)
        acc[(group, "mesh fit rotations", "root")].append(rows["mesh fit rotations"]["root"])
        acc[(group, "hold, reference root", "root")].append(rows["hold, reference root"]["root"])
        for method, r in rows.items():
            for col in ("moving", "all"):
                acc[(group, method, col)].append(r[col])
        print(f"  [{i + 1}/{len(clips)}] {c.name} {group:<10} J={c.n_joints:<3} P={len(mesh['points']):<5} hold "
              f"{rows['hold']['moving'][0]:.2f}, mesh fit {rows['mesh fit rotations']['moving'][0]:.2f}, stage 2 on "
              f"it {rows['stage 2 on mesh fit']['moving'][0]:.2f}, root {rows['mesh fit rotations']['root'][0]:.2f} "
              f"({secs:.0f} s fit)", flush=True)
    print_rows(acc, ["hold", "mesh fit rotations", "stage 2 on mesh fit", "IK on mesh fit", "stage 2 on true 2D",
                     "IK on true 2D", "stage 2 on layout"], ("layout", "mesh fit heads"),
               f"matched reference (frame 0), root location given, root rotation "
               f"{'fitted' if kw.get('free_root') else 'given'}; silhouette weight {kw.get('sil', 0)}"
               f"{' (oracle: the true poses)' if oracle_silhouette else ''}; {len(clips)} clips, "
               f"{time.time() - t_all:.0f} s; "
               f"stage 2 told positions are {pos_err} of the height off (0 on the true 2D)")
    print(f"root orientation, degrees ({'fitted' if kw.get('free_root') else 'given'} in the fit):")
    for group in ("procedural", "real"):
        for m in ("hold, reference root", "mesh fit rotations"):
            if acc[(group, m, "root")]:
                print(f"{group:<11}{m:<24}{metrics.pool(acc[(group, m, 'root')]):>9.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    dp = sub.add_parser("dump", help="store each clip's mesh samples (runs Blender through bpy)")
    dp.add_argument("--data", type=Path, required=True)
    dp.add_argument("--out", type=Path, required=True)
    dp.add_argument("--real-fraction", type=float, default=0.3, help="as the clips were generated with")
    dp.add_argument("--max-clips", type=int)
    dp.add_argument("--corners", action="store_true", help="also sample half-way to each corner of every face")
    fp = sub.add_parser("fit", help="fit the meshes to the clips and score the rotations beside hold")
    fp.add_argument("--data", type=Path, required=True)
    fp.add_argument("--mesh", type=Path, required=True, help="the dump's --out")
    fp.add_argument("--max-clips", type=int)
    fp.add_argument("--window", type=int, default=32)
    fp.add_argument("--threads", type=int, default=2)
    fp.add_argument("--lr", type=float, default=0.03)
    fp.add_argument("--smooth", type=float, default=0.1, help="weight of the pull towards the last frame's pose")
    fp.add_argument("--anchor", type=float, default=0.02, help="weight of the pull towards the reference pose")
    fp.add_argument("--sigmas", type=float, nargs="+", default=[4.0, 2.0, 1.0], help="blur, coarse to fine (px)")
    fp.add_argument("--iters", type=int, default=15, help="steps (L-BFGS iterations) per blur level and frame")
    fp.add_argument("--shade", type=float, default=0.3, help="1: compare colours as they are; 0: only their hue")
    fp.add_argument("--optimizer", choices=("adam", "lbfgs"), default="lbfgs")
    fp.add_argument("--depth", type=float, default=0.0, help="weight of the pull towards the reference's depths")
    fp.add_argument("--shading", action="store_true", help="expect colours shaded by a light fixed to the camera")
    fp.add_argument("--fit-root", action="store_true", help="fit the root's rotation too (its location stays given)")
    fp.add_argument("--silhouette", type=float, default=0.0,
                    help="weight of the silhouette term (targets: colour posterior of frame 0's fore/background)")
    fp.add_argument("--oracle-silhouette", action="store_true",
                    help="silhouette targets from the true poses' coverage instead (a ceiling, not a method)")
    fp.add_argument("--equal-points", action="store_true",
                    help="silhouette: every point counts the same, not by the surface it stands for")
    fp.add_argument("--clips", type=int, nargs="+", help="only these clip indices (of the sorted set)")
    fp.add_argument("--pos-err", type=float, default=0.03, help="how far off stage 2 is told the positions are")
    a = ap.parse_args(argv)
    if a.cmd == "dump":
        dump(a.data, a.out, a.real_fraction, a.max_clips, a.corners)
    else:
        fit_probe(a.data, a.mesh, a.max_clips, a.window, a.threads, lr=a.lr, smooth=a.smooth, anchor=a.anchor,
                  sigmas=tuple(a.sigmas), iters=(a.iters,) * len(a.sigmas), shade=a.shade, optimizer=a.optimizer,
                  depth=a.depth, shading=a.shading, free_root=a.fit_root, only=a.clips, pos_err=a.pos_err,
                  sil=a.silhouette, oracle_silhouette=a.oracle_silhouette, use_areas=not a.equal_points)


if __name__ == "__main__":
    main()
