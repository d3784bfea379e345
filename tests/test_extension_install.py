"""The built linux-x64 extension zip installs into a fresh user folder, enables, and captures through its operator.

This is what a user gets from "Install from Disk": the zip built by build.py (bundled wheels, shipped model),
installed by Blender's own extension installer, run on a rig and a clip made here.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: installing an extension changes Blender's state for the whole process.
SCRIPT = textwrap.dedent(r'''
    import glob, os, sys, tempfile
    import numpy as np
    import cv2
    user = os.environ["BLENDER_USER_RESOURCES"]
    import bpy

    zip_path, clip = sys.argv[1], sys.argv[2]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo="user_default", enable_on_install=True) == {"FINISHED"}
    assert "bl_ext.user_default.mocap_blender" in bpy.context.preferences.addons.keys()
    site = glob.glob(os.path.join(user, "extensions", ".local", "lib", "python*", "site-packages"))
    assert site and os.path.isdir(os.path.join(site[0], "onnxruntime")), "bundled onnxruntime wheel not installed"
    assert os.path.isdir(os.path.join(site[0], "cv2")), "bundled OpenCV wheel not installed"

    # A small rig: a chain of 6 bones with rolls, keyed at its rest pose on the reference frame.
    scene = bpy.context.scene
    arm = bpy.data.armatures.new("Rig")
    obj = bpy.data.objects.new("Rig", arm)
    scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    bpy.ops.object.mode_set(mode="EDIT")
    prev = None
    for i in range(6):
        b = arm.edit_bones.new(f"b{i}")
        b.head = (0, 0, 0.3 * i)
        b.tail = (0.05 * (i % 2), 0, 0.3 * (i + 1))
        b.roll = 0.4 * i
        if prev is not None:
            b.parent = prev
            b.use_connect = True
        prev = b
    bpy.ops.object.mode_set(mode="OBJECT")
    scene.frame_start, scene.frame_current = 1, 1
    scene.mocap_capture.video_path = clip

    with bpy.context.temp_override(active_object=obj, object=obj, selected_objects=[obj]):
        assert bpy.ops.mocap.capture_video.poll()
        result = bpy.ops.mocap.capture_video("EXEC_DEFAULT")
    assert result == {"FINISHED"}, result
    action = obj.animation_data.action
    n_frames = int(cv2.VideoCapture(clip).get(cv2.CAP_PROP_FRAME_COUNT))
    keyed = set()
    # Both action APIs: 4.2-4.3 Action.fcurves, 4.4+ layers/strips/channelbags.
    if hasattr(action, "layers") and len(action.layers):
        curves = [fc for layer in action.layers for strip in layer.strips for bag in strip.channelbags
                  for fc in bag.fcurves]
    else:
        curves = list(action.fcurves)
    assert curves, "the new action has no F-curves"
    for fc in curves:
        frames = [k.co[0] for k in fc.keyframe_points]
        keyed.update(frames)
        assert all(np.isfinite(k.co[1]) for k in fc.keyframe_points)
    assert keyed == set(float(f) for f in range(1, 1 + n_frames)), sorted(keyed)[:5]
    bones = {fc.data_path.split('"')[1] for fc in curves if fc.data_path.startswith("pose.bones")}
    assert bones == {f"b{i}" for i in range(6)}, bones
    print("INSTALLED-EXTENSION-CAPTURE-OK", len(curves), "curves", n_frames, "frames")
''')


@pytest.fixture(scope="module")
def linux_zip(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(ROOT / "build.py"), "--platform", "linux-x64", "--dist", str(dist)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    (zip_path,) = dist.glob("mocap_blender-*-linux-x64.zip")
    return zip_path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    import cv2
    import numpy as np
    path = tmp_path_factory.mktemp("clip") / "moving_bar.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (128, 128))
    for t in range(20):
        img = np.full((128, 128, 3), 40, np.uint8)
        angle = 0.1 * t
        end = (int(64 + 50 * np.sin(angle)), int(110 - 90 * np.cos(angle)))
        cv2.line(img, (64, 110), end, (200, 180, 90), 9)
        writer.write(img)
    writer.release()
    return path


@pytest.mark.slow
def test_built_zip_installs_and_captures(linux_zip, clip, tmp_path):
    # `import bpy` here only to mark this module as a Blender test (it runs on 4.2 LTS and 5.0).
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(linux_zip), str(clip)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "INSTALLED-EXTENSION-CAPTURE-OK" in run.stdout
