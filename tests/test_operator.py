"""The "Capture from Video" operator through a context override: poll messages, keys that reproduce the pipeline's
prediction, one undo step, errors reported with the scene unchanged, cancel half way."""
from __future__ import annotations

import numpy as np
import pytest

from test_blender_helpers import (bpy, channel_rotations, fresh_scene, fcurve_values, make_armature,  # noqa: F401
                                  needs_model, override, scene_snapshot, set_settings, write_clip)

from mocap_blender import api  # noqa: E402
from mocap_blender.blender import rig  # noqa: E402
from mocap_blender.blender.operator import CaptureJob, MOCAP_OT_capture_video  # noqa: E402
from mocap_blender.blender.properties import capture_kwargs  # noqa: E402
from mocap_blender.blender.rig import bone_path  # noqa: E402
from mocap_blender.core import rotations as R  # noqa: E402
from mocap_blender.core.pipeline import UNTRAINED_NOTE, capture_steps  # noqa: E402



@pytest.fixture
def empty_scene():
    yield from fresh_scene()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "jump.mp4", n_frames=36)


def poll_message(obj):
    with bpy.context.temp_override(active_object=obj, object=obj):
        assert not bpy.ops.mocap.capture_video.poll()
        return MOCAP_OT_capture_video.why_not(bpy.context)


def test_poll_messages(empty_scene, clip, tmp_path):
    assert "Select an armature" in poll_message(None)
    mesh = bpy.data.objects.new("Cube", bpy.data.meshes.new("Cube"))
    empty_scene.collection.objects.link(mesh)
    assert "Cube" in poll_message(mesh) and "mesh" in poll_message(mesh)
    obj = make_armature()
    assert "Choose a video" in poll_message(obj)
    set_settings(empty_scene, video_path=clip)
    with override(obj):
        assert bpy.ops.mocap.capture_video.poll()
        bpy.ops.object.mode_set(mode='EDIT')
    assert "Pose or Object Mode" in poll_message(obj)
    with override(obj):
        bpy.ops.object.mode_set(mode='POSE')
        assert bpy.ops.mocap.capture_video.poll()
        bpy.ops.object.mode_set(mode='OBJECT')
    lib = str(tmp_path / "lib.blend")
    bpy.data.libraries.write(lib, {obj})
    with bpy.data.libraries.load(lib, link=True) as (_, dst):
        dst.objects = ["Rig"]
    linked = dst.objects[0]
    empty_scene.collection.objects.link(linked)
    assert "linked from a library" in poll_message(linked)
    with override(linked), pytest.raises(RuntimeError, match="linked from a library"):
        bpy.ops.mocap.capture_video('EXEC_DEFAULT')


@needs_model
@pytest.mark.parametrize("how", ["EXEC_DEFAULT", "INVOKE_DEFAULT"])
def test_operator_bakes_the_prediction(empty_scene, clip, how):
    obj = make_armature()
    empty_scene.frame_set(5)
    set_settings(empty_scene, video_path=clip, use_scene_start=False, frame_start=3, smoothing=0.5,
                 action_name="Hop")
    # what the pipeline predicts for exactly these settings (computed first: the scene is not touched)
    info = rig.read_rig(obj, 5)
    gen = capture_steps(api.MODEL.get(), info.skeleton, info.ref_rot, clip, ref_video_frame=2, smoothing=0.5,
                        ref_location=info.ref_location)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        expected = stop.value
    with override(obj):
        assert bpy.ops.mocap.capture_video(how) == {'FINISHED'}
    action = obj.animation_data.action
    assert action.name == "Hop"
    for j, name in enumerate(info.names):
        mode = obj.pose.bones[name].rotation_mode
        frames, m = channel_rotations(action, obj, name, mode)
        np.testing.assert_array_equal(frames, 3 + np.arange(36))
        assert np.degrees(R.geodesic_angle(m, expected.rotations[:, j])).max() < 0.05
    loc = fcurve_values(action, obj, bone_path(info.names[0], "location"), 2)
    np.testing.assert_allclose(loc[:, 1], expected.root_location[:, 2], atol=1e-5)


@needs_model
def test_one_undo_step_undoes_a_capture(empty_scene, clip):
    obj = make_armature()
    obj.pose.bones["spine"].keyframe_insert("rotation_euler", frame=1)
    set_settings(empty_scene, video_path=clip)
    bpy.ops.ed.undo_push(message="before capture")
    before = scene_snapshot()
    with override(obj):
        assert bpy.ops.mocap.capture_video('EXEC_DEFAULT', True) == {'FINISHED'}  # True: push an undo step
    assert scene_snapshot() != before
    bpy.ops.ed.undo()
    assert scene_snapshot() == before


@needs_model
def test_operator_reports_errors_and_changes_nothing(empty_scene, clip, tmp_path):
    obj = make_armature()
    obj.pose.bones["spine"].keyframe_insert("rotation_euler", frame=1)
    (tmp_path / "bad.mp4").write_text("nope" * 100)
    set_settings(empty_scene, video_path=str(tmp_path / "bad.mp4"))
    before = scene_snapshot()
    with override(obj), pytest.raises(RuntimeError, match="could not be opened"):
        bpy.ops.mocap.capture_video('EXEC_DEFAULT')
    assert scene_snapshot() == before
    set_settings(empty_scene, video_path=clip, use_frame_range=True, video_first=30, video_last=99)
    with override(obj), pytest.raises(RuntimeError, match="outside the video"):
        bpy.ops.mocap.capture_video('INVOKE_DEFAULT')
    assert scene_snapshot() == before


@needs_model
def test_cancel_half_way_leaves_the_scene_unchanged(empty_scene, clip):
    obj = make_armature()
    obj.pose.bones["spine"].keyframe_insert("rotation_euler", frame=1)
    set_settings(empty_scene, video_path=clip)
    before = scene_snapshot()
    with override(obj):
        job = CaptureJob(obj, **capture_kwargs(empty_scene.mocap_capture, bpy.context))
    assert not job.step() and 0 < job.done < job.total  # half way: one window captured
    job.cancel()
    assert scene_snapshot() == before
    with override(obj):
        job = CaptureJob(obj, **capture_kwargs(empty_scene.mocap_capture, bpy.context))
    outcome = job.run()
    assert job.finished and outcome.action.name == "jump"


def test_registration_is_reversible(empty_scene):
    import mocap_blender
    from mocap_blender.blender import registration
    assert hasattr(bpy.types.Scene, "mocap_capture")
    mocap_blender.unregister()
    assert not hasattr(bpy.types.Scene, "mocap_capture")
    assert not hasattr(bpy.types, "MOCAP_OT_capture_video") and not hasattr(bpy.types, "VIEW3D_PT_mocap_capture")
    mocap_blender.register()
    assert [c.__name__ for c in registration.CLASSES][0] == "MocapSettings"


class _ModalHarness:
    """Drives the operator's real modal() with timer and Esc events (background mode has no event loop)."""

    def __init__(self, job):
        self._job, self._timer, self.reports = job, None, []

    def report(self, kind, text):
        self.reports.append((set(kind), text))

    def _end(self, context):
        MOCAP_OT_capture_video._end(self, context)

    def _status(self, context, text=None):
        MOCAP_OT_capture_video._status(self, context, text)

    def event(self, context, kind, value='NOTHING'):
        from types import SimpleNamespace
        return MOCAP_OT_capture_video.modal(self, context, SimpleNamespace(type=kind, value=value))


@needs_model
def test_modal_ticks_to_the_end_and_esc_cancels(empty_scene, clip):
    obj = make_armature()
    obj.pose.bones["spine"].keyframe_insert("rotation_euler", frame=1)
    set_settings(empty_scene, video_path=clip)
    before = scene_snapshot()
    with override(obj):
        h = _ModalHarness(CaptureJob(obj, **capture_kwargs(empty_scene.mocap_capture, bpy.context)))
        assert h.event(bpy.context, 'TIMER') == {'RUNNING_MODAL'}
        assert h.event(bpy.context, 'MOUSEMOVE') == {'RUNNING_MODAL'}  # swallowed
        assert h.event(bpy.context, 'ESC', 'PRESS') == {'CANCELLED'}
    assert scene_snapshot() == before
    assert any("cancelled" in text for _, text in h.reports)
    with override(obj):
        h = _ModalHarness(CaptureJob(obj, **capture_kwargs(empty_scene.mocap_capture, bpy.context)))
        results = [h.event(bpy.context, 'TIMER') for _ in range(50)]
    assert {'FINISHED'} in results and obj.animation_data.action.name == "jump"
    assert any(kind == {'INFO'} and "Captured 36 frames" in text for kind, text in h.reports)
    warned = {text for kind, text in h.reports if kind == {'WARNING'}}  # (the harness ticks on after FINISHED)
    assert warned == ({UNTRAINED_NOTE} if api.MODEL.get().untrained else set())
    assert not any(kind == {'INFO'} and text == UNTRAINED_NOTE for kind, text in h.reports)
