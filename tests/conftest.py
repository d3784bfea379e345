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
