"""ONNX export round trip (tiny config): same outputs as PyTorch for several frame and joint counts."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from models.export import export, max_difference
from models.model import MocapNet, ModelConfig

TINY = dict(img_size=64, encoder="small8", dim=32, heads=4, local_heads=2, stage1_layers=1, stage2_layers=1,
            window=8, max_joints=40, refine_rounds=1, snap_rounds=1, stage1_local=True,
            anchor_stage2=True)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    net = MocapNet(ModelConfig(**TINY), pretrained=False).eval()
    with torch.no_grad():  # make the zero-initialised heads non-trivial
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export(net, path, {"trained": "0"}, verify=False)
    return net, path


@pytest.mark.parametrize("t,j,chain", [(3, 5, False), (8, 17, False), (13, 40, False), (5, 40, True)])
def test_onnx_matches_pytorch(tiny_onnx, t, j, chain):
    """Random trees, and a chain 39 levels deep: the file places every level as PyTorch does (an ONNX Loop as long
    as the rig is deep)."""
    net, path = tiny_onnx
    assert max_difference(net, path, t=t, j=j, chain=chain) <= 1e-4


def test_checkpoint_config_round_trip():
    cfg = ModelConfig(**TINY)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("subject_crop", "refine_rounds", "snap_rounds")}
    assert not ModelConfig.from_dict(old).subject_crop and ModelConfig.from_dict(old).refine_rounds == 0
    assert ModelConfig.from_dict(old).snap_rounds == 0  # saved before the snap field
    assert ModelConfig.from_dict({**old, "subject_crop": True}).subject_crop
