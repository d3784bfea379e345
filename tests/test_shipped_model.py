"""The shipped model against the exact truth of clips rendered here: procedural rigs it never saw (seeds outside
every training and evaluation range) and the real rigs of ../shared/mocap-dev. A trained file must beat "hold"
(the reference pose on every frame) on them under both reference protocols; the untrained file must equal it."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from mocap_blender.core import metrics  # noqa: E402

MODEL_PATH = Path(__file__).resolve().parents[1] / "mocap_blender" / "weights" / "mocap.onnx"
PROCEDURAL_SEEDS = range(3_000_000, 3_000_006)  # training used 0-2999, evaluation 1,000,000+ and 2,000,000+
REAL_SEEDS = range(3_000_100, 3_000_104)


@pytest.mark.slow
def test_shipped_model_against_rendered_truth(tmp_path):
    pytest.importorskip("bpy")
    from models.data import real
    from models.data.generate import clip_path, make_clip, write_shard
    from models.evaluate import evaluate
    from mocap_blender.core.runtime import MocapModel

    for seed in PROCEDURAL_SEEDS:
        write_shard(clip_path(tmp_path, seed), make_clip(seed, size=160, frames=32))
    if real.available():
        for seed in REAL_SEEDS:
            write_shard(clip_path(tmp_path, seed), make_clip(seed, size=160, frames=32, real_fraction=1.0))
    acc, _, n = evaluate(str(MODEL_PATH), [str(tmp_path)])
    assert n == len(PROCEDURAL_SEEDS) + (len(REAL_SEEDS) if real.available() else 0)
    trained = MocapModel(MODEL_PATH).meta.get("trained") == "1"
    groups = {(g, p) for g, p, _ in acc}
    assert ("procedural", "other") in groups and ("procedural", "matched") in groups
    for g, p in sorted(groups):
        model = metrics.pool(acc[(g, p, "model")]["moving"])
        hold = metrics.pool(acc[(g, p, "hold")]["moving"])
        assert np.isfinite(model) and 0 < hold < 90
        if trained:
            assert model < hold, f"{g}, {p}: model {model:.2f} degrees, hold {hold:.2f}"
        else:
            assert model == pytest.approx(hold, abs=0.05), (g, p, model, hold)
