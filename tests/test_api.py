"""api.capture end to end with bpy and the real exported model: keys on the right frames and channels reproduce the
pipeline's rotations; every bad input raises MocapError and leaves the scene exactly as it was."""
from __future__ import annotations


import numpy as np
import pytest

from test_blender_helpers import (MODEL_PATH, RIG_BONES, action_snapshot, bpy, channel_rotations,  # noqa: F401
                                  fcurve_values, fresh_scene, make_armature, needs_model, scene_snapshot,
                                  write_clip)

from mocap_blender import api  # noqa: E402
from mocap_blender.blender.rig import bone_path  # noqa: E402
from mocap_blender.core import rotations as R  # noqa: E402
from mocap_blender.core.errors import MocapError  # noqa: E402
from mocap_blender.core.pipeline import UNTRAINED_NOTE  # noqa: E402


@pytest.fixture
def empty_scene():
    yield from fresh_scene()


pytestmark = needs_model


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "wave.mp4", n_frames=40)


def run(gen):
    steps = []
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as stop:
        return stop.value, steps


def test_capture_keys_reproduce_the_prediction(empty_scene, clip):
    obj = make_armature()
    empty_scene.frame_start = 10
    empty_scene.frame_set(15)  # reference: the current frame, which video frame 5 lands on
    outcome, steps = run(api.capture_iter(obj, clip, smoothing=1.0))
    action, result = outcome.action, outcome.result
    assert obj.animation_data.action == action and action.name == "wave"
    assert result.n_frames == 40 and outcome.frame_start == 10 and steps[-1][0] == steps[-1][1]
    assert (UNTRAINED_NOTE in outcome.notes) == api.MODEL.get().untrained  # the pipeline's note reaches the user
    for j, name in enumerate(result.names):
        frames, m = channel_rotations(action, obj, name, obj.pose.bones[name].rotation_mode)
        np.testing.assert_array_equal(frames, 10 + np.arange(40))
        assert np.degrees(R.geodesic_angle(m, result.rotations[:, j])).max() < 0.05
    root = result.names[0]
    for i in range(3):
        loc = fcurve_values(action, obj, bone_path(root, "location"), i)
        np.testing.assert_allclose(loc[:, 1], result.root_location[:, i], atol=1e-5)
    # the pose Blender evaluates at a frame is the predicted one
    empty_scene.frame_set(30)
    for j, name in enumerate(result.names):
        got = np.array(obj.pose.bones[name].matrix_basis)[:3, :3]
        assert np.degrees(R.geodesic_angle(got, result.rotations[20, j])) < 0.05
    # skipped channels: scale is never keyed
    keyed = {fc.data_path.rsplit(".", 1)[1] for fc in api_fcurves(obj)}
    assert keyed <= {"rotation_quaternion", "rotation_euler", "rotation_axis_angle", "location"}


def api_fcurves(obj):
    from mocap_blender.blender import anim
    return anim.fcurves_for(obj)


def test_capture_function_contract(empty_scene, clip):
    obj = make_armature()
    calls = []
    action = api.capture(obj, clip, frame_start=3, reference_frame=1, action_name="Take",
                         progress=lambda d, t, m: calls.append((d, t)))
    assert isinstance(action, bpy.types.Action) and action.name == "Take"
    assert obj.animation_data.action == action
    assert calls and calls[-1][0] == calls[-1][1]
    frames, _ = channel_rotations(action, obj, "hips", "QUATERNION")
    assert frames[0] == 3 and len(frames) == 40


def test_capture_warns_the_console_user_when_the_model_is_untrained(empty_scene, clip, monkeypatch):
    """api.capture returns only the action, so its warning notes go out as CaptureWarning: with the shipped file
    exactly when it is the untrained network, and never from a model that is trained."""
    import warnings
    from mocap_blender.core.pipeline import WARNING_PREFIX
    obj = make_armature()

    def captured_warnings():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            api.capture(obj, clip, frame_start=1, reference_frame=1)
        return [str(w.message) for w in seen if issubclass(w.category, api.CaptureWarning)]

    real = api.MODEL.get()
    assert captured_warnings() == ([UNTRAINED_NOTE[len(WARNING_PREFIX):]] if real.untrained else [])

    class Trained:
        untrained = False

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(api.MODEL, "get", lambda: Trained())
    assert captured_warnings() == []


def test_reference_frame_inside_the_clip_is_told_to_the_model(empty_scene, clip, monkeypatch):
    obj = make_armature()
    real = api.MODEL.get()
    seen = []

    class Recorder:
        def __getattr__(self, name):
            return getattr(real, name)

        def predict(self, frames, rig, **kw):
            seen.append(kw.get("ref_frame"))
            return real.predict(frames, rig, **kw)

    monkeypatch.setattr(api.MODEL, "get", lambda: Recorder())
    api.capture(obj, clip, frame_start=1, reference_frame=8)
    # the window holding video frame 7 has it at its index; later windows get it in front of them, flagged
    assert len(seen) > 1 and seen[0] == 7 and all(s == 0 for s in seen[1:])
    seen.clear()
    api.capture(obj, clip, frame_start=100, reference_frame=8)  # reference outside the clip's frames
    assert all(s is None for s in seen)


def test_same_capture_twice_gives_two_actions(empty_scene, clip):
    obj = make_armature()
    a1 = api.capture(obj, clip)
    snap1 = action_snapshot(a1)
    a2 = api.capture(obj, clip)
    assert a1.name == "wave" and a2.name != a1.name and a2.name.startswith("wave")
    assert obj.animation_data.action == a2 and a1.use_fake_user
    assert action_snapshot(a1)["curves"] == snap1["curves"]


def test_previous_action_is_kept_and_untouched(empty_scene, clip):
    obj = make_armature()
    obj.pose.bones["spine"].keyframe_insert("rotation_euler", frame=1)
    old = obj.animation_data.action
    before = action_snapshot(old)["curves"]
    api.capture(obj, clip)
    assert old.name in bpy.data.actions and old.use_fake_user
    assert action_snapshot(old)["curves"] == before


# --- bad input: a clear MocapError and the scene unchanged ---------------------------------------

def assert_refused(match, fn, *args, **kwargs):
    before = scene_snapshot()
    with pytest.raises(MocapError, match=match):
        fn(*args, **kwargs)
    assert scene_snapshot() == before


def test_bad_videos(empty_scene, clip, tmp_path):
    import cv2
    obj = make_armature()
    obj.pose.bones["spine"].keyframe_insert("rotation_euler", frame=1)  # a previous action that must stay as is
    assert_refused("not found", api.capture, obj, str(tmp_path / "missing.mp4"))
    (tmp_path / "junk.mp4").write_text("junk " * 100)
    assert_refused("could not be opened", api.capture, obj, str(tmp_path / "junk.mp4"))
    zero = cv2.VideoWriter(str(tmp_path / "zero.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 24, (64, 64))
    zero.release()
    assert_refused("zero frames", api.capture, obj, str(tmp_path / "zero.mp4"))
    data = open(clip, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert_refused("truncated", api.capture, obj, str(tmp_path / "cut.mp4"))
    avi = write_clip(tmp_path / "full.avi", n_frames=30, fourcc="MJPG")
    data = open(avi, "rb").read()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    assert_refused("truncated", api.capture, obj, str(tmp_path / "cut.avi"))
    cv2.imwrite(str(tmp_path / "still.png"), np.zeros((32, 32, 3), np.uint8))
    assert_refused("still image", api.capture, obj, str(tmp_path / "still.png"))
    assert_refused("No video", api.capture, obj, "")


def test_bad_objects(empty_scene, clip):
    assert_refused("No armature", api.capture, None, clip)
    mesh = bpy.data.objects.new("Cube", bpy.data.meshes.new("Cube"))
    empty_scene.collection.objects.link(mesh)
    assert_refused("not an armature", api.capture, mesh, clip)
    one = make_armature("One", bones=RIG_BONES[:1])
    assert_refused("at least two bones", api.capture, one, clip)
    obj = make_armature()
    assert_refused("not a camera", api.capture, obj, clip, camera=mesh)


def test_more_joints_than_the_model_takes(empty_scene, clip):
    n = api.MODEL.get().max_joints + 1
    bones = [("b0", None, (0, 0, 0), (0, 0, 0.1), "QUATERNION")]
    bones += [(f"b{i}", f"b{i - 1}", (0, 0, 0.1 * i), (0, 0, 0.1 * (i + 1)), "QUATERNION") for i in range(1, n)]
    obj = make_armature("Big", bones=bones, pose=False)
    assert_refused(f"at most {n - 1}", api.capture, obj, clip)


def test_linked_library_armature(empty_scene, clip, tmp_path):
    obj = make_armature("LibRig")
    lib = str(tmp_path / "lib.blend")
    bpy.data.libraries.write(lib, {obj})
    bpy.data.objects.remove(obj)
    with bpy.data.libraries.load(lib, link=True) as (src, dst):
        dst.objects = ["LibRig"]
    linked = dst.objects[0]
    empty_scene.collection.objects.link(linked)
    assert linked.library is not None
    assert_refused("linked from the library", api.capture, linked, clip)


def test_constraints_and_drivers(empty_scene, clip):
    obj = make_armature()
    pb = obj.pose.bones["forearm.R"]
    pb.constraints.new('COPY_ROTATION')
    assert_refused("constraints", api.capture, obj, clip)
    pb.constraints.remove(pb.constraints[0])
    fc = obj.pose.bones["hips"].driver_add("location", 0)
    fc.driver.expression = "1.0"
    assert_refused("Drivers", api.capture, obj, clip)


def test_wrong_mode(empty_scene, clip):
    obj = make_armature()
    with bpy.context.temp_override(active_object=obj, object=obj):
        bpy.ops.object.mode_set(mode='EDIT')
    assert_refused("Edit Mode", api.capture, obj, clip)
    bpy.ops.object.mode_set(mode='OBJECT')


def test_model_file_missing_corrupt_or_wrong_version(empty_scene, clip, tmp_path, monkeypatch):
    obj = make_armature()
    version = api.MODEL.get().meta["format_version"].encode()  # the shipped file's (rewritten as 9... below)
    monkeypatch.setattr(api.MODEL, "path", tmp_path / "gone.onnx")
    assert_refused("missing", api.capture, obj, clip)
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage" * 1000)
    monkeypatch.setattr(api.MODEL, "path", tmp_path / "corrupt.onnx")
    assert_refused("could not be loaded", api.capture, obj, clip)
    data = MODEL_PATH.read_bytes()
    tag = b"\n\x0eformat_version\x12" + bytes([len(version)]) + version
    assert data.count(tag) == 1
    wrong = b"9" * len(version)
    (tmp_path / "v9.onnx").write_bytes(data.replace(tag, tag[:-len(version)] + wrong))
    monkeypatch.setattr(api.MODEL, "path", tmp_path / "v9.onnx")
    assert_refused(f"format version {wrong.decode()}", api.capture, obj, clip)
    truncated = tmp_path / "half.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(api.MODEL, "path", truncated)
    assert_refused("could not be loaded|corrupt", api.capture, obj, clip)


def test_non_finite_model_output(empty_scene, clip, monkeypatch):
    obj = make_armature()
    real = api.MODEL.get()

    class NaNAfterFirstWindow:
        calls = 0

        def __getattr__(self, name):
            return getattr(real, name)

        def predict(self, frames, rig, **kw):
            out = real.predict(frames, rig, **kw)
            NaNAfterFirstWindow.calls += 1
            if NaNAfterFirstWindow.calls == 2:
                out["rotation"][-1, 2] = np.nan
            return out

    monkeypatch.setattr(api.MODEL, "get", lambda: NaNAfterFirstWindow())
    assert_refused("non-finite", api.capture, obj, clip)


def test_cancel_half_way(empty_scene, clip):
    obj = make_armature()
    before = scene_snapshot()
    gen = api.capture_iter(obj, clip)
    next(gen)
    next(gen)  # one window captured
    gen.close()
    assert scene_snapshot() == before


def test_frame_range_and_model_released(empty_scene, clip):
    obj = make_armature()
    outcome, _ = run(api.capture_iter(obj, clip, frame_range=(5, 14), frame_start=1, root_motion=False))
    assert outcome.result.n_frames == 10
    keyed = {fc.data_path.rsplit(".", 1)[1] for fc in api_fcurves(obj)}
    assert "location" not in keyed
    assert_refused("outside the video", api.capture_iter(obj, clip, frame_range=(30, 50)).__next__)
    assert_refused("starts after it ends", api.capture_iter(obj, clip, frame_range=(9, 3)).__next__)
    assert api.MODEL._model is not None
    import mocap_blender
    mocap_blender.unregister()
    assert api.MODEL._model is None
    mocap_blender.register()


def test_capture_warns_when_the_video_frame_rate_is_not_the_scenes(empty_scene, clip):
    """One key per video frame plays the motion at another speed when the rates differ: said, never silent."""
    import warnings
    obj = make_armature()
    empty_scene.render.fps, empty_scene.render.fps_base = 30, 1.0  # the clip is 24 fps

    def fps_warnings():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            api.capture(obj, clip, frame_start=1, reference_frame=1)
        return [str(w.message) for w in seen if "fps" in str(w.message)]

    got = fps_warnings()
    assert len(got) == 1 and "24 fps" in got[0] and "30 fps" in got[0] and "1.25 times faster" in got[0]
    empty_scene.render.fps = 24
    assert fps_warnings() == []


def test_contact_clean_up_from_the_api_keys_the_cleaned_rotations(empty_scene, clip):
    """contacts=True: the clean-up runs with the world's up read in the armature's space (here the armature object
    lies on its back, as glTF imports can), says what it did, and the keys are its rotations."""
    from mocap_blender.blender import rig
    obj = make_armature()
    obj.rotation_euler = (np.pi / 2, 0.0, 0.0)
    bpy.context.view_layer.update()
    np.testing.assert_allclose(rig.world_up(obj), [0.0, 1.0, 0.0], atol=1e-6)  # world +Z is armature +Y
    outcome, steps = run(api.capture_iter(obj, clip, contacts=True))
    result = outcome.result
    assert result.contacts is not None and result.contacts.planted.shape[0] == result.n_frames
    assert any(n.startswith("Contact clean-up") for n in outcome.notes)
    assert "Pinning planted feet" in [s[2] for s in steps]
    for j, name in enumerate(result.names):
        _, m = channel_rotations(outcome.action, obj, name, obj.pose.bones[name].rotation_mode)
        assert np.degrees(R.geodesic_angle(m, result.rotations[:, j])).max() < 0.05
