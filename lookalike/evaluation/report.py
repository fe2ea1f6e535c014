"""The evaluation's report: ``evaluation.json``, ``evaluation.md`` and the gains-curve plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.core.artifacts import ReportFiles, atomic_write, write_json
from lookalike.core.config import EvaluateConfig, LookalikeConfig
from lookalike.evaluation.metrics import Difference, MethodFigures
from lookalike.evaluation.split import TypeSplit

REPORT_JSON, REPORT_MD, GAINS_PNG = "evaluation.json", "evaluation.md", "gains.png"


REPORT_JSON, REPORT_MD, GAINS_PNG = "evaluation.json", "evaluation.md", "gains.png"


REPORT_JSON, REPORT_MD, GAINS_PNG = "evaluation.json", "evaluation.md", "gains.png"


@dataclass(frozen=True)
class TypeEvaluation:
    """Every method's figures on one conversion type."""

    conversion_type: str
    trained: bool
    split: TypeSplit
    eligible: int
    methods: dict[str, MethodFigures]
    default_method: str
    # The default method minus each other method (random left out), keyed by the other's name.
    comparisons: dict[str, dict[str, Difference]]
    # Seeds vs held-out converters (lookalike.encoder.health.memorization_figures): AUC by space
    # ("embedding", "raw"), the embedding's interval, group sizes, and the build's rule's verdict
    memorization: dict[str, Any]

    def best_strategies(self) -> dict[str, str]:
        """The two-tower method with the highest AUC and with the highest precision at each cutoff."""
        strategies = {m: f for m, f in self.methods.items() if m.startswith("two_tower_")}
        best = {"auc": max(strategies, key=lambda m: strategies[m].auc)}
        for fraction in next(iter(strategies.values())).cutoffs:
            best[f"precision@{fraction:g}"] = max(
                strategies, key=lambda m: strategies[m].cutoffs[fraction].precision
            )
        return best

    def to_json(self) -> dict[str, Any]:
        return {
            "trained": self.trained, "split": self.split.method, "seeds": self.split.seeds.len(),
            "heldout": self.split.heldout.len(), "eligible": self.eligible,
            "methods": {name: figures.to_json() for name, figures in self.methods.items()},
            "memorization": self.memorization,
            "default_method": self.default_method,
            "best_two_tower": self.best_strategies(),
            "default_minus": {
                other: {figure: d.to_json() for figure, d in differences.items()}
                for other, differences in self.comparisons.items()
            },
        }


@dataclass(frozen=True)
class EvaluationResult(ReportFiles):
    """Where the report and its gains plot went, and the figures in it."""

    gains_png: Path
    types: dict[str, TypeEvaluation]
    training: dict[str, Any]


def write_report(
    out_dir: Path, types: dict[str, TypeEvaluation], training: dict[str, Any], config: LookalikeConfig
) -> EvaluationResult:
    """Write the JSON report, the Markdown tables and the gains-curve figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": config.evaluate.model_dump(mode="json"),
        "training": training,
        "types": {name: t.to_json() for name, t in types.items()},
    }
    report_json = write_json(out_dir / REPORT_JSON, payload)
    report_md = out_dir / REPORT_MD
    with atomic_write(report_md) as tmp:
        tmp.write_text(markdown_report(types, training, config.evaluate))
    gains_png = plot_gains(types, out_dir / GAINS_PNG)
    return EvaluationResult(report_json=report_json, report_md=report_md, gains_png=gains_png,
                            types=types, training=training)


def markdown_report(
    types: dict[str, TypeEvaluation], training: dict[str, Any], config: EvaluateConfig
) -> str:
    """One table per conversion type: AUC, precision and lift at every cutoff, 95% intervals."""
    lines = ["# Audience quality on held-out converters", "",
             (f"Encoder trained without the held-out converters: {training['epochs_run']} epochs "
             f"(best {training['best_epoch']}, {training['stop_reason']}, {training['seconds']}s). "
             f"Brackets: 95% bootstrap intervals over held-out converters ({config.bootstrap} "
             "resamples)."), ""]
    for name, t in types.items():
        role = "trained" if t.trained else "never trained on"
        lines += [f"## {name} ({role})", "",
                  (f"{t.split.seeds.len()} seeds, {t.split.heldout.len()} held out ({t.split.method} "
                  f"split), {t.eligible} eligible users."), ""]
        header = ["method", "AUC"] + [f"P@{c:.0%}" for c in config.cutoffs] + [
            f"lift@{c:.0%}" for c in config.cutoffs]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, f in t.methods.items():
            cells = [method, f"{f.auc:.3f} [{f.auc_ci[0]:.3f}, {f.auc_ci[1]:.3f}]"]
            cells += [f"{f.cutoffs[c].precision:.3f}" for c in config.cutoffs]
            cells += [f"{f.cutoffs[c].lift:.2f} [{f.lift_ci[c][0]:.2f}, {f.lift_ci[c][1]:.2f}]"
                      for c in config.cutoffs]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        m = t.memorization
        lines += [(f"Seeds vs held-out converters of this type, 5-fold AUC of a logistic regression: "
                  f"embedding {m['embedding']:.3f} [{m['embedding_low']:.3f}, "
                  f"{m['embedding_high']:.3f}], raw features {m['raw']:.3f} (about 0.5 when the "
                  "encoder treats the users it trained on like new ones; the build's rule would "
                  f"{'' if m['flagged'] else 'not '}flag these seeds as memorized)."), ""]
        lines += comparison_table(t, config)
        best = t.best_strategies()
        lines += ["Best two-tower strategy on this type: AUC `" + best["auc"] + "`, " + ", ".join(
            f"P@{c:.0%} `{best[f'precision@{c:g}']}`" for c in config.cutoffs
        ) + " (`audience.strategy` chooses; the paired table says whether a gap is clear).", ""]
    return "\n".join(lines)


def comparison_table(t: TypeEvaluation, config: EvaluateConfig) -> list[str]:
    """Markdown rows of the default method minus each other method; * marks an interval clear of 0."""
    if not t.comparisons:
        return []
    figures = ["auc"] + [f"precision@{c:g}" for c in config.cutoffs]
    header = ["other method", "AUC"] + [f"P@{c:.0%}" for c in config.cutoffs]
    lines = [(f"{t.default_method} (the default) minus each other method, paired 95% intervals; "
             "`*`: the interval excludes 0."), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for other, differences in t.comparisons.items():
        cells = [other] + [_difference_cell(differences[figure]) for figure in figures]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _difference_cell(d: Difference) -> str:
    mark = "*" if d.clear else ""
    return f"{d.value:+.4f}{mark} [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}]"


def plot_gains(types: dict[str, TypeEvaluation], target: Path) -> Path:
    """Cumulative gains of every method, one panel per conversion type (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(types), figsize=(4.5 * len(types), 4.2), squeeze=False)
    for axis, (name, t) in zip(axes[0], types.items(), strict=True):
        for method, f in t.methods.items():
            axis.plot(f.gains[0], f.gains[1], label=method, linewidth=1.2)
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        axis.set(title=name, xlabel="share of eligible users targeted", ylabel="share of held-out converters")
    axes[0][0].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    with atomic_write(target) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    return target
