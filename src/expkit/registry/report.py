"""``expkit report RUN_DIR --name NAME``: a newly trained model against the production model.

Both are evaluated on the new run's test split (each with its own preprocessing); the report holds
the KPI comparison with the promotion verdict (the rule of :mod:`expkit.registry.kpis`, the new
run's KPIs), per-class precision/recall/F1 of both models (classifiers only), and the drift of the
new training data against the production model's training data. Written to
``<run dir>/report/``: ``report.md``, ``report.json``, ``per_class.png`` (classifiers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from expkit.registry import evaluation
from expkit.registry.drift import DEFAULT_THRESHOLD, drift
from expkit.registry.kpis import KPI, judge, judgement_markdown, kpis_of
from expkit.registry.store import DEFAULT_ROOT, MODEL_FILE, TRAIN_STATS_FILE, Registry


def build_report(run: str | Path, name: str, stage: str = "production", root: Path = DEFAULT_ROOT,
                 out_dir: Path | None = None, threshold: float = DEFAULT_THRESHOLD,
                 kpis: list[KPI] | None = None) -> dict[str, Any]:
    registry = Registry(root)
    candidate = evaluation.load_trained(run)
    kpis = kpis or kpis_of(candidate.config)
    new = evaluation.evaluate(candidate)
    # The first model of a name has nothing to beat: the report then checks the KPI bounds only.
    holder = registry.stage_holder(name, stage) if name in registry.data["models"] else None
    report: dict[str, Any] = {"candidate": str(candidate.path), "name": name, "stage": stage,
                              "test_data": {"fingerprint": new.data_fingerprint, "samples": new.samples},
                              "candidate_metrics": new.metrics, "candidate_per_class": new.per_class}
    if holder is not None:
        version_dir = registry.version_dir(name, holder["version"])
        production = evaluation.evaluate(evaluation.load_trained(version_dir / MODEL_FILE, data_cfg=candidate.config["data"]))
        reference_stats = json.loads((version_dir / TRAIN_STATS_FILE).read_text())
        report.update(production_version=holder["version"], production_metrics=production.metrics,
                      production_per_class=production.per_class)
        report["drift"] = drift(reference_stats, evaluation.input_stats(candidate), threshold)
    judgement = judge(kpis, new.metrics, report.get("production_metrics"))
    report["promotion"] = {"would_pass": judgement.passed, "summary": judgement.summary("new model", f"{name}@{stage}"),
                           "reasons": judgement.reasons}

    out_dir = Path(out_dir) if out_dir else evaluation.run_dir_of(candidate.path) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if new.per_class:
        plot_per_class(report, out_dir / "per_class.png")
    (out_dir / "report.md").write_text(markdown(report, judgement))
    report["judgement"], report["out_dir"] = judgement, str(out_dir)
    return report


def plot_per_class(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = [row["class"] for row in report["candidate_per_class"]]
    series = [("new model", report["candidate_per_class"])]
    if "production_per_class" in report:
        series.append((f"production v{report['production_version']}", report["production_per_class"]))
    fig, ax = plt.subplots(figsize=(max(6, len(classes) * 0.6), 3.5))
    width = 0.8 / len(series)
    for i, (label, rows) in enumerate(series):
        ax.bar(np.arange(len(classes)) + i * width, [r["f1"] for r in rows], width, label=label)
    ax.set_xticks(np.arange(len(classes)) + width * (len(series) - 1) / 2, [str(c) for c in classes])
    ax.set_xlabel("class")
    ax.set_ylabel("F1 (test split)")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right")
    ax.set_title(report["promotion"]["summary"][:90], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def per_class_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    if not report.get("candidate_per_class"):
        return rows
    production = report.get("production_per_class") or [None] * len(report["candidate_per_class"])
    for new, old in zip(report["candidate_per_class"], production, strict=True):
        cells = [str(new["class"]), str(new["support"])]
        for key in ("precision", "recall", "f1"):
            cells += [f"{new[key]:.3f}", "-" if old is None else f"{old[key]:.3f}"]
        rows.append(cells)
    return rows


PER_CLASS_COLUMNS = ["class", "support", "precision new", "precision prod", "recall new", "recall prod", "f1 new", "f1 prod"]


def markdown(report: dict[str, Any], judgement) -> str:
    lines = [f"# {report['name']}: new model vs {report['stage']}", "",
             f"Candidate: `{report['candidate']}`; test data fingerprint `{report['test_data']['fingerprint']}` "
             f"({report['test_data']['samples']} samples).", "",
             f"**Promotion would {'pass' if judgement.passed else 'be refused'}**: {report['promotion']['summary']}.", "",
             "## KPIs", "", judgement_markdown(judgement, "new", "production"), ""]
    if report.get("candidate_per_class"):  # classifiers only
        lines += ["## Per-class metrics (test split)", "", "![per-class F1](per_class.png)", "",
                  "| " + " | ".join(PER_CLASS_COLUMNS) + " |", "|" + "---|" * len(PER_CLASS_COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in per_class_rows(report)]
    drift_result = report.get("drift")
    if drift_result:
        lines += ["", "## Drift of the training data", ""]
        if not drift_result["comparable"]:
            lines.append(f"Not comparable: {drift_result['reason']}.")
        else:
            moved = drift_result["moved"]
            lines.append(f"{len(moved)} of {drift_result['features']} features moved beyond {drift_result['threshold']:g} "
                         "(mean shift in pooled standard deviations, or std ratio).")
            if moved:
                lines += ["", "| feature | mean train | mean new | shift (sd) | std ratio |", "|---|---|---|---|---|"]
                lines += [f"| {r['feature']} | {r['mean_ref']:.3f} | {r['mean_new']:.3f} | {r['mean_shift_sd']:.2f} | {r['std_ratio']:.2f} |"
                          for r in moved[:30]]
    return "\n".join(lines) + "\n"
