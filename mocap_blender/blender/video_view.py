"""Showing the video behind the rig, so the user can pose it like the subject in one frame (the reference pose the
capture is anchored by): the "Show Video" operator and `show_video`, the function under it.

The video becomes the background of a camera, synchronised with the timeline exactly as the capture will key it
(video frame `first` on scene frame `frame_start`). The camera is the one chosen in the settings, never moved; or,
when none is chosen, a new "Mocap Camera" placed where the capture assumes the video was shot from without one (the
front view: on the armature's -Y side, looking along +Y, Z up, Blender's default 50 mm lens), framing the rig. The
new camera becomes the capture's camera. The render size is set to the video's, so that the camera's frame is the
video's frame (the capture reads the lens's field of view across the video's longer side).

Everything is checked before anything changes: a bad video, frame range or camera raises `MocapError` and leaves
the scene as it was. One Ctrl+Z undoes the operator.
"""
from __future__ import annotations

import os

import bpy
import numpy as np
from mathutils import Matrix

from ..core.errors import MocapError
from .operator import PollWithReason
from .properties import capture_kwargs
from .rig import DEFAULT_CAM_FROM_ARMATURE, _rotation_only

CLIP_TAG = "mocap_blender_video"  # custom property on the movie clips this module loaded (never the user's own)
CAMERA_NAME = "Mocap Camera"
MARGIN = 1.2  # the rig fills 1 / MARGIN of the frame's width or height
# Blender 4.2 and 4.3 play a video as stored, ignoring its rotation tag (phones store portrait clips sideways with
# one); 4.4 and later turn it upright, as the capture's reader does (measured on 4.2.23, 4.3.0, 4.4.0, 4.5.15, 5.0.1)
SHOWS_ROTATION_TAG = bpy.app.version >= (4, 4, 0)


def front_camera_matrix(points_world: np.ndarray, arm_rotation: np.ndarray, tan_half_w: float,
                        tan_half_h: float, margin: float = MARGIN) -> np.ndarray:
    """(4, 4) world matrix of a camera looking at `points_world` (N, 3) along the armature's +Y with its +Z up.

    arm_rotation (3, 3): the armature object's world rotation. tan_half_w / tan_half_h: tangents of half the
    camera's horizontal / vertical field of view. The camera is centred on the points' box and backed off until
    every point lies inside the frame shrunk by `margin`.
    """
    rot = arm_rotation @ DEFAULT_CAM_FROM_ARMATURE.T  # (3, 3) camera axes in world space (columns)
    q = points_world @ rot  # (N, 3) points in camera axes (the camera looks along -Z)
    centre = 0.5 * (q.min(0) + q.max(0))
    q = q - centre
    # A point at q lies at depth d - q_z in front of a camera at distance d; it is inside when |q_x| <= tan * depth.
    need = np.maximum(np.abs(q[:, 0]) * margin / tan_half_w, np.abs(q[:, 1]) * margin / tan_half_h) + q[:, 2]
    span = float(np.ptp(q, axis=0).max()) if len(q) > 1 else 1.0
    dist = max(float(need.max()), q[:, 2].max() + 0.1 * max(span, 1e-3))
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = rot @ (centre + np.array([0.0, 0.0, dist]))
    return out


def rig_points(armature) -> np.ndarray:
    """(N, 3) world positions of every bone's head and tail, as posed now."""
    mw = np.array(armature.matrix_world, dtype=np.float64)
    pts = [tuple(pb.head) for pb in armature.pose.bones] + [tuple(pb.tail) for pb in armature.pose.bones]
    pts = np.array(pts, dtype=np.float64).reshape(-1, 3)
    return pts @ mw[:3, :3].T + mw[:3, 3]


def _half_tangents(cam_data, width: int, height: int) -> tuple[float, float]:
    """Tangents of half the horizontal and vertical fields of view of a perspective camera on a width x height
    frame (sensor fit AUTO: the lens's angle spans the longer side)."""
    tan_long = 0.5 * cam_data.sensor_width / cam_data.lens
    if width >= height:
        return tan_long, tan_long * height / width
    return tan_long * width / height, tan_long


def _tagged_clip(path: str):
    for clip in bpy.data.movieclips:
        if clip.get(CLIP_TAG) and os.path.normpath(bpy.path.abspath(clip.filepath)) == os.path.normpath(path):
            return clip
    return None


def show_video(scene, armature, video, *, camera=None, frame_start=None, first: int = 0,
               match_resolution: bool = True) -> tuple[object, list[str]]:
    """Make `video` the background of `camera` (or of a new front camera framing `armature`), video frame `first`
    on scene frame `frame_start` (default the scene's start frame). Returns (camera object, notes).

    Raises MocapError, with the scene unchanged, on a bad video, frame or camera. Notes starting with
    `core.pipeline.WARNING_PREFIX` are warnings (the video's frame rate is not the scene's).
    """
    from .. import api
    from ..core.pipeline import WARNING_PREFIX, frame_rate_note
    from ..core.video import VideoReader

    path = api._resolve_video(video)
    reader = VideoReader(path)  # every check on the file, with the capture's own messages
    first = int(first)
    if not 0 <= first < reader.n_frames:
        raise MocapError(f"Video frame {first} is outside the video ({reader.n_frames} frames, numbered "
                         f"0-{reader.n_frames - 1}). Choose a first frame inside it.")
    frame_start = scene.frame_start if frame_start is None else int(frame_start)
    if camera is not None:
        try:
            kind = camera.type
        except (AttributeError, ReferenceError):
            raise MocapError("The camera is not a Blender object. Choose a camera, or none (a new front camera "
                             "is made).") from None
        if kind != 'CAMERA':
            raise MocapError(f"{camera.name!r} is a {kind.lower()} object, not a camera. Choose a camera, or none "
                             "(a new front camera is made).")
        if camera.library is not None:
            raise MocapError(f"Camera {camera.name!r} is linked from a library and cannot get a background. Make "
                             "it local or choose another camera.")
    elif armature is None or getattr(armature, "type", None) != 'ARMATURE':
        raise MocapError("Select the armature to frame, or choose a camera in the Mocap tab.")
    clip = _tagged_clip(path)
    if clip is None:
        try:
            clip = bpy.data.movieclips.load(path, check_existing=False)
        except RuntimeError as exc:
            raise MocapError(f"Blender cannot play {os.path.basename(path)!r} ({exc}). Convert it to MP4 (H.264) "
                             "and choose it again.") from None
        clip[CLIP_TAG] = True
    # From here on the scene changes.
    notes = []
    width, height = reader.size
    render = scene.render
    if match_resolution and (render.resolution_x, render.resolution_y, render.pixel_aspect_x,
                             render.pixel_aspect_y) != (width, height, 1.0, 1.0):
        notes.append(f"Render size set to the video's, {width} x {height} (was {render.resolution_x} x "
                     f"{render.resolution_y}), so the camera's frame is the video's frame.")
        render.resolution_x, render.resolution_y = width, height
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    if camera is None:
        data = bpy.data.cameras.new(CAMERA_NAME)
        camera = bpy.data.objects.new(CAMERA_NAME, data)
        collection = next((c for c in armature.users_collection if c.library is None), scene.collection)
        collection.objects.link(camera)
        tan_w, tan_h = _half_tangents(data, render.resolution_x * render.pixel_aspect_x,
                                      render.resolution_y * render.pixel_aspect_y)
        arm_rot = _rotation_only(np.array(armature.matrix_world, dtype=np.float64)[:3, :3])
        mat = front_camera_matrix(rig_points(armature), arm_rot, tan_w, tan_h)
        camera.matrix_world = Matrix(mat.tolist())
        reach = float(np.linalg.norm(rig_points(armature) - mat[:3, 3], axis=1).max())
        data.clip_end = max(data.clip_end, 2.0 * reach)
        data.clip_start = min(data.clip_start, 0.01 * reach)
        notes.append(f"Made camera {camera.name!r} where the capture assumes the video was shot from (the front "
                     "view) and chose it as the capture's camera. Move it to match the video if you like.")
    clip.frame_start = frame_start - first
    data = camera.data
    shown = None
    for bg in data.background_images:
        if bg.source == 'MOVIE_CLIP' and bg.clip is not None and bg.clip.get(CLIP_TAG):
            if bg.clip == clip:
                shown = bg
            else:
                bg.show_background_image = False  # an earlier video of this add-on
    if shown is None:
        shown = data.background_images.new()
        shown.source = 'MOVIE_CLIP'
        shown.clip = clip
        shown.frame_method = 'FIT'
        shown.display_depth = 'BACK'
    shown.show_background_image = True
    data.show_background_images = True
    if scene.camera is None:
        scene.camera = camera
    fps_note = frame_rate_note(reader.fps, scene.render.fps / scene.render.fps_base)
    if fps_note:
        notes.append(fps_note)
    if reader.rotation and not SHOWS_ROTATION_TAG:
        notes.append(WARNING_PREFIX + f"Blender {bpy.app.version_string} shows this video turned {reader.rotation} "
                     "degrees from upright: it ignores the file's rotation tag (as phones write), which the capture "
                     "applies. Open the file in Blender 4.4 or later to see it as the capture reads it, or save the "
                     "clip upright (`ffmpeg -i in.mp4 out.mp4` applies the tag).")
    notes.insert(0, f"Video {os.path.basename(path)!r} shown behind camera {camera.name!r}: video frame {first} "
                    f"on scene frame {frame_start}, one frame per scene frame, as the capture keys it.")
    return camera, notes


class MOCAP_OT_show_video(PollWithReason, bpy.types.Operator):
    """Show the chosen video behind the rig, through the capture's camera (a new front camera if none is chosen),
    in step with the timeline as the capture will key it, so you can pose the rig like the subject in one frame"""
    bl_idname = "mocap.show_video"
    bl_label = "Show Video"
    bl_options = {'REGISTER', 'UNDO'}

    match_resolution: bpy.props.BoolProperty(
        name="Match Render Size", default=True,
        description="Set the render size to the video's, so the camera's frame is the video's frame")

    @staticmethod
    def why_not(context) -> str | None:
        settings = getattr(context.scene, "mocap_capture", None)
        if settings is None or not settings.video_path.strip():
            return "Choose a video file in the Mocap tab"
        obj = context.active_object
        if settings.camera is None and (obj is None or obj.type != 'ARMATURE'):
            return "Select the armature to frame, or choose a camera"
        return None

    def execute(self, context):
        s = context.scene.mocap_capture
        kw = capture_kwargs(s, context)
        first = kw["frame_range"][0] if kw["frame_range"] else 0
        try:
            camera, notes = show_video(context.scene, context.active_object, kw["video"], camera=s.camera,
                                       frame_start=kw["frame_start"], first=first,
                                       match_resolution=self.match_resolution)
        except MocapError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        if s.camera is None:
            s.camera = camera
        look = self._look_through(context, camera)
        from ..core.pipeline import WARNING_PREFIX
        for note in notes:
            self.report({'WARNING'} if note.startswith(WARNING_PREFIX) else {'INFO'}, note)
        if not look:
            self.report({'INFO'}, f"Look through {camera.name!r} to see the video (Numpad 0 shows the scene's "
                                  "camera; Ctrl+Numpad 0 makes the selected camera the scene's).")
        return {'FINISHED'}

    @staticmethod
    def _look_through(context, camera) -> bool:
        """Switch the 3D viewport the operator ran from to the camera's view (view settings only, not the scene's
        camera). False when there is no such viewport (a script, background mode)."""
        space, region = context.space_data, context.region_data
        if space is None or space.type != 'VIEW_3D' or region is None:
            return False
        if context.scene.camera != camera:
            space.use_local_camera = True
            space.camera = camera
        region.view_perspective = 'CAMERA'
        return True
