"""The "Show Video" operator: the video behind a front camera that frames the rig and that the capture reads as the
front view, in step with the timeline as the capture keys it; a chosen camera kept where it is; no duplicates when
run again; bad input refused with the scene unchanged; one undo step."""
from __future__ import annotations

import math

import numpy as np
import pytest

from test_blender_helpers import (bpy, fresh_scene, make_armature, needs_model, override,  # noqa: F401
                                  scene_snapshot, set_settings, write_clip)

from mathutils import Euler, Matrix, Vector  # noqa: E402
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402

from mocap_blender import api  # noqa: E402
from mocap_blender.blender import rig  # noqa: E402
from mocap_blender.blender.video_view import (CLIP_TAG, MARGIN, MOCAP_OT_show_video, SHOWS_ROTATION_TAG,  # noqa: E402
                                              rig_points, show_video)
from mocap_blender.core.pipeline import WARNING_PREFIX, intrinsics  # noqa: E402
from _video_files import tag_rotation  # noqa: E402


@pytest.fixture
def empty_scene():
    yield from fresh_scene()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "wave.mp4", n_frames=30, size=(160, 96))


def snapshot(scene=None) -> dict:
    """The capture's snapshot plus what this operator may change (scene: default the current one; undo replaces
    the scene's Python object)."""
    scene = scene or bpy.context.scene
    r = scene.render
    cam = scene.mocap_capture.camera
    return dict(scene_snapshot(), clips=len(bpy.data.movieclips), cameras=len(bpy.data.cameras),
                size=(r.resolution_x, r.resolution_y), camera=cam.name if cam else None,
                scene_camera=scene.camera.name if scene.camera else None,
                backgrounds={c.name: len(c.background_images) for c in bpy.data.cameras})


def placed_rig():
    obj = make_armature()
    obj.location = (3.0, -1.0, 0.5)
    obj.rotation_euler = (0.0, 0.0, 0.7)
    obj.scale = (2.0, 2.0, 2.0)
    obj.pose.bones["arm.L"].rotation_axis_angle = (0.8, 0.0, 1.0, 0.0)
    bpy.context.view_layer.update()
    return obj


def test_show_video_makes_the_front_camera_the_capture_assumes(empty_scene, clip):
    obj = placed_rig()
    set_settings(empty_scene, video_path=clip, use_scene_start=False, frame_start=10, use_frame_range=True,
                 video_first=3, video_last=20)
    with override(obj):
        assert bpy.ops.mocap.show_video() == {'FINISHED'}
    cam = empty_scene.mocap_capture.camera
    assert cam is not None and cam.type == 'CAMERA' and empty_scene.camera == cam
    # The capture reads this camera exactly as it reads "no camera": the same orientation and the same lens.
    np.testing.assert_allclose(rig.cam_from_armature(obj, cam), rig.cam_from_armature(obj, None), atol=1e-6)
    np.testing.assert_allclose(intrinsics(160, 96, cam.data.angle), intrinsics(160, 96), atol=1e-9)
    # The camera's frame is the video's, and it frames the whole rig, tightly (the rig spans 1 / MARGIN of it).
    assert (empty_scene.render.resolution_x, empty_scene.render.resolution_y) == (160, 96)
    bpy.context.view_layer.update()
    uv = np.array([tuple(world_to_camera_view(empty_scene, cam, Vector(p)))[:2] for p in rig_points(obj)])
    assert uv.min() > 0.0 and uv.max() < 1.0
    spread = (uv.max(0) - uv.min(0)).max()
    assert abs(spread - 1.0 / MARGIN) < 0.02, spread
    # The video behind it, video frame 3 on scene frame 10. Blender shows clip frame (scene frame - frame_start + 1),
    # counted from 1 (BKE_movieclip_remap_scene_to_clip_frame): scene frame 10 -> the clip's 4th frame = video
    # frame 3.
    bgs = list(cam.data.background_images)
    assert cam.data.show_background_images and len(bgs) == 1
    assert bgs[0].source == 'MOVIE_CLIP' and bgs[0].show_background_image and bgs[0].display_depth == 'BACK'
    clip_block = bgs[0].clip
    assert clip_block.get(CLIP_TAG) and tuple(clip_block.size) == (160, 96)
    assert 10 - clip_block.frame_start + 1 == 3 + 1
    # Nothing of the rig moved, and it stays the active object, ready to pose.
    assert bpy.context.view_layer.objects.active == obj and tuple(obj.location) == (3.0, -1.0, 0.5)


def test_show_video_keeps_a_chosen_camera_and_runs_again_without_duplicates(empty_scene, clip, tmp_path):
    obj = make_armature()
    cam = bpy.data.objects.new("Shot", bpy.data.cameras.new("Shot"))
    empty_scene.collection.objects.link(cam)
    cam.matrix_world = Matrix.Translation((1.0, -6.0, 1.2)) @ Euler((math.radians(85), 0.0, 0.3)).to_matrix().to_4x4()
    before = (tuple(cam.location), tuple(cam.rotation_euler), tuple(cam.scale))
    set_settings(empty_scene, video_path=clip, camera=cam)
    for _ in range(2):
        with override(obj):
            assert bpy.ops.mocap.show_video() == {'FINISHED'}
    assert (tuple(cam.location), tuple(cam.rotation_euler), tuple(cam.scale)) == before
    assert len(bpy.data.cameras) == 1 and len(bpy.data.movieclips) == 1 and len(cam.data.background_images) == 1
    assert cam.data.background_images[0].clip.frame_start == empty_scene.frame_start  # video frame 0 at the start
    other = write_clip(tmp_path / "other.mp4", n_frames=12, size=(160, 96))
    set_settings(empty_scene, video_path=other)
    with override(obj):
        assert bpy.ops.mocap.show_video() == {'FINISHED'}
    shown = [bg.clip.filepath.endswith("other.mp4") for bg in cam.data.background_images if bg.show_background_image]
    assert shown == [True] and len(cam.data.background_images) == 2  # the earlier video is hidden, not removed


def test_a_phone_clip_with_a_rotation_tag_is_framed_upright_or_the_user_is_told(empty_scene, clip, tmp_path):
    """A portrait phone clip (stored 160 x 96 with a 90-degree tag): the camera's frame is the upright video the
    capture reads (96 x 160). Blender 4.4+ shows the clip upright too; 4.2 and 4.3 show it as stored, and say so."""
    obj = make_armature()
    phone = tag_rotation(clip, tmp_path / "phone.mp4", 90)
    _, notes = show_video(empty_scene, obj, phone)
    assert (empty_scene.render.resolution_x, empty_scene.render.resolution_y) == (96, 160)
    shown = next(m for m in bpy.data.movieclips if m.get(CLIP_TAG))
    assert tuple(shown.size) == ((96, 160) if SHOWS_ROTATION_TAG else (160, 96))  # what this Blender really does
    told = [n for n in notes if "rotation tag" in n]
    assert len(told) == (0 if SHOWS_ROTATION_TAG else 1)
    assert all(n.startswith(WARNING_PREFIX) and "90 degrees" in n and "4.4" in n for n in told)


def test_show_video_refuses_bad_input_and_changes_nothing(empty_scene, clip, tmp_path):
    with bpy.context.temp_override(active_object=None, object=None):
        assert not bpy.ops.mocap.show_video.poll()
        assert "Choose a video" in MOCAP_OT_show_video.why_not(bpy.context)
        set_settings(empty_scene, video_path=clip)
        assert "Select the armature" in MOCAP_OT_show_video.why_not(bpy.context)
    obj = make_armature()
    before = snapshot(empty_scene)
    (tmp_path / "bad.mp4").write_text("nope" * 100)
    set_settings(empty_scene, video_path=str(tmp_path / "bad.mp4"))
    with override(obj), pytest.raises(RuntimeError, match="could not be opened"):
        bpy.ops.mocap.show_video()
    set_settings(empty_scene, video_path=clip, use_frame_range=True, video_first=40, video_last=50)
    with override(obj), pytest.raises(RuntimeError, match="outside the video"):
        bpy.ops.mocap.show_video()
    lamp = bpy.data.objects.new("Lamp", bpy.data.lights.new("Lamp", 'POINT'))
    empty_scene.collection.objects.link(lamp)
    before = snapshot(empty_scene)
    set_settings(empty_scene, use_frame_range=False, camera=lamp)
    with override(obj), pytest.raises(RuntimeError, match="not a camera"):
        bpy.ops.mocap.show_video()
    set_settings(empty_scene, camera=None)
    assert snapshot(empty_scene) == before


def test_one_undo_step_undoes_show_video(empty_scene, clip):
    obj = make_armature()
    set_settings(empty_scene, video_path=clip)
    bpy.ops.ed.undo_push(message="before show video")
    before = snapshot(empty_scene)
    with override(obj):
        assert bpy.ops.mocap.show_video('EXEC_DEFAULT', True) == {'FINISHED'}  # True: push an undo step
    assert snapshot(empty_scene) != before
    bpy.ops.ed.undo()
    assert snapshot() == before


@needs_model
def test_a_capture_through_the_made_camera_equals_one_without_a_camera(empty_scene, clip):
    obj = placed_rig()
    set_settings(empty_scene, video_path=clip)
    with override(obj):
        assert bpy.ops.mocap.show_video() == {'FINISHED'}
    cam = empty_scene.mocap_capture.camera

    def run(camera):
        gen = api.capture_iter(obj, clip, camera=camera)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value.result

    with_cam, without = run(cam), run(None)
    np.testing.assert_allclose(with_cam.rotations, without.rotations, atol=1e-6)
    np.testing.assert_allclose(with_cam.root_location, without.root_location, atol=1e-6)


def test_show_video_switches_the_viewport_it_ran_from_to_the_camera(empty_scene):
    """The viewport half, which background mode has no window for: a stand-in viewport and view region."""
    from types import SimpleNamespace

    shot = bpy.data.objects.new("Shot", bpy.data.cameras.new("Shot"))
    made = bpy.data.objects.new("Made", bpy.data.cameras.new("Made"))
    empty_scene.camera = shot
    view = SimpleNamespace(type='VIEW_3D', use_local_camera=False, camera=None)
    region = SimpleNamespace(view_perspective='PERSP')
    ctx = SimpleNamespace(space_data=view, region_data=region, scene=empty_scene)
    assert MOCAP_OT_show_video._look_through(ctx, made)
    assert region.view_perspective == 'CAMERA' and view.use_local_camera and view.camera == made
    assert empty_scene.camera == shot  # the scene's (render) camera is the user's, untouched
    view = SimpleNamespace(type='VIEW_3D', use_local_camera=False, camera=None)
    ctx = SimpleNamespace(space_data=view, region_data=SimpleNamespace(view_perspective='PERSP'), scene=empty_scene)
    assert MOCAP_OT_show_video._look_through(ctx, shot) and not view.use_local_camera
    ctx = SimpleNamespace(space_data=None, region_data=None, scene=empty_scene)
    assert not MOCAP_OT_show_video._look_through(ctx, made)  # a script or background mode: nothing to switch
