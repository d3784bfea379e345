"""Build the Blender extension: one validated zip per platform in dist/, with the wheels it needs bundled.

    python build.py                              # linux-x64, windows-x64 and macos-arm64
    python build.py --platform linux-x64         # one platform
    python build.py --platform linux-x64 --cpu   # CPU onnxruntime instead of the CUDA build (smaller, for tests)

Wheels are fetched from the package registry at BUILD time (cached in build/wheels/); nothing is installed or
downloaded when the extension runs. numpy is never bundled: Blender ships it. The packaging tool and validator
are Blender's own (`bl_pkg/cli/blender_ext.py`, shipped inside the `bpy` package); they run under plain Python.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "mocap_blender"
MANIFEST = ROOT / "blender_manifest.toml"

# Blender 4.2-5.0 ship Python 3.11; later 5.x releases ship 3.13. Bundle both; Blender installs the matching one.
PYTHONS = ("3.11", "3.13")
ONNXRUNTIME_VERSION = "1.22.0"
OPENCV = "opencv-python-headless==4.11.0.86"

# platform -> (pip platform tags, onnxruntime distribution with CUDA where the platform has it)
PLATFORMS = {
    "linux-x64": (["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                   "manylinux2014_x86_64"], "onnxruntime-gpu"),
    "windows-x64": (["win_amd64"], "onnxruntime-gpu"),
    "macos-arm64": ([f"macosx_{v}_0_arm64" for v in (15, 14, 13, 12, 11)], "onnxruntime"),
}


def blender_ext_script() -> Path:
    """Blender's extension builder/validator, from the installed `bpy` package."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("build.py needs the `bpy` package (pip install -r requirements.txt) for Blender's extension tools.")
    for base in spec.submodule_search_locations:
        found = sorted(Path(base).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    sys.exit("Could not find bl_pkg/cli/blender_ext.py inside the bpy package.")


def fetch_wheels(platform: str, cpu: bool, cache: Path) -> list[Path]:
    tags, ort = PLATFORMS[platform]
    if cpu:
        ort = "onnxruntime"
    version = "1.22.1" if ort == "onnxruntime" else ONNXRUNTIME_VERSION
    dest = cache / platform / ("cpu" if cpu else "default")
    dest.mkdir(parents=True, exist_ok=True)
    for spec in (f"{ort}=={version}", OPENCV):
        for py in PYTHONS:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
                   "--implementation", "cp", "--python-version", py, "--dest", str(dest)]
            for tag in tags:
                cmd += ["--platform", tag]
            subprocess.run(cmd + [spec], check=True)
    return sorted(dest.glob("*.whl"))


def stage(platform: str, wheels: list[Path], out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(PACKAGE, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "README.md"))
    (out / "wheels").mkdir()
    for w in wheels:
        shutil.copy2(w, out / "wheels" / w.name)
    manifest = MANIFEST.read_text()
    manifest = re.sub(r"^platforms = .*$", f'platforms = ["{platform}"]', manifest, flags=re.M)
    wheel_list = ",\n".join(f'  "./wheels/{w.name}"' for w in wheels)
    manifest = manifest.replace("[permissions]", f"wheels = [\n{wheel_list},\n]\n\n[permissions]", 1)
    (out / "blender_manifest.toml").write_text(manifest)
    return out


def version() -> str:
    m = re.search(r'^version = "([^"]+)"', MANIFEST.read_text(), flags=re.M)
    return m.group(1)


def build(platform: str, cpu: bool, dist: Path) -> Path:
    tool = blender_ext_script()
    wheels = fetch_wheels(platform, cpu, ROOT / "build" / "wheels")
    src = stage(platform, wheels, ROOT / "build" / "stage" / platform)
    dist.mkdir(parents=True, exist_ok=True)
    suffix = "-cpu" if cpu else ""
    zip_path = dist / f"mocap_blender-{version()}-{platform}{suffix}.zip"
    zip_path.unlink(missing_ok=True)
    subprocess.run([sys.executable, str(tool), "build", "--source-dir", str(src),
                    "--output-filepath", str(zip_path)], check=True)
    subprocess.run([sys.executable, str(tool), "validate", str(zip_path)], check=True)
    print(f"built and validated {zip_path} ({zip_path.stat().st_size / 1e6:.1f} MB)")
    return zip_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--platform", choices=sorted(PLATFORMS), action="append",
                    help="platform to build (repeatable; default: all)")
    ap.add_argument("--cpu", action="store_true", help="bundle the CPU onnxruntime instead of the CUDA build")
    ap.add_argument("--dist", type=Path, default=ROOT / "dist")
    args = ap.parse_args(argv)
    if not (PACKAGE / "weights" / "mocap.onnx").is_file():
        sys.exit("mocap_blender/weights/mocap.onnx is missing: export a model first (python -m models.export).")
    for platform in args.platform or list(PLATFORMS):
        build(platform, args.cpu, args.dist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
