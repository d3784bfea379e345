"""Model inputs from video frames and the rig: pure numpy functions shared by the runtime and by training.

Image constants (input size, mean, std, letterbox fill) are NEVER written here: they come from the ONNX metadata
(`runtime.MocapModel.meta`) or, in training, from the model config, and are passed in.

The model's frame of reference for per-joint features is the rig's "canonical" frame: the root bone's posed
frame (root head at the origin, axes of the root's pose matrix), lengths divided by `Skeleton.height`. Positions
predicted in the camera frame map to it through the predicted root orientation.
"""
from __future__ import annotations

import cv2
import numpy as np

from .errors import MocapError
from .graph import graph_tensors
from .rotations import matrix_to_6d
from .skeleton import Skeleton, forward_kinematics, pose_tails

# Per-joint feature layout (documented once; its length is saved in the ONNX metadata as n_joint_features).
JOINT_FEATURES = (
    ("rest_head", 3), ("rest_tail", 3),  # rest head/tail in the root's rest frame, / height
    ("rest_global6d", 6),  # rest rotation in the root's rest frame
    ("rest_relative6d", 6),  # rotation of inv(rest[parent]) @ rest[j]
    ("depth", 1), ("is_leaf", 1), ("is_root", 1), ("length", 1), ("n_children", 1),
    ("ref_head", 3), ("ref_tail", 3),  # reference pose head/tail in the reference root frame, / height
    ("ref_local6d", 6),  # reference local rotation (matrix_basis)
    ("ref_global6d", 6),  # reference rotation in the reference root frame
    ("ref_root_cam6d", 6),  # reference root orientation in the camera frame (camera given or default)
)
N_JOINT_FEATURES = sum(n for _, n in JOINT_FEATURES)


def feature_slices() -> dict[str, slice]:
    """name -> slice of the per-joint feature vector (the model reads the reference and rest rotations here)."""
    out, start = {}, 0
    for name, n in JOINT_FEATURES:
        out[name] = slice(start, start + n)
        start += n
    return out


LOCAL_HOPS = 2  # local attention heads see ancestors, descendants and joints within this many hops
MASK_VALUE = -1e4  # additive mask value for forbidden attention pairs (float masks run faster than bool ones)

# Front view: camera on the armature's -Y side looking along +Y, Z up (camera looks along its local -Z, +Y up).
FRONT_CAMERA_ROTATION = np.array([[1.0, 0.0, 0.0],
                                  [0.0, 0.0, -1.0],
                                  [0.0, 1.0, 0.0]])


# --- frames --------------------------------------------------------------------------------------

def letterbox_params(height: int, width: int, size: int) -> tuple[float, float, float]:
    """Scale and offsets mapping original pixels to the square model input: x_in = x * scale + offset."""
    scale = size / float(max(height, width))
    ox = 0.5 * (size - width * scale)
    oy = 0.5 * (size - height * scale)
    return scale, ox, oy


def _checked_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise MocapError(f"Expected video frames shaped (T, H, W, 3) RGB, got {frames.shape}.")
    if frames.dtype != np.uint8:
        raise MocapError(f"Expected uint8 video frames, got {frames.dtype}.")
    return frames


def _normalised(img, mean, std) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (H, W, 3): (value / 255 - mean) / std."""
    return (img.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def preprocess_frames(frames, size: int, mean, std) -> np.ndarray:
    """RGB uint8 frames (T, H, W, 3) -> float32 (T, 3, size, size): letterboxed (aspect kept), normalised.

    `size`, `mean` and `std` (RGB, for values in [0, 1]) come from the model metadata. Padding is the mean colour
    (zero after normalisation).
    """
    frames = _checked_frames(frames)
    t, h, w, _ = frames.shape
    scale, ox, oy = letterbox_params(h, w, size)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    x0, y0 = int(round(ox)), int(round(oy))
    out = np.zeros((t, size, size, 3), dtype=np.float32)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    for i in range(t):
        img = frames[i] if (nw, nh) == (w, h) else cv2.resize(frames[i], (nw, nh), interpolation=interp)
        out[i, y0:y0 + nh, x0:x0 + nw] = _normalised(img, mean, std)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def uv_to_pixels(uv, height: int, width: int, size: int) -> np.ndarray:
    """Model-input coordinates in [0, 1] (u right, v down) -> original video pixels (x, y)."""
    scale, ox, oy = letterbox_params(height, width, size)
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([(uv[..., 0] * size - ox) / scale, (uv[..., 1] * size - oy) / scale], axis=-1)


WHOLE_FRAME = (0.5, 0.5, 1.0)  # the square crop (cx, cy, side) that is the whole model input: no crop


def subject_box(uv, margin: float, min_side: float) -> np.ndarray:
    """Image positions (..., 2) in model-input units ([0, 1], u right, v down; any leading axes, e.g. frames and
    joints) -> the square crop around them, (cx, cy, side) in the same units: their extent over every frame
    given, `margin` x that extent added on each side, at least `min_side` and at most the whole input."""
    pts = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    pts = np.clip(pts[np.all(np.isfinite(pts), axis=1)], 0.0, 1.0)
    if len(pts) == 0:
        return np.array(WHOLE_FRAME)
    lo, hi = pts.min(0), pts.max(0)
    side = float(np.clip((hi - lo).max() * (1.0 + 2.0 * margin), min_side, 1.0))
    return np.array([0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]), side])


def model_inputs(frames, size: int, mean, std, box=WHOLE_FRAME) -> np.ndarray:
    """RGB uint8 frames (T, H, W, 3) -> float32 (T, 3, size, size): the square `box` (cx, cy, side in [0, 1] units
    of the letterboxed model input, `WHOLE_FRAME` = the whole input) of each frame, normalised.

    The crop is read from the original frames, not from the letterboxed input, so a high-resolution video gives
    the crop its own detail (a subject 300 px tall in a 1080p frame is 45 px of a 160 px letterbox, but fills
    the crop). Outside the frame is zero (the mean colour, as the letterbox padding). The whole input is exactly
    `preprocess_frames`.
    """
    cx, cy, side = (float(v) for v in box)
    if (cx, cy, side) == tuple(WHOLE_FRAME):
        return preprocess_frames(frames, size, mean, std)
    frames = _checked_frames(frames)
    t, h, w, _ = frames.shape
    scale, ox, oy = letterbox_params(h, w, size)
    step = side / scale  # original pixels per crop pixel
    shrink = min(1.0, 1.0 / step)  # above one original pixel per crop pixel, area-average first (no aliasing)
    sw, sh = max(1, round(w * shrink)), max(1, round(h * shrink))
    # crop pixel i (centre i + 0.5) is input pixel (cx - side/2) * size + side (i + 0.5), original (that - o) / scale
    m = np.array([[step * sw / w, 0.0, ((cx - 0.5 * side) * size + 0.5 * side - ox) / scale * sw / w - 0.5],
                  [0.0, step * sh / h, ((cy - 0.5 * side) * size + 0.5 * side - oy) / scale * sh / h - 0.5]])
    # only the part of the (shrunk) frame the crop samples is normalised: 2 pixels around the square's extent
    lo = np.floor(m[:, 2] - 2).astype(int)
    hi = np.ceil(m[:, 2] + m.diagonal() * (size - 1) + 3).astype(int)
    x0, y0 = max(0, lo[0]), max(0, lo[1])
    x1, y1 = min(sw, hi[0]), min(sh, hi[1])
    m[:, 2] -= (x0, y0)
    out = np.zeros((t, 3, size, size), dtype=np.float32)
    if x1 <= x0 or y1 <= y0:  # the square lies wholly outside the frame: the mean colour
        return out
    for i in range(t):
        img = frames[i] if (sw, sh) == (w, h) else cv2.resize(frames[i], (sw, sh), interpolation=cv2.INTER_AREA)
        img = cv2.warpAffine(_normalised(img[y0:y1, x0:x1], mean, std), m, (size, size),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=(0.0, 0.0, 0.0))
        out[i] = img.transpose(2, 0, 1)
    return out


def uv_to_crop(uv, box) -> np.ndarray:
    """Input coordinates (..., 2) -> coordinates in the crop `box` (cx, cy, side)."""
    return (np.asarray(uv, dtype=np.float64) - (np.asarray(box[:2]) - 0.5 * box[2])) / box[2]


def uv_from_crop(uv, box) -> np.ndarray:
    """Coordinates (..., 2) in the crop `box` (cx, cy, side) -> input coordinates."""
    return np.asarray(uv, dtype=np.float64) * box[2] + (np.asarray(box[:2]) - 0.5 * box[2])


# --- rig -----------------------------------------------------------------------------------------

def canonical_positions(skel: Skeleton, pose) -> tuple[np.ndarray, np.ndarray]:
    """Armature-space pose matrices (..., J, 4, 4) -> heads, tails (..., J, 3) in the root's posed frame / height."""
    pose = np.asarray(pose, dtype=np.float64)
    root = pose[..., :1, :, :]  # (..., 1, 4, 4)
    rt = np.swapaxes(root[..., :3, :3], -1, -2)
    heads = np.einsum("...ab,...jb->...ja", rt[..., 0, :, :], pose[..., :3, 3] - root[..., :3, 3])
    tails = np.einsum("...ab,...jb->...ja", rt[..., 0, :, :], pose_tails(skel, pose) - root[..., :3, 3])
    return heads / skel.height, tails / skel.height


def local_attention_mask(hops: np.ndarray, ancestor: np.ndarray, local_hops: int = LOCAL_HOPS) -> np.ndarray:
    """(J, J) additive float32 mask of the local heads: 0 where allowed, MASK_VALUE elsewhere."""
    allowed = ancestor | ancestor.T | (hops <= local_hops)
    return np.where(allowed, 0.0, MASK_VALUE).astype(np.float32)


def make_rig_inputs(skel: Skeleton, ref_rot, *, ref_cam_to_arm=None, max_hops: int = 8) -> dict[str, np.ndarray]:
    """Every per-joint and graph input of the model, from the rig and its reference pose.

    ref_rot: (J, 3, 3) local rotations (matrix_basis) of the reference pose, in the skeleton's joint order.
    ref_cam_to_arm: (3, 3) rotation taking camera-frame vectors to armature space at the reference frame
    (= inv(armature world rotation) @ camera world rotation); default: the front view.
    Returns float32/int64 arrays: joint_feats (J, F), ref_rot6d (J, 6), parents (J,) (root: 0), hops (J, J),
    edge_type (J, J), local_mask (J, J) additive; plus `root_rest` (3, 3) (not a network input: the runtime uses it to turn the
    predicted root orientation into the root's matrix_basis). Training calls this same function.
    """
    j = skel.n_joints
    ref_rot = np.asarray(ref_rot, dtype=np.float64)
    if ref_rot.shape != (j, 3, 3):
        raise MocapError(f"The reference pose has rotations shaped {ref_rot.shape}; the rig needs ({j}, 3, 3).")
    if not np.all(np.isfinite(ref_rot)):
        raise MocapError("The reference pose has non-finite rotations. Reset the broken bones' rotations.")
    cam = FRONT_CAMERA_ROTATION if ref_cam_to_arm is None else np.asarray(ref_cam_to_arm, dtype=np.float64)
    h = skel.height

    rest_root = skel.rest[0, :3, :3]
    rest_head = (skel.heads - skel.heads[0]) @ rest_root / h  # rows: v @ R = R^T v
    rest_tail = (skel.tails - skel.heads[0]) @ rest_root / h
    rest_global = np.swapaxes(rest_root, -1, -2)[None] @ skel.rest[:, :3, :3]
    depth = skel.subset_depth().astype(np.float64)
    n_children = np.array([len(c) for c in skel.children], dtype=np.float64)

    ref_pose = forward_kinematics(skel, ref_rot)  # (J, 4, 4)
    ref_head, ref_tail = canonical_positions(skel, ref_pose)
    ref_root = ref_pose[0, :3, :3]
    ref_global = ref_root.T[None] @ ref_pose[:, :3, :3]
    ref_root_cam = cam.T @ ref_root

    cols = [rest_head, rest_tail, matrix_to_6d(rest_global), matrix_to_6d(skel.rest_relative[:, :3, :3]),
            (depth / 8.0)[:, None], skel.is_leaf[:, None].astype(np.float64),
            (np.arange(j) == 0)[:, None].astype(np.float64), (skel.lengths / h)[:, None],
            (n_children / 4.0)[:, None],
            ref_head, ref_tail, matrix_to_6d(ref_rot), matrix_to_6d(ref_global),
            np.broadcast_to(matrix_to_6d(ref_root_cam), (j, 6))]
    feats = np.concatenate(cols, axis=-1).astype(np.float32)
    assert feats.shape == (j, N_JOINT_FEATURES)

    g = graph_tensors(skel, max_hops=max_hops)
    return {
        "joint_feats": feats,
        "ref_rot6d": matrix_to_6d(ref_rot).astype(np.float32),
        "parents": np.maximum(skel.parents, 0).astype(np.int64),
        "hops": g["hops"].astype(np.int64),
        "edge_type": g["edge_type"].astype(np.int64),
        "local_mask": local_attention_mask(g["hops"], g["ancestor"]),
        "root_rest": rest_root.astype(np.float64),
    }


def make_ref_flag(n_frames: int, ref_frame: int | None) -> np.ndarray:
    """(T,) float32: 1 on the window frame that the reference pose shows (if any), else 0."""
    flag = np.zeros(n_frames, dtype=np.float32)
    if ref_frame is not None and 0 <= int(ref_frame) < n_frames:
        flag[int(ref_frame)] = 1.0
    return flag


def root_basis_from_orientation(root_orient_cam, cam_to_arm, root_rest) -> np.ndarray:
    """Root orientation in the camera frame (..., 3, 3) -> the root's matrix_basis rotation (..., 3, 3).

    pose_root = cam_to_arm @ O  (armature space) = rest_root @ basis  =>  basis = rest_root^T @ cam_to_arm @ O.
    """
    return np.swapaxes(np.asarray(root_rest), -1, -2) @ np.asarray(cam_to_arm) @ np.asarray(root_orient_cam)
