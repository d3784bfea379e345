"""Registration in one place: one ordered tuple of classes, registered in order and unregistered in reverse."""
from __future__ import annotations

import bpy

from .. import api
from .operator import MOCAP_OT_capture_video
from .panel import VIEW3D_PT_mocap_capture
from .properties import MocapSettings
from .video_view import MOCAP_OT_show_video

CLASSES = (MocapSettings, MOCAP_OT_capture_video, MOCAP_OT_show_video, VIEW3D_PT_mocap_capture)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.mocap_capture = bpy.props.PointerProperty(type=MocapSettings)


def unregister() -> None:
    api.MODEL.release()  # the ONNX session goes with the add-on
    if hasattr(bpy.types.Scene, "mocap_capture"):
        del bpy.types.Scene.mocap_capture
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
