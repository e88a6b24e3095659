"""The README's commands are executed, so the documentation cannot drift.

How README.md is run (its "Tests" section says the same in short):

- A section is a ``##``/``###`` heading and its text up to the next heading. A section with
  commands runs as one bash script in its own fresh copy of this repository (its tracked and
  untracked, not ignored, files, committed in a new git repository): its blocks in order, each
  command line checked before the next, so ``cd`` and ``export`` carry over as for a reader typing
  them. W&B is offline, ``HOME`` is an empty folder, the DVC remote a folder of the test's own.
- ```bash blocks run. A bash block whose first line is ``# needs: WHAT`` needs what CI lacks (a
  GPU, a W&B account, several nodes, a cloud bucket): it is skipped with that reason, the one way
  a block is marked as not run.
- A block whose first line (after a Hydra ``# @package`` header) is ``# file: PATH`` (any
  language) is a file the reader writes, written at that point; ``# edit: PATH`` (YAML): its keys are merged into that YAML file.
- A command's trailing ``# exits N`` or ``# may exit N`` is its documented exit status (N; 0 or N);
  any other command must exit 0.
- In a ```text block, ``$ COMMAND`` is a transcript: the command runs and must exit non-zero,
  printing the ``error:`` line that follows it in the README, word for word.
- A block whose first line is ``# PATH`` of a file of the repository quotes it: its lines must be
  in that file.
- ``<run>`` in a path is the newest run directory there (their names sort by start time);
  ``<a>`` and ``<b>`` are the two newest, older first.
- Budgets come from outside the text, appended to the command (later overrides win in Hydra):
  every training command (``python train.py``, ``dvc exp run``) gets a few
  batches an epoch (``LIMITS``) and, unless it chooses its epochs, two (``EPOCHS``); an Optuna
  search a tenth of its trials; the benchmark its smoke-test flags. A command under ``timeout``
  runs as written.
- Files the text assumes the reader has (``my.csv``, ``~/iris.csv``, ``new_version.npz``, ...)
  are ``GIVEN``: written before the section runs, from scikit-learn's bundled data.
- Quickstart and Tests are what ``.ci/run`` runs: their commands must be in it as written.

What each section documents is checked after it ran (``CHECKS``: files written, metrics present,
the stages that re-ran, the verdict printed).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT
from tests.services import require_postgres, require_slurm

README = ROOT / "README.md"
LIMITS = ["++trainer.limit_train_batches=8", "++trainer.limit_val_batches=4"]
EPOCHS = "trainer.max_epochs=2"
BENCHMARK_BUDGET = ["--quick", "--workloads", "mlp_digits", "--variants", "b,c", "--no-startup", "--out", "bench-results"]
RUN_BY_CI = ("Quickstart", "Tests")  # sections whose commands .ci/run runs itself
CI_LACKS = r"\bGPU|W&B account|\bnodes\b|bucket"  # what a `# needs:` block may need
TIMEOUT_S = 1800
# A fenced block, also indented inside a list item: (indent, language, body).
FENCE = re.compile(r"^([ \t]*)```(\w*)\n(.*?)^\1```", re.S | re.M)
PLACEHOLDER = re.compile(r"(?P<prefix>[\w./~-]*/)<(?P<name>run|a|b)>")
EXIT = re.compile(r"#\s*(?P<may>may\s+)?exits?\s+(?P<code>\d+)")


# -- reading the README ----------------------------------------------------------------------
@dataclass
class Step:
    """One thing a section does, in order: a command, a file written, a YAML file edited."""

    kind: str  # "run", "file", "edit", "transcript"
    text: str  # the command line as written / the file's content
    path: str = ""  # file and edit: where
    codes: tuple[int, ...] = (0,)  # run: the exit statuses the README documents
    expected: str = ""  # transcript: the error line the README shows


@dataclass
class Section:
    title: str
    steps: list[Step] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the reasons of its `# needs:` blocks
    quotes: list[tuple[str, str]] = field(default_factory=list)  # (repository file, quoted text)

    @property
    def commands(self) -> list[Step]:
        return [s for s in self.steps if s.kind in ("run", "transcript")]


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block of ``text``, bodies dedented."""
    return [(lang, textwrap.dedent(body)) for _, lang, body in FENCE.findall(text)]


def split_comment(line: str) -> tuple[str, str]:
    """``(code, comment)`` of a shell line: the comment starts at the first ``#`` after a blank,
    outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i:]
    return line.rstrip(), ""


def logical_lines(block: str) -> list[str]:
    """A bash block's command lines: comment-only lines dropped, ``\\`` continuations joined."""
    lines, current = [], ""
    for line in block.splitlines():
        if not current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1].rstrip() + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


def transcripts(block: str) -> list[Step]:
    """``$ COMMAND`` lines of a text block, each with the ``error:`` line printed after it."""
    steps, lines = [], block.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("$ "):
            answer = next((ln for ln in lines[i + 1:i + 2] if ln.startswith("error: ")), "")
            assert answer, f"README transcript `{line}`: the next line must be the `error: ...` line it prints"
            steps.append(Step("transcript", line[2:].strip(), expected=answer))
    return steps


def sections(text: str) -> dict[str, Section]:
    """The README's sections (the text before the first ``##`` is the first), those that do or
    quote something."""
    found: dict[str, Section] = {}
    parts = re.split(r"^(#{2,3} .+)$", text, flags=re.M)
    for heading, body in zip(["# expkit", *parts[1::2]], parts[0::2], strict=True):
        section = Section(heading.lstrip("#").strip())
        for lang, block in blocks(body):
            # The first line, after a Hydra header (`# @package ...`, which must open a config file).
            first = next((ln for ln in block.splitlines() if not ln.startswith("# @")), "")
            quoted = first.removeprefix("# ").strip()
            if first.startswith("# file: "):
                section.steps.append(Step("file", block, path=first.removeprefix("# file: ").strip()))
            elif first.startswith("# edit: "):
                section.steps.append(Step("edit", block, path=first.removeprefix("# edit: ").strip()))
            elif lang == "bash" and first.startswith("# needs:"):
                section.skipped.append(first.removeprefix("# needs:").strip())
            elif lang == "bash":
                for line in logical_lines(block):
                    code, comment = split_comment(line)
                    match = EXIT.search(comment)
                    codes = (0,) if not match else ((0, int(match["code"])) if match["may"] else (int(match["code"]),))
                    section.steps.append(Step("run", code, codes=codes))
            elif lang == "text":
                section.steps.extend(transcripts(block))
            elif first.startswith("# ") and "/" in quoted and (ROOT / quoted).is_file():
                section.quotes.append((quoted, block.split("\n", 1)[1]))
        if section.steps or section.skipped or section.quotes:
            assert section.title not in found, f"two README sections are titled {section.title!r}: tests name them by title"
            found[section.title] = section
    return found


# -- budgets and placeholders ----------------------------------------------------------------
def budget(words: list[str]) -> list[str]:
    """The budget overrides for a training command: ``LIMITS`` always, ``EPOCHS`` unless the
    command chooses its epochs, a tenth of an Optuna search's trials."""
    extra = list(LIMITS)
    if not any(w.startswith("trainer.max_epochs=") for w in words):
        extra.append(EPOCHS)
    if any(w.startswith("hparams_search=") for w in words) and not any("n_trials=" in w for w in words):
        extra.append("hydra.sweeper.n_trials=2")
    return extra


def with_budget(code: str) -> str:
    """Each command of a line with the test budget, where it trains. A command under ``timeout``
    is bounded by it and runs as written."""
    pieces = re.split(r"(\s*(?:&&|\|\||;|\|)\s*)", code)
    for i, piece in enumerate(pieces):
        words = piece.split()
        piece = re.sub(r"(hydra\.sweeper\.n_trials)=(\d+)", lambda m: f"{m[1]}={math.ceil(int(m[2]) / 10)}", piece)
        if set(words) & {"--cfg", "--help", "--info", "--hydra-help"}:
            continue  # prints, trains nothing
        if words[:2] in (["python", "train.py"], ["expkit", "train"]) or words[:1] == ["expkit-train"]:
            pieces[i] = f"{piece} {' '.join(budget(words))}"
        elif words[:3] == ["dvc", "exp", "run"]:
            pieces[i] = f"{piece} {' '.join('-S ' + o for o in budget(words))}"
        elif words[:2] == ["python", "benchmarks/run.py"]:
            pieces[i] = f"{piece} {' '.join(BENCHMARK_BUDGET)}"
    return "".join(pieces)


def with_placeholders(code: str) -> str:
    """``<run>``, ``<a>``, ``<b>`` after a folder: the newest run directories there, looked up when
    the command runs."""
    def lookup(match: re.Match) -> str:
        rank = 2 if match["name"] == "a" else 1
        return f'"$(newest {match["prefix"]} {rank})"'

    return PLACEHOLDER.sub(lookup, code)


# -- files the reader brings -----------------------------------------------------------------
def _iris_rows(label: str = "species") -> tuple[list[str], list[list]]:
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows = [[*map(float, x), str(iris.target_names[y])] for x, y in zip(iris.data, iris.target, strict=True)]
    return [*names, label], rows


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _table(path: Path, label: str) -> None:
    _write_csv(path, *_iris_rows(label))


def _new_rows(path: Path) -> None:
    """New inputs without their label, columns in another order."""
    header, rows = _iris_rows()
    order = [3, 2, 1, 0]
    _write_csv(path, [header[i] for i in order], [[row[i] for i in order] for row in rows[::15]])


def _arrays(path: Path, count: int | None = None) -> None:
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    np.savez(path, x=x[:count].astype("float32"), y=y[:count])


def _new_version(path: Path) -> None:
    """A new version of ``data/raw/digits.npz`` (scikit-learn's digits scaled to 0..1, as the
    ``digits`` stage writes them), its top two rows brighter: a sensor change the drift check sees."""
    from expkit.pipeline.digits import digits_arrays

    x, y = digits_arrays()
    x[:, :, :2, :] = np.clip(x[:, :, :2, :] + 0.3, 0, 1)
    np.savez(path, x=x, y=y)


def _images(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 200)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            pixels = np.clip(rng.normal(level, 30, (40, 40, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(folder / label / f"{i}.png")


def _duplicate_columns(path: Path) -> None:
    _write_csv(path, ["a", "a", "label"], [[i % 3, i % 5, i % 2] for i in range(30)])


def _pickled_checkpoint(path: Path) -> None:
    import argparse

    import torch

    torch.save({"state_dict": {}, "hyper_parameters": {"args": argparse.Namespace(lr=0.1)}}, path)


# Path (relative to the clone; ``~/`` is the section's HOME) -> writer.
GIVEN: dict[str, Callable[[Path], None]] = {
    "my.csv": lambda p: _table(p, "label"),
    "new.csv": _new_rows,
    "~/iris.csv": lambda p: _table(p, "species"),
    "data/raw/iris.csv": lambda p: _table(p, "species"),
    "data/raw/arrays.npz": _arrays,
    "arrays.npz": _arrays,
    "new.npz": lambda p: _arrays(p, 20),
    "data/images": _images,
    "new_version.npz": _new_version,
    "data/raw/table.csv": _duplicate_columns,
    "other.ckpt": _pickled_checkpoint,
}


# -- running a section -----------------------------------------------------------------------
@dataclass
class Result:
    """A command as run: the line the README shows, what ran, its exit status and output."""

    line: str
    ran: str
    rc: int
    output: str


def clone(destination: Path) -> Path:
    """This repository as a fresh clone has it: tracked and untracked (not ignored) files, in a
    new git repository with one commit, the DVC remote a folder beside it (``config.local``)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        source, target = ROOT / rel, destination / rel
        if source.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (destination / ".dvc" / "config.local").write_text(f"['remote \"local\"']\n    url = {destination.parent / 'remote'}\n")
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(command, cwd=destination, check=True, capture_output=True, env=environment(destination))
    return destination


def environment(repo: Path) -> dict[str, str]:
    home = repo.parent / "home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HOME": str(home),
            "MPLCONFIGDIR": str(repo.parent / "mpl"), "PYTHONPATH": str(repo / "src"), "GIT_AUTHOR_NAME": "README reader",
            "GIT_AUTHOR_EMAIL": "reader@expkit.invalid", "GIT_COMMITTER_NAME": "README reader",
            "GIT_COMMITTER_EMAIL": "reader@expkit.invalid",
            # `python`, `expkit`, `dvc` are this interpreter's, as in an activated virtualenv.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


# `# edit: PATH`: the block's keys merged into the YAML file (its defaults list and other keys kept).
MERGE = "import sys; from omegaconf import OmegaConf as O; O.save(O.merge(O.load(sys.argv[1]), O.load(sys.argv[2])), sys.argv[1])"
PRELUDE = """\
exec 2>&1
set -o pipefail
newest() { ls -1d "$1"*/ 2>/dev/null | sort | tail -n "$2" | head -n 1 | sed 's:/$::'; }
"""


def script(section: Section, repo: Path) -> tuple[str, list[Step]]:
    """The bash script of a section's steps, and its commands in order. Files and edits are
    staged beside the clone and written by the script at their place in the text."""
    lines, commands = [PRELUDE], []
    staging = repo.parent / "files"
    staging.mkdir(exist_ok=True)
    for number, step in enumerate(section.steps):
        if step.kind in ("file", "edit"):
            staged = staging / f"{number}-{Path(step.path).name}"
            staged.write_text(step.text)
            target = repo / step.path
            lines.append(f"mkdir -p '{target.parent}' && cp '{staged}' '{target}'" if step.kind == "file"
                         else f"python -c '{MERGE}' '{target}' '{staged}'")
        else:
            index = len(commands)
            commands.append(step)
            command = step.text if step.kind == "transcript" else with_placeholders(with_budget(step.text))
            codes = "|".join(map(str, step.codes)) if step.kind == "run" else "*"
            lines += [f"printf '\\n@@step {index}\\n'", command,
                      f"_rc=$?; printf '\\n@@rc {index} %s\\n' $_rc; case $_rc in {codes}) ;; *) exit 1;; esac"]
    return "\n".join(line for line in lines if line) + "\n", commands


def uses(section: Section) -> None:
    """Skip (fail in CI) a section that needs a service when the service is not running."""
    text = " ".join(s.text for s in section.commands)
    if "launcher=slurm" in text:
        require_slurm()
    if "postgresql" in text:
        require_postgres()


def given(section: Section, repo: Path) -> None:
    text = " ".join(s.text for s in section.steps if s.kind != "file")
    home = Path(environment(repo)["HOME"])
    for name, write in GIVEN.items():
        if re.search(rf"\bcp\s+\S+\s+{re.escape(name)}(?![\w/.-])", text):
            continue  # the section's own command writes it
        if re.search(rf"(?<![\w/.-]){re.escape(name)}(?![\w/.-])", text):
            target = home / name[2:] if name.startswith("~/") else repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            write(target)


def run_section(section: Section, repo: Path) -> list[Result]:
    """Run a section's steps in ``repo``; fail at the first command whose exit status the README
    does not document, showing its output."""
    given(section, repo)
    body, commands = script(section, repo)
    proc = subprocess.run(["bash", "-c", body], cwd=repo, env=environment(repo), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    results, chunks = [], re.split(r"\n@@step (\d+)\n", proc.stdout)
    for index, chunk in zip(chunks[1::2], chunks[2::2], strict=True):
        step = commands[int(index)]
        output, _, rc = chunk.rpartition(f"\n@@rc {index} ")
        ran = step.text if step.kind == "transcript" else with_placeholders(with_budget(step.text))
        if not rc.strip():  # the script stopped inside this command
            raise AssertionError(f"README {section.title!r}: `{ran}` did not finish:\n{chunk[-4000:]}")
        results.append(Result(step.text, ran, int(rc.split()[0]), output))
        code = results[-1].rc
        if step.kind == "run" and code not in step.codes:
            raise AssertionError(f"README {section.title!r}: `{ran}` exited {code} (the README documents "
                                 f"{' or '.join(map(str, step.codes))}):\n{output[-5000:]}")
    assert len(results) == len(commands), f"README {section.title!r}: the script stopped early:\n{proc.stdout[-3000:]}"
    return results


# -- what each section documents -------------------------------------------------------------
def runs(repo: Path, task: str = "train") -> list[Path]:
    folder = repo / "logs" / task / "runs"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def metrics_of(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())


def statuses(sweep: Path) -> list[str]:
    with (sweep / "sweep_summary.csv").open() as f:
        return sorted(row["status"] for row in csv.DictReader(f))


def trials(sweep: Path) -> int:
    import optuna

    return len(optuna.load_study(study_name=None, storage=f"sqlite:///{sweep / 'optuna.db'}").trials)


def result(results: list[Result], start: str) -> Result:
    """The one result of the command that starts with ``start``, as the README writes it."""
    found = [r for r in results if r.line.startswith(start)]
    assert len(found) == 1, f"{len(found)} commands start with {start!r}"
    return found[0]


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def check_top(repo: Path, results: list[Result]) -> None:
    (run,) = runs(repo)
    assert "test/acc" in metrics_of(run)


def check_everyday(repo: Path, results: list[Result]) -> None:
    sweeps = sorted((repo / "logs" / "train" / "multiruns").iterdir())
    grids = [d for d in sweeps if (d / "sweep_summary.csv").exists() and not (d / "optuna.db").exists()]
    assert [statuses(d) for d in grids] == [["completed"] * 4] * 3, grids  # local, parallel, slurm
    assert trials(repo / "logs" / "train" / "multiruns" / "digits_optuna") == 2
    assert "cannot be trained on data 'wine'" in result(results, "expkit validate model=cnn data=wine").output
    assert (runs(repo)[-2] / "export" / "model.onnx").is_file()  # the registered run, before the table's
    with next((repo / "logs" / "predict" / "runs").iterdir()).joinpath("predictions.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 10  # GIVEN new.csv: 10 rows
    assert json.loads((repo / "registry" / "registry.json").read_text())["models"]["digits"]["versions"]
    assert (repo / "my-lab" / "conf").is_dir()


def check_own_code(repo: Path, results: list[Result]) -> None:
    trained = [r for r in runs(repo) if (r / "metrics.json").exists()]
    assert trained and all("val/mse" in metrics_of(r) for r in trained)
    (evaluated,) = runs(repo, "eval")
    assert "test/mse" in metrics_of(evaluated)
    (sweep,) = (repo / "logs" / "train" / "multiruns").iterdir()
    assert statuses(sweep) == ["completed"] * 3
    table = result(results, "expkit runs --metric val/mse").output
    assert "val/mse" in table and "test/mse" in table and re.search(r"\b0\.\d{3}", table), table
    assert ran_stages(results[-1].output), results[-1].output  # my-lab's own dvc repro


def check_task_families(repo: Path, results: list[Result]) -> None:
    regression, language = runs(repo)
    assert {"test/mse", "test/mae", "test/r2"} <= set(metrics_of(regression))
    assert "test/perplexity" in metrics_of(language)
    assert "test/r2" in json.loads((repo / "outputs/dvc/diabetes/evaluate/metrics.json").read_text())


def check_own_data(repo: Path, results: list[Result]) -> None:
    assert [sorted(metrics_of(r)) == sorted(metrics_of(runs(repo)[0])) for r in runs(repo)] == [True] * 3


def check_grid(repo: Path, results: list[Result]) -> None:
    sweeps = sorted((repo / "logs" / "train" / "multiruns").iterdir())
    assert [statuses(d) for d in sweeps] == [["completed"] * 4] * 2


def check_optuna(repo: Path, results: list[Result]) -> None:
    multiruns = repo / "logs" / "train" / "multiruns"
    # n_trials 20 -> 2, then 40 -> 4 (it resumed), then 60 -> 6 two at a time; SLURM and my_search: 2.
    assert [trials(multiruns / name) for name in ("digits_optuna", "digits_slurm", "my_search")] == [6, 2, 2]
    assert (multiruns / "digits_optuna" / "optimization_results.yaml").is_file()


def check_validate(repo: Path, results: list[Result]) -> None:
    assert "ok: 1 job of train is valid (input_shape=(1, 8, 8), num_classes=10)." in results[0].output
    assert "job 1 (model=cnn data=wine)" in results[1].output


def check_dvc(repo: Path, results: list[Result]) -> None:
    assert ran_stages(results[0].output) == {"digits", "prepare", "train", "evaluate", "diabetes_train",
                                             "diabetes_evaluate"}
    assert (repo / "dvc_plots" / "index.html").is_file()
    # On the platform dvc.lock was recorded on, the metrics are the recorded ones, byte for byte.
    recorded = subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=repo, capture_output=True, text=True).stdout
    assert metric_hashes(yaml.safe_load(recorded)) == metric_hashes(yaml.safe_load((repo / "dvc.lock").read_text()))


def metric_hashes(lock: dict) -> dict[str, str]:
    """``{path: md5}`` of every metrics file a ``dvc.lock`` records."""
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])
            if out["path"].endswith("metrics.json")}


def check_params(repo: Path, results: list[Result]) -> None:
    assert (repo / "data" / "processed" / "meta.json").is_file()
    (run,) = runs(repo)
    assert "test/acc" in metrics_of(run)


def check_dvc_exp(repo: Path, results: list[Result]) -> None:
    status = subprocess.run([sys.executable, "-m", "dvc", "queue", "status"], cwd=repo, capture_output=True, text=True,
                            env=environment(repo)).stdout
    assert status.count("Success") == 4, status
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo, capture_output=True,
                           text=True, env=environment(repo)).stdout
    experiments = [rev for entry in json.loads(shown) for exp in entry.get("experiments") or [] for rev in exp["revs"]]
    assert len(experiments) == 6, shown[-2000:]  # 2 run at once, 4 queued


def check_own_dataset(repo: Path, results: list[Result]) -> None:
    assert {"prepare", "train", "evaluate"} <= ran_stages(result(results, "dvc repro").output)
    assert json.loads((repo / "outputs/dvc/evaluate/metrics.json").read_text())["test/acc"] > 0
    log = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=repo, capture_output=True, text=True).stdout
    assert log.strip() == "Train on iris"


def check_reproducible(repo: Path, results: list[Result]) -> None:
    first, second, again, twice, interrupted = runs(repo)
    assert metrics_of(again) == metrics_of(second) and metrics_of(twice) == metrics_of(second)
    where = result(results, "expkit runs --where").output
    assert second.name in where and first.name not in where
    record = json.loads((interrupted / "run.json").read_text())
    assert record["status"] == "completed" and len(record["segments"]) == 2, record
    with (interrupted / "history.csv").open() as f:
        assert max(int(row["epoch"]) for row in csv.DictReader(f)) == 299  # epochs 0..299, across both segments


def check_registry(repo: Path, results: list[Result]) -> None:
    versions = json.loads((repo / "registry" / "registry.json").read_text())["models"]["digits"]["versions"]
    assert len(versions) == 2
    assert (repo / "digits-v1" / "model.ckpt").is_file() and (repo / "digits-v2" / "model.ckpt").is_file()
    tags = subprocess.run(["git", "tag"], cwd=repo, capture_output=True, text=True).stdout.split()
    assert "digits@v2.0.0" in tags
    assert result(results, "expkit promote logs/train/runs/<run> --stage production").rc == 0  # v1 meets the KPIs
    promoted = result(results, "expkit promote digits:v2").rc == 0
    assert ("digits#production#1" in tags) == promoted, tags
    stages = json.loads((repo / "registry" / "registry.json").read_text())["models"]["digits"]["stages"]
    assert stages == {"production": 2 if promoted else 1}, stages


def check_export(repo: Path, results: list[Result]) -> None:
    (run,) = runs(repo)
    for name in ("model.onnx", "model.pt", "model.onnx.check.json", "model.pt.check.json"):
        assert (run / "export" / name).is_file(), name
    assert (repo / "deploy" / "model.onnx").is_file()


def check_predict(repo: Path, results: list[Result]) -> None:
    new_rows, predict_split, _ = runs(repo, "predict")
    with (new_rows / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {"prediction", "class_index"} <= set(rows[0])  # GIVEN new.csv: 10 rows
    assert (predict_split / "predictions.csv").is_file()
    with (repo / "predictions.csv").open() as f:  # expkit predict ... output=predictions.csv
        assert len(list(csv.DictReader(f))) == 20  # GIVEN new.npz: 20 samples


def check_new_data(repo: Path, results: list[Result]) -> None:
    first, second = (r for r in results if r.line.startswith("dvc repro"))
    assert {"digits", "prepare", "train", "evaluate"} <= ran_stages(first.output)
    assert ran_stages(second.output) == {"prepare", "train", "evaluate"}, second.output  # on the new data
    folder = repo / "outputs" / "dvc" / "train" / "report"
    report = json.loads((folder / "report.json").read_text())
    assert report["production_version"] == 1 and len(report["candidate_per_class"]) == 10
    assert "Per-class metrics" in (folder / "report.md").read_text() and (folder / "per_class.png").stat().st_size > 1000
    assert "promotion would" in result(results, "expkit report").output
    promotion = result(results, "expkit register outputs/dvc/train --name digits && expkit promote digits:v2")
    assert "re-evaluated v1 on the candidate's test data" in promotion.output  # other data: no recorded metrics
    assert (promotion.rc == 0) == report["promotion"]["would_pass"]  # the report said what promote did
    production = json.loads((repo / "registry" / "registry.json").read_text())["models"]["digits"]["stages"]["production"]
    assert production == (2 if promotion.rc == 0 else 1), production
    moved = re.search(r"(\d+) of 64 features moved", result(results, "expkit drift").output)
    assert moved and int(moved[1]) >= 8, result(results, "expkit drift").output  # GIVEN: the top rows brighter


def check_performance(repo: Path, results: list[Result]) -> None:
    assert (repo / "bench-results" / "cpu.md").is_file()


CHECKS: dict[str, Callable[[Path, list[Result]], None]] = {
    "expkit": check_top,
    "Everyday commands": check_everyday,
    "Your own model and data": check_own_code,
    "Task families": check_task_families,
    "Your own data (`data=files`)": check_own_data,
    "Grid sweeps": check_grid,
    "Hyperparameter search with Optuna": check_optuna,
    "Fail before launch: `expkit validate`, clear errors, exit codes": check_validate,
    "Reproducing with DVC": check_dvc,
    "Parameters: `conf/` is the source, `params.yaml` its composition": check_params,
    "Comparing runs with `dvc exp`": check_dvc_exp,
    "Bringing your own dataset": check_own_dataset,
    "Reproducible runs: records, reproduce, resume, browse": check_reproducible,
    "Model registry": check_registry,
    "Export": check_export,
    "Predict": check_predict,
    "New data arrives": check_new_data,
    "Performance": check_performance,
}
ALL = sections(README.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("title", [t for t in ALL if t not in RUN_BY_CI and ALL[t].commands])
def test_readme_section_runs_as_written(title, tmp_path):
    """The section's commands run in a fresh clone as written, exit as documented, and leave what
    the section says (``CHECKS``)."""
    section = ALL[title]
    uses(section)
    repo = clone(tmp_path / "repo")
    results = run_section(section, repo)
    drifted = [f"$ {step.text}\n  exited {result.rc}, printed:\n{result.output[-1500:]}  the README shows:\n{step.expected}"
               for step, result in zip(section.commands, results, strict=True)
               if step.kind == "transcript" and (result.rc == 0 or step.expected not in result.output.splitlines())]
    assert drifted == [], "transcripts that no longer hold:\n" + "\n".join(drifted)
    if title in CHECKS:
        CHECKS[title](repo, results)


@pytest.mark.parametrize("title, reason", [(t, r) for t in ALL for r in ALL[t].skipped])
def test_readme_block_that_needs_what_ci_lacks(title, reason):
    """A block marked ``# needs: WHAT``: not run here, reported as skipped with its reason."""
    pytest.skip(f"README {title!r}: needs {reason}")


def test_quickstart_and_test_commands_are_what_ci_runs():
    """.ci/run runs the Quickstart's and the Tests section's commands as the README writes them."""
    ci = [split_comment(line)[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for title in RUN_BY_CI:
        commands = [s.text.removeprefix("sudo ") for s in ALL[title].commands]
        assert commands, title
        for command in commands:  # the whole command: a line of .ci/run, or its end (`.venv/bin/` before it)
            assert any(line == command or line.endswith(("/" + command, " " + command)) for line in ci), \
                f"README {title!r}: `{command}` is not what .ci/run runs"


def test_every_section_that_runs_is_checked():
    """A section that runs commands says what they leave behind: its outcome is checked."""
    unchecked = [t for t in ALL if t not in RUN_BY_CI and any(s.kind == "run" for s in ALL[t].commands)
                 and t not in CHECKS]
    assert unchecked == []


def test_quoted_files_are_quoted_as_they_are():
    for section in ALL.values():
        for path, text in section.quotes:
            content = (ROOT / path).read_text()
            for line in text.strip().splitlines():
                assert line in content, f"README {section.title!r} quotes {path}, which has no line {line!r}"


def test_every_command_block_is_run_or_marked():
    """No command of the README escapes the harness: every fenced block holding commands is
    ```bash (run, or marked ``# needs:`` with what CI lacks) or a ```text transcript; no other fence."""
    text = README.read_text()
    assert not re.search(r"^\s*~~~", text, re.M), "fence blocks with ``` (tests/test_readme.py reads those)"
    command = re.compile(r"^\s*(\$\s*)?(python|expkit|dvc|git|cp|cd|wandb|sudo|export|timeout|bash) ", re.M)
    untagged = [block for lang, block in blocks(text) if lang not in ("bash", "text") and command.search(block)]
    assert untagged == [], "command blocks must be ```bash (run by tests/test_readme.py): " + repr(untagged[:2])
    reasons = [reason for section in ALL.values() for reason in section.skipped]
    assert reasons and all(re.search(CI_LACKS, reason) for reason in reasons), \
        f"`# needs:` is for what CI lacks ({CI_LACKS}): {reasons}"
