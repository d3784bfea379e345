"""core/video.py: validation of every kind of bad file, and windows in bounded memory (no Blender needed)."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from mocap_blender.core.errors import MocapError  # noqa: E402
from mocap_blender.core.video import VideoReader  # noqa: E402
from _video_files import tag_rotation  # noqa: E402


def _write(path, n, size=(64, 48), fps=25, fourcc="mp4v"):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert w.isOpened()
    for i in range(n):
        f = np.zeros((size[1], size[0], 3), np.uint8)
        f[:, :, 2] = 200  # red in BGR
        cv2.putText(f, str(i), (2, size[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        f[:4, :4] = (i * 9) % 256
        w.write(f)
    w.release()
    return str(path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("v") / "clip.mp4", 40)


def test_reads_count_fps_size_and_rgb(clip):
    r = VideoReader(clip)
    assert (r.n_frames, r.size) == (40, (64, 48))
    assert r.fps == pytest.approx(25.0)
    (start, frames), = list(r.windows(100, 0))
    assert start == 0 and frames.shape == (40, 48, 64, 3) and frames.dtype == np.uint8
    centre = frames[0, 20:30, 20:30].reshape(-1, 3).mean(0)
    assert centre[0] > 150 and centre[2] < 60  # RGB order: red first


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_tag_gives_upright_frames(clip, tmp_path, degrees):
    """A phone's portrait clip is stored sideways with a rotation tag: frames come out turned as players show them
    (clockwise by the tag), with the upright size, so the capture sees the subject standing."""
    stored = VideoReader(clip)
    assert stored.rotation == 0
    tagged = VideoReader(tag_rotation(clip, tmp_path / f"tagged{degrees}.mp4", degrees))
    assert tagged.rotation == degrees and tagged.n_frames == stored.n_frames
    assert tagged.size == (stored.size if degrees == 180 else stored.size[::-1])
    (_, plain), = list(stored.windows(100))
    (_, upright), = list(tagged.windows(100))
    np.testing.assert_array_equal(upright, np.rot90(plain, k=-degrees // 90, axes=(1, 2)))
    np.testing.assert_array_equal(tagged.frame(7, max_side=32), cv2.resize(
        np.ascontiguousarray(upright[7]), tagged.frame(7, max_side=32).shape[1::-1], interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("length,overlap", [(8, 0), (8, 3), (16, 15), (7, 2)])
def test_windows_cover_in_order_with_overlap(clip, length, overlap):
    r = VideoReader(clip)
    whole = next(r.windows(40, 0))[1]
    seen = np.zeros(40, int)
    prev_end = None
    for start, frames in r.windows(length, overlap):
        assert len(frames) <= length
        np.testing.assert_array_equal(frames, whole[start:start + len(frames)])
        if prev_end is not None:
            assert start == prev_end - overlap
        prev_end = start + len(frames)
        seen[start:start + len(frames)] += 1
    assert prev_end == 40 and seen.min() >= 1


def test_windows_range_and_downscale(clip):
    r = VideoReader(clip)
    wins = list(r.windows(5, 1, start=10, stop=20, max_side=32))
    assert wins[0][0] == 10 and wins[-1][0] + len(wins[-1][1]) == 20
    assert wins[0][1].shape[1:] == (24, 32, 3)
    with pytest.raises(MocapError, match="outside the video"):
        list(r.windows(5, 1, start=45))


def test_long_clip_memory_is_one_window(tmp_path):
    path = _write(tmp_path / "long.avi", 300, size=(160, 120), fourcc="MJPG")
    r = VideoReader(path)
    biggest = 0
    for _, frames in r.windows(16, 4):
        biggest = max(biggest, frames.nbytes)
    assert biggest <= 16 * 160 * 120 * 3


def _err(path) -> str:
    with pytest.raises(MocapError) as info:
        VideoReader(path)
    return str(info.value)


def test_missing_file(tmp_path):
    msg = _err(tmp_path / "nope.mp4")
    assert "not found" in msg and "nope.mp4" in msg


def test_folder_and_empty_and_garbage(tmp_path):
    assert "folder" in _err(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in _err(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("not a video " * 50)
    msg = _err(tmp_path / "text.mp4")
    assert "could not be opened" in msg and "text.mp4" in msg


def test_zero_frames(tmp_path):
    path = _write(tmp_path / "zero.mp4", 0)
    msg = _err(path)
    assert "zero frames" in msg and "zero.mp4" in msg


def test_truncated_mp4_and_avi(tmp_path, clip):
    data = open(clip, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert "truncated" in _err(tmp_path / "cut.mp4")
    avi = _write(tmp_path / "full.avi", 30, fourcc="MJPG")
    data = open(avi, "rb").read()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    msg = _err(tmp_path / "cut.avi")
    assert "truncated" in msg and "cut.avi" in msg


def test_still_images(tmp_path):
    img = np.zeros((48, 64, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), img)
    assert "still image" in _err(tmp_path / "frame.png")
    cv2.imwrite(str(tmp_path / "frame.jpg"), img)
    (tmp_path / "renamed.mp4").write_bytes((tmp_path / "frame.jpg").read_bytes())
    assert "still image" in _err(tmp_path / "renamed.mp4")


def test_single_frame_video(tmp_path):
    path = _write(tmp_path / "one.avi", 1, fourcc="MJPG")
    assert "single frame" in _err(path)
