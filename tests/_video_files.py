"""Video files for tests: a copy of an MP4 carrying a rotation tag, as phones write portrait clips."""
from __future__ import annotations

import struct


def tag_rotation(src, dst, degrees: int) -> str:
    """Copy the MP4 `src` to `dst` with its video track's display matrix turned by `degrees` (0, 90, 180, 270),
    the tag a phone writes instead of turning the pixels. Players show the frames turned clockwise by it."""
    data = bytearray(open(src, "rb").read())
    k = data.find(b"tkhd")
    assert k > 0, "not an MP4 with a track header"
    version = data[k + 4]
    matrix = k + 8 + (20 if version == 0 else 32) + 16  # after the header's times, ids, layer, volume
    one = 0x10000  # 16.16 fixed point
    cos, sin = {0: (one, 0), 90: (0, one), 180: (-one, 0), 270: (0, -one)}[degrees % 360]
    data[matrix:matrix + 36] = struct.pack(">9i", cos, sin, 0, -sin, cos, 0, 0, 0, 0x40000000)
    with open(dst, "wb") as fh:
        fh.write(data)
    return str(dst)
