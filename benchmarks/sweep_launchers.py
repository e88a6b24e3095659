"""Wall time of an 8-job sweep: launcher=parallel against launcher=local, and each launcher's
per-job overhead beyond the training itself.

    python benchmarks/sweep_launchers.py                  # 8 short digits jobs, each launcher once
    python benchmarks/sweep_launchers.py --jobs 8 --repeat 3 --json results.json

Each sweep runs from the command line as a user would (`python train.py -m seed=0,...,7 ...`) in its
own empty folder. A job's own time is what its sweep record measures (from Hydra's job start to
its end: building, fitting, testing, writing). Overhead per job = (wall time x workers - sum of
job times) / jobs: process start, imports, config composition and launching, spread over the jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = ["data=digits", "model=mlp", "trainer.max_epochs=4", "logger=none", "hydra.callbacks.sweep.skip_completed=false"]


def run_sweep(launcher: str, jobs: int, extra: list[str]) -> dict:
    from expkit.launching.sweep import sweep_records

    with tempfile.TemporaryDirectory(prefix=f"bench-{launcher}-") as cwd:
        seeds = ",".join(str(i) for i in range(jobs))
        command = [sys.executable, str(ROOT / "train.py"), "-m", f"seed={seeds}", f"launcher={launcher}", *JOB, *extra]
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{launcher} sweep failed:\n{proc.stderr[-3000:]}")
        (sweep,) = (Path(cwd) / "logs" / "train" / "multiruns").iterdir()
        records = sweep_records(sweep)
    assert len(records) == jobs and all(r["status"] == "completed" for r in records), records
    workers = min(jobs, os.cpu_count() or 1) if launcher == "parallel" else 1  # one per core, no GPU
    busy = sum(r["duration_s"] for r in records)
    return {
        "launcher": launcher,
        "wall_s": round(wall, 2),
        "workers": workers,
        "job_s_mean": round(busy / jobs, 2),
        "overhead_per_job_s": round((wall * workers - busy) / jobs, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="alternate local/parallel this many times")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_args()

    runs = []
    for _ in range(args.repeat):
        for launcher in ("local", "parallel"):
            runs.append(run_sweep(launcher, args.jobs, args.overrides))
            print(json.dumps(runs[-1]), flush=True)
    median = {
        launcher: {key: statistics.median(r[key] for r in runs if r["launcher"] == launcher)
                   for key in ("wall_s", "job_s_mean", "overhead_per_job_s")}
        for launcher in ("local", "parallel")
    }
    summary = {
        "jobs": args.jobs, "cpus": os.cpu_count(), "load_average_before_last_run": os.getloadavg(),
        "median": median, "speedup_parallel_over_local": round(median["local"]["wall_s"] / median["parallel"]["wall_s"], 2),
        "runs": runs,
    }
    print(f"{args.jobs}-job sweep on {os.cpu_count()} CPUs: local {median['local']['wall_s']:.1f} s, "
          f"parallel {median['parallel']['wall_s']:.1f} s -> {summary['speedup_parallel_over_local']}x; "
          f"overhead per job: local {median['local']['overhead_per_job_s']:.2f} s, "
          f"parallel {median['parallel']['overhead_per_job_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
