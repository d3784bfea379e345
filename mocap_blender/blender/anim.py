"""The ONE place that knows how actions store F-curves in each Blender version.

Blender 4.2-4.3: `Action.fcurves` (+ `Action.groups`), any ID can use the action.
Blender 4.4 and later: layered actions. F-curves live in a channelbag per (layer strip, slot); the object's
`animation_data.action_slot` says which slot it uses. `Action.fcurves` is a deprecated proxy in 4.4-4.5 and no
longer exists in 5.0. Nothing else in the package touches `Action.fcurves`, slots, layers or channelbags.
"""
from __future__ import annotations

import bpy

LAYERED = "slots" in bpy.types.Action.bl_rna.properties  # 4.4+


class ChannelWriter:
    """F-curves for one object in a freshly created action: `new(data_path, index, group)` -> FCurve."""

    def __init__(self, action, obj):
        self.action = action
        self._groups = {}
        if LAYERED:
            self.slot = action.slots.new(id_type='OBJECT', name=obj.name)
            layer = action.layers.new("Layer")
            strip = layer.strips.new(type='KEYFRAME')
            self._bag = strip.channelbag(self.slot, ensure=True)
        else:
            self.slot = None
            action.id_root = 'OBJECT'
            self._bag = action

    def new(self, data_path: str, index: int, group: str):
        if LAYERED:
            return self._bag.fcurves.new(data_path, index=index, group_name=group)
        return self._bag.fcurves.new(data_path, index=index, action_group=group)


def fcurves_for(obj):
    """The F-curves that animate `obj` in its assigned action (empty if none), read-only use."""
    ad = obj.animation_data
    action = ad.action if ad is not None else None
    if action is None:
        return []
    if not LAYERED:
        return list(action.fcurves)
    slot = ad.action_slot
    if slot is None:
        return []
    curves = []
    for layer in action.layers:
        for strip in layer.strips:
            bag = strip.channelbag(slot)
            if bag is not None:
                curves.extend(bag.fcurves)
    return curves


def assigned(obj):
    """(action, slot) currently assigned to `obj` (slot None before 4.4), or (None, None)."""
    ad = obj.animation_data
    if ad is None or ad.action is None:
        return None, None
    return ad.action, (ad.action_slot if LAYERED else None)


def assign(obj, action, slot=None) -> None:
    """Assign `action` (and its slot on 4.4+) to `obj`; `action=None` clears it."""
    ad = obj.animation_data if obj.animation_data is not None else obj.animation_data_create()
    ad.action = action
    if LAYERED and action is not None and slot is not None and ad.action_slot != slot:
        ad.action_slot = slot
