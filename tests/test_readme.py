"""The README's commands are executed, so the documentation cannot drift.

Every ```bash block of README.md runs, in order within its section, in a fresh copy of this
repository (one per section), with W&B offline. Conventions the README follows:

- a block whose first line is ``# file: PATH`` is a file the section writes (any language);
- a block whose first line is ``# needs: ...`` needs what CI lacks (a GPU, a live W&B account, a
  multi-node cluster) and is skipped with that reason;
- ``<run>`` in a path stands for the newest run directory there (``logs/train/runs/<run>``);
  ``<a>``/``<b>`` for the two newest;
- budgets come from outside the text: every ``python train.py``/``expkit train`` gets
  ``BUDGET`` appended (later overrides win in Hydra), an Optuna search two trials.

What each section documents is checked after it ran (``CHECKS``: files written, metrics present,
the stages that re-ran, the verdict printed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
BUDGET = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2"]
SEARCH_BUDGET = ["hydra.sweeper.n_trials=2"]
# A fenced block, also indented inside a list item: (indent, language, body).
FENCE = re.compile(r"^([ \t]*)```(\w*)\n(.*?)^\1```", re.S | re.M)


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block of ``text``, bodies dedented."""
    import textwrap

    return [(lang, textwrap.dedent(body)) for _, lang, body in FENCE.findall(text)]


@dataclass
class Section:
    title: str
    files: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def sections(text: str) -> dict[str, Section]:
    """The README's sections (``##``/``###`` headings) that hold a file or a bash block."""
    found: dict[str, Section] = {}
    parts = re.split(r"^(#{2,3} .+)$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        title = heading.lstrip("#").strip()
        section = Section(title)
        for lang, block in blocks(body):
            first = block.splitlines()[0] if block.strip() else ""
            if first.startswith("# file: "):
                section.files[first.removeprefix("# file: ").strip()] = block
            elif lang == "bash" and first.startswith("# needs:"):
                section.skipped.append(first.removeprefix("# needs:").strip())
            elif lang == "bash":
                section.commands.append(block)
        if section.files or section.commands:
            found[title] = section
    return found


def with_budget(command: str) -> str:
    """Each ``python train.py`` / ``expkit train`` of a command line, with the test budget."""
    pieces = re.split(r"(\s*(?:&&|\|\||;)\s*)", command)
    for i, piece in enumerate(pieces):
        words = piece.split()
        trains = words[:2] == ["python", "train.py"] or words[:2] == ["expkit", "train"]
        if trains:
            extra = [*BUDGET, *(SEARCH_BUDGET if "hparams_search=" in piece else [])]
            pieces[i] = piece.rstrip() + " " + " ".join(extra)
    return "".join(pieces)


def newest(folder: Path, count: int = 1) -> list[Path]:
    dirs = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return dirs[-count:]


def placeholders(command: str, cwd: Path) -> str:
    """``<run>``, ``<a>``, ``<b>`` in paths: the newest run directories there."""
    def run_dir(match: re.Match) -> str:
        folder = cwd / match["prefix"]
        if match["name"] == "run":
            return f"{match['prefix']}{newest(folder)[-1].name}"
        a, b = newest(folder, 2)
        return f"{match['prefix']}{(a if match['name'] == 'a' else b).name}"

    return re.sub(r"(?P<prefix>[\w./-]*/)<(?P<name>run|a|b)>", run_dir, command)


def logical_lines(block: str) -> list[str]:
    """A bash block's commands: comment lines dropped, ``\\`` continuations joined."""
    lines, current = [], ""
    for line in block.splitlines():
        if not current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            if current.strip():
                lines.append(current.strip())
            current = ""
    return lines


def clone(destination: Path) -> Path:
    """This repository as a fresh clone would have it (tracked and untracked, not ignored, files)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        source, target = ROOT / rel, destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"]):
        subprocess.run(command, cwd=destination, check=True, capture_output=True)
    return destination


def run_section(section: Section, cwd: Path) -> list[tuple[str, subprocess.CompletedProcess]]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for path, content in section.files.items():
        (cwd / path).parent.mkdir(parents=True, exist_ok=True)
        (cwd / path).write_text(content)
    done = []
    for block in section.commands:
        for line in logical_lines(block):
            command = placeholders(with_budget(line), cwd)
            proc = subprocess.run(["bash", "-c", f"set -e; {command}"], cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=1500)
            assert proc.returncode == 0, f"README {section.title!r}: `{command}` exited {proc.returncode}:\n" \
                                         f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            done.append((line, proc))
    return done


def metrics_of(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())


# What each section says happens, checked after its commands ran: (clone, [(line, process)]).
Check = Callable[[Path, list], None]
CHECKS: dict[str, Check] = {}
ALL = sections(README.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("title", sorted(ALL))
def test_readme_section_runs_as_written(title, tmp_path):
    section = ALL[title]
    repo = clone(tmp_path / "repo")
    done = run_section(section, repo)
    if title in CHECKS:
        CHECKS[title](repo, done)
    if section.skipped:
        pytest.skip(f"{len(section.skipped)} block(s) need what CI lacks: {'; '.join(section.skipped)}")


def test_every_command_block_is_run_or_marked():
    """No command of the README escapes the harness: every block with commands is bash (run) or
    marked ``# needs:`` (skipped with its reason)."""
    untagged = [block for lang, block in blocks(README.read_text())
                if not lang and re.search(r"^(python|expkit|dvc|git|cp|cd|wandb|sudo) ", block, re.M)]
    assert untagged == [], "command blocks must be ```bash (run by tests/test_readme.py): " + repr(untagged[:2])
