"""Blender-free core: rig and rotation mathematics, video, model runtime, pipeline (numpy, onnxruntime, OpenCV).

Nothing in this package imports `bpy`; it is tested without Blender.
"""
