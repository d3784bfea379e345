"""core/pipeline.py and core/smoothing.py without Blender. The model is the real exported ONNX file (untrained until
training lands); wrappers around it only record calls or corrupt its output, they never stand in for it."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from mocap_blender.core import rotations as R  # noqa: E402
from mocap_blender.core import smoothing as S  # noqa: E402
from mocap_blender.core.errors import MocapError  # noqa: E402
from mocap_blender.core.pipeline import UNTRAINED_NOTE, _blend_weights, capture_steps  # noqa: E402
from mocap_blender.core.runtime import PER_FRAME_OUTPUTS  # noqa: E402
from mocap_blender.core.skeleton import Skeleton  # noqa: E402
from mocap_blender.core.video import VideoReader  # noqa: E402

MODEL_PATH = Path(__file__).resolve().parents[1] / "mocap_blender" / "weights" / "mocap.onnx"
needs_model = pytest.mark.skipif(not MODEL_PATH.is_file(), reason="weights/mocap.onnx not exported yet")


def run(gen):
    steps = []
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as stop:
        return stop.value, steps


def chain_skeleton(j=6):
    rest = np.tile(np.eye(4), (j, 1, 1))
    rest[:, 1, 3] = np.arange(j) * 0.2  # a chain along +Y
    tails = rest[:, :3, 3] + [0, 0.2, 0]
    return Skeleton.from_arrays([f"b{i}" for i in range(j)], [-1] + list(range(j - 1)), rest, tails)


@pytest.fixture(scope="module")
def model():
    if not MODEL_PATH.is_file():
        pytest.skip("weights/mocap.onnx not exported yet")
    from mocap_blender.core.runtime import MocapModel
    return MocapModel(MODEL_PATH, threads=1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("clip") / "ball.mp4")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30, (80, 64))
    for i in range(45):
        img = np.full((64, 80, 3), 30, np.uint8)
        cv2.circle(img, (20 + i, 32 + int(10 * math.sin(i / 5))), 8, (240, 240, 240), -1)
        w.write(img)
    w.release()
    return path


class Recorder:
    """The real model, with its calls recorded."""

    def __init__(self, model, corrupt_at=None):
        self.model, self.calls, self.firsts, self.corrupt_at = model, [], [], corrupt_at

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, frames, rig, **kw):
        self.calls.append((frames.shape, kw.get("ref_frame")))
        self.firsts.append(frames[0].copy())
        out = self.model.predict(frames, rig, **kw)
        if self.corrupt_at is not None and len(self.calls) == self.corrupt_at:
            out["rotation"][0, 1, 0, 0] = np.nan
        return out


def test_blend_weights_partition():
    w1 = _blend_weights(10, 3, first=True, last=False)
    w2 = _blend_weights(10, 3, first=False, last=True)
    assert w1[0] == 1 and w2[-1] == 1
    np.testing.assert_allclose(w1[-3:] + w2[:3], 1.0)


@needs_model
def test_capture_shapes_windows_and_progress(model, clip):
    sk = chain_skeleton()
    ref = R.rotvec_to_matrix(np.random.default_rng(0).normal(0, 0.2, (sk.n_joints, 3)))
    rec = Recorder(model)
    result, steps = run(capture_steps(rec, sk, ref, clip, ref_video_frame=20, window=16, overlap=4,
                                      smoothing=1.5))
    assert result.rotations.shape == (45, sk.n_joints, 3, 3) and result.raw_rotations.shape == result.rotations.shape
    assert result.confidence.shape == (45, sk.n_joints) and result.root_location.shape == (45, 3)
    np.testing.assert_allclose(result.rotations @ np.swapaxes(result.rotations, -1, -2),
                               np.broadcast_to(np.eye(3), result.rotations.shape), atol=1e-6)
    assert result.fps == pytest.approx(30.0) and result.frame_first == 0
    # windows of 16 overlapping by 4; the window holding frame 20 has it flagged at its index, and every other
    # window gets that frame in front of it, flagged
    assert [c[0][0] for c in rec.calls] == [17, 16, 17, 10]
    assert [c[1] for c in rec.calls] == [0, 8, 0, 0]
    frame20 = next(VideoReader(clip).windows(1, start=20, stop=21, max_side=model.input_size))[1][0]
    for k in (0, 2, 3):
        np.testing.assert_array_equal(rec.firsts[k], frame20)
    done = [s[0] for s in steps]
    assert done == sorted(done) and steps[-1][:2] == (45, 45)
    # smoothing keeps the raw result apart, and stays close to it
    assert result.raw_rotations is not result.rotations
    assert np.degrees(R.geodesic_angle(result.rotations, result.raw_rotations)).max() < 45
    assert np.allclose(result.root_location[20], 0, atol=0.05)  # anchored at the reference frame


@needs_model
def test_contact_clean_up_runs_after_smoothing_and_keeps_the_raw_capture(model, clip):
    """The shipped file: the untrained network holds the reference pose while the root drifts a little with the
    video, so the feet skate along. The clean-up finds both feet, pins them, says so and keeps the raw capture; off,
    it does not run."""
    from _core_rigs import legs_rig
    from mocap_blender.core.skeleton import forward_kinematics, pose_tails
    sk = legs_rig()
    ref = np.tile(np.eye(3), (sk.n_joints, 1, 1))
    on, steps = run(capture_steps(model, sk, ref, clip, smoothing=1.0, contacts=True, up=(0.0, 0.0, 1.0)))
    off, _ = run(capture_steps(model, sk, ref, clip, smoothing=1.0))
    assert off.contacts is None and not any("Contact clean-up" in n for n in off.notes)
    feet = [sk.index(n) for n in ("foot.L", "foot.R")]
    assert on.contacts.planted[:, [on.contacts.leaves.index(f) for f in feet]].mean() > 0.9
    assert any(n.startswith("Contact clean-up: pinned foot.L, foot.R") for n in on.notes)
    assert "Pinning planted feet" in [s[2] for s in steps]

    def tips(result):
        return pose_tails(sk, forward_kinematics(sk, result.rotations, result.root_location))[:, feet]

    drift = lambda p: np.ptp(p, axis=0).max() / sk.height
    assert drift(tips(off)) > 0.02 and drift(tips(on)) < 0.2 * drift(tips(off))
    np.testing.assert_array_equal(on.raw_rotations, off.raw_rotations)
    np.testing.assert_array_equal(on.root_location, off.root_location)
    np.testing.assert_array_equal(on.rotations[:, [0, 7, 8, 9]], off.rotations[:, [0, 7, 8, 9]])  # not the legs


@needs_model
def test_frame_range_and_root_motion_off(model, clip):
    sk = chain_skeleton()
    result, _ = run(capture_steps(model, sk, np.tile(np.eye(3), (sk.n_joints, 1, 1)), clip, frame_range=(10, 19),
                                  root_motion=False, smoothing=0))
    assert result.n_frames == 10 and result.frame_first == 10 and result.root_location is None
    np.testing.assert_array_equal(result.rotations, result.raw_rotations)


@needs_model
def test_bad_inputs(model, clip, tmp_path):
    sk = chain_skeleton()
    eye = np.tile(np.eye(3), (sk.n_joints, 1, 1))
    with pytest.raises(MocapError, match="outside the video"):
        run(capture_steps(model, sk, eye, clip, frame_range=(40, 60)))
    with pytest.raises(MocapError, match="single frame"):
        run(capture_steps(model, sk, eye, clip, frame_range=(5, 5)))
    with pytest.raises(MocapError, match="not found"):
        run(capture_steps(model, sk, eye, tmp_path / "missing.mp4"))
    big = chain_skeleton(model.max_joints + 1)
    rec = Recorder(model)
    with pytest.raises(MocapError, match="at most"):
        run(capture_steps(rec, big, np.tile(np.eye(3), (big.n_joints, 1, 1)), clip))
    assert rec.calls == []


@needs_model
def test_non_finite_model_output(model, clip):
    sk = chain_skeleton()
    rec = Recorder(model, corrupt_at=2)
    with pytest.raises(MocapError, match="non-finite"):
        run(capture_steps(rec, sk, np.tile(np.eye(3), (sk.n_joints, 1, 1)), clip, window=16, overlap=4))


@needs_model
def test_untrained_model_file_is_told_in_the_notes(model, clip, tmp_path):
    """The note follows the file's metadata `trained`; what it says (every frame holds the reference pose) is what
    the untrained network does. The same weights labelled trained=1 capture the same, without the note."""
    onnx = pytest.importorskip("onnx")
    from mocap_blender.core.runtime import MocapModel
    sk = chain_skeleton()
    ref = R.rotvec_to_matrix(np.random.default_rng(2).normal(0, 0.3, (sk.n_joints, 3)))
    kw = dict(frame_range=(0, 9), smoothing=0, root_motion=False)
    shipped, _ = run(capture_steps(model, sk, ref, clip, **kw))
    assert model.untrained == (model.meta["trained"] == "0")
    assert shipped.notes == ([UNTRAINED_NOTE] if model.untrained else [])
    if model.untrained:
        assert np.degrees(R.geodesic_angle(shipped.raw_rotations, ref[None])).max() < 0.01
    m = onnx.load(str(MODEL_PATH))
    (prop,) = [p for p in m.metadata_props if p.key == "trained"]
    prop.value = "1"
    onnx.save(m, str(tmp_path / "trained.onnx"))
    labelled, _ = run(capture_steps(MocapModel(tmp_path / "trained.onnx", threads=1), sk, ref, clip, **kw))
    assert labelled.notes == []
    np.testing.assert_allclose(labelled.raw_rotations, shipped.raw_rotations, atol=1e-9)


def test_smoothing_keeps_constant_and_reduces_noise():
    rng = np.random.default_rng(0)
    base = R.rotvec_to_matrix(np.array([0.3, -0.2, 2.5]))  # near the quaternion hemisphere edge is fine
    const = np.broadcast_to(base, (30, 2, 3, 3))
    np.testing.assert_allclose(S.smooth_rotations(const, 2.0), const, atol=1e-9)
    t = np.linspace(0, 1, 60)[:, None, None] * np.array([[0.0, 0.0, 3.0]])
    clean = R.rotvec_to_matrix(t)
    noisy = R.rotvec_to_matrix(t + rng.normal(0, 0.05, t.shape))
    smooth = S.smooth_rotations(noisy, 2.0)
    err = lambda x: np.degrees(R.geodesic_angle(x, clean)).mean()  # noqa: E731
    assert err(smooth) < 0.6 * err(noisy)
    np.testing.assert_array_equal(S.smooth_rotations(noisy, 0), noisy)
    x = rng.normal(size=(40, 3))
    assert S.smooth_positions(x, 1.0).shape == x.shape and S.smooth_positions(x, 1.0).std() < x.std()


def _wandering(n_frames, n_joints, seed=0):
    rng = np.random.default_rng(seed)
    return R.rotvec_to_matrix(np.cumsum(rng.normal(0, 0.12, (n_frames, n_joints, 3)), 0))


def test_euler_channels_match_blenders_compatible_rule_for_every_order():
    rots = _wandering(120, 12)
    orders = [R.EULER_ORDERS[i % 6] for i in range(12)]
    ref = np.random.default_rng(1).normal(0, 3, (12, 3))
    got = S.channel_values(rots, "EULER", ref, orders=orders)
    for k, order in enumerate(orders):
        e = R.matrix_to_euler(rots[:, k], order)
        e[0] = R.euler_compatible(e[0], ref[k], order)
        np.testing.assert_allclose(got[:, k], R.euler_unwrap(e, order), atol=1e-12)
        np.testing.assert_allclose(R.euler_to_matrix(got[:, k], order), rots[:, k], atol=1e-9)


def test_quaternion_and_axis_angle_channels_are_continuous():
    rots = _wandering(200, 5)
    q = S.channel_values(rots, "QUATERNION", ref_value=np.tile([-1.0, 0, 0, 0], (5, 1)))
    assert np.all(q[0, :, 0] <= 0) and np.all(np.sum(q[1:] * q[:-1], -1) >= 0)
    np.testing.assert_allclose(R.quat_to_matrix(q), rots, atol=1e-9)
    aa = S.channel_values(rots, "AXIS_ANGLE")
    np.testing.assert_allclose(R.axis_angle_to_matrix(aa), rots, atol=1e-9)
    assert np.max(np.abs(np.diff(aa[..., 0], axis=0))) < 0.5  # the angle runs continuously (no 2 pi jumps)
    assert np.min(np.sum(aa[1:, :, 1:] * aa[:-1, :, 1:], -1)) > -0.5  # the axis never flips
    still = S.channel_values(np.broadcast_to(np.eye(3), (4, 2, 3, 3)), "AXIS_ANGLE")
    np.testing.assert_allclose(still, np.tile([0.0, 0, 1, 0], (4, 2, 1)))


@needs_model
def test_overlapping_windows_are_cross_faded(model, clip):
    sk = chain_skeleton()
    outs = []

    class Keep(Recorder):
        def predict(self, frames, rig, **kw):
            out = super().predict(frames, rig, **kw)
            outs.append(out["rotation"].copy())
            return out

    result, _ = run(capture_steps(Keep(model), sk, np.tile(np.eye(3), (sk.n_joints, 1, 1)), clip, window=16,
                                  overlap=4, smoothing=0, root_motion=False))
    a, b = outs[0], outs[1]  # windows [0, 16) and [12, 28): frames 12..15 are shared
    np.testing.assert_allclose(result.raw_rotations[:12], R.sixd_to_matrix(R.matrix_to_6d(a[:12])), atol=1e-9)
    wa = np.array([4, 3, 2, 1]) / 5.0
    wb = np.array([1, 2, 3, 4]) / 5.0
    blend = wa[:, None, None] * R.matrix_to_6d(a[12:16]) + wb[:, None, None] * R.matrix_to_6d(b[:4])
    blend /= (wa + wb)[:, None, None]
    np.testing.assert_allclose(result.raw_rotations[12:16, 1:], R.sixd_to_matrix(blend)[:, 1:], atol=1e-9)


@needs_model
def test_reference_frame_in_front_of_a_window_is_dropped_from_its_output(model, clip):
    """The window [12, 28) with video frame 40 (the reference) in front: the model sees those 17 frames, frame 40
    flagged, and the capture keeps its rows 1..16; without `anchor_windows` the window runs alone, unflagged."""
    sk = chain_skeleton()
    ref = R.rotvec_to_matrix(np.random.default_rng(1).normal(0, 0.3, (sk.n_joints, 3)))

    class Marked(Recorder):  # the real output, its confidence replaced by the row number
        def predict(self, frames, rig, **kw):
            out = super().predict(frames, rig, **kw)
            assert {k for k, v in out.items() if len(v) == len(frames)} == set(PER_FRAME_OUTPUTS)
            out["confidence"][:] = np.arange(len(frames))[:, None] / 100.0
            return out

    reader = VideoReader(clip)
    for anchor, size, flag, rows in ((True, 17, 0, np.arange(1, 17)), (False, 16, None, np.arange(16))):
        rec = Marked(model)
        res, _ = run(capture_steps(rec, sk, ref, clip, ref_video_frame=40, frame_range=(12, 27), window=16,
                                   smoothing=0, root_motion=False, anchor_windows=anchor))
        assert [c[0][0] for c in rec.calls] == [size] and [c[1] for c in rec.calls] == [flag]
        np.testing.assert_allclose(res.confidence, np.broadcast_to(rows[:, None] / 100.0, res.confidence.shape))
        first = reader.frame(40 if anchor else 12, max_side=model.input_size)
        np.testing.assert_array_equal(rec.firsts[0], first)


def test_frames_reader_windows_like_a_video_file(clip):
    """models.evaluate.FramesReader (frames held in memory, for the whole-clip evaluation) cuts windows exactly as
    VideoReader does."""
    from models.evaluate import FramesReader
    video = VideoReader(clip)
    frames = next(video.windows(video.n_frames))[1]
    held = FramesReader(frames)
    for kw in (dict(), dict(start=5, stop=40)):
        a = list(video.windows(16, 4, **kw))
        b = list(held.windows(16, 4, **kw))
        assert [s for s, _ in a] == [s for s, _ in b]
        for (_, x), (_, y) in zip(a, b):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(held.frame(20), frames[20])


def test_frame_rate_note_says_how_much_slower_or_faster_the_keys_play():
    from mocap_blender.core.pipeline import WARNING_PREFIX, frame_rate_note
    assert frame_rate_note(24.0, 24.0) is None and frame_rate_note(29.97, 30.0) is None  # within 1%
    slow = frame_rate_note(30.0, 24.0)
    assert slow.startswith(WARNING_PREFIX) and "1.25 times slower" in slow and "to 30 fps" in slow
    assert "2.00 times faster" in frame_rate_note(12.0, 24.0)
    assert frame_rate_note(0.0, 24.0) is None  # no rate known: nothing to say
