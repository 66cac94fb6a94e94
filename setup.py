"""Packaging: the `flowcore` library plus the top-level `objectives/` folder shipped as `flowcore.objectives`."""
from setuptools import find_packages, setup

packages = find_packages(include=["flowcore", "flowcore.*"]) + ["flowcore.objectives"]

setup(
    packages=packages,
    package_dir={"flowcore.objectives": "objectives"},
)
