"""Browsing runs without a network: ``expkit runs [PATH]`` and ``expkit compare RUN_A RUN_B`` (each a run
directory or a ``KEY=VALUE`` condition)."""

from __future__ import annotations

import argparse
import difflib
import os
import platform
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from expkit.tracking.record import RUN_RECORD_FILE, RUN_STATUSES, RunRecord

MAX_METRIC_COLUMNS = 8  # `expkit runs --metric NAME` picks others


def find_runs(root: Path) -> list[RunRecord]:
    """Every run record under ``root``, newest first; an unreadable one is named on stderr (one
    line each) and left out."""
    from expkit.errors import ExpkitError

    records = []
    # W&B keeps a copy of run.json among its run files: only the run directory's own counts.
    for path in Path(root).rglob(RUN_RECORD_FILE):
        if "wandb" in path.parts:
            continue
        try:
            records.append(RunRecord.load(path.parent))
        except ExpkitError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    return sorted(records, key=lambda r: r.data.get("started_at") or "", reverse=True)


def status_of(record: RunRecord) -> str:
    """The recorded status; a 'running' run whose process is gone on this host is 'dead'."""
    status = record.data.get("status", "?")
    segment = (record.data.get("segments") or [{}])[-1]
    if status == "running" and segment.get("host") == platform.node() and segment.get("pid"):
        try:
            os.kill(segment["pid"], 0)
        except ProcessLookupError:
            return "dead (resume it)"
        except PermissionError:
            pass
    return status


def duration(record: RunRecord) -> str:
    start, end = record.data.get("started_at"), record.data.get("ended_at")
    if not (start and end):
        return "-"
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def typed(text: str) -> Any:
    """A ``--where`` value as the YAML/Hydra value it spells: ``2e-3`` and ``0.002`` are the same
    number, ``true``/``null`` a boolean and null; quoted (``'0.002'``) or anything else, text."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and not text.strip().startswith(("'", '"')):
        try:
            return float(value)  # YAML 1.1 reads 2e-3 (no dot) as text; Hydra's parser, a float
        except ValueError:
            return value
    return value


def same_value(recorded: Any, wanted: Any) -> bool:
    """Equal by type and value: numbers numerically and exactly (``2e-3 == 0.002 == 2`` is false,
    ``2 == 2.0`` true), booleans and null by identity (``1`` is not ``true``), text as text (the
    text ``'0.002'`` is not the number), lists item by item."""
    if isinstance(recorded, bool) or isinstance(wanted, bool) or recorded is None or wanted is None:
        return recorded is wanted or (isinstance(recorded, bool) and isinstance(wanted, bool) and recorded == wanted)
    numbers = (int, float)
    if isinstance(recorded, numbers) or isinstance(wanted, numbers):
        return isinstance(recorded, numbers) and isinstance(wanted, numbers) and float(recorded) == float(wanted)
    if isinstance(recorded, (list, tuple)) and isinstance(wanted, (list, tuple)):
        return len(recorded) == len(wanted) and all(same_value(a, b) for a, b in zip(recorded, wanted, strict=True))
    if isinstance(recorded, (list, tuple, dict)) or isinstance(wanted, (list, tuple, dict)):
        return False
    return str(recorded) == str(wanted)


def parse_where(conditions: list[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` conditions as ``(KEY, VALUE)``; raises ``ConfigError`` naming one without a key
    or an ``=``."""
    from expkit.errors import ConfigError

    parsed = []
    for condition in conditions:
        key, equals, value = condition.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"--where {condition!r}: expected KEY=VALUE (e.g. --where model.optimizer.lr=2e-3, "
                              "--where model=mlp, --where status=completed)")
        parsed.append((key.strip(), value))
    return parsed


def matches(record: RunRecord, where: list[tuple[str, str]]) -> bool:
    """Whether the run has each ``(KEY, VALUE)`` of ``where`` (:func:`parse_where`): its config key
    (or ``status``, ``task``) holds VALUE, compared by value (:func:`same_value`); or KEY is a config
    group and the run used option VALUE of it, chosen or by default (``model=mlp``; recorded in
    ``run.json``'s ``composition.choices``); or the run was launched with that exact override."""
    from expkit.tasks.rerun import flatten

    flat = flatten({**record.data.get("config", {}), "status": record.data.get("status"), "task": record.data.get("task")})
    choices = (record.data.get("composition") or {}).get("choices") or {}
    for key, value in where:
        if key in flat and same_value(flat[key], typed(value)):
            continue
        if key in choices and str(choices[key]) == value:
            continue
        if not any(o == f"{key}={value}" for o in record.data.get("overrides", [])):
            return False
    return True


def select_run(spec: str, where: list[str], root: Path) -> RunRecord:
    """The run ``expkit compare`` names by ``spec``: a ``KEY=VALUE`` condition (:func:`matches`,
    typed like ``expkit runs --where``): the newest run under ``root`` that meets it and every
    condition of ``where``; else (no ``=``, or a ``/`` before it) a run directory. Raises ``ConfigError`` when no run does, or when ``spec`` is
    neither an existing directory nor a condition; ``ExpkitError`` for an unreadable record."""
    from expkit.errors import ConfigError

    key, equals, _ = spec.partition("=")
    if not equals or "/" in key:  # a path (``./seed=3`` names a directory called seed=3)
        if not Path(spec).is_dir():
            raise ConfigError(f"{spec}: no such run directory (give a run directory or KEY=VALUE, "
                              "e.g. model.optimizer.lr=2e-3)")
        return RunRecord.load(Path(spec))
    conditions = parse_where([spec, *where])
    if not root.is_dir():
        raise ConfigError(f"--in {root}: no such directory (runs are under paths.log_dir, default logs/)")
    records = find_runs(root)
    chosen = next((r for r in records if matches(r, conditions)), None)
    if chosen is None:
        wanted = " and ".join(f"{k}={v}" for k, v in conditions)
        raise ConfigError(f"no run under {root} has {wanted} ({len(records)} run(s) looked at; "
                          f"list them with: expkit runs {root})")
    return chosen


def check_metrics(records: list[RunRecord], chosen: list[str]) -> None:
    """Every ``--metric`` name is recorded by at least one of ``records`` (when there are any);
    raises ``ConfigError`` naming the first that none records, with the closest recorded names."""
    from expkit.errors import ConfigError

    recorded = sorted({k for r in records for k in (r.data.get("metrics") or {})})
    for name in chosen if records else []:
        if name not in recorded:
            close = difflib.get_close_matches(name, recorded, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"recorded: {', '.join(recorded) or 'none'}"
            raise ConfigError(f"--metric {name!r}: none of the {len(records)} listed run(s) recorded it; {hint}")


def metric_columns(records: list[RunRecord], chosen: list[str] | None = None) -> list[str]:
    """The metric columns of a runs table: ``chosen``, else every run's monitored metric first,
    then the other recorded metrics (validation, test, the rest), at most MAX_METRIC_COLUMNS."""
    if chosen:
        return list(chosen)
    monitored = [((r.data.get("config") or {}).get("monitor") or {}).get("metric") for r in records]
    recorded = [k for r in records for k in (r.data.get("metrics") or {})]
    order = {"val": 0, "test": 1}
    rest = sorted(set(recorded), key=lambda k: (order.get(k.split("/", 1)[0], 2), k))
    return list(dict.fromkeys(m for m in [*monitored, *rest] if m and m in recorded))[:MAX_METRIC_COLUMNS]


def runs_table(records: list[RunRecord], root: Path, metrics: list[str] | None = None):
    from rich.table import Table

    columns = metric_columns(records, metrics)
    table = Table(title=f"{len(records)} run(s) under {root}")
    for column in ("run", "task", "overrides", "status", *columns, "duration"):
        table.add_column(column, overflow="fold")
    for record in records:
        values: dict[str, Any] = record.data.get("metrics") or {}
        try:
            name = str(record.run_dir.relative_to(root))
        except ValueError:
            name = str(record.run_dir)
        table.add_row(
            name, record.data.get("task", "?"), " ".join(record.data.get("overrides") or []) or "(defaults)",
            status_of(record), *(f"{values[k]:.4f}" if isinstance(values.get(k), (int, float)) else "-" for k in columns),
            duration(record),
        )
    return table


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every key whose values differ by
    :func:`same_value` (``1`` and ``true`` differ, ``2e-3`` and ``0.002`` do not); ``"<absent>"``
    for a key only one config has."""
    from expkit.tasks.rerun import flatten

    fa, fb = flatten(a), flatten(b)
    return [(k, fa.get(k, "<absent>"), fb.get(k, "<absent>")) for k in sorted(fa.keys() | fb.keys())
            if k not in fa or k not in fb or not same_value(fa[k], fb[k])]


def compare_tables(a: RunRecord, b: RunRecord):
    from rich.table import Table

    config = Table(title=f"Config: {a.run_dir.name} vs {b.run_dir.name}")
    for column in ("key", a.run_dir.name, b.run_dir.name):
        config.add_column(column, overflow="fold")
    for key, old, new in config_differences(a.data.get("config", {}), b.data.get("config", {})):
        config.add_row(key, str(old), str(new))
    if not config.row_count:
        config.add_row("(identical configs)", "", "")
    metrics = Table(title="Metrics")
    for column in ("metric", a.run_dir.name, b.run_dir.name, "difference"):
        metrics.add_column(column)
    ma, mb = a.data.get("metrics") or {}, b.data.get("metrics") or {}
    for key in sorted(ma.keys() | mb.keys()):
        va, vb = ma.get(key), mb.get(key)
        delta = f"{vb - va:+.4f}" if va is not None and vb is not None else "-"
        metrics.add_row(key, "-" if va is None else f"{va:.4f}", "-" if vb is None else f"{vb:.4f}", delta)
    return config, metrics


def kpi_table(a: RunRecord, b: RunRecord):
    """Run ``b`` judged against run ``a`` on ``b``'s KPIs (its experiment's, :func:`kpis_of`) with
    promotion's rule (:mod:`expkit.registry.kpis`), on their recorded metrics (promotion re-checks
    on one test set); ``None`` when neither run recorded any KPI metric."""
    from expkit.registry.kpis import judge, judgement_table, kpis_of

    kpis = kpis_of(b.data.get("config") or {})
    recorded = {**(a.data.get("metrics") or {}), **(b.data.get("metrics") or {})}
    if not any(k.metric in recorded for k in kpis):
        return None
    judgement = judge(kpis, b.data.get("metrics") or {}, a.data.get("metrics") or {}, require_all=False)
    return judgement_table(judgement, b.run_dir.name, a.run_dir.name, title="KPIs, recorded metrics")


def main(argv: list[str], command: str) -> None:
    from rich.console import Console

    console = Console(width=max(Console().width, 160))
    if command == "runs":
        parser = argparse.ArgumentParser(prog="expkit runs", description="List runs, newest first.")
        parser.add_argument("path", nargs="?", type=Path, default=Path("logs"), help="where to look (default: logs)")
        parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                            help="keep runs whose config key (e.g. model._target_, data.batch_size, status) has VALUE "
                            "(compared by type: 2e-3 = 0.002, true is not 1, '0.002' is text), that used option "
                            "VALUE of config group KEY (model=mlp, chosen or by default), or whose overrides "
                            "include KEY=VALUE; repeatable")
        parser.add_argument("--status", help=f"keep runs with this status ({', '.join(RUN_STATUSES)})")
        parser.add_argument("--limit", type=int, default=50, help="show at most this many (default 50)")
        parser.add_argument("--metric", action="append", metavar="NAME",
                            help="metric columns to show (repeatable; default: the monitored metric, then the others)")
        args = parser.parse_args(argv)
        if not args.path.exists():
            print(f"error: {args.path}: no such directory (runs are under paths.log_dir, default logs/).", file=sys.stderr)
            sys.exit(2)
        from expkit.errors import ConfigError

        try:
            if args.status is not None and args.status not in RUN_STATUSES:
                close = difflib.get_close_matches(args.status, RUN_STATUSES, n=1)
                raise ConfigError(f"--status {args.status!r} is not a run status ({', '.join(RUN_STATUSES)})"
                                  + (f"; did you mean {close[0]}?" if close else ""))
            where = parse_where(args.where + ([f"status={args.status}"] if args.status else []))
            records = [r for r in find_runs(args.path) if matches(r, where)][: args.limit]
            check_metrics(records, args.metric or [])
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        console.print(runs_table(records, args.path, args.metric))
    else:
        parser = argparse.ArgumentParser(
            prog="expkit compare", description="Config and metric differences of two runs.",
            epilog="e.g. expkit compare model.optimizer.lr=2e-3 model.optimizer.lr=1e-3 --where status=completed")
        for name in ("run_a", "run_b"):
            parser.add_argument(name, help="a run directory, or KEY=VALUE: the newest run under --in that has it "
                                "(and every --where), matched as by expkit runs --where")
        parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                            help="conditions both runs chosen by KEY=VALUE must meet as well (repeatable)")
        parser.add_argument("--in", dest="root", type=Path, default=Path("logs"),
                            help="where to look for runs chosen by KEY=VALUE (default: logs)")
        args = parser.parse_args(argv)
        from expkit.errors import ExpkitError

        try:
            a, b = (select_run(spec, args.where, args.root) for spec in (args.run_a, args.run_b))
            tables = compare_tables(a, b)
        except ExpkitError as exc:  # no record (2), an unreadable one (3), a condition no run meets (2)
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        for table in tables:
            console.print(table)
        kpis = kpi_table(a, b)
        if kpis is not None:
            console.print(kpis)
