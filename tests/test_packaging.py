"""A plain (non-editable) wheel ships kernels/ and presets/, and the package finds them."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rwkv_tune.resources import kernels_dir, presets_dir

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("*.cu", "*.cpp", "*.h", "*.cuh", "*.yaml")


def test_resources_point_at_the_shipped_folders():
    assert (kernels_dir() / "__init__.py").exists()
    assert (presets_dir() / "__init__.py").exists()


@pytest.mark.slow
def test_wheel_contains_kernels_and_presets(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("rwkv_tune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "rwkv_tune/kernels/__init__.py" in names and "rwkv_tune/presets/__init__.py" in names
    for folder, package in (("kernels", "rwkv_tune/kernels"), ("presets", "rwkv_tune/presets")):
        for pattern in SHIPPED:
            for source in (ROOT / folder).glob(pattern):
                assert f"{package}/{source.name}" in names, source
    assert "rwkv_tune/spec.py" in names and "rwkv_tune/cli/__init__.py" in names
