"""The console/script API: `capture(armature, video, ...)`, as fixed in the design; the operator and the batch
command use the same code (`capture_iter`, the generator underneath).

    import bpy
    from mocap_blender import api          # inside Blender: from bl_ext.<repo>.mocap_blender import api
    action = api.capture(bpy.context.object, "/path/clip.mp4")

Bad input raises `MocapError` (also available as `api.MocapError`) with a message saying what to do, before the
scene is touched: the scene is left exactly as it was. What the user should know about a finished capture (for
example that the model file is the untrained network) is issued as a `CaptureWarning` through Python's `warnings`
(`warnings.simplefilter("error", api.CaptureWarning)` makes a pipeline stop on it); `capture_iter` returns every
note, warnings and tips alike.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from .core.errors import MocapError

__all__ = ["capture", "capture_iter", "CaptureOutcome", "CaptureWarning", "MocapError", "MODEL"]

MODEL_FILE = Path(__file__).resolve().parent / "weights" / "mocap.onnx"


class ModelOwner:
    """Owns the one ONNX Runtime session of the add-on: loaded on first use, released on unregister.

    `path` (default the shipped `weights/mocap.onnx`) and `threads` (default: one per physical core, at least 2;
    the benchmarks set 2) can be changed; the session is reloaded when they, or the file, change.
    """

    def __init__(self, path=None, threads: int | None = None):
        self.path = path
        # default: one thread per physical core (about half the logical ones), at least 2
        self.threads = int(threads) if threads else max(2, (os.cpu_count() or 2) // 2)
        self._model = None
        self._key = None

    def get(self):
        path = Path(self.path or MODEL_FILE)
        if not path.is_file():
            raise MocapError(f"The capture model file is missing ({path}). Reinstall the Mocap extension "
                             "(the model ships inside it).")
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size, self.threads)
        if self._model is None or self._key != key:
            self.release()
            from .core.runtime import MocapModel
            try:
                self._model = MocapModel(str(path), threads=self.threads)
            except MocapError:
                raise
            except Exception as exc:  # onnxruntime's own errors: a damaged or foreign file
                raise MocapError(f"The capture model file {path.name!r} could not be loaded ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). It is damaged or not "
                                 "this extension's model: reinstall the Mocap extension.") from None
            self._key = key
        return self._model

    @property
    def device(self) -> str | None:
        """Where the loaded network runs ("CPU" or "GPU (CUDA)"); None before the first capture loads it."""
        return None if self._model is None else self._model.device

    def release(self) -> None:
        self._model = None
        self._key = None


class CaptureWarning(UserWarning):
    """A finished capture the user should know about (its keys are made; see the message)."""


MODEL = ModelOwner()  # the one owner of the session (module state is limited to this object)


@dataclass
class CaptureOutcome:
    action: object  # bpy.types.Action
    result: object  # core.pipeline.CaptureResult
    rig: object  # blender.rig.RigInfo
    frame_start: int
    notes: list


def _resolve_video(video) -> str:
    if video is None or (isinstance(video, str) and not video.strip()):
        raise MocapError("No video file was given. Choose a video file (MP4, MOV, AVI or MKV).")
    try:
        path = os.fspath(video)
    except TypeError:
        raise MocapError(f"The video must be a file path, got {type(video).__name__}.") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    import bpy
    if path.startswith("//"):
        path = bpy.path.abspath(path)
    return os.path.abspath(os.path.expanduser(path))


def capture_iter(armature, video, *, frame_start=None, reference_frame=None, camera=None, action_name=None,
                 smoothing: float = 1.0, root_motion: bool = True, frame_range=None, contacts: bool = False):
    """Generator behind `capture`: yields (done, total, message); returns a `CaptureOutcome`.

    Extra settings (the panel's): smoothing (Gaussian sigma in frames, 0 off), root_motion (key the root bone's
    location), frame_range (first, last) video frames, inclusive, numbered from 0, contacts (pin the end bones
    that rest on the ground: no foot skate; `core.contacts`). All validation happens before
    the first yield; the scene changes only in the last step (the bake), so closing the generator early (cancel)
    leaves it untouched.
    """
    import bpy

    from .blender import bake, rig
    from .core.pipeline import capture_steps, frame_rate_note
    from .core.video import VideoReader

    rig.check_armature(armature)
    scene = bpy.context.scene
    path = _resolve_video(video)
    reader = VideoReader(path)
    cfa = rig.cam_from_armature(armature, camera)
    lens_fov = None
    if camera is not None and getattr(camera.data, "type", "PERSP") == 'PERSP':
        lens_fov = float(camera.data.angle)
    if frame_start is None:
        frame_start = scene.frame_start
    if reference_frame is None:
        reference_frame = scene.frame_current
    frame_start, reference_frame = int(frame_start), int(reference_frame)
    first, last = (0, reader.n_frames - 1) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    if first > last:
        raise MocapError(f"The video frame range starts after it ends ({first} > {last}). Set the first frame to "
                         "at most the last one.")
    if not (0 <= first <= last < reader.n_frames):
        raise MocapError(f"Video frame range {first}-{last} is outside the video ({reader.n_frames} frames, "
                         f"numbered 0-{reader.n_frames - 1}). Choose a range inside it.")
    n = last - first + 1
    if frame_start + n - 1 > 1048574 or frame_start < -1048574:
        raise MocapError(f"Frames {frame_start}-{frame_start + n - 1} are outside Blender's timeline. Choose an "
                         "earlier start frame.")
    model = MODEL.get()
    info = rig.read_rig(armature, reference_frame, max_joints=getattr(model, "max_joints", None))
    ref_video = reference_frame - frame_start + first if frame_start <= reference_frame < frame_start + n else None
    name = action_name.strip() if isinstance(action_name, str) and action_name.strip() else Path(path).stem
    result = yield from capture_steps(model, info.skeleton, info.ref_rot, reader, ref_video_frame=ref_video,
                                      cam_from_armature=cfa, smoothing=float(smoothing),
                                      root_motion=bool(root_motion), frame_range=(first, last),
                                      lens_fov=lens_fov, ref_location=info.ref_location,
                                      contacts=bool(contacts), up=rig.world_up(armature))
    yield n, n, "Baking keys"
    try:
        armature.name  # still there? (the user may have deleted it while a modal capture ran)
    except ReferenceError:
        raise MocapError("The armature was deleted during the capture; nothing was keyed.") from None
    action = bake.bake(armature, info, result.rotations, frame_start, name,
                       result.root_location if root_motion else None)
    notes = list(info.notes) + list(result.notes)
    fps_note = frame_rate_note(reader.fps, scene.render.fps / scene.render.fps_base)
    if fps_note:
        notes.append(fps_note)
    if ref_video is None:
        notes.append("Tip: pose the rig to match one video frame and use that frame as the reference frame for "
                     "the best result (Show Video in the Mocap tab puts the video behind the rig, in step with the "
                     "timeline).")
    return CaptureOutcome(action, result, info, frame_start, notes)


def capture(armature, video, *, frame_start=None, reference_frame=None, camera=None, action_name=None,
            progress=None):
    """Capture the motion in `video` onto `armature`; return the new action (assigned to the armature).

    armature: a Blender object of type ARMATURE. video: a path to a video file OpenCV can read.
    frame_start: scene frame where video frame 0 lands (default: the scene's start frame); one key per video frame.
    reference_frame: scene frame whose keyed pose is the reference pose (default: the current frame); best when it
        lies inside the frames the video lands on and the rig is posed like that video frame.
    camera: the camera object the video was shot from; None: front view (camera on the armature's -Y side
        looking along +Y, Z up).
    action_name: name of the new action (default: the clip's file name; made unique by Blender).
    progress: optional callable(done, total, message) called as the capture advances.
    Raises MocapError (scene unchanged) on bad input; issues each warning note of the capture as a CaptureWarning.
    """
    gen = capture_iter(armature, video, frame_start=frame_start, reference_frame=reference_frame, camera=camera,
                       action_name=action_name)
    try:
        while True:
            step = next(gen)
            if progress is not None:
                progress(*step)
    except StopIteration as stop:
        outcome = stop.value
    finally:
        gen.close()
    from .core.pipeline import WARNING_PREFIX
    for note in outcome.notes:
        if note.startswith(WARNING_PREFIX):
            warnings.warn(note[len(WARNING_PREFIX):], CaptureWarning, stacklevel=2)
    return outcome.action
