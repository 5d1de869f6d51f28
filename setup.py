"""Packaging glue: ship the top-level kernels/ and presets/ folders inside the wheel.

Everything else is declared in pyproject.toml. The two folders live at the repository root
(where people look for them) and are installed as the packages rwkv_tune.kernels and
rwkv_tune.presets, so `importlib.resources` finds them in editable and regular installs alike.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["rwkv_tune", "rwkv_tune.*"]) + ["rwkv_tune.kernels", "rwkv_tune.presets"],
    package_dir={"rwkv_tune.kernels": "kernels", "rwkv_tune.presets": "presets"},
)
