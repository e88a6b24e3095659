"""Wall time of an 8-job grid sweep on each launcher (local = sequential, parallel, SLURM), and each
launcher's per-job overhead beyond the training itself. "local-1thread" is the sequential sweep
with OMP_NUM_THREADS=1, the thread count every parallel worker and SLURM job (cpus_per_task=1) has.

    python benchmarks/sweep_launchers.py                  # 8 digits MLP jobs of 20 epochs, each launcher once
    python benchmarks/sweep_launchers.py --repeat 3 --json benchmarks/results/sweep_launchers.json
    python benchmarks/sweep_launchers.py --epochs 4       # tiny jobs: start-up and launching dominate
    python benchmarks/sweep_launchers.py --launchers local,parallel   # without a SLURM cluster

Each sweep runs from the command line as a user would (`python train.py -m seed=0,...,7 ...`) in its
own empty folder. A job's own time is what its sweep record measures (from Hydra's job start to
its end: building, fitting, testing, writing). With W workers running jobs side by side (local: 1;
parallel: one per CPU core; SLURM: the node's CPUs / cpus_per_task), the overhead per job is
(wall time x W - sum of job times) / jobs: process starts, imports, config composition and
validation, submission and scheduling (SLURM), spread over the jobs. The fixed part is also timed
from the records: from the command's start to the first job's start, and from the last job's end to
the command's exit. Sweeps of one kind run one at a time, launchers alternate between repetitions,
and the medians are reported, with the load average before and after each sweep (the machine may be
shared: compare runs made at the same load).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = ["data=digits", "model=mlp", "logger=none", "trainer=cpu", "hydra.callbacks.sweep.skip_completed=false"]
SLURM_CPUS_PER_TASK = 1
# What each variant adds to the command line, and to its environment. "local-1thread" is the
# sequential sweep with one torch thread, as each parallel worker and SLURM job has: on a busy
# machine torch's threads (one per core) wait on each other, which slows the default sweep.
LAUNCHERS: dict[str, tuple[list[str], dict[str, str]]] = {
    "local": (["launcher=local"], {}),
    "local-1thread": (["launcher=local"], {"OMP_NUM_THREADS": "1"}),
    "parallel": (["launcher=parallel"], {}),
    "slurm": (["launcher=slurm", f"hydra.launcher.cpus_per_task={SLURM_CPUS_PER_TASK}", "hydra.launcher.timeout_min=30"], {}),
}


def slurm_cpus() -> int | None:
    """CPUs of the SLURM cluster's default partition (None: no cluster answers)."""
    if shutil.which("sinfo") is None:
        return None
    proc = subprocess.run(["sinfo", "-h", "-o", "%C"], capture_output=True, text=True)  # allocated/idle/other/total
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return int(proc.stdout.split()[0].split("/")[-1])


def workers(launcher: str, jobs: int) -> int:
    """Jobs that run side by side: local one; parallel one per core (no GPU); SLURM as CPUs allow."""
    if launcher == "parallel":
        return min(jobs, os.cpu_count() or 1)
    if launcher == "slurm":
        return min(jobs, max(1, (slurm_cpus() or 1) // SLURM_CPUS_PER_TASK))
    return 1


def run_sweep(launcher: str, jobs: int, epochs: int, extra: list[str]) -> dict:
    from expkit.launching.sweep import sweep_records

    with tempfile.TemporaryDirectory(prefix=f"bench-{launcher}-") as cwd:
        seeds = ",".join(str(i) for i in range(jobs))
        args, variables = LAUNCHERS[launcher]
        command = [sys.executable, str(ROOT / "train.py"), "-m", f"seed={seeds}", *args, *JOB,
                   f"trainer.max_epochs={epochs}", *extra]
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **variables}
        load = os.getloadavg()[0]
        start, started = time.perf_counter(), time.time()
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        ended = started + wall
        if proc.returncode != 0:
            raise SystemExit(f"{launcher} sweep failed:\n{proc.stderr[-3000:]}")
        (sweep,) = (Path(cwd) / "logs" / "train" / "multiruns").iterdir()
        records = sweep_records(sweep)
    assert len(records) == jobs and all(r["status"] == "completed" for r in records), records
    side_by_side = workers(launcher, jobs)
    busy = sum(r["duration_s"] for r in records)
    return {
        "launcher": launcher,
        "wall_s": round(wall, 2),
        "workers": side_by_side,
        "job_s_mean": round(busy / jobs, 2),
        "overhead_per_job_s": round((wall * side_by_side - busy) / jobs, 2),
        # The fixed cost, from the records' clocks: the command's start to its first job's start
        # (imports, composing and checking the sweep, starting workers or submitting), and its last
        # job's end to the command's exit (summary, joining the workers, the interpreter's exit).
        "before_first_job_s": round(min(r["started"] for r in records) - started, 2),
        "after_last_job_s": round(ended - max(r["finished"] for r in records), 2),
        "load_average_before": round(load, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20, help="epochs of each job (digits MLP)")
    parser.add_argument("--repeat", type=int, default=1, help="run every launcher this many times, alternating")
    parser.add_argument("--launchers", default=",".join(LAUNCHERS),
                        help=f"comma-separated, from {', '.join(LAUNCHERS)} (slurm is skipped without a cluster)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_args()

    launchers = [name.strip() for name in args.launchers.split(",") if name.strip()]
    unknown = set(launchers) - set(LAUNCHERS)
    if unknown or "local" not in launchers:
        parser.error(f"--launchers: choose from {', '.join(LAUNCHERS)}, local included (the baseline)")
    if "slurm" in launchers and slurm_cpus() is None:
        print("no SLURM cluster answers (sinfo): skipping launcher=slurm", file=sys.stderr)
        launchers.remove("slurm")

    runs = []
    for _ in range(args.repeat):
        for launcher in launchers:
            runs.append(run_sweep(launcher, args.jobs, args.epochs, args.overrides))
            print(json.dumps(runs[-1]), flush=True)
    median = {
        launcher: {key: statistics.median(r[key] for r in runs if r["launcher"] == launcher)
                   for key in ("wall_s", "job_s_mean", "overhead_per_job_s", "before_first_job_s", "after_last_job_s")}
        for launcher in launchers
    }
    ratio = {launcher: round(median[launcher]["wall_s"] / median["local"]["wall_s"], 2) for launcher in launchers}
    summary = {"jobs": args.jobs, "epochs": args.epochs, "cpus": os.cpu_count(), "median": median,
               "wall_over_sequential": ratio, "runs": runs}
    print(f"{args.jobs}-job grid, {args.epochs} epochs a job, on {os.cpu_count()} CPUs (medians of {args.repeat}):")
    for launcher in launchers:
        m = median[launcher]
        print(f"  {launcher:13s} wall {m['wall_s']:6.1f} s  ({ratio[launcher]:.2f} x sequential)  "
              f"job {m['job_s_mean']:.1f} s  overhead per job {m['overhead_per_job_s']:.2f} s  "
              f"before the first job {m['before_first_job_s']:.1f} s, after the last {m['after_last_job_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
