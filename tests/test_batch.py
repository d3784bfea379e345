"""The headless batch command (`python -m mocap_blender.batch`) in a subprocess with the bpy module."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_blender_helpers import (bpy, channel_rotations, fresh_scene, make_armature, needs_model,  # noqa: F401
                                  write_clip)

from mocap_blender import api  # noqa: E402
from mocap_blender.blender import rig  # noqa: E402
from mocap_blender.core import rotations as R  # noqa: E402
from mocap_blender.core.pipeline import UNTRAINED_NOTE, capture_steps  # noqa: E402


@pytest.fixture
def empty_scene():
    yield from fresh_scene()


ROOT = Path(__file__).resolve().parents[1]


def batch(*args, timeout=600):
    env = dict(os.environ)
    env.setdefault("BLENDER_USER_RESOURCES", "/tmp/mocap_blender_batch_user")
    return subprocess.run([sys.executable, "-m", "mocap_blender.batch", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def rig_blend(empty_scene, tmp_path):
    obj = make_armature("Hero")
    obj.pose.bones["spine"].keyframe_insert("rotation_euler", frame=1)
    path = tmp_path / "rig.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)
    return path


@needs_model
def test_batch_writes_blend_and_bvh_with_the_prediction(rig_blend, tmp_path):
    clip = write_clip(tmp_path / "run.mp4", n_frames=30)
    out, bvh = tmp_path / "out.blend", tmp_path / "out.bvh"
    res = batch("--blend", rig_blend, "--armature", "Hero", "--video", clip, "--out", out, "--bvh", bvh,
                "--frame-start", 11)
    assert res.returncode == 0, res.stderr
    assert "30 frames -> action 'run'" in res.stdout and "frames/s on the CPU)" in res.stdout  # no GPU here
    assert (f"[mocap] {UNTRAINED_NOTE}" in res.stdout) == api.MODEL.get().untrained
    # expected: the pipeline on the same rig (the rig file is unchanged by the batch job)
    bpy.ops.wm.open_mainfile(filepath=str(rig_blend))
    info = rig.read_rig(bpy.data.objects["Hero"])
    gen = capture_steps(api.MODEL.get(), info.skeleton, info.ref_rot, clip, ref_location=info.ref_location)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        expected = stop.value
    assert bpy.data.objects["Hero"].animation_data.action.name != "run"
    bpy.ops.wm.open_mainfile(filepath=str(out))
    obj = bpy.data.objects["Hero"]
    action = obj.animation_data.action
    assert action.name == "run" and bpy.data.actions[obj.name + "Action"].use_fake_user
    for j, name in enumerate(info.names):
        mode = obj.pose.bones[name].rotation_mode
        frames, m = channel_rotations(action, obj, name, mode)
        np.testing.assert_array_equal(frames, 11 + np.arange(30))
        assert np.degrees(R.geodesic_angle(m, expected.rotations[:, j])).max() < 0.05
    text = bvh.read_text()
    assert "HIERARCHY" in text and "Frames: 30" in text


def test_batch_failures_exit_non_zero_with_the_message(rig_blend, tmp_path):
    res = batch("--blend", rig_blend, "--armature", "Hero", "--video", tmp_path / "none.mp4", "--out",
                tmp_path / "o.blend")
    assert res.returncode == 2 and "error:" in res.stderr and "none.mp4" in res.stderr
    clip = write_clip(tmp_path / "c.mp4", n_frames=8)
    res = batch("--blend", rig_blend, "--armature", "Nobody", "--video", clip, "--out", tmp_path / "o.blend")
    assert res.returncode == 2 and "No object named 'Nobody'" in res.stderr and "Hero" in res.stderr
    assert not (tmp_path / "o.blend").exists()
    res = batch("--blend", rig_blend)
    assert res.returncode != 0 and "--armature" in res.stderr
