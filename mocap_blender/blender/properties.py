"""All the capture settings, in one PropertyGroup stored on the scene (`scene.mocap_capture`)."""

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, PointerProperty, StringProperty


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
    # No `poll=` filter: a Python poll callback on a PointerProperty crashes the bpy 4.2 module at interpreter exit.
    # The panel flags a non-camera choice and the capture refuses it with a clear message.
    camera: PointerProperty(
        name="Camera", type=bpy.types.Object,
        description="Camera the video was shot from (optional; without one the video is taken as a front view)")
    smoothing: FloatProperty(
        name="Smoothing", default=1.0, min=0.0, soft_max=5.0, max=30.0,
        description="Temporal smoothing of the rotations (Gaussian width in frames; 0 = raw model output)")
    root_motion: BoolProperty(
        name="Root Motion", default=True,
        description="Also key the root bone's location (the creature moving through space)")
    contacts: BoolProperty(
        name="Contact Clean-up", default=False,
        description="Pin the end bones (feet, claws, tips) where they rest on the ground, so they do not skate. "
                    "Turns up to three bones above each; the raw capture is kept")
    action_name: StringProperty(
        name="Action Name", default="",
        description="Name of the new action (empty: the video's file name); an existing action is never replaced")


# A module function, not a method: any Python function on a registered PropertyGroup class makes the bpy 4.2
# module crash at interpreter exit.
def capture_kwargs(settings: MocapSettings, context) -> dict:
    """The settings as keyword arguments of `api.capture_iter` (video path made absolute)."""
    scene = context.scene
    s = settings
    return dict(
        video=bpy.path.abspath(s.video_path),
        frame_start=scene.frame_start if s.use_scene_start else s.frame_start,
        reference_frame=scene.frame_current if s.use_current_frame else s.reference_frame,
        camera=s.camera,
        action_name=s.action_name or None,
        smoothing=s.smoothing,
        root_motion=s.root_motion,
        contacts=s.contacts,
        frame_range=(s.video_first, s.video_last) if s.use_frame_range else None,
    )
