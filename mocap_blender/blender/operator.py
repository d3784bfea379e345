"""The "Capture from Video" operator: modal, a chunk per timer tick, Esc cancels, one undo step when finished.

The work is `api.capture_iter` (the same generator `api.capture` and the batch command run). Every change to the
scene happens in its last step (the bake), so cancelling before that leaves the scene exactly as it was. In
background mode (no window to run a modal loop in) invoking runs the capture to the end at once.
"""
from __future__ import annotations

import time

import bpy

from .. import api
from ..core.errors import MocapError
from .properties import capture_kwargs


class CaptureJob:
    """One capture in progress: `step()` advances it by one window, `cancel()` drops it (scene untouched)."""

    def __init__(self, armature, **kwargs):
        self.armature_name = armature.name
        self._gen = api.capture_iter(armature, **kwargs)
        self.done, self.total, self.message = 0, 1, "Starting"
        self.outcome = None
        self.started = time.perf_counter()
        self.step()  # runs all validation now: bad input raises here, before any modal loop starts

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def step(self) -> bool:
        """Advance one chunk; True when the capture has finished (then `outcome` is set)."""
        if self.outcome is not None:
            return True
        try:
            self.done, self.total, self.message = next(self._gen)
        except StopIteration as stop:
            self.outcome = stop.value
            return True
        except BaseException:
            self._gen.close()
            raise
        return False

    def run(self, progress=None):
        while not self.step():
            if progress is not None:
                progress(self.done, self.total, self.message)
        return self.outcome

    def cancel(self) -> None:
        self._gen.close()


def _report_outcome(op, job: CaptureJob) -> None:
    from ..core.pipeline import WARNING_PREFIX  # loaded by the capture already (cv2 is not needed to register)
    out = job.outcome
    secs = time.perf_counter() - job.started
    n = out.result.n_frames
    op.report({'INFO'}, f"Captured {n} frames onto {job.armature_name!r} as action {out.action.name!r} "
                        f"(frames {out.frame_start}-{out.frame_start + n - 1}, {secs:.1f} s, "
                        f"{n / max(secs, 1e-9):.0f} frames/s on the {api.MODEL.device or 'CPU'})")
    for note in out.notes:
        op.report({'WARNING'} if note.startswith(WARNING_PREFIX) else {'INFO'}, note)


class PollWithReason:
    """Mixin for operators: `poll` from the class's `why_not(context)`, whose reason becomes the greyed-out
    button's tooltip."""

    @classmethod
    def poll(cls, context):
        reason = cls.why_not(context)
        if reason is not None:
            cls.poll_message_set(reason)
            return False
        return True


class MOCAP_OT_capture_video(PollWithReason, bpy.types.Operator):
    """Capture the motion in the chosen video onto the active armature, as a new action"""
    bl_idname = "mocap.capture_video"
    bl_label = "Capture from Video"
    bl_options = {'REGISTER', 'UNDO'}

    @staticmethod
    def why_not(context) -> str | None:
        """Why the operator cannot run in this context (None: it can)."""
        obj = context.active_object
        if obj is None:
            return "Select an armature to capture onto"
        if obj.type != 'ARMATURE':
            return f"Select an armature ({obj.name!r} is a {obj.type.lower()})"
        if obj.library is not None:
            return f"{obj.name!r} is linked from a library: make a library override first"
        ov = getattr(obj, "override_library", None)
        if ov is not None and getattr(ov, "is_system_override", False):
            return f"{obj.name!r} is a non-editable override: make it editable first"
        if obj.mode not in {'OBJECT', 'POSE'}:
            return f"Switch {obj.name!r} to Pose or Object Mode"
        settings = getattr(context.scene, "mocap_capture", None)
        if settings is None or not settings.video_path.strip():
            return "Choose a video file in the Mocap tab"
        return None

    def _start(self, context) -> CaptureJob | None:
        try:
            return CaptureJob(context.active_object, **capture_kwargs(context.scene.mocap_capture, context))
        except MocapError as exc:
            self.report({'ERROR'}, str(exc))
            return None

    def execute(self, context):
        job = self._start(context)
        if job is None:
            return {'CANCELLED'}
        try:
            job.run()
        except MocapError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        _report_outcome(self, job)
        return {'FINISHED'}

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        self._job = self._start(context)
        if self._job is None:
            return {'CANCELLED'}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.01, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        self._status(context)
        return {'RUNNING_MODAL'}

    def _status(self, context, text=None) -> None:
        job = self._job
        if text is None:
            text = f"Mocap: {job.message} ({100 * job.done // max(job.total, 1)}%). Esc to cancel"
        if context.workspace is not None:
            context.workspace.status_text_set(text)
        context.window_manager.progress_update(100 * job.done // max(job.total, 1))

    def _end(self, context) -> None:
        wm = context.window_manager
        if getattr(self, "_timer", None) is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    def modal(self, context, event):
        if event.type == 'ESC' and event.value == 'PRESS':
            self._job.cancel()
            self._end(context)
            self.report({'WARNING'}, "Capture cancelled; nothing was changed")
            return {'CANCELLED'}
        if event.type != 'TIMER':
            return {'RUNNING_MODAL'}  # swallow other input: the scene must not change under a running capture
        try:
            budget = time.perf_counter() + 0.1
            while not self._job.step() and time.perf_counter() < budget:
                pass
        except MocapError as exc:
            self._end(context)
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        except Exception as exc:
            self._end(context)
            self.report({'ERROR'}, f"Capture failed ({type(exc).__name__}: {exc}); nothing was changed.")
            return {'CANCELLED'}
        if self._job.finished:
            self._end(context)
            _report_outcome(self, self._job)
            return {'FINISHED'}
        self._status(context)
        return {'RUNNING_MODAL'}

    def cancel(self, context):  # Blender calls this when the window closes mid-capture
        if getattr(self, "_job", None) is not None:
            self._job.cancel()
        self._end(context)
