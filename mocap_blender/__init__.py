"""Mocap for any rig: capture motion from one video and bake it as rotation keys on your own armature.

`import mocap_blender` stays light (no bpy import) so the core can be used without Blender; Blender calls
`register()`/`unregister()` (everything is registered in `blender/registration.py`).
"""


def register():
    from .blender import registration
    registration.register()


def unregister():
    from .blender import registration
    registration.unregister()
