"""The 3D viewport sidebar tab "Mocap"."""
from __future__ import annotations

import bpy

from .operator import MOCAP_OT_capture_video
from .video_view import MOCAP_OT_show_video


class VIEW3D_PT_mocap_capture(bpy.types.Panel):
    bl_idname = "VIEW3D_PT_mocap_capture"
    bl_label = "Capture from Video"
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Mocap"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        s = context.scene.mocap_capture
        obj = context.active_object

        layout.prop(s, "video_path")
        row = layout.row()
        row.operator(MOCAP_OT_show_video.bl_idname, icon='CAMERA_DATA')
        col = layout.column(heading="Video Range")
        col.prop(s, "use_frame_range", text="Part Only")
        sub = col.column(align=True)
        sub.active = s.use_frame_range
        sub.prop(s, "video_first")
        sub.prop(s, "video_last")

        col = layout.column(heading="Timeline")
        col.prop(s, "use_scene_start", text="Scene Start")
        row = col.row()
        row.active = not s.use_scene_start
        row.prop(s, "frame_start")

        col = layout.column(heading="Reference")
        col.prop(s, "use_current_frame", text="Current Frame")
        row = col.row()
        row.active = not s.use_current_frame
        row.prop(s, "reference_frame")
        box = layout.box().column(align=True)
        box.scale_y = 0.8
        box.label(text="For the best result, pose the rig like", icon='INFO')
        box.label(text="the subject in one video frame and")
        box.label(text="use that frame as the reference.")
        box.label(text="Show Video puts it behind the rig.")

        layout.prop(s, "camera")
        if s.camera is not None and s.camera.type != 'CAMERA':
            layout.label(text=f"{s.camera.name!r} is not a camera", icon='ERROR')
        layout.prop(s, "smoothing")
        layout.prop(s, "root_motion")
        layout.prop(s, "contacts")
        layout.prop(s, "action_name")

        layout.separator()
        row = layout.row()
        row.scale_y = 1.4
        row.operator(MOCAP_OT_capture_video.bl_idname, icon='ARMATURE_DATA')
        reason = MOCAP_OT_capture_video.why_not(context)
        if reason:
            layout.label(text=reason, icon='ERROR')
        elif obj is not None:
            layout.label(text=f"Onto: {obj.name}", icon='OUTLINER_OB_ARMATURE')
