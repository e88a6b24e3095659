"""What expkit's two start-up savings earn: the garbage collector paused while a run imports
(``expkit.startup``) and W&B Launch's import skipped in ``wandb.init`` (``expkit.tracking.wandb``).

    python benchmarks/startup_savings.py                 # each cost alone, 7 fresh processes each
    python benchmarks/startup_savings.py --end-to-end    # train.py with each saving off in turn

Each cost alone: a fresh process imports what a tracked ``train.py`` run imports with the collector
on, then off; another times the W&B Launch import that ``wandb.init`` does once torch, Lightning
and W&B are loaded. End to end: the benchmark's ``c`` variant (``python train.py``, W&B offline)
on one workload, with neither saving turned off (``on``), the collector left on (``gc``), and
W&B's own ``wandb.init`` (``wandb``), interleaved; CPU time to the end of the first training step
and time until training starts, paired against ``on``. Medians, with [min-max]: on a shared
machine CPU time is the steadier of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Run in a fresh process: argv[1] is "gc-on", "gc-off" or "launch"; prints wall and CPU seconds.
COST = """
import gc, sys, time
case = sys.argv[1]
if case == "launch":
    import torch, pytorch_lightning, wandb, wandb.sdk.wandb_run
    from expkit.tracking.wandb import LAUNCH_INPUTS_MODULE
    gc.collect()
if case == "gc-off":
    gc.disable()
t, c = time.perf_counter(), time.process_time()
if case == "launch":
    __import__(LAUNCH_INPUTS_MODULE)
else:  # what a tracked train.py run imports before it trains
    import torch, pytorch_lightning, wandb, wandb.sdk.wandb_run
    import expkit.tasks.train, expkit.build, expkit.callbacks, expkit.models, expkit.data
print("COST", time.perf_counter() - t, time.process_time() - c)
"""

# train.py with one saving turned off (SAVING_OFF=gc|wandb), expkit's code otherwise unchanged.
TRAIN = """
import contextlib, os, sys
import expkit.startup, expkit.tracking.wandb
off = os.environ.get("SAVING_OFF")
if off == "gc":
    expkit.startup.paused_collection = contextlib.nullcontext
elif off == "wandb":
    expkit.tracking.wandb.skip_launch_import_when_nothing_staged = lambda: None
sys.argv[0] = os.environ["TRAIN_PY"]
from expkit.tasks.train import main
main()
"""


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):+.3f} [{min(values):+.3f} to {max(values):+.3f}]"


def costs(reps: int, env: dict) -> dict:
    out: dict[str, list] = {"gc-on": [], "gc-off": [], "launch": []}
    for _ in range(reps):
        for case in out:
            proc = subprocess.run([sys.executable, "-c", COST, case], env=env, capture_output=True, text=True, check=True)
            out[case].append([float(v) for v in proc.stdout.split("COST")[-1].split()])
    gc_saving = [on[1] - off[1] for on, off in zip(out["gc-on"], out["gc-off"], strict=True)]
    print(f"imports of a tracked run, CPU s: collector on {statistics.median(v[1] for v in out['gc-on']):.3f}, "
          f"paused {statistics.median(v[1] for v in out['gc-off']):.3f}; saving {spread(gc_saving)}")
    print(f"W&B Launch import in wandb.init, CPU s: {spread([v[1] for v in out['launch']])} "
          f"(wall {spread([v[0] for v in out['launch']])})")
    return {"raw": out, "gc_saving_cpu_s": gc_saving}


def end_to_end(workload: str, reps: int, env: dict) -> dict:
    from benchmarks.run import run_process, step_metrics, variant_argv
    from benchmarks.workloads import workloads

    w = workloads("cpu")[workload]
    work = Path(tempfile.mkdtemp(prefix="expkit-savings-"))
    arms = ("on", "gc", "wandb")
    raw: dict[str, list] = {arm: [] for arm in arms}
    for rep in range(reps):
        for arm in arms if rep % 2 == 0 else arms[::-1]:  # alternate the order: drift hits every arm
            tag = f"{arm}-{rep}"
            argv = variant_argv("c", w, "cpu", False, work / tag)
            argv[1:2] = ["-c", TRAIN]
            out = work / f"{tag}.json"
            res = run_process(argv, work, {**env, "SAVING_OFF": "" if arm == "on" else arm, "TRAIN_PY": str(ROOT / "train.py"),
                                           "BENCH_OUT": str(out)}, work / f"{tag}.log")
            raw[arm].append({"wall_s": res["wall_s"], **step_metrics(json.loads(out.read_text()), 5)})
            print(f"[{rep + 1}/{reps}] {arm}: training starts {raw[arm][-1]['training_start_s']:.2f} s, "
                  f"CPU to first step end {raw[arm][-1]['first_step_cpu_s']:.2f} s", flush=True)
    for arm in arms[1:]:
        for key in ("first_step_cpu_s", "training_start_s", "wall_s"):
            print(f"{workload}, {arm} saving off - on, {key}: "
                  f"{spread([m[key] - o[key] for m, o in zip(raw[arm], raw['on'], strict=True)])}")
    return raw


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--end-to-end", action="store_true", help="train.py with each saving off in turn")
    p.add_argument("--workload", default="mlp_digits", help="for --end-to-end: a workload of benchmarks/workloads.py")
    p.add_argument("--out", type=Path, help="write the raw numbers here (JSON)")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HYDRA_FULL_ERROR": "1"}
    result = end_to_end(args.workload, args.reps, env) if args.end_to_end else costs(args.reps, env)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
