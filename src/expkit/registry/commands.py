"""``expkit register | promote | models | export | report | drift``: argument parsing and output.

    expkit register logs/train/runs/<run> --name digits       # a new version (DVC + W&B artifact)
    expkit promote logs/train/runs/<run> --stage production   # only if it beats production on the KPIs
    expkit models                                             # versions, stages, metrics
    expkit export logs/train/runs/<run> --format onnx         # or torchscript; checked on the test split
    expkit report outputs/dvc/train --name digits             # new model vs production: KPIs, per class, drift
    expkit drift new_data.csv --name digits                   # new inputs vs production's training data
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from expkit.errors import ExpkitError, exit_with
from expkit.registry.store import DEFAULT_ROOT

FILES_TARGET = "expkit.data.FilesDataModule"  # how `expkit drift` reads a file of inputs


def _console():
    from rich.console import Console

    return Console(width=max(Console().width, 140))


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"expkit {command}", description=description)
    parser.add_argument("--registry", type=Path, default=DEFAULT_ROOT, help="registry folder (default: registry)")
    return parser


def register_cmd(argv: list[str]) -> None:
    from expkit.registry.kpis import unmeasured
    from expkit.registry.store import kpis_of_entry, register

    parser = _parser("register", "Register a run's best checkpoint as a new version of a model.")
    parser.add_argument("run", help="run directory (or checkpoint)")
    parser.add_argument("--name", required=True, help="model name (a folder and a W&B artifact name)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log a W&B model artifact")
    parser.add_argument("--git", action="store_true", help="also add it to dvc.yaml's artifacts, commit the registry files "
                        "and tag the commit NAME@v<N>.0.0 (GTO), for `dvc artifacts get`")
    args = parser.parse_args(argv)
    entry = register(args.run, args.name, args.registry, wandb_log=not args.no_wandb, git=args.git)
    where = f"; DVC: {entry['dvc_file']}" if entry.get("dvc_file") else ""
    wandb = entry.get("wandb")
    wandb_note = f"; W&B artifact {args.name}:{','.join(wandb['aliases'])} ({wandb['mode']})" if wandb else ""
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in entry["metrics"].items())
    print(f"registered {args.name} v{entry['version']} from {entry['run_dir']} ({metrics}){where}{wandb_note}")
    why = unmeasured(kpis_of_entry(entry), entry["metrics"])
    if why:  # registered all the same (a stored version); promotion needs its KPIs
        print(f"warning: {args.name} v{entry['version']} cannot be promoted: {why}", file=sys.stderr)
    if entry.get("git_commit"):
        done = entry["git_commit"]
        print(f"committed {', '.join(done['files'])} as {done['commit'][:10]}, tagged {done['tag']} "
              f"(dvc artifacts get <repo> {args.name} --rev {done['tag'].split('@', 1)[1]}); "
              f"share with `git push --follow-tags` (or `git push origin {done['tag']}`) and `dvc push`")


def promote_cmd(argv: list[str]) -> None:
    from expkit.registry.kpis import judgement_table
    from expkit.registry.store import PromotionRefused, promote

    parser = _parser("promote", "Give a stage to a registered version if it beats the current holder on the KPIs.")
    parser.add_argument("run", help="run directory it was registered from, NAME:vN or NAME@stage")
    parser.add_argument("--stage", default="production")
    parser.add_argument("--name", help="model name (needed only when the run is registered under several)")
    parser.add_argument("--no-wandb", action="store_true")
    parser.add_argument("--git", action="store_true", help="also commit registry.json and tag the version's commit "
                        "NAME#STAGE#<k> (GTO), for `dvc artifacts get --stage`")
    args = parser.parse_args(argv)
    console = _console()
    try:
        judgement, how = promote(args.run, args.stage, args.registry, args.name, wandb_log=not args.no_wandb, git=args.git)
    except PromotionRefused as exc:
        console.print(judgement_table(exc.judgement, "candidate", args.stage, title=f"Compared on {exc.how}"))
        exit_with(exc)
    console.print(judgement_table(judgement, "candidate", args.stage, title=f"Compared on {how}"))
    print(f"promoted {args.run} to {args.stage}")
    if args.git:
        from expkit.registry.store import Registry

        registry = Registry(args.registry)
        name, _ = registry.find(args.run, args.name)
        tag = registry.model(name)["history"][-1].get("gto_tag")
        print(f"committed registry.json, tagged {tag} (dvc artifacts get <repo> {name} --stage {args.stage}); "
              f"share with `git push origin {tag}`")


def models_cmd(argv: list[str]) -> None:
    from rich.table import Table

    from expkit.registry.store import Registry, kpis_of_entry

    parser = _parser("models", "List registered models: versions, stages, KPI metrics.")
    parser.add_argument("--json", action="store_true", help="print registry.json")
    args = parser.parse_args(argv)
    registry = Registry(args.registry)
    if args.json:
        print(json.dumps(registry.data, indent=2))
        return
    entries = [v for model in registry.data["models"].values() for v in model["versions"]]
    metrics = list(dict.fromkeys(k.metric for v in entries for k in kpis_of_entry(v)))
    table = Table(title=f"Models in {args.registry}")
    for column in ("name", "version", "stages", "model", *metrics, "test data", "registered", "run"):
        table.add_column(column, overflow="fold")
    for name, model in registry.data["models"].items():
        for v in model["versions"]:
            stages = ", ".join(s for s, n in model["stages"].items() if n == v["version"]) or "-"
            table.add_row(name, f"v{v['version']}", stages, v["model"].rsplit(".", 1)[-1],
                          *(f"{v['metrics'][m]:.4f}" if m in v["metrics"] else "-" for m in metrics),
                          v["eval_data"]["fingerprint"], v["registered_at"], v["run_dir"])
    _console().print(table)


def export_cmd(argv: list[str]) -> None:
    from expkit.registry.export import FORMATS, export

    parser = argparse.ArgumentParser(prog="expkit export", description="Export a trained model and check it on the test split.")
    parser.add_argument("source", help="run directory or checkpoint")
    parser.add_argument("--format", choices=sorted(FORMATS), action="append", help="repeatable (default: both)")
    parser.add_argument("--out", type=Path, help="output folder (default: <run dir>/export)")
    args = parser.parse_args(argv)
    for fmt in args.format or sorted(FORMATS):
        check = export(args.source, fmt, args.out)
        print(f"exported {check['file']} ({fmt}); checked with {check['runtime']} on {check['test_samples']} test samples: "
              f"max |diff| {check['max_abs_diff']:.2e} <= {check['atol']:g} + {check['rtol']:g}*|ref|, "
              f"{check['argmax_agreement']:.0%} same predictions")


def report_cmd(argv: list[str]) -> None:
    from rich.table import Table

    from expkit.registry.drift import DEFAULT_THRESHOLD, drift_table
    from expkit.registry.kpis import judgement_table
    from expkit.registry.report import PER_CLASS_COLUMNS, build_report, per_class_rows

    parser = _parser("report", "Compare a new model with the production model: KPIs, per-class metrics, drift.")
    parser.add_argument("run", help="the new run directory (or checkpoint), e.g. outputs/dvc/train")
    parser.add_argument("--name", required=True)
    parser.add_argument("--stage", default="production")
    parser.add_argument("--out", type=Path, help="output folder (default: <run dir>/report)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="drift threshold (pooled sd)")
    args = parser.parse_args(argv)
    report = build_report(args.run, args.name, args.stage, args.registry, args.out, args.threshold)
    console = _console()
    console.print(judgement_table(report["judgement"], "new", args.stage, title="KPIs on the new test data"))
    rows = per_class_rows(report)
    if rows:  # classifiers only
        table = Table(title="Per-class metrics (test split)")
        for column in PER_CLASS_COLUMNS:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    if report.get("drift"):
        console.print(drift_table(report["drift"]))
    verdict = "would pass" if report["promotion"]["would_pass"] else "would be refused"
    print(f"promotion {verdict}: {report['promotion']['summary']}\nreport: {report['out_dir']}/report.md")


def drift_cmd(argv: list[str]) -> None:
    from expkit.registry import evaluation
    from expkit.registry.drift import DEFAULT_THRESHOLD, drift, drift_table
    from expkit.registry.store import MODEL_FILE, TRAIN_STATS_FILE, Registry
    from expkit.tasks.predict import data_config

    parser = _parser("drift", "Compare new data's feature statistics with a registered model's training data.")
    parser.add_argument("data", help="a run directory (its training split) or a data file read like the model's inputs")
    parser.add_argument("--name", required=True)
    parser.add_argument("--stage", default="production")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args(argv)
    registry = Registry(args.registry)
    holder = registry.stage_holder(args.name, args.stage)
    if holder is None:
        raise ExpkitError(f"no version of {args.name} holds stage {args.stage!r}.")
    version_dir = registry.version_dir(args.name, holder["version"])
    reference = json.loads((version_dir / TRAIN_STATS_FILE).read_text())
    path = Path(args.data)
    if path.is_dir() and (path / "checkpoints").is_dir() or path.suffix == ".ckpt":
        stats = evaluation.input_stats(evaluation.load_trained(path))
    else:  # a file of inputs, read as the production model's data was (predict.py's reading)
        recorded = evaluation.load_trained(version_dir / MODEL_FILE).config["data"]
        data_cfg = data_config(recorded, {"_target_": FILES_TARGET}, False, {"path": str(path)})
        stats = evaluation.input_stats(data_cfg, stage="predict")
    result = drift(reference, stats, args.threshold, stats.get("names"))
    _console().print(drift_table(result))


def main(argv: list[str], command: str) -> None:
    commands = {"register": register_cmd, "promote": promote_cmd, "models": models_cmd, "export": export_cmd,
                "report": report_cmd, "drift": drift_cmd}
    try:
        commands[command](argv)
    except ExpkitError as exc:
        exit_with(exc)
    sys.stdout.flush()
