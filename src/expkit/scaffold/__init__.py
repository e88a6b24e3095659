"""``expkit init DIR``: a research repository that trains its own model and data with expkit.

    expkit init my-project                  # package name from the folder: my_project
    expkit init my-project --package lab    # or chosen
    cd my-project && python train.py && python -m pytest && dvc repro

Written from the templates beside this file (``{{package}}`` replaced by the package name):

    train.py, eval.py             expkit's entry points on this repo's conf/ (which extends expkit's)
    conf/config.yaml              the primary config: expkit's train.yaml with this project's parts
    conf/model/<package>.yaml     the model's config    (<package>/model.py: a plain LightningModule)
    conf/data/<package>.yaml      the data's config     (<package>/data.py: a plain LightningDataModule)
    dvc.yaml, params.yaml         the DVC pipeline (train, evaluate); DVC composes conf/config.yaml
    tests/test_<package>.py       the model's shapes and a tiny real training run
    README.md, .gitignore

The folder becomes a git repository (when git is installed and it is not inside one already) and a
DVC repository configured to work offline. An existing non-empty folder is refused (exit 2).
"""

from __future__ import annotations

import argparse
import importlib.util
import keyword
import re
import shutil
import subprocess
import sys
from pathlib import Path

from expkit.errors import ConfigError, ExpkitError, exit_with

TEMPLATE = Path(__file__).resolve().parent / "template"
PLACEHOLDER = "{{package}}"


def destination(template: Path, package: str) -> Path:
    """Where a template file goes: ``package/`` is the package, ``gitignore`` is ``.gitignore``,
    ``package`` in a file name is the package name; ``.tmpl`` is dropped."""
    parts = [package if part == "package" else part for part in template.relative_to(TEMPLATE).parts]
    parts[-1] = parts[-1].removesuffix(".tmpl").replace("package", package)
    if parts == ["gitignore"]:
        parts = [".gitignore"]
    return Path(*parts)


def init(directory: Path, package: str | None = None) -> list[Path]:
    """Write a new research repository into ``directory``; returns the files written.

    Raises :class:`ConfigError` for a non-empty directory or a package name that is not a Python
    identifier.
    """
    directory = Path(directory)
    package = package or re.sub(r"\W", "_", directory.resolve().name.lower()).strip("_") or "project"
    if not package.isidentifier() or keyword.iskeyword(package) or package in sys.stdlib_module_names:
        raise ConfigError(f"--package {package}: not usable as a Python package name; pass --package <identifier>.")
    if importlib.util.find_spec(package) is not None:  # `expkit init torch` would shadow torch in the repo
        raise ConfigError(f"--package {package}: an installed package has that name and the new one would hide it; "
                          "pass --package <another name>.")
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory}: not empty; `expkit init` writes a new repository into an empty or new folder.")
    written = []
    for template in sorted(p for p in TEMPLATE.rglob("*") if p.is_file()):
        target = directory / destination(template, package)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template.read_text().replace(PLACEHOLDER, package))
        written.append(target)
    _version_control(directory)
    from expkit.pipeline.params import compose_params

    params = directory / "params.yaml"
    params.write_text(compose_params(config_dir=directory / "conf", config_name="config"))
    written.append(params)
    return written


def _version_control(directory: Path) -> None:
    """git (when installed, outside any repository) and DVC, offline, composing conf/config.yaml."""
    def run(*command: str) -> None:
        subprocess.run(command, cwd=directory, check=True, capture_output=True, text=True)

    inside_git = shutil.which("git") and subprocess.run(["git", "rev-parse"], cwd=directory, capture_output=True).returncode == 0
    if shutil.which("git") and not inside_git:
        run("git", "init", "-q")
    dvc = [sys.executable, "-m", "dvc"]
    run(*dvc, "init", "-q", *([] if shutil.which("git") else ["--no-scm"]), *(["--subdir"] if inside_git else []))
    for key, value in (("core.analytics", "false"), ("studio.offline", "true"), ("hydra.enabled", "true"),
                       ("hydra.config_dir", "conf"), ("hydra.config_name", "config")):
        run(*dvc, "config", key, value)


def main(argv: list[str], command: str = "init") -> None:
    parser = argparse.ArgumentParser(prog="expkit init", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="the new repository's folder (new or empty)")
    parser.add_argument("--package", help="the Python package's name (default: from the folder's name)")
    args = parser.parse_args(argv)
    try:
        written = init(args.directory, args.package)
    except ExpkitError as exc:
        exit_with(exc)
    except subprocess.CalledProcessError as exc:
        exit_with(ExpkitError(f"{' '.join(map(str, exc.cmd))} failed in {args.directory}: {(exc.stderr or '').strip()[-300:]}"))
    print(f"created {args.directory} ({len(written)} files): cd {args.directory} && python train.py")
