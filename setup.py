"""Ships the top-level ``targets/`` and ``calibration/`` folders inside the wheel as
``dnsrec_edge/targets`` and ``dnsrec_edge/calibration`` (everything else is in pyproject.toml)."""

from setuptools import find_packages, setup

SHIPPED = {"dnsrec_edge.targets": "targets", "dnsrec_edge.calibration": "calibration"}

setup(
    packages=find_packages(include=["dnsrec_edge*"]) + list(SHIPPED),
    package_dir=SHIPPED,
)
