"""Video + rig + reference pose -> per-frame local rotations (Blender `matrix_basis`), streamed in windows.

`capture_steps(...)` is a generator: it yields progress tuples `(done, total, message)` after each window and
returns a `CaptureResult` (read it from `StopIteration.value`, or with `result = yield from capture_steps(...)`).
The operator runs it a step per timer tick, `api.capture` and the batch command run it to the end. Nothing here
touches Blender; closing the generator half way leaves no trace.

Windows: the clip is cut into windows of the model's length that overlap by `overlap` frames; in the overlap the
two predictions are cross-faded (linear weights on the 6D rotation, then Gram-Schmidt), so there is no seam.
Only one window of frames is in memory at a time, at the model's input resolution.

Reference frame in every window: when the reference pose shows a video frame (the user matched the rig to it),
that frame is put in front of every window that does not hold it, flagged as the reference, and its output is
dropped. The network anchors the root turn and the pose to the flagged frame (models/model.py,
`anchor_ref_frame`), so every window of a long clip is anchored to the same pose, not only the one holding it.
The frame may lie outside the captured range. It costs one extra frame per window.

Root orientation: the model predicts the root bone's orientation in the camera frame; with the camera's
orientation relative to the armature (`cam_from_armature`, default: the front view, a camera on the armature's
-Y side looking along +Y, Z up) it becomes the root's `matrix_basis` rotation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import preprocess, rotations as R, smoothing as S
from .contacts import Contacts, clean_contacts
from .errors import MocapError
from .runtime import PER_FRAME_OUTPUTS
from .skeleton import Skeleton
from .video import VideoReader

# Front view as cam_from_armature (armature directions -> camera frame); the transpose of
# preprocess.FRONT_CAMERA_ROTATION (camera directions -> armature).
FRONT_CAM_FROM_ARMATURE = preprocess.FRONT_CAMERA_ROTATION.T.copy()

# A note starting with this is a warning: the operator reports it as one, the batch command prints it as it is.
WARNING_PREFIX = "Warning: "
UNTRAINED_NOTE = (WARNING_PREFIX + "the model file is the untrained network (metadata trained=0): every frame holds "
                  "the reference pose. Only a trained model file in place of mocap_blender/weights/mocap.onnx "
                  "captures motion.")


def frame_rate_note(video_fps: float, scene_fps: float) -> str | None:
    """A warning when one key per video frame will not play at the speed the video was filmed (rates more than 1%
    apart; 29.97 against 30 is the same), else None."""
    if not (video_fps > 0 and scene_fps > 0) or abs(video_fps / scene_fps - 1.0) <= 0.01:
        return None
    ratio = video_fps / scene_fps
    speed = f"{ratio:.2f} times slower" if ratio > 1 else f"{1 / ratio:.2f} times faster"
    return (WARNING_PREFIX + f"the video runs at {video_fps:g} fps and the scene at {scene_fps:g} fps, so with one "
            f"key per video frame the motion plays {speed} than filmed. Set the scene's frame rate to "
            f"{video_fps:g} fps (Output Properties > Format > Frame Rate) to play it at the video's speed.")


@dataclass
class CaptureResult:
    """A capture in the skeleton's joint order. Video frame `frame_first + i` is result frame i."""
    names: tuple[str, ...]
    rotations: np.ndarray  # (F, J, 3, 3) local rotations (matrix_basis), smoothed and contacts cleaned if asked
    raw_rotations: np.ndarray  # (F, J, 3, 3) as the model predicted (windows blended), never smoothed
    confidence: np.ndarray  # (F, J) in [0, 1]
    root_orientation_cam: np.ndarray  # (F, 3, 3) root orientation in the camera frame (raw)
    heads_cam: np.ndarray  # (F, J, 3) root-relative head positions in the camera frame / rig height (raw)
    fps: float
    frame_first: int
    root_location: np.ndarray | None = None  # (F, 3) root bone location channel (smoothed) or None
    raw_root_location: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)  # for the user; warnings start with WARNING_PREFIX
    contacts: Contacts | None = None  # what the contact clean-up found and pinned, when it ran

    @property
    def n_frames(self) -> int:
        return self.rotations.shape[0]


def _blend_weights(t: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    w = np.ones(t)
    if overlap > 0:
        ramp = (np.arange(overlap) + 1.0) / (overlap + 1.0)
        if not first:
            w[:overlap] = ramp[:t]
        if not last:
            w[t - overlap:] = np.minimum(w[t - overlap:], ramp[::-1][-min(t, overlap):])
    return w


def _check_finite(out: dict, start: int, t: int) -> None:
    for k, v in out.items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            raise MocapError(
                f"The model produced non-finite values ({k}) for video frames {start}-{start + t - 1}, so nothing "
                "was keyed. The model file may be damaged: reinstall the extension. If it persists, try a "
                "different frame range and report the clip.")


def intrinsics(width: int, height: int, lens_fov: float | None = None) -> np.ndarray:
    """(3, 3) pixel intrinsics of a pinhole camera whose field of view `lens_fov` (radians; default Blender's 50 mm
    lens on a 36 mm sensor) spans the longer side of the frame (Blender's sensor fit AUTO)."""
    fov = 2.0 * math.atan(18.0 / 50.0) if lens_fov is None else float(lens_fov)
    f = 0.5 * max(width, height) / math.tan(0.5 * fov)
    return np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]])


def capture_steps(model, skeleton: Skeleton, ref_rot, video_path, *, ref_video_frame: int | None = None,
                  cam_from_armature=None, smoothing: float = 1.0, root_motion: bool = True,
                  frame_range: tuple[int, int] | None = None, window: int | None = None,
                  overlap: int | None = None, lens_fov: float | None = None, ref_location=None,
                  anchor_windows: bool = True, contacts: bool = False, up=None):
    """Generator: yields (done, total, message), returns CaptureResult.

    model: `runtime.MocapModel` (its `predict`, `root_translation`, `input_size`, `window_length`, `max_joints`,
    `config`, `untrained`: then the result's notes carry UNTRAINED_NOTE).
    ref_rot (J, 3, 3): the reference pose's local rotations in skeleton order.
    ref_video_frame: the video frame index the reference pose shows (None: it shows none of them).
    cam_from_armature (3, 3): rotation taking armature-space directions to the camera frame (default: front).
    frame_range: inclusive video frame indices (first, last); default the whole clip.
    smoothing: Gaussian sigma in frames (0: off); the raw result is kept beside the smoothed one.
    root_motion: also return the root bone's location channel: the reference value `ref_location` (3,) at the
    reference video frame (or the first frame) plus the root's predicted displacement since then.
    anchor_windows: put the reference video frame in front of each window that does not hold it (see above).
    contacts: pin the end points that rest on the ground (`core.contacts`) after smoothing; `up` (3,) is the
    world's up direction in armature space (default +Z). `raw_rotations` keep the rotations before both.
    """
    reader = video_path if isinstance(video_path, VideoReader) else VideoReader(video_path)
    n_video = reader.n_frames
    first, last = (0, n_video - 1) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    if not (0 <= first <= last < n_video):
        raise MocapError(f"Video frame range {first}-{last} is outside the video ({n_video} frames, numbered "
                         f"0-{n_video - 1}). Choose a range inside it.")
    if last - first + 1 < 2:
        raise MocapError("The chosen frame range has a single frame; choose at least two video frames.")
    n = last - first + 1
    j = skeleton.n_joints
    max_joints = int(getattr(model, "max_joints", j))
    if j > max_joints:
        raise MocapError(f"The rig has {j} bones to capture but the model takes at most {max_joints}. Turn "
                         "Deform off on helper bones (they are then skipped) or use a simpler skeleton.")
    window = int(window or getattr(model, "window_length", 32))
    window = max(window, 2)
    overlap = int(max(2, window // 8) if overlap is None else overlap)  # 4 of 32: ~14% extra model work
    overlap = min(max(overlap, 1), window - 1)
    cfa = FRONT_CAM_FROM_ARMATURE if cam_from_armature is None else np.asarray(cam_from_armature, np.float64)
    if cfa.shape != (3, 3) or not np.all(np.isfinite(cfa)):
        raise MocapError("The camera orientation is not a finite 3x3 rotation. Check the camera object.")
    cam_to_arm = cfa.T
    rig_inputs = preprocess.make_rig_inputs(skeleton, ref_rot, ref_cam_to_arm=cam_to_arm,
                                            max_hops=int((getattr(model, "config", None) or {}).get("max_hops", 8)))
    root_rest = rig_inputs["root_rest"]

    acc6 = np.zeros((n, j, 6))
    acc_root6 = np.zeros((n, 6))
    acc_heads = np.zeros((n, j, 3))
    acc_conf = np.zeros((n, j))
    acc_trans = np.zeros((n, 3))
    acc_w = np.zeros(n)
    yield 0, n, f"Reading {n} frames"
    max_side = int(getattr(model, "input_size", 0)) or None
    ref_image = None
    if anchor_windows and ref_video_frame is not None and 0 <= int(ref_video_frame) < n_video:
        ref_image = reader.frame(int(ref_video_frame), max_side=max_side)[None]  # (1, H, W, 3)
    done = 0
    for start, frames in reader.windows(window, overlap, start=first, stop=last + 1, max_side=max_side):
        t, fh, fw = frames.shape[:3]
        rel = start - first
        ref_local = None
        if ref_video_frame is not None and 0 <= int(ref_video_frame) - start < t:
            ref_local = int(ref_video_frame) - start
        if ref_local is None and ref_image is not None:  # the reference frame, flagged, in front of the window
            out = model.predict(np.concatenate([ref_image, frames]), rig_inputs, ref_frame=0, cam_to_arm=cam_to_arm)
            out = {k: v[1:] if k in PER_FRAME_OUTPUTS else v for k, v in out.items()}
        else:
            out = model.predict(frames, rig_inputs, ref_frame=ref_local, cam_to_arm=cam_to_arm)
        _check_finite(out, start, t)
        w = _blend_weights(t, overlap, first=rel == 0, last=start + t > last)
        sl = slice(rel, rel + t)
        acc6[sl] += w[:, None, None] * R.matrix_to_6d(out["rotation"])
        acc_root6[sl] += w[:, None] * R.matrix_to_6d(out["root_orientation"])
        acc_heads[sl] += w[:, None, None] * out["positions"]
        acc_conf[sl] += w[:, None] * out["confidence"]
        if root_motion:  # frames are at the window's (downscaled) size: K, pixels and size all agree
            trans = model.root_translation(out, intrinsics(fw, fh, lens_fov), (fh, fw), skeleton.height)
            acc_trans[sl] += w[:, None] * trans
        acc_w[sl] += w
        done = rel + t
        yield done, n, f"Captured {done}/{n} frames"
    if done < n or np.any(acc_w <= 0):  # pragma: no cover - windows always cover the range
        raise MocapError("Internal error: the video windows did not cover the frame range. Please report this.")
    inv = 1.0 / acc_w
    raw = R.sixd_to_matrix(acc6 * inv[:, None, None])
    root_cam = R.sixd_to_matrix(acc_root6 * inv[:, None])
    conf = acc_conf * inv[:, None]
    heads = acc_heads * inv[:, None, None]
    if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(heads))):
        raise MocapError("The capture produced non-finite rotations, so nothing was keyed. The model file may be "
                         "damaged: reinstall the extension, and report the clip if it persists.")
    raw_loc = None
    if root_motion:
        anchor = 0 if ref_video_frame is None or not first <= ref_video_frame <= last else ref_video_frame - first
        p_arm = (acc_trans * inv[:, None]) @ cfa  # camera frame -> armature space (rows: v @ R = R^T v)
        base = np.zeros(3) if ref_location is None else np.asarray(ref_location, np.float64)
        raw_loc = base + (p_arm - p_arm[anchor]) @ root_rest  # into the root bone's rest frame
        if not np.all(np.isfinite(raw_loc)):
            raise MocapError("The root motion came out non-finite, so nothing was keyed. Turn Root Motion off, or "
                             "report the clip.")
    smoothed = S.smooth_rotations(raw, smoothing, weights=conf)
    loc = None if raw_loc is None else S.smooth_positions(raw_loc, smoothing)
    notes = [UNTRAINED_NOTE] if getattr(model, "untrained", False) else []
    found = None
    if contacts:
        yield n, n, "Pinning planted feet"
        kept = loc if loc is not None else np.broadcast_to(
            np.zeros(3) if ref_location is None else np.asarray(ref_location, np.float64), (n, 3))
        smoothed, found = clean_contacts(skeleton, smoothed, kept, reader.fps, up)
        notes.append(contact_note(found, [skeleton.names[j] for j in found.leaves]))
    return CaptureResult(names=skeleton.names, rotations=smoothed, raw_rotations=raw, confidence=conf,
                         root_orientation_cam=root_cam, heads_cam=heads, fps=reader.fps, frame_first=first,
                         root_location=loc, raw_root_location=raw_loc, notes=notes, contacts=found)


def contact_note(found: Contacts, leaf_names) -> str:
    """What the contact clean-up did, for the user."""
    if not found.leaves:
        return ("Contact clean-up: the rig has no end bone with a chain to pin it (each needs bones above it with "
                "a single child), so nothing was pinned.")
    planted = found.planted.any(axis=0)
    if not planted.any():
        return (f"Contact clean-up: none of the {len(found.leaves)} end bones rests on the ground long enough to be "
                "pinned, so nothing was changed.")
    names = ", ".join(n for n, p in zip(leaf_names, planted) if p)
    return (f"Contact clean-up: pinned {names} where they rest on the ground ({int(found.planted.sum())} bone-frames; "
            f"moved by at most {100 * found.shift.max():.1f}% of the rig's height).")


def capture(*args, **kwargs) -> CaptureResult:
    """`capture_steps` run to the end, without progress (scripts, measurements)."""
    gen = capture_steps(*args, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
