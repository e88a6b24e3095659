"""The benchmark: expkit's ``train.py`` against a hand-written loop and plain Lightning.

    python benchmarks/run.py                       # CPU, 5 repetitions -> benchmarks/results/cpu.{md,json}
    python benchmarks/run.py --quick               # one epoch, one repetition (smoke test)
    python benchmarks/run.py --device cuda         # bf16-mixed, channels-last CNNs (+ --compile); a, a_prefetched,
                                                   # b, c; up to 3 repetitions, none started that would end after 285 s
    python benchmarks/run.py --device cuda --dry-run   # print the commands and device settings only

Every workload (``benchmarks/workloads.py``) runs as separate processes, interleaved within each
repetition, on the same network, data, batch size, steps and seed:

- ``a``: a hand-written PyTorch loop (``handloop.py``), with the DataLoader;
- ``a_prefetched``: the same loop on batches built before the epoch (step time without data loading);
- ``b``: plain Lightning ``Trainer.fit`` (``plain_lightning.py``: no logger, checkpoint, progress bar);
- ``b_wandb``: the same with Lightning's ``WandbLogger`` (offline): plain Lightning tracked in W&B;
- ``c``: ``python train.py`` with expkit's defaults (W&B offline, the default callbacks), timed by a
  ``StepTimer`` callback injected with ``+callbacks.bench._target_=benchmarks.timing.StepTimer``.

Per process: whole-process wall time, time to the end of the first training step, steady-state
step time (mean interval between consecutive steps of an epoch after warm-up: compute, data
fetching and per-step hooks; validation and checkpoints between epochs are in the wall time only),
the part of it outside the step (data fetching and the loop), samples (and, for a sequence
workload, predicted tokens) per second of steady state, peak RSS of the training process
(wait4; W&B's service process is not included) and, on a GPU, peak CUDA memory and mean
utilisation. Then start-up: ``train.py --cfg job`` and ``--help`` against a bare Hydra app, and the
unavoidable imports (``imports.py``: from launch to the end of the imports). Medians with
[min-max] over the repetitions; the results are written after every repetition.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.workloads import Workload, workloads  # noqa: E402

VARIANTS = {
    "a": "hand-written PyTorch loop (DataLoader)",
    "a_prefetched": "hand-written loop, batches prefetched to the device (no data loading)",
    "b": "plain Lightning Trainer.fit",
    "b_wandb": "plain Lightning Trainer.fit with WandbLogger (offline)",
    "c": "expkit: python train.py (defaults: W&B offline, default callbacks)",
    "c_no_wandb": "python train.py logger=none",
}
DEFAULT_VARIANTS = ("a", "a_prefetched", "b", "b_wandb", "c", "c_no_wandb")
# A lent GPU's time is short (the whole run must take under 5 minutes): the W&B and logger=none variants, which
# break down start-up, are measured on CPU only.
GPU_VARIANTS = ("a", "a_prefetched", "b", "c")
GPU_BUDGET_S = 285  # a whole GPU run ends within 5 minutes
RATIOS = (("c/a", "a"), ("c/b", "b"), ("c/b_wandb", "b_wandb"), ("c_no_wandb/b", "b"))  # (name, denominator)
RATIO_KEYS = ("wall_s", "first_step_s", "first_step_cpu_s", "step_ms", "step_cpu_ms")
STEP_METRICS = ("wall_s", "cpu_s", "training_start_s", "first_step_s", "first_step_cpu_s", "step_ms", "step_cpu_ms", "outside_step_ms", "steps_per_s", "samples_per_s",
                "tokens_per_s", "peak_rss_mb", "cuda_peak_mb", "gpu_util_pct", "steps")
STARTUP = {
    "python": ["-c", "pass"],
    "bare_hydra_cfg_job": ["benchmarks/bare_hydra.py", "--cfg", "job"],
    "bare_hydra_help": ["benchmarks/bare_hydra.py", "--help"],
    "train_cfg_job": ["train.py", "--cfg", "job"],
    "train_help": ["train.py", "--help"],
    "import_torch": ["benchmarks/imports.py", "torch"],
    "import_torch_lightning": ["benchmarks/imports.py", "torch", "pytorch_lightning"],
    "import_torch_lightning_wandb": ["benchmarks/imports.py", "torch", "pytorch_lightning", "wandb"],
}
IMPORTS = tuple(k for k, cmd in STARTUP.items() if cmd[0] == "benchmarks/imports.py")  # timed in-process
# Start-up of a variant against a baseline: a start-up command (the imports) or another variant.
# "training start": the first training step begins (what it takes to get to training); "first
# step": it ends, so its own compute and the one-off work of a first call count too.
START_METRICS = {"training_start": ("training_start_s", None, "training starts"),
                 "first_step": ("first_step_s", "first_step_cpu_s", "first step")}  # (wall, CPU, label)
# (key in startup_deltas, metric, variant, baseline, label, target)
FIRST_STEP_COMPARISONS = tuple(
    (f"{prefix}{metric}{suffix}", metric, variant, baseline,
     f"{START_METRICS[metric][2]} ({who}) - {of}", target)
    for metric in START_METRICS
    for prefix, suffix, variant, baseline, who, of, target in (
        ("", "_over_imports_wandb", "c", "import_torch_lightning_wandb", "c", "imports of torch, Lightning, W&B", "<= 1"),
        ("no_wandb_", "_over_imports", "c_no_wandb", "import_torch_lightning", "c, logger=none", "imports of torch, Lightning", "<= 1"),
        ("plain_lightning_", "_over_imports", "b", "import_torch_lightning", "b", "imports of torch, Lightning", ""),
        ("plain_lightning_wandb_", "_over_imports", "b_wandb", "import_torch_lightning_wandb", "b_wandb",
         "imports of torch, Lightning, W&B", ""),
        ("", "_over_plain_lightning", "c", "b", "c", "the same for b", "<= 1"),
        ("", "_over_plain_lightning_wandb", "c", "b_wandb", "c", "the same for b_wandb", "<= 1"),
        ("no_wandb_", "_over_plain_lightning", "c_no_wandb", "b", "c, logger=none", "the same for b", "<= 1"),
    )
)


# -- one process ---------------------------------------------------------------------------------
class GpuSampler:
    """``nvidia-smi`` utilisation samples every 100 ms, with the time each was read."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append((time.time(), float(line.split(",")[0])))
            except ValueError:
                pass

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()

    def mean(self, start: float, end: float) -> float | None:
        values = [u for t, u in self.samples if start <= t <= end]
        return statistics.fmean(values) if values else None


def run_process(argv: list[str], cwd: Path, env: dict, log: Path, gpu: bool = False) -> dict:
    """Run ``argv``; its wall time, exit code, peak RSS and (GPU) utilisation samples."""
    sampler = GpuSampler() if gpu else None
    with log.open("w") as out:
        t0 = time.time()
        proc = subprocess.Popen(argv, cwd=cwd, env={**env, "BENCH_T0": repr(t0)}, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sampler:
        sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}; log: {log}\n{log.read_text()[-3000:]}")
    return {"t0": t0, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "sampler": sampler}


def step_metrics(timing: dict, warmup: int) -> dict:
    """Steady-state numbers from the raw step timestamps (the same code for every variant)."""
    steps = timing["steps"]
    intervals, inside, cpu = [], [], []
    for i in range(max(1, warmup), len(steps)):
        (e0, _, end0, *cpu0), (e1, start1, end1, *cpu1) = steps[i - 1], steps[i]
        if e0 == e1:  # consecutive steps of one epoch
            intervals.append(end1 - end0)
            inside.append(end1 - start1)
            if cpu0 and cpu1:
                cpu.append(cpu1[0] - cpu0[0])
    out = {"steps": len(steps), "training_start_s": steps[0][1] - timing["t0"] if steps else None,
           "first_step_s": steps[0][2] - timing["t0"] if steps else None}
    if steps and len(steps[0]) > 3:
        out["first_step_cpu_s"] = steps[0][3]
    if intervals:
        step = sum(intervals) / len(intervals)
        out.update(step_ms=1000 * step, outside_step_ms=1000 * (step - sum(inside) / len(inside)),
                   steps_per_s=1 / step)
        if cpu:
            out["step_cpu_ms"] = 1000 * sum(cpu) / len(cpu)
        if timing.get("batch_size"):
            out["samples_per_s"] = timing["batch_size"] / step
    if timing.get("cuda_peak_bytes") is not None:
        out["cuda_peak_mb"] = timing["cuda_peak_bytes"] / 2**20
    return out


def variant_argv(variant: str, w: Workload, device: str, compile_: bool, run_dir: Path,
                 train_overrides: list[str] = ()) -> list[str]:
    channels_last = device == "cuda" and w.model == "cnn"
    if variant in ("a", "a_prefetched", "b", "b_wandb"):
        script = "handloop.py" if variant.startswith("a") else "plain_lightning.py"
        argv = [sys.executable, str(ROOT / "benchmarks" / script), "--workload", json.dumps(w.to_dict()),
                "--device", device]
        argv += ["--prefetch"] * (variant == "a_prefetched") + ["--compile"] * compile_
        argv += ["--wandb", str(run_dir)] * (variant == "b_wandb")
        return argv + ["--channels-last"] * channels_last
    argv = [sys.executable, str(ROOT / "train.py"), *w.train_overrides(),
            "+callbacks.bench._target_=benchmarks.timing.StepTimer", f"hydra.run.dir={run_dir}"]
    if variant == "c_no_wandb":
        argv.append("logger=none")
    if device == "cuda":
        argv += ["trainer=gpu"]  # bf16-mixed, cudnn.benchmark
        argv += ["+callbacks.bench.channels_last=true"] * channels_last + ["+callbacks.bench.compile=true"] * compile_
    else:
        argv += ["trainer.accelerator=cpu"]
    return argv + list(train_overrides)


# -- summaries -----------------------------------------------------------------------------------
def summarize(values: list) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def fmt(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "-"
    med = f"{s['median']:.{digits}f}"
    return med if len(s["values"]) == 1 else f"{med} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def paired(num: dict | None, den: dict | None, op: Callable[[float, float], float]) -> float | None:
    """The median over repetitions of ``op(num, den)`` within each repetition. The variants of a
    repetition run one after the other, so a slow spell of a shared machine mostly hits both
    sides; ``op`` of the medians (used when the repetitions do not pair up) mixes spells."""
    if not num or not den:
        return None
    try:
        if len(num["values"]) == len(den["values"]):
            return statistics.median(op(n, d) for n, d in zip(num["values"], den["values"], strict=True))
        return op(num["median"], den["median"])
    except ZeroDivisionError:
        return None


def fastest_ratio(num: dict | None, den: dict | None) -> float | None:
    """The ratio of the two fastest repetitions. A shared machine only ever adds time to a
    deterministic computation, so the minimum is the least disturbed measurement (why Python's
    ``timeit`` reports it); shown next to the median of the paired ratios."""
    if not num or not den or not den["min"]:
        return None
    return num["min"] / den["min"]


def ratio(num: dict | None, den: dict | None) -> float | None:
    return paired(num, den, operator.truediv)


def difference(num: dict | None, den: dict | None) -> float | None:
    return paired(num, den, operator.sub)


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# expkit benchmark ({result['device']})", "",
             f"- machine: {m['cpu']} ({m['cpu_count']} cores){', ' + ', '.join(m['gpus']) if m['gpus'] else ''}; "
             f"Python {m['python']}, torch {m['torch']}, pytorch-lightning {m['pytorch_lightning']}",
             f"- load average (1 min) before / after: {result['load_before'][0]:.2f} / {result['load_after'][0]:.2f}",
             f"- {repetitions(result)}, medians [min-max]; torch threads per process: {result['threads']}; "
             f"command: `{result['command']}`",
             f"- started {result['started']}, took {result['duration_s']:.0f} s", ""]
    gpu = result["device"] == "cuda"
    for name, wres in result["workloads"].items():
        w = wres["workload"]
        lines += [f"## {name}: {w['description']}", "",
                  f"batch {w['batch_size']}, {w['epochs']} epochs, {fmt(wres['variants']['c']['steps'], 0)} "
                  "training steps, seed 42", "",
                  "| variant | wall s | training starts s | first step s | first step CPU s | step ms | step CPU ms "
                  "| outside step ms | samples/s | tokens/s | peak RSS MB |" + (" CUDA peak MB | GPU util % |" if gpu else ""),
                  "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if gpu else "")]
        for variant, v in wres["variants"].items():
            row = (f"| {variant} | {fmt(v['wall_s'])} | {fmt(v['training_start_s'])} | {fmt(v['first_step_s'])} | {fmt(v['first_step_cpu_s'])} | "
                   f"{fmt(v['step_ms'], 3)} | {fmt(v['step_cpu_ms'], 3)} | {fmt(v['outside_step_ms'], 3)} | "
                   f"{fmt(v['samples_per_s'], 0)} | {fmt(v.get('tokens_per_s'), 0)} | {fmt(v['peak_rss_mb'], 0)} |")
            if gpu:
                row += f" {fmt(v['cuda_peak_mb'], 0)} | {fmt(v['gpu_util_pct'], 0)} |"
            lines.append(row)
        r = wres["ratios"]
        lines += ["", "| ratio: median of each repetition's; fastest: of the fastest repetitions | wall | first step | first step CPU | step time | step CPU time |",
                  "|---|---|---|---|---|---|"]
        for key, _ in RATIOS:
            for row in (key, f"{key} fastest"):
                if row in r:
                    lines.append(f"| {row} | " + " | ".join(_x(r[row][k]) for k in RATIO_KEYS) + " |")
        lines.append("")
    s = result["startup"]
    cpu = result.get("startup_cpu", {})
    lines += ["## Start-up", "", "| command | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| `python {' '.join(STARTUP[k])}` | {fmt(s[k])} | {fmt(cpu.get(k))} |" for k in STARTUP if k in s]
    d = result["startup_deltas"]
    lines += ["", "| comparison | wall s | CPU s | fastest wall s | target |", "|---|---|---|---|---|",
              f"| `train.py --cfg job` - bare Hydra `--cfg job` | {_d(d.get('cfg_job_over_bare_hydra'))} | <= 0.2 |",
              f"| `train.py --help` - bare Hydra `--help` | {_d(d.get('help_over_bare_hydra'))} | <= 0.2 |"]
    for key, _, _, _, label, target in FIRST_STEP_COMPARISONS:
        for name, delta in d.get(key, {}).items():
            lines.append(f"| {name}: {label} | {_d(delta)} | {target} |")
    lines += ["", "Variants: " + "; ".join(f"**{k}** {v}" for k, v in result["variants"].items()) + ".",
              "Step time: mean interval between consecutive training steps of an epoch after warm-up "
              "(compute, data fetching and per-step hooks); outside step: the part spent between the "
              "end of one step and the start of the next (data loading and the training loop). Training "
              "starts: from the process's launch to the start of its first training step, after the sanity "
              "check's two validation batches. First step: to the end of that step, so its own compute and "
              "the one-off work of a first call count too. Imports: "
              "`benchmarks/imports.py`, from the launch to the end of the imports (no interpreter "
              "teardown).", ""]
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _d(delta: dict | None) -> str:
    """A start-up difference as three table cells: wall | CPU | wall of the fastest repetitions."""
    delta = delta or {}
    return f"{_s(delta.get('wall'))} | {_s(delta.get('cpu'))} | {_s(delta.get('wall_fastest'))}"


def startup_difference(num: dict | None, den: dict | None, num_cpu: dict | None, den_cpu: dict | None) -> dict:
    """{"wall", "cpu"}: medians of the paired differences; "wall_fastest": between the fastest."""
    return {"wall": difference(num, den), "cpu": difference(num_cpu, den_cpu),
            "wall_fastest": num["min"] - den["min"] if num and den else None}


def machine(device: str) -> dict:
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = []
    if device == "cuda" and shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        gpus = [g.strip() for g in out.stdout.splitlines() if g.strip()]
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpus": gpus, "python": platform.python_version(),
            "torch": metadata.version("torch"), "pytorch_lightning": metadata.version("pytorch-lightning"),
            "platform": platform.platform()}


# -- the command -------------------------------------------------------------------------------
def resolve_device(requested: str, dry_run: bool) -> str:
    if requested != "auto":
        if requested == "cuda" and not dry_run:
            import torch

            if not torch.cuda.is_available():
                sys.exit("error: --device cuda, but torch sees no CUDA device (torch.cuda.is_available() is "
                         "False). Use --device cpu, or --dry-run to print the GPU commands.")
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                   help="cuda: bf16-mixed, cudnn.benchmark, channels-last CNNs (default: cpu)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network in every variant")
    p.add_argument("--quick", action="store_true", help="one epoch per workload, one repetition (smoke test)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5 on CPU, 3 on a GPU, 1 with --quick)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds: no repetition is started that would end after it, going by the slowest so far "
                        "(the first always runs; default: 285 on a GPU, whose time is short; none on CPU)")
    p.add_argument("--workloads", default=None, help="comma-separated subset of: " + ",".join(workloads()))
    p.add_argument("--variants", default=None, help="comma-separated subset of: " + ",".join(VARIANTS) +
                   f" (default: all on CPU, {','.join(GPU_VARIANTS)} on a GPU)")
    p.add_argument("--epochs", type=int, default=None, help="override every workload's epochs")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP/MKL threads of every process (default: 1 on CPU, so runs on a shared machine are "
                        "comparable; torch's default on a GPU); 0: torch's default")
    p.add_argument("--warmup", type=int, default=5, help="training steps left out of the steady state")
    p.add_argument("--train-overrides", default="", help="extra overrides for train.py (c), space-separated, "
                   "e.g. 'logger=none ~callbacks.progress_bar' to see what a component costs")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up measurements")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                   help="folder for <device>.md and <device>.json (default benchmarks/results)")
    p.add_argument("--keep", action="store_true", help="keep the runs' working folder (printed)")
    p.add_argument("--dry-run", action="store_true", help="print the device settings and commands; run nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device, args.dry_run)
    reps = args.reps or (1 if args.quick else 3 if device == "cuda" else 5)
    budget = args.budget if args.budget is not None else (GPU_BUDGET_S if device == "cuda" else None)
    all_workloads = workloads(device, quick=args.quick)
    requested = (args.variants or ",".join(GPU_VARIANTS if device == "cuda" else DEFAULT_VARIANTS)).split(",")
    names = args.workloads.split(",") if args.workloads else list(all_workloads)
    unknown = [n for n in names if n not in all_workloads] + [v for v in requested if v not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown workload or variant {unknown}; workloads: {list(all_workloads)}, variants: {list(VARIANTS)}")
    chosen = {n: all_workloads[n] for n in names}
    for w in chosen.values():
        if args.epochs:
            w.epochs = args.epochs
    variants = [v for v in VARIANTS if v in requested]
    work = Path(tempfile.mkdtemp(prefix="expkit-bench-"))
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])

    if args.dry_run:
        print(f"device: {device}; threads: {args.threads or ('torch default' if device == 'cuda' else 1)}; precision: {'bf16-mixed' if device == 'cuda' else '32-true'}; "
              f"compile: {args.compile}; reps: {reps}")
        for w in chosen.values():
            print(f"\n{w.name}: {w.description}; batch {w.batch_size}, {w.epochs} epochs; "
                  f"channels-last: {device == 'cuda' and w.model == 'cnn'}")
            for v in variants:
                print(f"  {v}: {subprocess.list2cmdline(variant_argv(v, w, device, args.compile, work / 'run', args.train_overrides.split()))}")
        shutil.rmtree(work, ignore_errors=True)
        return 0

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(work / "wandb-config"),
           "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("CUDA_LAUNCH_BLOCKING", None)
    threads = args.threads if args.threads is not None else (0 if device == "cuda" else 1)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started, t_start, load_before = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.time(), os.getloadavg()
    raw: dict = {n: {v: [] for v in variants} for n in chosen}
    startup_raw: dict = {k: [] for k in STARTUP}
    startup_cpu: dict = {k: [] for k in STARTUP}
    # Rewritten after every repetition: a run cut short (a time limit on a lent GPU) keeps what it measured.
    result = {"device": device, "compile": args.compile, "reps": 0, "reps_requested": reps, "budget_s": budget,
              "stopped_by_budget": False, "quick": args.quick, "command": command, "started": started,
              "machine": machine(device), "load_before": list(load_before), "warmup_steps": args.warmup,
              "train_overrides": args.train_overrides.split(), "threads": threads or "torch default",
              "variants": {v: VARIANTS[v] for v in variants}}
    slowest_rep = 0.0
    for rep in range(reps):
        t_rep = time.time()
        if not args.no_startup:
            for key, cmd in STARTUP.items():
                out_json = work / f"startup-{key}-{rep}.json"
                res = run_process([sys.executable, *cmd], ROOT, {**env, "BENCH_OUT": str(out_json)},
                                  work / f"startup-{key}-{rep}.log")
                if key in IMPORTS:  # until the imports end, without the interpreter's teardown
                    timing = json.loads(out_json.read_text())
                    res = {"wall_s": timing["imports_done"] - timing["t0"], "cpu_s": timing["cpu_s"]}
                startup_raw[key].append(res["wall_s"])
                startup_cpu[key].append(res["cpu_s"])
                print(f"[{rep + 1}/{reps}] {key}: {res['wall_s']:.2f} s", flush=True)
        for name, w in chosen.items():
            for variant in variants:
                tag = f"{name}-{variant}-{rep}"
                out_json = work / f"{tag}.json"
                argv_ = variant_argv(variant, w, device, args.compile, work / "runs" / tag, args.train_overrides.split())
                res = run_process(argv_, work, {**env, "BENCH_OUT": str(out_json)}, work / f"{tag}.log",
                                  gpu=device == "cuda")
                timing = json.loads(out_json.read_text())
                metrics = {"wall_s": res["wall_s"], "cpu_s": res["cpu_s"], "peak_rss_mb": res["peak_rss_mb"],
                           **step_metrics(timing, args.warmup)}
                if w.tokens_per_sample and metrics.get("samples_per_s"):
                    metrics["tokens_per_s"] = metrics["samples_per_s"] * w.tokens_per_sample
                if res["sampler"] and timing["steps"]:
                    metrics["gpu_util_pct"] = res["sampler"].mean(timing["steps"][0][2], timing["steps"][-1][2])
                raw[name][variant].append(metrics)
                print(f"[{rep + 1}/{reps}] {name} {variant}: {res['wall_s']:.1f} s, first step "
                      f"{metrics.get('first_step_s') or float('nan'):.2f} s, "
                      f"{metrics.get('step_ms') or float('nan'):.2f} ms/step", flush=True)
        slowest_rep = max(slowest_rep, time.time() - t_rep)
        result["stopped_by_budget"] = bool(budget) and rep + 1 < reps and time.time() - t_start + slowest_rep > budget
        result.update(reps=rep + 1, workloads=summarize_workloads(chosen, variants, raw),
                      startup={k: summarize(v) for k, v in startup_raw.items() if v},
                      startup_cpu={k: summarize(v) for k, v in startup_cpu.items() if v})
        result.update(startup_deltas=startup_deltas(result), load_after=list(os.getloadavg()),
                      duration_s=time.time() - t_start)
        md = write_results(result, args.out / device, variants)
        if result["stopped_by_budget"]:
            print(f"stopping after {rep + 1} repetitions: another would end after the {budget:.0f} s budget "
                  f"(the slowest took {slowest_rep:.0f} s; --budget 0: no budget)", flush=True)
            break
    print(md)
    print(f"wrote {args.out / device}.md and .json")
    if args.keep:
        print(f"runs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def repetitions(result: dict) -> str:
    done, asked = result["reps"], result.get("reps_requested", result["reps"])
    text = f"{done} repetition{'s' * (done != 1)}"
    if done >= asked:
        return text
    if result.get("stopped_by_budget"):
        return f"{text} (of {asked}: another would have ended after the {result['budget_s']:.0f} s budget)"
    return f"{text} (of {asked}: the run was cut short)"


def summarize_workloads(chosen: dict, variants: list[str], raw: dict) -> dict:
    out = {}
    for name, w in chosen.items():
        summary = {v: {k: summarize([m.get(k) for m in raw[name][v]]) for k in STEP_METRICS} for v in variants}
        ratios = {}
        for key, den in RATIOS:
            if key.split("/")[0] in summary and den in summary:
                num = key.split("/")[0]
                ratios[key] = {k: ratio(summary[num][k], summary[den][k]) for k in (*RATIO_KEYS, "peak_rss_mb")}
                ratios[f"{key} fastest"] = {k: fastest_ratio(summary[num][k], summary[den][k]) for k in RATIO_KEYS}
        out[name] = {"workload": w.to_dict(), "variants": summary, "ratios": ratios}
    return out


def write_results(result: dict, stem: Path, variants: list[str]) -> str:
    """``<stem>.json`` and ``<stem>.md``; the markdown is returned."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result) if {"a", "b", "c"} <= set(variants) else markdown_partial(result)
    stem.with_suffix(".md").write_text(md)
    return md


def markdown_partial(result: dict) -> str:
    """Without all of a, b and c: the variants not run as rows of "-" (ratios only where both ran)."""
    for wres in result["workloads"].values():
        for v in DEFAULT_VARIANTS:
            wres["variants"].setdefault(v, {k: None for k in STEP_METRICS})
    return markdown(result)


def startup_deltas(result: dict) -> dict:
    """Start-up differences (``startup_difference``: paired wall and CPU, and between the fastest;
    CPU time stays meaningful on a loaded machine)."""
    wall, cpu = result["startup"], result.get("startup_cpu", {})

    def diff(a: str, b: str) -> dict | None:
        if not wall.get(a) or not wall.get(b):
            return None
        return startup_difference(wall[a], wall[b], cpu.get(a), cpu.get(b))

    d: dict = {"cfg_job_over_bare_hydra": diff("train_cfg_job", "bare_hydra_cfg_job"),
               "help_over_bare_hydra": diff("train_help", "bare_hydra_help")}
    for key, metric, variant, baseline, _, _ in FIRST_STEP_COMPARISONS:
        d[key] = {}
        wall_key, cpu_key, _ = START_METRICS[metric]
        for name, w in result["workloads"].items():
            v = w["variants"].get(variant) or {}
            if baseline in STARTUP:
                base_wall, base_cpu = wall.get(baseline), cpu.get(baseline)
            else:
                b = w["variants"].get(baseline) or {}
                base_wall, base_cpu = b.get(wall_key), b.get(cpu_key)
            if cpu_key is None:  # a step's start has no CPU time to set against the baseline's
                base_cpu = None
            if v.get(wall_key) and base_wall:
                d[key][name] = startup_difference(v[wall_key], base_wall, v.get(cpu_key), base_cpu)
    return d


if __name__ == "__main__":
    sys.exit(main())
