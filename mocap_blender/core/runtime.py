"""The shipped model behind one small API: `MocapModel(path).predict(frames, rig_inputs)` (onnxruntime, numpy).

    model = MocapModel("mocap_blender/weights/mocap.onnx", threads=2)   # checks the file's metadata
    rig = preprocess.make_rig_inputs(skeleton, ref_rot)                   # once per rig and reference pose
    out = model.predict(frames_uint8, rig, ref_frame=None, cam_to_arm=None)

Every image constant (input size, normalisation) is read from the ONNX metadata_props, never copied here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import preprocess
from .errors import MocapError
from .rotations import sixd_to_matrix

FORMAT_VERSION = 3  # the model format this runtime understands (models/model.py FORMAT_VERSION)
ROTATION_FORMAT = "6d-columns"
REQUIRED_META = ("format_version", "input_size", "rotation_format", "mean", "std", "window_length", "max_joints",
                 "n_joint_features", "subject_crop", "find_margin", "crop_min_side")
# Execution providers in order of preference, those the installed onnxruntime offers: the Linux and Windows builds of
# the extension bundle onnxruntime-gpu, which runs on an NVIDIA GPU when CUDA 12 and cuDNN 9 are installed.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
NETWORK_RIG_INPUTS = ("joint_feats", "ref_rot6d", "parents", "hops", "edge_type", "local_mask")
# `MocapModel.predict` outputs with one row per frame (the others describe the whole window)
PER_FRAME_OUTPUTS = ("positions", "tails", "rotation", "root_orientation", "confidence", "joints2d",
                     "root_depth_ratio")


class MocapModel:
    """One onnxruntime session, created once; metadata validated on load."""

    find_stride = 4  # the first pass (finding the subject for the crop) sees every 4th frame of the window

    def __init__(self, path, threads: int = 2):
        path = Path(path)
        if not path.is_file():
            raise MocapError(f"Model file not found: {path}. Reinstall the extension or point it at mocap.onnx.")
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - depends on the install
            raise MocapError("onnxruntime is not installed; install the extension's wheels (onnxruntime).") from e
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        available = set(ort.get_available_providers())
        wanted = [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]
        try:
            try:
                self.session = ort.InferenceSession(os.fspath(path), so, providers=wanted)
            except Exception:
                if wanted == ["CPUExecutionProvider"]:
                    raise
                # a GPU that cannot start (driver, CUDA or cuDNN missing): the CPU, which always works
                self.session = ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for corrupt files
            raise MocapError(f"The model file {path.name} could not be loaded ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}). It is corrupt or not an ONNX model; "
                             "reinstall the extension.") from e
        self.path = path
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self._check_meta()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = {"frames", "ref_flag", *NETWORK_RIG_INPUTS} - set(self.input_names)
        if missing:
            raise MocapError(f"The model file {path.name} lacks inputs {sorted(missing)}; it does not match this "
                             "version of the extension. Reinstall the extension.")

    @property
    def device(self) -> str:
        """Where the network runs: "GPU (CUDA)" or "CPU" (onnxruntime falls back to the CPU on its own when the
        GPU provider cannot start)."""
        return "GPU (CUDA)" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "CPU"

    @property
    def untrained(self) -> bool:
        """True when the file's metadata says `trained` = "0" (`models/export.py --untrained`): the network's weights
        are its initial ones, and every frame comes out as the reference pose. The export command always writes the
        key ("1" from a checkpoint); a file without it claims neither, so it does not count as untrained."""
        return self.meta.get("trained", "").strip() == "0"

    def _check_meta(self) -> None:
        m, name = self.meta, self.path.name
        lost = [k for k in REQUIRED_META if k not in m]
        if lost:
            raise MocapError(f"The model file {name} lacks metadata {lost}; it was not exported by this project's "
                             "models/export.py. Reinstall the extension.")
        try:
            version = int(m["format_version"])
            self.input_size = int(m["input_size"])
            self.mean = tuple(float(v) for v in m["mean"].split(","))
            self.std = tuple(float(v) for v in m["std"].split(","))
            self.window_length = int(m["window_length"])
            self.max_joints = int(m["max_joints"])
            self.n_joint_features = int(m["n_joint_features"])
            self.config = json.loads(m.get("config", "{}"))
            self.subject_crop = bool(int(m["subject_crop"]))
            self.find_margin, self.crop_min_side = float(m["find_margin"]), float(m["crop_min_side"])
        except (ValueError, TypeError) as e:
            raise MocapError(f"The model file {name} has unreadable metadata ({e}). Reinstall the extension.") from e
        if version != FORMAT_VERSION:
            raise MocapError(f"The model file {name} has format version {version}, but this extension reads version "
                             f"{FORMAT_VERSION}. Install the model that ships with this version of the extension.")
        if m["rotation_format"] != ROTATION_FORMAT:
            raise MocapError(f"The model file {name} uses rotation format {m['rotation_format']!r}; expected "
                             f"{ROTATION_FORMAT!r}. Install the model that ships with this extension.")
        if self.subject_crop and not (self.find_margin >= 0 and 0 < self.crop_min_side <= 1):
            raise MocapError(f"The model file {name} has an invalid subject crop (margin {self.find_margin}, smallest "
                             f"side {self.crop_min_side}). Reinstall the extension.")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0 or self.input_size < 32:
            raise MocapError(f"The model file {name} has invalid image metadata (size {self.input_size}, mean "
                             f"{self.mean}, std {self.std}). Reinstall the extension.")
        if self.n_joint_features != preprocess.N_JOINT_FEATURES:
            raise MocapError(f"The model file {name} expects {self.n_joint_features} features per joint but this "
                             f"extension makes {preprocess.N_JOINT_FEATURES}. Install the matching model.")

    # ------------------------------------------------------------------------------------------------
    def predict(self, frames, rig_inputs: dict, *, ref_frame: int | None = None, cam_to_arm=None) -> dict:
        """Run one window of frames.

        frames: (T, H, W, 3) uint8 RGB, any size (letterboxed to the model input).
        rig_inputs: `preprocess.make_rig_inputs(skeleton, ref_rot, ...)`.
        ref_frame: index in this window of the frame the reference pose shows, or None.
        cam_to_arm: (3, 3) or (T, 3, 3) rotation camera frame -> armature space (inv(armature world rotation) @
        camera world rotation); default: the front view. Used only for the root's local rotation.
        Returns float64 arrays:
          positions (T, J, 3) bone heads, camera frame (x right, y up, z towards the viewer), root-relative,
            divided by the rig height; tails (T, J, 3) the same for bone tails;
          rotation (T, J, 3, 3) local rotations (matrix_basis), the root's from root_orientation and cam_to_arm;
          root_orientation (T, 3, 3) the root bone's rotation in the camera frame;
          confidence (T, J) in [0, 1]; joints2d (T, J, 2) bone heads in the input frames' pixels (x, y);
          root_depth_ratio (T,) root depth / (rig height * focal_px * scale / input_size) (see `root_translation`);
          box (3,) the square (cx, cy, side, input units) the second pass saw (the whole input without a crop).
        With `subject_crop` in the file's metadata the network runs twice: on every `find_stride`-th whole
        (letterboxed) frame, to find the subject, then on every frame through the square around the joints it
        found over the window (its outputs mapped back to the whole frame).
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[0] < 1:
            raise MocapError(f"Expected a window of frames shaped (T, H, W, 3), got {frames.shape}.")
        t, h, w = frames.shape[:3]
        j = rig_inputs["joint_feats"].shape[0]
        if j > self.max_joints:
            raise MocapError(f"The rig has {j} bones; the model handles at most {self.max_joints}. "
                             "Exclude helper bones (or capture a sub-rig) and try again.")
        if rig_inputs["joint_feats"].shape[1] != self.n_joint_features:
            raise MocapError("The rig inputs do not match the model; rebuild them with preprocess.make_rig_inputs.")
        feed = {k: np.ascontiguousarray(rig_inputs[k]) for k in NETWORK_RIG_INPUTS}
        feed["ref_flag"] = preprocess.make_ref_flag(t, ref_frame)
        box = np.array(preprocess.WHOLE_FRAME)
        if self.subject_crop:  # found on the whole frame; again on a square around it (same crop for the window)
            stride = max(1, min(self.find_stride, t - 1))  # at least 2 frames
            ref_sub = ref_frame // stride if ref_frame is not None and ref_frame % stride == 0 else None
            whole = preprocess.preprocess_frames(frames[::stride], self.input_size, self.mean, self.std)
            found = self._run({**feed, "ref_flag": preprocess.make_ref_flag(len(whole), ref_sub)}, whole)
            box = preprocess.subject_box(found["uv"], self.find_margin, self.crop_min_side)
        x = preprocess.model_inputs(frames, self.input_size, self.mean, self.std, box)  # read from the originals
        res = self._run(feed, x)
        res["uv"] = preprocess.uv_from_crop(res["uv"], box)
        res["log_root_depth"] = res["log_root_depth"] - np.log(box[2])  # the crop magnifies by 1 / side
        root_orient = sixd_to_matrix(res["root_rot6d"].astype(np.float64))  # (T, 3, 3)
        rot = sixd_to_matrix(res["rot6d"].astype(np.float64))  # (T, J, 3, 3)
        cam = preprocess.FRONT_CAMERA_ROTATION if cam_to_arm is None else np.asarray(cam_to_arm, np.float64)
        rot[:, 0] = preprocess.root_basis_from_orientation(root_orient, cam, rig_inputs["root_rest"])
        return {
            "positions": res["head_cam"].astype(np.float64),
            "tails": res["tail_cam"].astype(np.float64),
            "rotation": rot,
            "root_orientation": root_orient,
            "confidence": res["confidence"].astype(np.float64),
            "joints2d": preprocess.uv_to_pixels(res["uv"], h, w, self.input_size),
            "root_depth_ratio": np.exp(res["log_root_depth"].astype(np.float64)),
            "box": box,
        }

    def _run(self, feed: dict, x: np.ndarray) -> dict:
        """One pass of the network on preprocessed frames x (T, 3, S, S)."""
        try:
            res = dict(zip(self.output_names, self.session.run(self.output_names, {**feed, "frames": x})))
        except Exception as e:
            raise MocapError(f"The model failed on this input ({type(e).__name__}: {str(e)[:200]}).") from e
        for k, v in res.items():
            if not np.all(np.isfinite(v)):
                raise MocapError(f"The model produced non-finite values ({k}). Check the video frames and the rig "
                                 "(zero-length or scaled bones), or report the clip.")
        return res

    def root_translation(self, out: dict, K, frame_hw, rig_height: float) -> np.ndarray:
        """Root head position in the (Blender) camera frame (T, 3), from its image position and predicted depth.

        K: (3, 3) pixel intrinsics of the video; frame_hw: (H, W) of the video frames; rig_height: Skeleton.height
        (armature units, so the result is in armature units, camera frame: x right, y up, looking along -z).
        """
        K = np.asarray(K, dtype=np.float64)
        scale, _, _ = preprocess.letterbox_params(frame_hw[0], frame_hw[1], self.input_size)
        z = out["root_depth_ratio"] * rig_height * K[0, 0] * scale / self.input_size  # (T,)
        xy = out["joints2d"][:, 0]  # (T, 2) pixels
        ray = np.stack([(xy[:, 0] - K[0, 2]) / K[0, 0], (xy[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(z))], -1)
        p = ray * z[:, None]  # OpenCV camera (x right, y down, z forward)
        return p * np.array([1.0, -1.0, -1.0])
