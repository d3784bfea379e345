"""Export the network to ONNX (dynamo exporter, opset 18, dynamic frame and joint counts) with metadata.

    python -m models.export --checkpoint runs/<run>/last.pt --out mocap_blender/weights/mocap.onnx
    python -m models.export --untrained --out mocap_blender/weights/mocap.onnx

Inputs (one clip window, no batch dimension):
  frames (T, 3, S, S) float32 normalised (core.preprocess.preprocess_frames), joint_feats (J, F) float32,
  ref_rot6d (J, 6) float32, parents (J,) int64 (root: 0), hops (J, J) int64, edge_type (J, J) int64, local_mask (J, J) float32 additive,
  ref_flag (T,) float32.
Outputs: head_cam (T, J, 3), tail_cam (T, J, 3), rot6d (T, J, 6), root_rot6d (T, 6), confidence (T, J),
  uv (T, J, 2), log_root_depth (T,).
metadata_props: see `metadata()`; core/runtime.py checks them.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model import FORMAT_VERSION, MocapNet, ModelConfig
from .geometry import matrix_to_sixd

def _onnxscript_compat() -> None:
    """torch 2.13 asks for `onnxscript._framework_apis.torch_2_11`, which onnxscript 0.5.4 lacks; its API surface
    (check_model, convert_version, get_torchlib_ops, optimize, save_model_with_external_data) is torch_2_9's."""
    import importlib
    import sys
    name = "onnxscript._framework_apis.torch_2_11"
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        sys.modules[name] = importlib.import_module("onnxscript._framework_apis.torch_2_9")


INPUT_NAMES = ["frames", "joint_feats", "ref_rot6d", "parents", "hops", "edge_type", "local_mask", "ref_flag"]
OUTPUT_NAMES = ["head_cam", "tail_cam", "rot6d", "root_rot6d", "confidence", "uv", "log_root_depth"]


class ExportWrapper(nn.Module):
    """One unbatched clip window in, the runtime's tensors out."""

    def __init__(self, net: MocapNet):
        super().__init__()
        self.net = net

    def forward(self, frames, joint_feats, ref_rot6d, parents, hops, edge_type, local_mask, ref_flag):
        o = self.net.forward_frames(frames[None], joint_feats[None], ref_rot6d[None], parents[None], hops[None],
                                    edge_type[None], local_mask[None], ref_flag[None])
        return (o["head_cam"][0], o["tail_cam"][0], o["rot6d"][0], matrix_to_sixd(o["root_rot"][0]),
                o["confidence"][0], o["uv"][0], o["log_root_depth"][0])


def metadata(cfg: ModelConfig, extra: dict | None = None) -> dict[str, str]:
    m = {
        "format_version": str(FORMAT_VERSION),
        "producer": "mocap_blender models/export.py",
        "input_size": str(cfg.img_size),
        "rotation_format": "6d-columns",
        "rotation_meaning": "local rotation relative to rest (Blender matrix_basis); root from root_rot6d",
        "position_units": "camera frame, root-relative, divided by rig height",
        "mean": ",".join(f"{v:.6f}" for v in cfg.mean),
        "std": ",".join(f"{v:.6f}" for v in cfg.std),
        "window_length": str(cfg.window),
        "max_joints": str(cfg.max_joints),
        "max_hops": str(cfg.max_hops),
        "n_joint_features": str(cfg.n_joint_features),
        "inputs": ",".join(INPUT_NAMES),
        "outputs": ",".join(OUTPUT_NAMES),
        "subject_crop": str(int(cfg.subject_crop)),
        "crop_margin": str(cfg.crop_margin),
        "crop_min_side": str(cfg.crop_min_side),
        "find_margin": str(cfg.find_margin),
        "config": json.dumps(cfg.to_dict()),
    }
    m.update({k: str(v) for k, v in (extra or {}).items()})
    return m


def dummy_inputs(cfg: ModelConfig, t: int = 8, j: int = 12, seed: int = 0, chain: bool = False):
    """Random but valid inputs (a random tree rig, or with `chain` one chain J-1 levels deep) for tracing and
    tests."""
    from mocap_blender.core.preprocess import make_rig_inputs
    from mocap_blender.core.rotations import rotvec_to_matrix
    rng = np.random.default_rng(seed)
    skel = random_skeleton(j, rng, chain=chain)
    rig = make_rig_inputs(skel, rotvec_to_matrix(rng.normal(0, 0.3, (j, 3))), max_hops=cfg.max_hops)
    frames = rng.normal(0, 1, (t, 3, cfg.img_size, cfg.img_size)).astype(np.float32)
    flag = np.zeros(t, np.float32)
    flag[0] = 1.0
    return (frames, rig["joint_feats"], rig["ref_rot6d"], rig["parents"], rig["hops"], rig["edge_type"],
            rig["local_mask"], flag)


def random_skeleton(j: int, rng, child_offset: float = 0.0, chain: bool = False):
    """A random tree rig (parent-first) for tests and tracing; with `chain`, one chain (a snake). child_offset > 0:
    children's heads sit around (normal, this std), not exactly at, their parent's tail, as hips carry legs."""
    from mocap_blender.core.rotations import rotvec_to_matrix
    from mocap_blender.core.skeleton import Skeleton
    parents = np.arange(-1, j - 1) if chain else np.array([-1] + [int(rng.integers(0, i)) for i in range(1, j)])
    rest = np.tile(np.eye(4), (j, 1, 1))
    tails = np.zeros((j, 3))
    for i in range(j):
        r = rotvec_to_matrix(rng.normal(0, 1.0, 3))
        head = np.zeros(3) if i == 0 else tails[parents[i]]
        if i and child_offset:
            head = head + rng.normal(0, child_offset, 3)
        rest[i, :3, :3], rest[i, :3, 3] = r, head
        tails[i] = head + r[:, 1] * rng.uniform(0.05, 0.3)
    return Skeleton.from_arrays([f"b{i}" for i in range(j)], parents, rest, tails)


def export(net: MocapNet, out: str | os.PathLike, extra_meta: dict | None = None, verify: bool = True) -> Path:
    import onnx
    _onnxscript_compat()
    net.eval()
    wrapper = ExportWrapper(net).eval()
    args = tuple(torch.from_numpy(a) for a in dummy_inputs(net.cfg, t=8, j=12))
    T, J = torch.export.Dim("T", min=2, max=4096), torch.export.Dim("J", min=2, max=net.cfg.max_joints)
    shapes = {"frames": {0: T}, "joint_feats": {0: J}, "ref_rot6d": {0: J}, "parents": {0: J}, "hops": {0: J, 1: J},
              "edge_type": {0: J, 1: J}, "local_mask": {0: J, 1: J}, "ref_flag": {0: T}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        prog = torch.onnx.export(wrapper, args, dynamo=True, opset_version=18, input_names=INPUT_NAMES,
                                 output_names=OUTPUT_NAMES, dynamic_shapes=shapes, optimize=True,
                                 verbose=False)
    prog.save(str(out) + ".tmp")
    model = onnx.load(str(out) + ".tmp", load_external_data=True)
    del model.metadata_props[:]
    for k, v in metadata(net.cfg, extra_meta).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(model, str(out), save_as_external_data=False)
    for f in (str(out) + ".tmp", str(out) + ".tmp.data"):
        if os.path.exists(f):
            os.remove(f)
    if verify:
        d = max_difference(net, out, t=11, j=17)
        print(f"ONNX vs PyTorch max abs difference (T=11, J=17): {d:.2e}")
    return out


def max_difference(net: MocapNet, path, t: int, j: int, seed: int = 1, chain: bool = False) -> float:
    """Largest |ONNX - PyTorch| over every output on random inputs of the given T and J (`dummy_inputs`)."""
    import onnxruntime as ort
    inputs = dummy_inputs(net.cfg, t=t, j=j, seed=seed, chain=chain)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(OUTPUT_NAMES, dict(zip(INPUT_NAMES, inputs)))
    with torch.no_grad():
        ref = ExportWrapper(net.eval())(*(torch.from_numpy(a) for a in inputs))
    return max(float(np.max(np.abs(g - r.numpy()))) for g, r in zip(got, ref))


def load_checkpoint(path) -> MocapNet:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    net = MocapNet(ModelConfig.from_dict(ck["config"]), pretrained=False)
    net.load_state_dict(ck["model"])
    return net.eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="training checkpoint (.pt) carrying its config")
    ap.add_argument("--untrained", action="store_true", help="export the untrained architecture")
    ap.add_argument("--out", default="mocap_blender/weights/mocap.onnx")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    if a.checkpoint:
        net, extra = load_checkpoint(a.checkpoint), {"checkpoint": Path(a.checkpoint).name, "trained": "1"}
    elif a.untrained:
        net, extra = MocapNet(ModelConfig()).eval(), {"trained": "0"}
    else:
        ap.error("give --checkpoint or --untrained")
    t0 = time.time()
    out = export(net, a.out, extra)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
