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
            seen[mod] = "import bpy" in src or "blender_scene" in src
        if seen[mod]:
            item.add_marker(pytest.mark.blender)
