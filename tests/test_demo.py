"""The README's main job (models.demo) runs end to end on a tiny clip and reports against the truth."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    pytest.importorskip("torch")  # not on the Blender 4.2 test environment's list; the demo needs no torch itself
    run = subprocess.run([sys.executable, "-m", "models.demo", "--out", str(tmp_path), "--frames", "10",
                          "--size", "96", "--seed", "3"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = run.stdout.splitlines()
    cap = next(line for line in lines if line.startswith("capture (new action)"))
    hold = next(line for line in lines if line.startswith("hold (reference pose)"))
    # three finite figures per row, measured in this run
    for line in (cap, hold):
        values = [float(v) for v in line.split()[-3:]]
        assert all(v == v and v >= 0 for v in values)
    for name in ("capture.blend", "clip.mp4", "preview.mp4"):
        assert (tmp_path / name).stat().st_size > 0
    import cv2
    prev = cv2.VideoCapture(str(tmp_path / "preview.mp4"))
    assert int(prev.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    assert int(prev.get(cv2.CAP_PROP_FRAME_WIDTH)) == 2 * 96
