"""Blender glue (thin): rig reading, the action/F-curve helper, bake, settings, operator, panel, registration."""
