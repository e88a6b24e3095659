"""Start-up work expkit saves a run (issue 7): measured in ``benchmarks/``; here, that each saving
keeps what Hydra, Python and W&B would otherwise do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

TINY = ["data=wine", "model=mlp", "trainer.max_epochs=1", "logger=none", "hydra.job.chdir=false"]

# Runs train.py's main with Hydra's compositions counted; argv[1] picks expkit's entry point or a
# bare @hydra.main app on the same conf/ and task function (Hydra's own path).
COUNTING = """
import sys
import hydra
from hydra._internal.config_loader_impl import ConfigLoaderImpl
import expkit.resolvers
from expkit.paths import config_dir
from expkit.tasks.train import job, main
calls = []
original = ConfigLoaderImpl._load_configuration_impl
def counted(self, *args, **kwargs):
    calls.append(kwargs.get("run_mode"))
    return original(self, *args, **kwargs)
ConfigLoaderImpl._load_configuration_impl = counted
bare = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(job)
entry = main if sys.argv.pop(1) == "expkit" else bare
sys.argv[0] = {train!r}
try:
    entry()
finally:
    print("COMPOSITIONS", len(calls))
"""


def _run_counted(path: str, run_dir: Path, cwd: Path) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", COUNTING.format(train=str(ROOT / "train.py")), path, *TINY, f"hydra.run.dir={run_dir}"],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split("COMPOSITIONS")[-1])


def test_a_single_run_composes_its_config_exactly_as_hydra_does(tmp_path):
    """expkit's entry point is a plain Hydra app: the same compositions as a bare Hydra app on the
    same conf/ and task (no patched loader), and the same .hydra/ files."""
    ours = _run_counted("expkit", tmp_path / "ours", tmp_path)
    hydras = _run_counted("hydra", tmp_path / "hydras", tmp_path)
    assert ours == hydras
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        mine = (tmp_path / "ours" / ".hydra" / name).read_text().replace(str(tmp_path / "ours"), "RUN_DIR")
        theirs = (tmp_path / "hydras" / ".hydra" / name).read_text().replace(str(tmp_path / "hydras"), "RUN_DIR")
        assert mine == theirs, name
    assert "  mode: RUN\n" in (tmp_path / "ours" / ".hydra" / "hydra.yaml").read_text()


def test_a_run_starts_with_garbage_collection_paused_and_trains_with_it_frozen_and_on(tmp_path):
    out = tmp_path / "gc.json"
    run_cli("train.py", *TINY, "+callbacks.gc_probe._target_=tests.probes.GcProbe", f"+callbacks.gc_probe.out={out}",
            cwd=tmp_path)
    states = json.loads(out.read_text())
    assert states["built"]["enabled"] is False  # built during start-up
    assert states["train_start"]["enabled"] is True
    assert states["train_start"]["frozen"] > 100_000  # torch and Lightning's objects, out of every collection


@pytest.mark.parametrize("multirun", [["-m", "seed=0"], ["hydra.mode=MULTIRUN"], ["-m", "seed=0,1", "launcher=parallel"]],
                         ids=["-m", "config", "parallel"])
def test_a_multirun_collects_from_its_pre_launch_check_on_with_torch_frozen(multirun, tmp_path):
    """A sweep's process lives as long as the sweep (waiting on SLURM, Optuna): it must collect once
    its pre-launch check has imported torch and Lightning, whose objects it froze (also for the
    parallel launcher's forked workers, which inherit them)."""
    out = tmp_path / "gc.json"
    run_cli("train.py", *multirun, *TINY, "+callbacks.gc_probe._target_=tests.probes.GcProbe",
            f"+callbacks.gc_probe.out={out}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    built = json.loads(out.read_text())["built"]
    assert built["enabled"] is True
    assert built["frozen"] > 100_000


WANDB_INIT = """
import sys, wandb
from wandb.sdk.wandb_run import Run
from expkit.tracking.wandb import skip_launch_import_when_nothing_staged
skip_launch_import_when_nothing_staged()
skip_launch_import_when_nothing_staged()  # idempotent
published = []
if sys.argv[1] == "staged":
    from wandb.sdk.launch.inputs import internal
    original = internal._publish_job_input
    internal._publish_job_input = lambda job_input, run: published.append(job_input) or original(job_input, run)
    wandb.sdk.launch.manage_wandb_config(include=["lr"])  # W&B Launch stages a job input before init
run = wandb.init(project="startup-test", dir=sys.argv[2], mode="offline", config={"lr": 0.1})
run.finish()
patched = getattr(Run._detect_and_apply_job_inputs, "skips_unstaged", False)
print("RESULT", patched, "wandb.sdk.launch.inputs.internal" in sys.modules, len(published))
"""


def test_wandb_init_imports_wandb_launch_only_when_job_inputs_are_staged(tmp_path):
    """On a W&B release where the patch is verified; on any other, W&B's own method runs. Staged
    inputs are applied either way."""
    import wandb

    from expkit.tracking.wandb import VERIFIED_LAUNCH_HOOK

    def init(case: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-c", WANDB_INIT, case, str(tmp_path)], capture_output=True, text=True,
                              timeout=300, check=True)
        return proc.stdout.split("RESULT")[-1].split()

    verified = str(wandb.__version__ in VERIFIED_LAUNCH_HOOK)
    plain = init("plain")
    assert plain[0] == verified and plain[2] == "0"
    if verified == "True":
        assert plain[1] == "False"  # the import it exists to skip
    assert init("staged") == [verified, "True", "1"]  # W&B's own code applies staged inputs


def test_the_wandb_method_expkit_replaces_has_the_verified_source(monkeypatch):
    """``skip_launch_import_when_nothing_staged`` replaces a private W&B method. On a release listed in
    ``VERIFIED_LAUNCH_HOOK`` the method must have the source (signature included) that was read there,
    or this fails; on any other release it is left as W&B ships it."""
    import hashlib
    import inspect

    import wandb
    from wandb.sdk.wandb_run import Run

    from expkit.tracking.wandb import VERIFIED_LAUNCH_HOOK, skip_launch_import_when_nothing_staged

    installed = Run._detect_and_apply_job_inputs
    original = getattr(installed, "__wrapped__", installed)  # W&B's own, if a test patched it already
    monkeypatch.setattr(Run, "_detect_and_apply_job_inputs", original)  # undone after this test
    skip_launch_import_when_nothing_staged()
    expected = VERIFIED_LAUNCH_HOOK.get(wandb.__version__)
    if expected is None:
        assert Run._detect_and_apply_job_inputs is original
        return
    source = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()
    assert source == expected, (
        f"W&B {wandb.__version__}'s Run._detect_and_apply_job_inputs is not the source the patch was verified on: "
        "read it again, then update VERIFIED_LAUNCH_HOOK or remove the patch")
    assert Run._detect_and_apply_job_inputs.__wrapped__ is original


WANDB_EARLY_SERVICE = """
import sys
from expkit.tracking.wandb import start_service_in_background, wait_for_service
start_service_in_background()
import wandb
from wandb.sdk import wandb_setup
wait_for_service()
started = wandb_setup.singleton()._connection
run = wandb.init(project="startup-test", dir=sys.argv[1])
print("STARTED", started is not None, "USED", started is not None and wandb_setup.singleton()._connection is started)
run.finish()
"""


@pytest.mark.parametrize("mode,expected", [("offline", ["True", "USED", "True"]), ("disabled", ["False", "USED", "False"])])
def test_wandb_service_started_in_the_background_is_the_one_wandb_init_uses(mode, expected, tmp_path):
    """``train.py`` starts W&B's service while it builds the data and model; ``wandb.init`` must use
    that service, not start a second one; with W&B disabled nothing is started."""
    env = {**os.environ, "WANDB_MODE": mode, "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "-c", WANDB_EARLY_SERVICE, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("STARTED")[-1].split() == expected
    assert bool(list(tmp_path.rglob("*.wandb"))) == (mode == "offline")  # the run's offline log
