"""Faithful to Hydra: expkit's entry points accept exactly the command lines a bare Hydra 1.3 app
on the same ``conf/`` accepts, and refuse the others in one line (exit 2, no traceback).

The bare app is ``hydra.main(version_base="1.3", config_path=<expkit's conf>, config_name=...)``
around a task that resolves its config, with expkit's resolvers registered (``conf/hydra`` uses
``${expkit.uid:}``) and, in a multirun, without expkit's own sweep callbacks (they are expkit, not
Hydra). Every form of Hydra's override grammar and every Hydra flag goes through it and through
each entry point, in this process:

- ``train``, ``eval``, ``predict``: the line plus ``--cfg job`` (Hydra parses and composes; the
  task is not run), each against the bare app on its own primary config;
- ``expkit validate``: the line as it is, a full check of the composed config, for lines whose
  config can train (``seed=``, a string, composes but cannot);
- a multirun (``-m``) through ``train`` stops after its ``validate_sweep`` callback composed and
  checked every job (``hydra.callbacks.validate_sweep.only=true``); the bare app runs its jobs.

A few real runs (subprocesses) close the file: a ``glob`` sweep of experiments and a run whose
config interpolates ``${hydra:runtime.output_dir}``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from expkit.paths import config_dir
from tests.conftest import ROOT

ENTRY_POINTS = {  # entry point -> (module whose main() runs it, the primary config it composes)
    "train": ("expkit.tasks.train", "train"),
    "eval": ("expkit.tasks.eval", "eval"),
    "predict": ("expkit.tasks.predict", "predict"),
    "validate": ("expkit.config.command", "train"),
}
EARLY_EXIT = ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--version")
BARE_MULTIRUN = ["~hydra.callbacks.validate_sweep", "~hydra.callbacks.sweep"]  # expkit's callbacks, not Hydra's
VALIDATE_ONLY = ["++hydra.callbacks.validate_sweep.only=true"]


@dataclass(frozen=True)
class Line:
    """A command line, whether a bare Hydra app accepts it, and the entry points it goes through
    (``expkit validate`` only for lines whose config can train)."""

    id: str
    args: tuple[str, ...]
    bare: str  # "accept" or "reject"
    where: tuple[str, ...]


ALL = ("train", "eval", "predict", "validate")
COMPOSE = ("train", "eval", "predict")  # the config's composition: every primary config


def L(id: str, *args: str, bare: str = "accept", where: tuple[str, ...] = ("train",)) -> Line:  # noqa: N802
    return Line(id, args, bare, where)


USER_CONF = "USER_CONF"  # replaced by a config directory of the user's (the fixture below)
CONF_COPY = "CONF_COPY"  # replaced by an absolute path to a copy of expkit's conf/

# The grammar's value forms compose the same in every primary config: train's is compared for
# all, and expkit validate (a full check) runs a sample of each family; groups and flags go
# through every entry point; so does every refusal (each entry point must explain it).
LINES = [
    # -- basic overrides: key=value, +, ++, ~ -------------------------------------------------
    L("set", "seed=1", where=ALL),
    L("set-nested", "trainer.max_epochs=3"),
    L("append", "+trainer.max_steps=10", where=("train", "validate")),
    L("append-new-top-level", "+notes=hello"),
    L("force-existing", "++trainer.max_epochs=3"),
    L("force-new", "++trainer.max_steps=5"),
    L("delete", "~trainer.deterministic", where=("train", "validate")),
    L("delete-if-value", "~trainer.precision=32-true"),
    L("delete-null-value", "~trainer.benchmark", bare="reject"),  # Hydra treats a null value as absent
    L("set-empty-string", "seed="),  # composes; expkit validate refuses the string as a seed
    # -- values: quoting, escapes, primitives, lists, dicts -----------------------------------
    L("quoted-list", "tags=['a b','c,d']", where=("train", "validate")),
    L("double-quoted", '+notes="x y"'),
    L("quoted-escaped-quote", "+notes='it\\'s'"),
    L("quote-in-double-quotes", "+notes=\"it's\""),
    L("escaped-comma", "+notes=a\\,b"),
    L("whitespace-in-value", "+notes=a b"),
    L("mixed-list", "tags=[a,'b c',\"d,e\"]"),
    L("empty-list", "tags=[]"),
    L("list-value", "model.net.hidden_dims=[64,32]", where=("train", "validate")),
    L("nested-list", "+x=[[1,2],[3]]"),
    L("dict", "+extra={a:1,b:[1,2],c:{d:e}}", where=("train", "validate")),
    L("empty-dict", "+empty={}"),
    L("float-exponent", "+f=1e-3"),
    L("float-leading-dot", "+f=-.5e-3"),
    L("int-underscore", "+i=1_000"),
    L("int-plus", "+i=+1"),
    L("inf-and-nan", "+f=inf", "+g=nan"),
    L("bools-and-null", "+b=true", "+c=False", "+n=NULL"),
    L("hex-is-a-string", "seed=0x10"),
    L("quoted-whole-override", "'+x=a b'", bare="reject"),
    L("dict-quoted-key", "+x={a:1,'b c':[2,3]}", bare="reject"),
    # -- interpolations and resolvers ---------------------------------------------------------
    L("interpolation", "+x=${seed}"),
    L("quoted-interpolation", "+x='${seed}'"),
    L("escaped-interpolation", "+x=\\${seed}", where=("train", "validate")),
    L("interpolation-in-list", "tags=[${task_name}]"),
    L("hydra-resolver", "+notes=${hydra:runtime.output_dir}/notes", where=ALL),
    L("hydra-job-name", "+job=${hydra:job.name}", where=("train", "validate")),
    L("env-resolver", "+user=${oc.env:USER,nobody}", where=("train", "validate")),
    L("env-resolver-option", "model=${oc.env:EXPKIT_UNSET_VARIABLE,cnn}", where=ALL),
    L("env-resolver-option-sweep", "-m", "seed=0,1", "model=${oc.env:EXPKIT_UNSET_VARIABLE,cnn}", where=("train", "validate")),
    L("now-resolver", "+when=${now:%Y-%m-%d}", where=("train", "validate")),
    L("decode-resolver", "+x=${oc.decode:'[1,2]'}"),
    L("select-resolver", "+x=${oc.select:seed,1}"),
    L("dict-keys-resolver", "+x=${oc.dict.keys:data}"),
    # -- functions in values (no -m) ----------------------------------------------------------
    L("cast-str", "+s=str(42)"),
    L("cast-int", "seed=int(3.0)", where=("train", "validate")),
    L("cast-float", "+f=float(1)"),
    L("cast-bool", "+b=bool(1)"),
    L("sort-list", "tags=sort([b,a])"),
    L("shuffle-list", "tags=shuffle([a,b])"),
    L("json-str-not-in-hydra-1.3", "+j=json_str({a:1})", bare="reject"),
    L("extend-list-not-in-hydra-1.3", "model.net.hidden_dims=extend_list(16)", bare="reject"),
    # -- config groups --------------------------------------------------------------------------
    L("group", "model=cnn", where=ALL),
    L("nested-group", "model=mlp", "model/optimizer=sgd", where=ALL),
    L("group-list", "logger=[csv,tensorboard]", where=ALL),
    L("group-none", "logger=none", where=COMPOSE),
    L("optional-group", "experiment=digits_cnn", where=("train", "validate")),
    L("debug-group", "debug=fdr", where=("train", "validate")),
    L("search-group", "hparams_search=digits_optuna"),
    L("launcher-group", "launcher=parallel", "hydra.launcher.n_jobs=2", where=("train", "validate")),
    L("data-group", "data=wine", where=ALL),
    L("trainer-group", "trainer=cpu", where=ALL),
    L("group-at-package-append", "+data@extra_data=wine", where=("train", "validate")),
    L("group-at-package-not-in-defaults", "model/optimizer@model.optimizer=sgd", bare="reject"),
    L("delete-group", "~model/scheduler", where=("train", "validate")),
    L("group-null", "logger=null", bare="reject"),  # Hydra: ValueError, a traceback
    # -- Hydra's own groups and settings ------------------------------------------------------
    L("hydra-launcher-basic", "hydra/launcher=basic", where=COMPOSE),
    L("hydra-launcher-submitit-local", "hydra/launcher=submitit_local"),
    L("hydra-launcher-submitit-slurm", "hydra/launcher=submitit_slurm", where=("train", "validate")),
    L("hydra-sweeper", "hydra/sweeper=basic"),
    L("hydra-sweeper-optuna", "hydra/sweeper=expkit_optuna"),
    L("hydra-job-logging", "hydra/job_logging=disabled"),  # composes; conf/hydra's log file needs job_logging's handlers
    L("hydra-logging", "hydra/hydra_logging=disabled"),
    L("hydra-chdir", "hydra.job.chdir=true", where=("train", "validate")),
    L("hydra-run-dir", "hydra.run.dir=out/x", where=COMPOSE),
    L("hydra-verbose", "hydra.verbose=true"),
    L("hydra-job-name-set", "hydra.job.name=foo"),
    L("hydra-searchpath", "hydra.searchpath=[pkg://expkit.conf]", where=ALL),
    L("hydra-no-output-subdir", "hydra.output_subdir=null"),
    L("hydra-env-append", "+hydra.job.env_set.FOO=bar", where=("train", "validate")),
    # -- flags ----------------------------------------------------------------------------------
    L("cfg-job", "--cfg", "job", where=ALL),
    L("cfg-hydra", "--cfg", "hydra", where=ALL),
    L("cfg-all", "--cfg", "all", where=COMPOSE),
    L("cfg-short", "-c", "job", where=COMPOSE),
    L("cfg-resolve", "--cfg", "job", "--resolve", where=ALL),
    L("cfg-resolve-hydra-resolver", "--cfg", "job", "--resolve", "+notes=${hydra:runtime.output_dir}/notes", where=COMPOSE),
    L("cfg-package", "--cfg", "job", "--package", "trainer", where=ALL),
    L("cfg-package-short", "--cfg", "job", "-p", "trainer", where=COMPOSE),
    L("cfg-package-hydra", "--cfg", "hydra", "--package", "hydra.launcher", where=COMPOSE),
    L("info", "--info", where=ALL),
    L("info-config", "--info", "config", where=COMPOSE),
    L("info-defaults", "--info", "defaults", where=COMPOSE),
    L("info-defaults-tree", "--info", "defaults-tree", where=ALL),
    L("info-plugins", "--info", "plugins"),
    L("info-searchpath", "-i", "searchpath", where=COMPOSE),
    L("help", "--help", where=COMPOSE),
    L("hydra-help", "--hydra-help", where=COMPOSE),
    L("version", "--version", where=COMPOSE),
    L("run-flag", "--run", "seed=2", where=("validate",)),  # --run excludes --cfg: a real run
    L("config-dir", "--config-dir", USER_CONF, "model=mine", where=ALL),
    L("config-dir-short", "-cd", USER_CONF, "experiment=quick", where=("train", "validate")),
    L("config-name", "--config-name", "eval", "ckpt_path=x.ckpt", where=COMPOSE),
    L("config-name-short", "-cn", "predict", "ckpt_path=x.ckpt", where=COMPOSE),
    L("config-path-absolute", "--config-path", CONF_COPY, where=ALL),
    L("config-path-short", "-cp", CONF_COPY, "-cn", "train", where=COMPOSE),
    # -- multirun sweeps (train: composed and validated job by job, then stopped) ---------------
    L("sweep-list", "-m", "seed=0,1", where=("train", "validate")),
    L("sweep-long-flag", "--multirun", "seed=0,1"),
    L("sweep-choice", "-m", "seed=choice(0,1)"),
    L("sweep-range-step", "-m", "seed=range(0,4,step=2)"),
    L("sweep-glob-exclude", "-m", "experiment=glob(*,exclude=[text*,diabetes*])", where=("train", "validate")),
    L("sweep-sort", "-m", "seed=sort(3,1)"),
    L("sweep-shuffle", "-m", "seed=shuffle(0,1)"),
    L("sweep-tag", "-m", "seed=tag(a,choice(0,1))"),
    L("sweep-product", "-m", "model=mlp,transformer", "data=wine,digits"),
    L("sweep-lists", "-m", "logger=[csv],[none]"),
    L("sweep-append", "-m", "+notes=a,b"),
    L("sweep-nested-group", "-m", "model/optimizer=adamw,sgd"),
    L("sweep-launcher-and-dir", "-m", "seed=0,1", "hydra/launcher=basic", "hydra.sweep.dir=sweeps/x"),
    # values the launcher sets when it launches a job (hydra.job.num, the job's directory)
    L("sweep-subdir-job-num", "-m", "seed=1,2", "hydra.sweep.subdir=j${hydra.job.num}_${seed}", where=("train", "validate")),
    L("sweep-dir-interpolated", "-m", "seed=1,2", "hydra.sweep.dir=sweeps/${task_name}_${now:%H}", where=("train", "validate")),
    L("sweep-hydra-resolver-job", "-m", "seed=0,1", "+notes=${hydra:job.num}:${hydra:runtime.output_dir}", where=("train", "validate")),
    L("sweep-interval-basic-sweeper", "-m", "model.optimizer.lr=interval(0.001,0.01)", bare="reject", where=("train", "validate")),
    # -- what Hydra refuses: every entry point refuses it, in one line -----------------------------
    L("no-key", "=5", bare="reject", where=ALL),
    L("unclosed-list", "seed=[1,", bare="reject", where=ALL),
    L("unknown-option", "model=nosuch", bare="reject", where=ALL),
    L("unknown-key", "nosuchkey=1", bare="reject", where=ALL),
    L("append-existing", "+seed=1", bare="reject", where=ALL),
    L("delete-missing", "~nokey", bare="reject", where=ALL),
    L("sweep-without-multirun", "seed=0,1", bare="reject", where=ALL),
    L("interval-without-multirun", "model.optimizer.lr=interval(0.001,0.01)", bare="reject"),
    L("glob-without-multirun", "model=glob(*)", bare="reject"),
    L("set-missing-dict-key", "hydra.job.env_set.FOO=bar", bare="reject"),
    L("cfg-unknown", "--cfg", "bogus", bare="reject", where=ALL),
    L("info-unknown", "--info", "bogus", bare="reject"),
    L("config-name-unknown", "-cn", "nosuch", bare="reject", where=ALL),
    L("config-path-missing", "-cp", "/nonexistent", bare="reject", where=ALL),
    L("config-dir-missing", "-cd", "/nonexistent", bare="reject", where=ALL),
    L("hydra-launcher-unknown", "hydra/launcher=nosuch", bare="reject", where=ALL),
    L("multirun-and-cfg", "-m", "--cfg", "job", bare="reject", where=ALL),
    L("package-not-in-config", "--cfg", "job", "--package", "nosuch", bare="reject", where=ALL),
]

# What is not yet faithful, by (line, entry point): strict, so a fix shows up as a failure here.
_HYDRA_VALUE_ERROR = ("Hydra raises a ValueError here (its defaults list, or its flags), which expkit does not explain: a "
                      "traceback (app.py explain: handle Hydra's ValueError)")
_ARGPARSE = "Hydra's argparse prints its usage block before the error line (app.py: one line, exit 2)"
_UNEXPLAINED = "Hydra prints its own message and exits 1 (app.py explain: the --package/--cfg errors)"
KNOWN: dict[tuple[str, str], str] = {
    **{("package-not-in-config", entry): _UNEXPLAINED for entry in ALL},
}


def run_in_process(main, argv: list[str]) -> tuple[int, str]:
    """Run an app's ``main`` with ``sys.argv = argv``: its exit code (1 for an exception that
    escapes, as Python's would be) and what it printed to stderr."""
    saved, err = sys.argv, io.StringIO()
    sys.argv = argv
    code: int
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # noqa: BLE001 - a traceback, as the command line would show it
        code = 1
        err.write(f"Traceback (most recent call last):\n{type(exc).__name__}: {exc}\n")
    finally:
        sys.argv = saved
    return code, err.getvalue()


def _resolve_config(cfg) -> None:
    """A plain app's task: it reads (resolves) its whole config."""
    from omegaconf import OmegaConf

    OmegaConf.to_container(cfg, resolve=True)


def bare(config_name: str, args: list[str]) -> tuple[int, str]:
    import hydra

    import expkit.resolvers  # noqa: F401  (conf/hydra uses ${expkit.uid:})

    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(_resolve_config)
    extra = BARE_MULTIRUN if {"-m", "--multirun"} & set(args) else []
    return run_in_process(app, ["bare.py", *args, *extra])


def entry(name: str, args: list[str]) -> tuple[int, str]:
    import importlib

    module, _ = ENTRY_POINTS[name]
    if name == "validate":
        from expkit.config.command import main

        return run_in_process(lambda: main(list(args)), ["expkit-validate", *args])
    return run_in_process(importlib.import_module(module).main, [f"expkit-{name}", *args])


def materialize(line: Line, paths: dict[str, str]) -> list[str]:
    return [paths.get(a, a) for a in line.args]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """A user's config directory (a model option, an experiment) and a copy of expkit's conf/."""
    root = tmp_path_factory.mktemp("conformance")
    (root / "user_conf" / "model").mkdir(parents=True)
    (root / "user_conf" / "model" / "mine.yaml").write_text("defaults:\n  - mlp\n  - _self_\nnet:\n  hidden_dims: [16]\n")
    (root / "user_conf" / "experiment").mkdir()
    (root / "user_conf" / "experiment" / "quick.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: mine\ntrainer:\n  max_epochs: 2\n")
    shutil.copytree(config_dir(), root / "conf_copy")
    return {USER_CONF: str(root / "user_conf"), CONF_COPY: str(root / "conf_copy")}


_bare_results: dict[tuple[str, tuple[str, ...]], tuple[int, str]] = {}


def bare_cached(config_name: str, args: list[str]) -> tuple[int, str]:
    key = (config_name, tuple(args))
    if key not in _bare_results:
        _bare_results[key] = bare(config_name, args)
    return _bare_results[key]


def cases() -> list:
    found = []
    for line in LINES:
        for name in line.where:
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN[(line.id, name)])] if (line.id, name) in KNOWN else []
            found.append(pytest.param(line, name, id=f"{line.id}-{name}", marks=marks))
    return found


@pytest.mark.parametrize(("line", "name"), cases())
def test_same_command_lines_accepted_as_bare_hydra(line: Line, name: str, paths, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run directories of the bare app's real runs go here
    args = materialize(line, paths)
    multirun = bool({"-m", "--multirun"} & set(args))
    config_name = "train" if name == "validate" else ENTRY_POINTS[name][1]
    if name == "validate":
        bare_args, ours = args, args
    elif multirun:
        bare_args, ours = args, [*args, *VALIDATE_ONLY]
    else:
        early = any(a in EARLY_EXIT for a in args)
        bare_args = ours = args if early else [*args, "--cfg", "job"]
    expected, bare_err = bare_cached(config_name, bare_args)
    if name == line.where[0] and not (name == "validate" and multirun):  # the table says what the line is
        assert (expected == 0) == (line.bare == "accept"), f"bare Hydra: exit {expected}\n{bare_err[-1500:]}"
    code, err = entry(name, ours)
    assert (code == 0) == (expected == 0), (
        f"bare Hydra exit {expected}, {name} exit {code}\n--- bare:\n{bare_err[-1200:]}\n--- {name}:\n{err[-1200:]}")
    if code != 0:  # refused as expkit refuses: exit 2, one line, no traceback
        lines = [x for x in err.splitlines() if x.startswith("error: ")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]


# --------------------------------------------------------------------------------------------
# Every entry point takes the same group overrides and config directories
# --------------------------------------------------------------------------------------------
def group_lines(paths: dict[str, str]) -> list[list[str]]:
    root = config_dir()
    groups: dict[str, str] = {}
    for file in sorted(root.rglob("*.yaml")):
        rel = file.relative_to(root)
        if len(rel.parts) > 1 and rel.parts[0] != "hydra":
            groups.setdefault("/".join(rel.parts[:-1]), rel.stem)
    # kpis is selected by a model config (model/*.yaml): with a model, on every entry point.
    lines = [[f"{group}={option}"] for group, option in groups.items() if "/" not in group and group != "kpis"]
    return [*lines, ["model=mlp", "kpis=regression"], ["--config-dir", paths[USER_CONF], "model=mine"]]


def test_every_entry_point_takes_the_same_groups_and_config_dirs(paths):
    accepted = {name: {" ".join(line) for line in group_lines(paths) if entry(name, [*line, "--cfg", "job"])[0] == 0}
                for name in ("train", "eval", "predict")}
    assert accepted["eval"] == accepted["train"] and accepted["predict"] == accepted["train"], accepted


def test_relative_config_path_is_relative_to_the_script(tmp_path):
    """``python train.py -cp conf``: Hydra reads ``conf`` next to the script that declares the app."""
    bare_script = tmp_path / "bare.py"
    bare_script.write_text(
        "import hydra, expkit.resolvers\n"
        "@hydra.main(version_base='1.3', config_path='unused', config_name='train')\n"
        "def main(cfg):\n    pass\nmain()\n")
    (tmp_path / "conf").symlink_to(config_dir())
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    for script in (bare_script, ROOT / "train.py"):  # ROOT/conf is expkit's conf/ too
        proc = subprocess.run([sys.executable, str(script), "-cp", "conf", "--cfg", "job"], cwd=tmp_path / "..",
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr[-1500:]}"


# --------------------------------------------------------------------------------------------
# Real runs: what only a running job shows
# --------------------------------------------------------------------------------------------
def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_glob_sweep_of_experiments_runs(tmp_path):
    """lightning-hydra-template's own sweep test, on two of the experiments."""
    proc = run(["-m", "experiment=glob(*,exclude=[text*,diabetes*])", "debug=fdr"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = next(tmp_path.rglob("sweep_summary.csv")).read_text()
    assert summary.count(",completed,") == 2, summary


def test_hydra_resolver_in_a_job_config_resolves_in_the_run(tmp_path):
    proc = run(["+notes=${hydra:runtime.output_dir}/notes", "debug=fdr", "data=wine"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = next(p for p in tmp_path.rglob("config.yaml") if p.parent.name != ".hydra")  # the run's resolved config
    assert f"notes: {resolved.parent.resolve()}/notes" in resolved.read_text()
