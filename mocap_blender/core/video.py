"""Reading a video with OpenCV: validation with messages a user can act on, and windows of frames in bounded memory.

`VideoReader(path)` opens and checks the file at once (missing, empty, not a video, a still image, zero frames,
truncated), so a capture fails before anything is computed or changed. `windows(length, overlap)` then streams the
clip as overlapping windows of RGB uint8 frames; at most `length` frames (optionally downscaled) are held at a time,
whatever the clip's length.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from .errors import MocapError

_VIDEO_SIGNATURES = (  # (offset, bytes, container name): files that claim to be video containers
    (4, b"ftyp", "MP4/MOV"), (0, b"RIFF", "AVI"), (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"OggS", "Ogg"), (0, b"FLV", "FLV"), (0, b"\x00\x00\x01\xba", "MPEG"),
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".exr", ".hdr", ".webp", ".tga", ".ppm",
                   ".pgm", ".pbm", ".jp2", ".gif", ".pic", ".sr", ".ras", ".pxm", ".pnm", ".avif"}
_REDO = "Re-export or re-download the clip (MP4, MOV, AVI or MKV) and choose it again."


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - the extension bundles it
        raise MocapError("OpenCV (opencv-python-headless) is not installed, so videos cannot be read. "
                         "Reinstall the Mocap extension for your platform.") from exc
    return cv2


def _open(cv2, path: str):
    """A capture that turns frames upright by the file's rotation tag (phones store portrait clips sideways with a
    tag; OpenCV ignores it unless asked, Blender 5.0 and video players apply it)."""
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return cap


def _container(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    for offset, sig, name in _VIDEO_SIGNATURES:
        if head[offset:offset + len(sig)] == sig:
            return name
    return None


class VideoReader:
    """An opened, validated video. Cheap to create (reads the first and last frames only).

    Frames come upright: a rotation tag in the file (phone videos) is applied, as video players do.
    """

    def __init__(self, path):
        cv2 = _cv2()
        self.path = os.fspath(path)
        name = os.path.basename(self.path) or self.path
        if not self.path:
            raise MocapError("No video file was given. Choose a video file (MP4, MOV, AVI or MKV).")
        if not os.path.exists(self.path):
            raise MocapError(f"Video file not found: {self.path!r}. Check the path (relative paths are resolved "
                             f"from {os.getcwd()!r}) and choose the file again.")
        if os.path.isdir(self.path):
            raise MocapError(f"{self.path!r} is a folder, not a video file. Choose a video file "
                             "(image sequences are not supported: encode them to a video first).")
        if not os.access(self.path, os.R_OK):
            raise MocapError(f"Video file {name!r} cannot be read (permission denied). "
                             "Fix its permissions or copy it somewhere readable.")
        size = os.path.getsize(self.path)
        if size == 0:
            raise MocapError(f"Video file {name!r} is empty (0 bytes); the copy or download probably failed. "
                             + _REDO)
        suffix = os.path.splitext(self.path)[1].lower()
        if suffix in _IMAGE_SUFFIXES or (cv2.haveImageReader(self.path) and _container(self.path) is None):
            raise MocapError(f"{name!r} is a still image, not a video. Capture needs a video of the motion: "
                             "choose a video file (MP4, MOV, AVI or MKV), or encode an image sequence to one.")
        cap = _open(cv2, self.path)
        if not cap.isOpened():
            cap.release()
            kind = _container(self.path)
            if kind is not None:
                raise MocapError(
                    f"Video file {name!r} looks like {kind} but has no readable frames: it is truncated (an "
                    f"incomplete copy or download), damaged, or contains zero frames. " + _REDO)
            raise MocapError(f"{name!r} could not be opened as a video (unknown or unsupported format). "
                             "Convert it to MP4 (H.264 or MPEG-4) and choose it again.")
        try:
            self.fps = float(cap.get(cv2.CAP_PROP_FPS))
            meta = cap.get(cv2.CAP_PROP_ORIENTATION_META)
            # degrees the frames are turned to stand upright (0 for most files); `size` is the upright size
            self.rotation = int(round(meta)) % 360 if np.isfinite(meta) else 0
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            ok, first = cap.read()
            if not ok or first is None:
                raise MocapError(f"Video file {name!r} contains no decodable frames (zero frames, or the video "
                                 "stream is damaged). " + _REDO)
            self.size = (int(first.shape[1]), int(first.shape[0]))  # (width, height)
            if not np.isfinite(count) or count <= 0 or count > 1e9:
                count = self._count_frames(cap) + 1  # header has no count: decode-free walk (grab only)
            self.n_frames = int(round(count))
            if self.n_frames > 1:  # a truncated file keeps its header count: check the last frame decodes
                cap.set(cv2.CAP_PROP_POS_FRAMES, self.n_frames - 1)
                ok, _ = cap.read()
                if not ok:
                    raise MocapError(
                        f"Video file {name!r} is truncated: its header announces {self.n_frames} frames but the "
                        "end of the file cannot be decoded (an incomplete copy or download). " + _REDO)
        finally:
            cap.release()
        if not (np.isfinite(self.fps) and 0.1 < self.fps < 10000):
            self.fps = 24.0  # some containers carry no rate; Blender's default
        if self.n_frames == 1:
            raise MocapError(f"{name!r} has a single frame, like a still image. Capture needs a video of the "
                             "motion with at least two frames.")

    @staticmethod
    def _count_frames(cap) -> int:
        n = 0
        while cap.grab():
            n += 1
        return n

    def __repr__(self) -> str:
        return f"VideoReader({self.path!r}, n_frames={self.n_frames}, fps={self.fps:g}, size={self.size})"

    def frame(self, index: int, max_side: int | None = None) -> np.ndarray:
        """One frame (H, W, 3) uint8 RGB, downscaled like `windows`."""
        return next(self.windows(1, start=index, stop=index + 1, max_side=max_side))[1][0]

    def windows(self, length: int, overlap: int = 0, *, start: int = 0, stop: int | None = None,
                max_side: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start_index, frames (T, H, W, 3) uint8 RGB) covering frames [start, stop) in windows.

        Consecutive windows share `overlap` frames; the last window may be shorter. At most `length` frames are
        held. `max_side` downscales frames on read (area filter) so the longer side is at most that many pixels.
        A frame that cannot be decoded before `stop` raises MocapError (truncated file).
        """
        cv2 = _cv2()
        length, overlap = int(length), int(overlap)
        if length < 1 or not 0 <= overlap < length:
            raise ValueError(f"need length >= 1 and 0 <= overlap < length, got {length}, {overlap}")
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        start = max(int(start), 0)
        if start >= stop:
            raise MocapError(f"The frame range {start}-{stop - 1} is empty or outside the video "
                             f"({self.n_frames} frames, 0-{self.n_frames - 1}). Choose a range inside the video.")
        w, h = self.size
        scale = 1.0 if not max_side or max(w, h) <= max_side else max_side / max(w, h)
        out_w, out_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        cap = _open(cv2, self.path)
        try:
            if start > 0:
                cap.set(cv2.CAP_PROP_POS_FRAMES, start)
            buf = np.empty((length, out_h, out_w, 3), dtype=np.uint8)
            filled = 0  # frames in buf that belong to the current window
            index = start  # video index of buf[0]
            pos = start  # next frame to read
            while pos < stop:
                while filled < length and pos < stop:
                    ok, frame = cap.read()
                    if not ok or frame is None:
                        raise MocapError(
                            f"Video file {os.path.basename(self.path)!r} ends early: frame {pos} of "
                            f"{self.n_frames} cannot be decoded (truncated or damaged file). " + _REDO)
                    if frame.shape[1] != out_w or frame.shape[0] != out_h:
                        frame = cv2.resize(frame, (out_w, out_h), interpolation=cv2.INTER_AREA)
                    cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=buf[filled])
                    filled += 1
                    pos += 1
                yield index, buf[:filled].copy()
                if pos >= stop:
                    break
                buf[:overlap] = buf[filled - overlap:filled]
                index += filled - overlap
                filled = overlap
        finally:
            cap.release()
