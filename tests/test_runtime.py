"""The runtime: loads the shipped model once, checks its metadata, fails clearly, predicts finite outputs."""
from pathlib import Path

import numpy as np
import pytest

from mocap_blender.core import preprocess
from mocap_blender.core.errors import MocapError
from mocap_blender.core.rotations import rotvec_to_matrix
from mocap_blender.core.runtime import MocapModel
from models.export import random_skeleton

onnx = pytest.importorskip("onnx")
SHIPPED = Path(__file__).resolve().parents[1] / "mocap_blender" / "weights" / "mocap.onnx"
pytestmark = pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model")


@pytest.fixture(scope="module")
def model():
    return MocapModel(SHIPPED, threads=2)


def _with_meta(tmp_path, **changes):
    m = onnx.load(str(SHIPPED))
    props = {p.key: p.value for p in m.metadata_props}
    props.update({k: v for k, v in changes.items() if v is not None})
    for k, v in changes.items():
        if v is None:
            props.pop(k)
    del m.metadata_props[:]
    for k, v in props.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    out = tmp_path / "m.onnx"
    onnx.save(m, str(out))
    return out


def test_predict_shapes_and_finite(model):
    rng = np.random.default_rng(0)
    skel = random_skeleton(23, rng)
    ref = rotvec_to_matrix(rng.normal(0, 0.3, (23, 3)))
    rig = preprocess.make_rig_inputs(skel, ref)
    frames = rng.integers(0, 255, (5, 90, 120, 3), dtype=np.uint8)
    out = model.predict(frames, rig, ref_frame=2)
    assert out["positions"].shape == (5, 23, 3) and out["tails"].shape == (5, 23, 3)
    assert out["rotation"].shape == (5, 23, 3, 3) and out["root_orientation"].shape == (5, 3, 3)
    assert out["confidence"].shape == (5, 23) and out["joints2d"].shape == (5, 23, 2)
    for v in out.values():
        assert np.all(np.isfinite(v))
    r = out["rotation"]
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    assert model.input_size > 0 and model.window_length > 0 and len(model.mean) == 3


def test_gpu_first_when_onnxruntime_offers_it_and_the_cpu_when_it_cannot_start(model, monkeypatch):
    """The Linux and Windows zips bundle onnxruntime-gpu: its CUDA provider is asked for first, and a GPU that
    cannot start (no driver, CUDA or cuDNN) falls back to the CPU with the same results."""
    import onnxruntime as ort
    real = ort.InferenceSession
    asked = []

    def session(path, options, providers):
        asked.append(list(providers))
        if "CUDAExecutionProvider" in providers:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real(path, options, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    fallback = MocapModel(SHIPPED, threads=2)
    assert asked == [["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]]
    assert fallback.device == "CPU" and model.device == "CPU"  # this machine has no GPU
    rng = np.random.default_rng(1)
    skel = random_skeleton(9, rng)
    rig = preprocess.make_rig_inputs(skel, rotvec_to_matrix(rng.normal(0, 0.3, (9, 3))))
    frames = rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    a, b = fallback.predict(frames, rig), model.predict(frames, rig)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    asked.clear()
    MocapModel(SHIPPED, threads=2)
    assert asked == [["CPUExecutionProvider"]]  # the CPU build: never asked for a provider it does not have


def test_missing_file(tmp_path):
    with pytest.raises(MocapError, match="not found"):
        MocapModel(tmp_path / "nope.onnx")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model" * 100)
    with pytest.raises(MocapError, match="corrupt"):
        MocapModel(bad)


def test_wrong_version(tmp_path):
    with pytest.raises(MocapError, match="format version 99"):
        MocapModel(_with_meta(tmp_path, format_version="99"))


def test_missing_metadata(tmp_path):
    with pytest.raises(MocapError, match="lacks metadata"):
        MocapModel(_with_meta(tmp_path, window_length=None))


def test_wrong_rotation_format(tmp_path):
    with pytest.raises(MocapError, match="rotation format"):
        MocapModel(_with_meta(tmp_path, rotation_format="quaternion"))


def test_untrained_is_read_from_the_metadata(tmp_path):
    assert MocapModel(_with_meta(tmp_path, trained="0")).untrained
    assert not MocapModel(_with_meta(tmp_path, trained="1")).untrained
    assert not MocapModel(_with_meta(tmp_path, trained=None)).untrained  # no key: no claim either way


def test_bad_frames(model):
    rng = np.random.default_rng(1)
    skel = random_skeleton(4, rng)
    rig = preprocess.make_rig_inputs(skel, np.tile(np.eye(3), (4, 1, 1)))
    with pytest.raises(MocapError):
        model.predict(np.zeros((3, 10, 10), np.uint8), rig)
    with pytest.raises(MocapError):
        model.predict(np.zeros((3, 10, 10, 3), np.float32), rig)


def test_non_finite_output_raises(model, monkeypatch):
    rng = np.random.default_rng(2)
    skel = random_skeleton(6, rng)
    rig = preprocess.make_rig_inputs(skel, np.tile(np.eye(3), (6, 1, 1)))
    real_run = model.session.run

    def nan_run(names, feed):
        out = real_run(names, feed)
        out[0] = out[0] * np.nan
        return out

    monkeypatch.setattr(model.session, "run", nan_run)
    with pytest.raises(MocapError, match="non-finite"):
        model.predict(np.zeros((2, 32, 32, 3), np.uint8), rig)


def test_letterbox_round_trip():
    # a 90x160 frame letterboxed into 64: pixel centre maps back to itself
    scale, ox, oy = preprocess.letterbox_params(90, 160, 64)
    assert abs(scale - 0.4) < 1e-12 and ox == 0 and abs(oy - 14.0) < 1e-12
    px = np.array([[10.0, 20.0], [159.0, 89.0]])
    uv = np.stack([(px[:, 0] * scale + ox) / 64, (px[:, 1] * scale + oy) / 64], -1)
    np.testing.assert_allclose(preprocess.uv_to_pixels(uv, 90, 160, 64), px)
    x = preprocess.preprocess_frames(np.full((1, 90, 160, 3), 255, np.uint8), 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (1, 3, 64, 64) and x[0, 0, 0, 0] == 0.0 and x[0, 0, 32, 32] == 1.0


def test_subject_box_and_crop_geometry():
    # the box holds every point with the margin, and is square, at least min_side, at most the whole input
    uv = np.array([[[0.30, 0.40], [0.50, 0.45]], [[0.35, 0.60], [0.42, 0.41]]])  # (T, J, 2)
    cx, cy, side = preprocess.subject_box(uv, 0.2, 0.1)
    assert np.allclose([cx, cy, side], [0.40, 0.50, 0.2 * 1.4])
    assert preprocess.subject_box(uv, 0.2, 0.5)[2] == 0.5 and preprocess.subject_box(uv * 5 - 2, 0.2, 0.1)[2] == 1.0
    assert np.allclose(preprocess.subject_box(np.full((3, 2), np.nan), 0.2, 0.3), [0.5, 0.5, 1.0])
    box = np.array([0.42, 0.55, 0.35])
    np.testing.assert_allclose(preprocess.uv_from_crop(preprocess.uv_to_crop(uv, box), box), uv, atol=1e-12)


@pytest.mark.parametrize("side", [0.2, 0.9])  # the crop magnifies the original frame / shrinks it
def test_crop_is_read_from_the_original_frame(side):
    # a bright pixel of a 360x640 frame lands in the crop where uv_to_crop puts its centre (bilinear resampling,
    # area-averaged first when the crop shrinks the original: its centroid)
    s, h, w, box = 160, 360, 640, np.array([0.47, 0.55, side])
    frames = np.zeros((1, h, w, 3), np.uint8)
    frames[0, 200, 300] = 255
    y = preprocess.model_inputs(frames, s, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), box)[0, 0]
    scale, ox, oy = preprocess.letterbox_params(h, w, s)
    uv = np.array([(300.5 * scale + ox) / s, (200.5 * scale + oy) / s])
    rows, cols = np.mgrid[:s, :s]
    seen = np.array([(cols * y).sum() / y.sum() + 0.5, (rows * y).sum() / y.sum() + 0.5]) / s
    np.testing.assert_allclose(seen, preprocess.uv_to_crop(uv, box), atol=1e-3 if side < 0.5 else 4e-3)
    # the whole input is the letterboxed frame itself
    norm = ((0.5,) * 3, (0.5,) * 3)
    whole = preprocess.preprocess_frames(frames, s, *norm)
    assert preprocess.model_inputs(frames, s, *norm, preprocess.WHOLE_FRAME).tobytes() == whole.tobytes()


def test_crop_keeps_detail_the_letterbox_loses():
    # stripes one original pixel wide average out in the letterbox of a 720x1280 frame, but the crop reads them
    frames = np.zeros((1, 720, 1280, 3), np.uint8)
    frames[0, :, ::2] = 255
    norm = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    whole = preprocess.model_inputs(frames, 160, *norm)[0, 0, 40:120, 20:140]
    crop = preprocess.model_inputs(frames, 160, *norm, box=(0.5, 0.5, 0.04))[0, 0]  # 0.8 original px per crop px
    assert whole.std() < 0.02 and crop.std() > 0.2


def test_subject_crop_runs_the_network_again_on_the_crop(tmp_path, monkeypatch):
    """With `subject_crop` the second pass sees the crop around the joints the first found, and its image outputs
    come back in whole-frame coordinates (joints2d in video pixels, depth ratio undoing the magnification)."""
    model = MocapModel(_with_meta(tmp_path, subject_crop="1"))
    assert model.subject_crop
    rng = np.random.default_rng(3)
    skel = random_skeleton(7, rng)
    rig = preprocess.make_rig_inputs(skel, np.tile(np.eye(3), (7, 1, 1)))
    real_run, calls = model.session.run, []

    def spy(names, feed):
        out = real_run(names, feed)
        if not calls:  # the first pass finds the subject in the upper left
            out[names.index("uv")] = rng.uniform(0.1, 0.3, out[names.index("uv")].shape).astype(np.float32)
        calls.append((feed["frames"].copy(), [o.copy() for o in out]))
        return out

    monkeypatch.setattr(model.session, "run", spy)
    frames = rng.integers(0, 256, (6, 90, 160, 3), dtype=np.uint8)
    out = model.predict(frames, rig)
    assert len(calls) == 2
    (x1, o1), (x2, o2) = calls
    x = preprocess.preprocess_frames(frames, model.input_size, model.mean, model.std)
    assert np.array_equal(x1, x[::model.find_stride])  # the first pass sees a subset of the whole frames
    box = preprocess.subject_box(o1[model.output_names.index("uv")], model.find_margin, model.crop_min_side)
    np.testing.assert_allclose(out["box"], box)
    assert box[2] < 1.0 and np.allclose(x2, preprocess.model_inputs(frames, model.input_size, model.mean, model.std,
                                                                    box))  # read from the original frames
    uv2 = preprocess.uv_from_crop(o2[model.output_names.index("uv")], box)
    np.testing.assert_allclose(out["joints2d"], preprocess.uv_to_pixels(uv2, 90, 160, model.input_size), atol=1e-6)
    np.testing.assert_allclose(out["root_depth_ratio"],
                               np.exp(o2[model.output_names.index("log_root_depth")]) / box[2], rtol=1e-6)


def test_subject_crop_off_and_invalid_metadata(tmp_path, monkeypatch):
    one = MocapModel(_with_meta(tmp_path, subject_crop="0"))
    calls = []
    real_run = one.session.run
    monkeypatch.setattr(one.session, "run", lambda names, feed: calls.append(1) or real_run(names, feed))
    assert not one.subject_crop
    rng = np.random.default_rng(5)
    skel = random_skeleton(5, rng)
    rig = preprocess.make_rig_inputs(skel, np.tile(np.eye(3), (5, 1, 1)))
    assert np.allclose(one.predict(rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8), rig)["box"], [0.5, 0.5, 1])
    assert len(calls) == 1  # one pass
    with pytest.raises(MocapError, match="subject crop"):
        MocapModel(_with_meta(tmp_path, subject_crop="1", crop_min_side="0"))


def test_rig_inputs_shapes_and_reference_features():
    rng = np.random.default_rng(3)
    skel = random_skeleton(11, rng)
    ref = rotvec_to_matrix(rng.normal(0, 0.5, (11, 3)))
    rig = preprocess.make_rig_inputs(skel, ref)
    assert rig["joint_feats"].shape == (11, preprocess.N_JOINT_FEATURES) and rig["joint_feats"].dtype == np.float32
    assert rig["hops"].dtype == np.int64 and rig["local_mask"].dtype == np.float32
    assert np.all(np.diag(rig["local_mask"]) == 0.0)
    # the root's reference features do not depend on where the rig faces (canonical frame)
    turned = ref.copy()
    turned[0] = rotvec_to_matrix(np.array([0.0, 0.0, 1.0])) @ ref[0]
    a = preprocess.make_rig_inputs(skel, turned)["joint_feats"]
    start = 0
    for name, n in preprocess.JOINT_FEATURES:
        if name in ("ref_head", "ref_tail", "ref_global6d", "rest_head", "rest_global6d"):
            np.testing.assert_allclose(a[:, start:start + n], rig["joint_feats"][:, start:start + n], atol=1e-5)
        start += n
    with pytest.raises(MocapError):
        preprocess.make_rig_inputs(skel, ref[:5])


def test_the_add_on_uses_one_thread_per_physical_core_by_default(monkeypatch):
    from mocap_blender.api import ModelOwner
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert ModelOwner().threads == 8 and ModelOwner(threads=3).threads == 3
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert ModelOwner().threads == 2
    monkeypatch.setattr("os.cpu_count", lambda: None)  # unknown
    owner = ModelOwner()
    assert owner.threads == 2 and owner.get().session.get_session_options().intra_op_num_threads == 2
