"""All the capture settings, in one PropertyGroup stored on the scene (`scene.mocap_capture`)."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, PointerProperty, StringProperty


def _is_camera(_self, obj) -> bool:
    return obj.type == 'CAMERA'


class MocapSettings(bpy.types.PropertyGroup):
    video_path: StringProperty(
        name="Video", subtype='FILE_PATH',
        description="Video of the motion to capture (MP4, MOV, AVI, MKV)")
    use_frame_range: BoolProperty(
        name="Part of the Video", default=False,
        description="Capture only a range of the video's frames instead of all of them")
    video_first: IntProperty(
        name="First", default=0, min=0,
        description="First video frame to capture (the video's first frame is 0)")
    video_last: IntProperty(
        name="Last", default=0, min=0,
        description="Last video frame to capture (inclusive)")
    use_scene_start: BoolProperty(
        name="Start at Scene Start", default=True,
        description="Land the first captured video frame on the scene's start frame")
    frame_start: IntProperty(
        name="Start Frame", default=1,
        description="Scene frame where the first captured video frame lands; one key per video frame")
    use_current_frame: BoolProperty(
        name="Reference: Current Frame", default=True,
        description="Use the rig's pose at the current frame as the reference pose")
    reference_frame: IntProperty(
        name="Reference Frame", default=1,
        description="Scene frame whose pose is the reference pose. Best: a frame the video lands on, with the rig "
                    "posed like the person or creature in that video frame")
    camera: PointerProperty(
        name="Camera", type=bpy.types.Object, poll=_is_camera,
        description="Camera the video was shot from (optional; without one the video is taken as a front view)")
    smoothing: FloatProperty(
        name="Smoothing", default=1.0, min=0.0, soft_max=5.0, max=30.0,
        description="Temporal smoothing of the rotations (Gaussian width in frames; 0 = raw model output)")
    root_motion: BoolProperty(
        name="Root Motion", default=True,
        description="Also key the root bone's location (the creature moving through space)")
    action_name: StringProperty(
        name="Action Name", default="",
        description="Name of the new action (empty: the video's file name); an existing action is never replaced")

    def capture_kwargs(self, context) -> dict:
        """The settings as keyword arguments of `api.capture_iter` (video path made absolute)."""
        scene = context.scene
        return dict(
            video=bpy.path.abspath(self.video_path),
            frame_start=scene.frame_start if self.use_scene_start else self.frame_start,
            reference_frame=scene.frame_current if self.use_current_frame else self.reference_frame,
            camera=self.camera,
            action_name=self.action_name or None,
            smoothing=self.smoothing,
            root_motion=self.root_motion,
            frame_range=(self.video_first, self.video_last) if self.use_frame_range else None,
        )
