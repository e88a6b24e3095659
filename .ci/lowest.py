"""The lowest versions pyproject.toml's ranges allow: CI's second test pass installs .ci/lowest.txt.

    python .ci/lowest.py lock    # re-resolve .ci/lowest.txt (needs uv: pip install uv)
    python .ci/lowest.py check   # every direct dependency is pinned there at its lower bound

``lock`` pins every direct dependency (the project's and the dev extra's) at its lower bound and
lets uv resolve everything else to the newest versions that fit, as a user's fresh install would.
A bound that does not install with Python 3.11 and torch 2.13.0 fails the lock: raise it in
pyproject.toml, with a comment saying why. torch is the local CPU wheel (``--find-links``), the
only torch CI installs; PyPI's build of the same version would pull in CUDA.
``check`` fails when pyproject.toml changed without a new lock (a dependency added, a bound moved).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / ".ci" / "lowest.txt"
TORCH = "torch==2.13.0+cpu"
TORCH_WHEELS = os.environ.get("TORCH_WHEELS", "/opt/wheels")  # where the CPU wheel lies on CI's machines
PYTHON, PLATFORM = "3.11", "x86_64-manylinux_2_28"  # CI's


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bounds() -> dict[str, str]:
    """Each direct dependency's lower bound (``>=X``), by normalised name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[[^]]*\])?\s*>=\s*([^,;\s]+).*", spec)
        if not match:
            sys.exit(f"{spec!r} in pyproject.toml has no lower bound (>=): every dependency needs a tested one")
        bounds[_name(match[1])] = match[2]
    return bounds


def lock() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        constraints, override = Path(tmp) / "lowest.in", Path(tmp) / "torch.in"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in lower_bounds().items()))
        override.write_text(TORCH + "\n")
        done = subprocess.run(["uv", "pip", "compile", str(ROOT / "pyproject.toml"), "--extra", "dev", "--quiet",
                        "--python-version", PYTHON, "--python-platform", PLATFORM, "--find-links", TORCH_WHEELS,
                        "--constraint", str(constraints), "--override", str(override), "--no-emit-package", "expkit",
                        "--custom-compile-command", "python .ci/lowest.py lock", "-o", str(LOCK)],
                              cwd=ROOT)
    if done.returncode:
        sys.exit("uv found no lowest set (above): raise the bound it names in pyproject.toml, saying why")


def check() -> None:
    from packaging.version import Version  # in every venv the project installs (pytest needs it)

    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), re.M))
    pins = {_name(name): version for name, version in pins.items()}
    wrong = [f"{name}: lower bound {bound}, {LOCK.name} has {pins.get(name, 'nothing')}"
             for name, bound in lower_bounds().items()
             if name not in pins or Version(Version(pins[name]).public) != Version(bound)]
    if wrong:
        sys.exit(f"{LOCK} is not the lowest set of pyproject.toml's ranges; run `python .ci/lowest.py lock`:\n  "
                 + "\n  ".join(wrong))
    print(f"{LOCK.name}: every direct dependency at its lower bound ({len(lower_bounds())} checked)")


if __name__ == "__main__":
    {"lock": lock, "check": check}[sys.argv[1] if len(sys.argv) > 1 else "check"]()
