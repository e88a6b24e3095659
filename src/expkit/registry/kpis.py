"""KPIs: the metrics that decide between two models, declared by the experiment (``kpis`` in the
run's config: a model config selects its task family's from ``conf/kpis/``, an experiment may
change them). A run without KPIs has one: the test-split twin of its monitored metric.

    kpis:
      accuracy: {metric: test/acc, goal: max, at_least: 0.9}       # the first KPI is the primary one
      loss:     {metric: test/loss, goal: min, tolerance: 0.05}
      latency:  {metric: test/latency_ms, goal: min, at_most: 5.0}  # a bar only (tolerance: null)

A model can be judged only when its test metrics hold every KPI's metric (:func:`unmeasured`:
promotion refuses one that lacks a metric as a config error, naming it and the fix).
The rule (:func:`judge`), used by promotion, ``expkit compare`` and ``expkit report``:
1. every bound (``at_least`` / ``at_most``) must hold for the candidate;
2. the primary KPI must be strictly better than the reference model's;
3. every other KPI with a ``tolerance`` may be worse than the reference by at most that much
   (``tolerance: null``: not compared, only its bound applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from expkit.errors import ConfigError


@dataclass(frozen=True)
class KPI:
    name: str
    metric: str
    goal: str  # "max" or "min"
    at_least: float | None = None
    at_most: float | None = None
    tolerance: float | None = 0.0

    def improvement(self, candidate: float, reference: float) -> float:
        """How much better ``candidate`` is (positive) or worse (negative), in the metric's units."""
        return candidate - reference if self.goal == "max" else reference - candidate

    def bound_problem(self, value: float) -> str | None:
        if self.at_least is not None and value < self.at_least:
            return (f"{self.metric}={_apart(value, self.at_least)} is below the minimum {self.at_least:g} "
                    f"(kpis.{self.name}.at_least)")
        if self.at_most is not None and value > self.at_most:
            return (f"{self.metric}={_apart(value, self.at_most)} is above the maximum {self.at_most:g} "
                    f"(kpis.{self.name}.at_most)")
        return None


def _apart(value: float, bound: float) -> str:
    """``value`` with 4 significant digits, or as many more as it takes not to print it as ``bound``
    (0.89994 below the minimum 0.9, not "0.9 is below the minimum 0.9")."""
    for digits in range(4, 18):
        text = f"{value:.{digits}g}"
        if float(text) != bound:
            return text
    return repr(value)


def parse_kpis(node: Mapping[str, Any] | None) -> list[KPI]:
    """The ``kpis`` config node as a list, primary first; errors name the key and the fix."""
    if not node:
        raise ConfigError("kpis is empty: declare at least one KPI in conf/train.yaml (kpis.<name>.metric/goal).")
    kpis = []
    allowed = {"metric", "goal", "at_least", "at_most", "tolerance"}
    for name, spec in node.items():
        if not isinstance(spec, Mapping) or "metric" not in spec:
            raise ConfigError(f"kpis.{name} needs a metric, e.g. kpis.{name}={{metric: test/acc, goal: max}}.")
        unknown = set(spec) - allowed
        if unknown:
            raise ConfigError(f"kpis.{name}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}.")
        goal = spec.get("goal", "max")
        if goal not in ("max", "min"):
            raise ConfigError(f"kpis.{name}.goal={goal!r} must be max or min.")
        kpis.append(KPI(str(name), str(spec["metric"]), goal, spec.get("at_least"), spec.get("at_most"),
                        spec.get("tolerance", 0.0)))
    return kpis


SPLITS = ("train", "val", "valid", "validation")  # the prefixes a test-split twin replaces


def test_twin(metric: str) -> tuple[str, str]:
    """The test-split counterpart of a validation or training metric and the KPI's name:
    ``val/mse`` -> ``test/mse``, ``train/loss`` -> ``test/loss``, ``val_acc`` -> ``test_acc``
    (named ``mse``, ``loss``, ``acc``); any other name is its own twin."""
    for separator in ("/", "_"):
        split, found, name = metric.partition(separator)
        if found and name and split in SPLITS:
            return f"test{separator}{name}", name
    return metric, metric


def kpis_of(config: Mapping[str, Any]) -> list[KPI]:
    """The KPIs of a run's resolved ``config``: its ``kpis`` node, else one KPI, the test-split
    twin of ``monitor.metric`` (:func:`test_twin`) with ``monitor.mode`` as goal."""
    node = config.get("kpis")
    if node:
        return parse_kpis(node)
    monitor = config.get("monitor") or {}
    test_metric, name = test_twin(str(monitor.get("metric") or "val/loss"))
    return [KPI(name, test_metric, str(monitor.get("mode") or "min"))]


def unmeasured(kpis: list[KPI], metrics: Mapping[str, float]) -> str | None:
    """Why ``kpis`` cannot judge a model whose test metrics are ``metrics``, in one line with the
    fix: a KPI's metric was not measured (its ``test_step`` does not log it). ``None`` when every
    KPI was measured."""
    from expkit.registry.evaluation import LATENCY_METRIC

    missing = [k for k in kpis if k.metric not in metrics]
    if not missing:
        return None
    kpi = missing[0]
    logged = sorted(m for m in metrics if m != LATENCY_METRIC)
    example = logged[0] if logged else "test/<name>"
    return (f"its KPI {kpi.name} ({kpi.metric}) was not measured (its test_step logs: "
            f"{', '.join(logged) or 'nothing'}): log {kpi.metric} in the module's test_step and register the run "
            f"again, or train it with a KPI it logs, e.g. '++kpis.{kpi.name}={{metric: {example}, goal: {kpi.goal}}}'.")


@dataclass
class Row:
    kpi: KPI
    candidate: float | None
    reference: float | None
    verdict: str
    ok: bool


@dataclass
class Judgement:
    rows: list[Row]
    passed: bool
    reasons: list[str]

    def summary(self, candidate: str = "candidate", reference: str = "production") -> str:
        if self.passed:
            return f"{candidate} beats {reference} on the KPIs" if any(r.reference is not None for r in self.rows) \
                else f"{candidate} meets every KPI bound (no {reference} model to beat)"
        if all(r.reference is None for r in self.rows):
            return f"{candidate} misses the KPI bounds: " + "; ".join(self.reasons)
        return f"{candidate} does not beat {reference}: " + "; ".join(self.reasons)


def judge(kpis: list[KPI], candidate: Mapping[str, float], reference: Mapping[str, float] | None,
          require_all: bool = True) -> Judgement:
    """Whether ``candidate``'s metrics beat ``reference``'s (``None``: no reference, bounds only).
    ``require_all=False`` skips KPIs a run did not record (``expkit compare`` on old runs)."""
    rows, reasons = [], []
    for index, kpi in enumerate(kpis):
        value = candidate.get(kpi.metric)
        ref = None if reference is None else reference.get(kpi.metric)
        if value is None and not require_all:
            rows.append(Row(kpi, None, ref, "not recorded", True))
            continue
        if value is None:
            rows.append(Row(kpi, None, ref, "missing", False))
            reasons.append(f"{kpi.metric} was not measured for the candidate")
            continue
        problem = kpi.bound_problem(value)
        if problem:
            rows.append(Row(kpi, value, ref, "out of bounds", False))
            reasons.append(problem)
            continue
        if ref is None or (index > 0 and kpi.tolerance is None):
            rows.append(Row(kpi, value, ref, "within bounds" if ref is None else "bound only", True))
            continue
        gain = kpi.improvement(value, ref)
        if index == 0:  # the primary KPI: strictly better, ties do not promote
            ok = gain > 0
            verdict = "better" if ok else ("tie" if gain == 0 else "worse")
            if not ok:
                reasons.append(f"primary KPI {kpi.metric} is {value:.4g} vs {ref:.4g} (must be strictly better)")
        else:
            ok = gain >= -kpi.tolerance
            verdict = "better" if gain > 0 else ("tie" if gain == 0 else ("within tolerance" if ok else "worse"))
            if not ok:
                reasons.append(f"{kpi.metric} is {value:.4g} vs {ref:.4g} (worse by more than "
                               f"kpis.{kpi.name}.tolerance={kpi.tolerance:g})")
        rows.append(Row(kpi, value, ref, verdict, ok))
    return Judgement(rows, not reasons, reasons)


def judgement_table(judgement: Judgement, candidate: str = "candidate", reference: str = "production", title: str = "KPIs"):
    """A rich table of a judgement (one row per KPI, primary first)."""
    from rich.table import Table

    table = Table(title=f"{title}: {judgement.summary(candidate, reference)}")
    for column in ("kpi", "metric", "goal", "bound", candidate, reference, "difference", "verdict"):
        table.add_column(column, overflow="fold")
    for i, row in enumerate(judgement.rows):
        kpi = row.kpi
        bound = f">= {kpi.at_least:g}" if kpi.at_least is not None else (f"<= {kpi.at_most:g}" if kpi.at_most is not None else "-")
        diff = "-" if row.candidate is None or row.reference is None else f"{row.candidate - row.reference:+.4f}"
        table.add_row(kpi.name + (" (primary)" if i == 0 else ""), kpi.metric, kpi.goal, bound, fmt(row.candidate),
                      fmt(row.reference), diff, ("[green]" if row.ok else "[red]") + row.verdict)
    return table


def judgement_markdown(judgement: Judgement, candidate: str = "candidate", reference: str = "production") -> str:
    lines = [f"| kpi | metric | goal | {candidate} | {reference} | verdict |", "|---|---|---|---|---|---|"]
    for row in judgement.rows:
        lines.append(f"| {row.kpi.name} | {row.kpi.metric} | {row.kpi.goal} | {fmt(row.candidate)} | {fmt(row.reference)} | {row.verdict} |")
    return "\n".join(lines)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
