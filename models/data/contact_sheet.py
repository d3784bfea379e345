"""A PNG grid of sample frames with the projected skeleton drawn over them (OpenCV), for people to look at.

`python -m models.data.contact_sheet DIR [--out PNG] [--n 16]`
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def draw_clip_frame(d, t: int, scale: int = 2) -> np.ndarray:
    img = np.ascontiguousarray(d["frames"][t][..., ::-1])  # BGR for OpenCV
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    uv = d["joints2d"][t] * scale
    vis = d["visible"][t]
    par = d["parents"]
    deform = d["deform"]
    for j, p in enumerate(par):
        if p >= 0:
            a = tuple(int(round(v)) for v in uv[p])
            b = tuple(int(round(v)) for v in uv[j])
            cv2.line(img, a, b, (255, 255, 255), 1, cv2.LINE_AA)
    for j in range(len(par)):
        c = (0, 230, 0) if vis[j] else (0, 0, 255)
        if not deform[j]:
            c = (255, 160, 0)
        cv2.circle(img, tuple(int(round(v)) for v in uv[j]), 2, c, -1, cv2.LINE_AA)
    label = f"{str(d['family'])} J={len(par)}"
    src = str(d["source"])
    if src != "procedural":
        label += " " + Path(src.split("#")[0]).stem
    cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def contact_sheet(paths, out, cols: int = 4, scale: int = 2):
    tiles = []
    for p in paths:
        with np.load(p) as z:
            d = {k: z[k] for k in ("frames", "joints2d", "visible", "parents", "deform", "family", "source")}
        t = len(d["frames"]) // 2
        tiles.append(draw_clip_frame(d, t, scale))
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * h:r * h + tile.shape[0], c * w:c * w + tile.shape[1]] = tile
    cv2.imwrite(str(out), sheet)
    return sheet


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--n", type=int, default=16)
    a = ap.parse_args(argv)
    paths = sorted(a.dir.glob("clip_*.npz"))[:a.n]
    contact_sheet(paths, a.out or a.dir / "contact_sheet.png")


if __name__ == "__main__":
    main()
