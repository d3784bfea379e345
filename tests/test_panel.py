"""The sidebar panel's draw code, run against a layout that checks every property and operator it names: a typo
there would otherwise show only in a live Blender UI."""
from __future__ import annotations

import pytest

from test_blender_helpers import bpy, fresh_scene, make_armature, set_settings, write_clip  # noqa: F401

from mocap_blender.blender.panel import VIEW3D_PT_mocap_capture  # noqa: E402


@pytest.fixture
def empty_scene():
    yield from fresh_scene()


class Layout:
    """Records what a panel draws; `prop` and `operator` fail on names Blender would not find."""

    def __init__(self, log=None):
        self.log = [] if log is None else log
        self.use_property_split = self.use_property_decorate = False
        self.active, self.scale_y = True, 1.0

    def _child(self, *args, **kwargs):
        return Layout(self.log)

    row = column = box = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        self.log.append(("prop", name))

    def operator(self, idname, **kwargs):
        group, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, group), name) and getattr(getattr(bpy.ops, group), name).get_rna_type()
        self.log.append(("operator", idname))

    def label(self, text="", **kwargs):
        self.log.append(("label", text))

    def separator(self, **kwargs):
        pass


def drawn(context) -> list:
    class Panel:
        layout = Layout()
    VIEW3D_PT_mocap_capture.draw(Panel, context)
    return Panel.layout.log


def labels(log) -> str:
    return " | ".join(text for kind, text in log if kind == "label")


def test_panel_draws_every_setting_and_both_buttons(empty_scene, tmp_path):
    obj = make_armature()
    set_settings(empty_scene, video_path=write_clip(tmp_path / "c.mp4", n_frames=4))
    with bpy.context.temp_override(active_object=obj, object=obj):
        log = drawn(bpy.context)
    props = {name for kind, name in log if kind == "prop"}
    settings = {p.identifier for p in empty_scene.mocap_capture.bl_rna.properties}
    settings -= {"rna_type", "name"}  # every PropertyGroup's own
    assert props == settings  # every setting is on the panel, once or more
    assert [n for k, n in log if k == "operator"] == ["mocap.show_video", "mocap.capture_video"]
    assert "Onto: Rig" in labels(log)


def test_panel_says_why_the_capture_cannot_run(empty_scene):
    with bpy.context.temp_override(active_object=None, object=None):
        assert "Select an armature" in labels(drawn(bpy.context))
    lamp = bpy.data.objects.new("Lamp", bpy.data.lights.new("Lamp", 'POINT'))
    obj = make_armature()
    set_settings(empty_scene, video_path="clip.mp4", camera=lamp)
    with bpy.context.temp_override(active_object=obj, object=obj):
        text = labels(drawn(bpy.context))
    assert "'Lamp' is not a camera" in text
