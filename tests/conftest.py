"""Shared test setup: the repository root on sys.path, Blender's user folder in a temporary place."""
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MOCAP_DEV = SHARED / "mocap-dev"

# `import bpy` writes into the home folder unless this points elsewhere; set it before any test imports bpy.
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="mocap_blender_user_"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    """Mark every test in a module that uses Blender as `blender`, so the 4.2 LTS run can select them."""
    import re

    import pytest

    seen = {}
    for item in items:
        mod = getattr(item, "module", None)
        if mod is None:
            continue
        if mod not in seen:
            try:
                src = Path(mod.__file__).read_text()
            except OSError:
                src = ""
            seen[mod] = re.search(r"\bbpy\b|test_blender_helpers|empty_scene", src) is not None
        if seen[mod]:
            item.add_marker(pytest.mark.blender)


_NEEDS_TORCH = None


def pytest_ignore_collect(collection_path, config):
    """Without torch (the Blender 4.2 environment has none), skip collecting test modules of the PyTorch side."""
    global _NEEDS_TORCH
    import importlib.util
    import re

    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if importlib.util.find_spec("torch") is not None:
        return None
    if _NEEDS_TORCH is None:
        _NEEDS_TORCH = re.compile(r"^\s*(import torch|from torch|from models\.(?!data)|import models\.(?!data))", re.M)
    return True if _NEEDS_TORCH.search(collection_path.read_text()) else None
