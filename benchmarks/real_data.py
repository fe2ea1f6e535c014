"""Audience quality on real tables: one evaluation matrix over data sets, sizes and seed-list sizes.

Every case runs the whole evaluation as ``lookalike evaluate`` does
(:func:`lookalike.evaluation.evaluate.evaluate`): features, an encoder trained without the
held-out converters, and every method scored on them. The script prints one table (data set x
method: AUC and precision at 1/5/10/20%, means over the case's draws), the default strategy
against the better of logistic regression and gradient boosting (paired 95% bootstrap intervals,
per draw), the memorization figure of each case (5-fold AUC of telling the seeds from the
held-out converters, on the embedding and on the raw features) and the wall time of each case,
and writes ``results.json`` and ``results.md`` to ``--out``.

Data:

- Bank Marketing ("bank-additional-full"): S. Moro, P. Cortez and P. Rita, "A Data-Driven
  Approach to Predict the Success of Bank Telemarketing", Decision Support Systems 62 (2014)
  22-31; UCI Machine Learning Repository, Bank Marketing, licence CC BY 4.0. One client per row
  (``user_id`` = row number), ``duration`` dropped (known only after the call: it leaks the
  answer), ``y = yes`` is the conversion ``term_deposit``.
- Adult ("Census Income"): B. Becker and R. Kohavi, "Adult", UCI Machine Learning Repository,
  1996, https://doi.org/10.24432/C5XW20, licence CC BY 4.0. ``adult.data`` and ``adult.test``
  together (48,842 people, ``user_id`` = row number, data first), ``?`` = missing, income
  ``>50K`` (``>50K.`` in the test file) is the conversion ``high_income``. Profiles only; every
  column is a feature (``race`` and ``sex`` included: deny them with ``--set
  ingest.deny_columns=[race,sex]``).
- Synthetic (only with ``--synthetic`` or when named in ``--only``; a regression guard):
  ``lookalike generate`` draws (seeds 0, 1, 2; ``--synthetic-users`` users, 30 events each) with
  the generator's sample config (``card_signup`` held back from training).

Cases (``--only`` takes these names, comma-separated; ``NAME:D`` runs draw ``D`` only):

| case | table | seeds / held out | draws |
|---|---|---|---|
| ``bank`` | all 41,188 clients | 70% / 30% of subscribers (``evaluate.holdout_fraction``) | 1 |
| ``bank-10000``, ``bank-5000``, ``bank-3000`` | stratified sample (subscriber rate kept), seeded by the draw | 70% / 30% | 3 |
| ``adult`` | all 48,842 people | 70% / 30% | 1 |
| ``adult-10000`` | stratified sample | 70% / 30% | 3 |
| ``bank-seeds100``, ``bank-seeds300``, ``bank-seeds1000`` | all clients | 100 / 300 / 1,000 seeds, every other subscriber held out; which ones: ``evaluate.seed`` = the draw | 3 |
| ``synthetic`` | ``lookalike generate --seed D`` | latest 30% of each type's converters | 3 |

The seed-list cases need no new option: ``evaluate.holdout_fraction`` is set to ``(n - k) / n``
for ``n`` converters and ``k`` seeds, and the hold-out rounds it back to exactly ``n - k``.

Examples::

    python benchmarks/real_data.py --out /tmp/real                       # the whole matrix
    python benchmarks/real_data.py --only bank-3000,adult-10000 --out /tmp/real-small
    python benchmarks/real_data.py --only bank-3000:0 --fast --out /tmp/smoke   # seconds
    python benchmarks/real_data.py --only bank-5000 --set train.epochs=10 --out /tmp/variant
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from lookalike.core.artifacts import atomic_write, write_json
from lookalike.core.config import LookalikeConfig, load_config
from lookalike.evaluation.evaluate import evaluate
from lookalike.evaluation.report import TypeEvaluation

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"
BANK_FILE = Path("bank-marketing") / "bank-additional-full.csv.gz"
ADULT_FILES = (Path("adult") / "adult.data.csv.gz", Path("adult") / "adult.test.csv.gz")
BANK_TYPE, ADULT_TYPE = "term_deposit", "high_income"
BANK_LEAKING_COLUMNS = ["duration"]
ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
PROPENSITY_BASELINES = ("logistic_regression", "gradient_boosting")
FAST_SETTINGS = {"train.epochs": 3, "train.patience": 2, "evaluate.bootstrap": 50}


@dataclass(frozen=True)
class Tables:
    """One case's input tables and what the evaluation needs beside them."""

    profiles: Path
    conversions: Path
    events: Path | None = None
    as_of: str | None = None
    settings: dict[str, Any] | None = None  # dotted config overrides this case needs


@dataclass(frozen=True)
class CaseKind:
    """A named case: how to write its tables for a draw, and how many draws it has."""

    name: str
    draws: int
    write: Callable[[Path, Path, int], Tables]  # (datasets folder, case folder, draw) -> tables
    optional: bool = False  # left out unless named or --synthetic


# --- tables ------------------------------------------------------------------------------------


def read_bank(datasets: Path) -> pl.DataFrame:
    """Bank Marketing: one row per client, ``user_id`` = row number, ``converted`` = (y == yes)."""
    frame = pl.read_csv(datasets / BANK_FILE, separator=";", infer_schema_length=None)
    frame = frame.drop(BANK_LEAKING_COLUMNS).with_row_index("user_id")
    return frame.with_columns(pl.col("user_id").cast(pl.Int64), converted=pl.col("y") == "yes").drop("y")


def read_adult(datasets: Path) -> pl.DataFrame:
    """Adult, both files: ``user_id`` = row number, ``converted`` = income above 50K."""
    parts = []
    for name in ADULT_FILES:
        part = pl.read_csv(datasets / name, infer_schema=False)  # ", "-separated: strip below
        parts.append(part.rename({c: c.strip() for c in part.columns}))
    frame = pl.concat(parts).with_columns(pl.all().str.strip_chars())
    frame = frame.with_columns(pl.when(pl.all() == "?").then(None).otherwise(pl.all()).name.keep())
    frame = frame.with_columns(pl.col(ADULT_NUMERIC).cast(pl.Int64))
    converted = pl.col("Y").str.strip_chars_end(".") == ">50K"
    frame = frame.with_row_index("user_id").with_columns(pl.col("user_id").cast(pl.Int64))
    return frame.with_columns(converted=converted).drop("Y")


def stratified_sample(frame: pl.DataFrame, users: int | None, seed: int) -> pl.DataFrame:
    """``users`` rows with the converter share of ``frame`` (rounded), seeded; all if ``None``."""
    if users is None or users >= frame.height:
        return frame
    converters = frame.filter(pl.col("converted"))
    n_converters = round(users * converters.height / frame.height)
    others = frame.filter(~pl.col("converted"))
    picked = pl.concat([converters.sample(n=n_converters, seed=seed),
                        others.sample(n=users - n_converters, seed=seed)])
    return picked.sort("user_id")  # rows stay in the table's own (for Bank, date) order


def write_profile_tables(frame: pl.DataFrame, conversion_type: str, folder: Path) -> Tables:
    """Profiles (every column but ``converted``) and the conversions of converters, as Parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    profiles, conversions = folder / "profiles.parquet", folder / "conversions.parquet"
    with atomic_write(profiles) as tmp:
        frame.drop("converted").write_parquet(tmp)
    converted = frame.filter(pl.col("converted")).select(
        "user_id", pl.lit(conversion_type).alias("conversion_type")
    )
    with atomic_write(conversions) as tmp:
        converted.write_parquet(tmp)
    return Tables(profiles, conversions)


def sampled(reader: Callable[[Path], pl.DataFrame], conversion_type: str, users: int | None):
    """Writer of a (stratified, seeded by the draw) sample of a profile table."""

    def write(datasets: Path, folder: Path, draw: int) -> Tables:
        return write_profile_tables(stratified_sample(reader(datasets), users, draw), conversion_type, folder)

    return write


def seed_list(seeds: int):
    """Writer of full Bank with ``seeds`` converters as the seed list, every other one held out."""

    def write(datasets: Path, folder: Path, draw: int) -> Tables:
        frame = read_bank(datasets)
        n = int(frame.get_column("converted").sum())
        if not 0 < seeds < n:
            raise SystemExit(f"bank-seeds{seeds}: Bank has {n} subscribers")
        tables = write_profile_tables(frame, BANK_TYPE, folder)
        fraction = (n - seeds) / n
        assert min(n - 1, max(1, round(fraction * n))) == n - seeds  # holdout_split's count
        return Tables(tables.profiles, tables.conversions,
                      settings={"evaluate.holdout_fraction": fraction, "evaluate.seed": draw})

    return write


def synthetic(users: int):
    """Writer of a ``lookalike generate`` draw (generator seed = the draw) with its sample config."""

    def write(datasets: Path, folder: Path, draw: int) -> Tables:
        from lookalike.data.synthetic import DEFAULT_AS_OF, generate

        data = generate(folder, users, events_per_user=30.0, seed=draw)
        sample = yaml.safe_load((folder / "config.yaml").read_text())
        settings = {f"{section}.{key}": value
                    for section, values in sample.items() for key, value in values.items()}
        return Tables(data.profiles, data.conversions, data.events, DEFAULT_AS_OF.isoformat(), settings)

    return write


def case_kinds(synthetic_users: int) -> dict[str, CaseKind]:
    kinds = [
        CaseKind("bank", 1, sampled(read_bank, BANK_TYPE, None)),
        *(CaseKind(f"bank-{n}", 3, sampled(read_bank, BANK_TYPE, n)) for n in (10_000, 5_000, 3_000)),
        CaseKind("adult", 1, sampled(read_adult, ADULT_TYPE, None)),
        CaseKind("adult-10000", 3, sampled(read_adult, ADULT_TYPE, 10_000)),
        *(CaseKind(f"bank-seeds{k}", 3, seed_list(k)) for k in (100, 300, 1000)),
        CaseKind("synthetic", 3, synthetic(synthetic_users), optional=True),
    ]
    return {k.name: k for k in kinds}


# --- configuration ------------------------------------------------------------------------------


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``section.key=value`` strings (values read as YAML) -> {dotted key: value}."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set {pair!r}: use section.key=value")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def with_settings(config: LookalikeConfig, settings: dict[str, Any]) -> LookalikeConfig:
    """The config with dotted overrides applied (validated like a config file)."""
    raw = config.model_dump(mode="json")
    for key, value in settings.items():
        section, _, field = key.partition(".")
        raw.setdefault(section, {})[field] = value
    return LookalikeConfig.model_validate(raw)


# --- one case -----------------------------------------------------------------------------------


def run_case(kind: CaseKind, draw: int, args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """Write the tables of one draw, evaluate, and return its record (figures and timings)."""
    folder = args.out / "cases" / kind.name / f"d{draw}"
    shutil.rmtree(folder / "work", ignore_errors=True)  # a stale checkpoint would be resumed
    started, cpu = time.perf_counter(), time.process_time()
    tables = kind.write(args.datasets, folder / "tables", draw)
    prepared = time.perf_counter()
    settings = {**(tables.settings or {}), **base}
    config = with_settings(args.config, settings)
    result = evaluate(folder / "work", str(tables.conversions), folder / "report",
                      events=str(tables.events) if tables.events else None,
                      profiles=str(tables.profiles), as_of=tables.as_of, config=config,
                      progress=print if args.verbose else None)
    finished = time.perf_counter()
    users = pl.scan_parquet(tables.profiles).select(pl.len()).collect().item()
    record = {
        "case": kind.name, "draw": draw, "users": users,
        "seconds": {"tables": round(prepared - started, 1), "evaluate": round(finished - prepared, 1),
                    "training": result.training["seconds"], "cpu": round(time.process_time() - cpu, 1)},
        "training": result.training, "report": str(result.report_json),
        "settings": settings, "default": f"two_tower_{config.audience.strategy}",
        "types": {name: {**type_record(t, config),
                         "build_memorization": result.training["memorization"].get(name)}
                  for name, t in result.types.items()},
    }
    if not args.keep_work:
        shutil.rmtree(folder / "work", ignore_errors=True)
    return record


def type_record(t: TypeEvaluation, config: LookalikeConfig) -> dict[str, Any]:
    """Point figures of every method, memorization, and the default against the propensity models."""
    cutoffs = config.evaluate.cutoffs
    methods = {
        name: {"auc": f.auc, **{f"p@{c:g}": f.cutoffs[c].precision for c in cutoffs}}
        for name, f in t.methods.items()
    }
    against = {}
    for figure in ["auc", *(f"p@{c:g}" for c in cutoffs)]:
        present = [m for m in PROPENSITY_BASELINES if m in methods and m in t.comparisons]
        if not present:
            continue
        best = max(present, key=lambda m: methods[m][figure])
        key = "auc" if figure == "auc" else f"precision@{figure[2:]}"
        d = t.comparisons[best][key]
        against[figure] = {"other": best, "value": d.value, "ci95": list(d.ci95), "clear": d.clear}
    return {
        "trained": t.trained, "seeds": t.split.seeds.len(), "heldout": t.split.heldout.len(),
        "eligible": t.eligible, "methods": methods, "memorization": t.memorization,
        "default_minus_best_propensity": against,
    }


# --- the report ---------------------------------------------------------------------------------


def rows_by_dataset(records: list[dict[str, Any]]) -> dict[str, list[tuple[dict, dict]]]:
    """``case`` (``case/type`` when a case has several types) -> [(record, type record), ...]."""
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for record in records:
        for name, t in record["types"].items():
            label = record["case"] if len(record["types"]) == 1 else f"{record['case']}/{name}"
            groups.setdefault(label, []).append((record, t))
    return groups


def _interval(figures: dict[str, Any]) -> str:
    """The embedding's memorization AUC with its interval where there is one."""
    if "embedding_low" not in figures:
        return f"{figures['embedding']:.3f}"
    return f"{figures['embedding']:.3f} [{figures['embedding_low']:.3f}, {figures['embedding_high']:.3f}]"


def _build_figure(figures: dict[str, Any] | None) -> str:
    """The build's memorization verdict: AUC, interval, held-out count, ``*`` when flagged."""
    if not figures or figures.get("embedding") is None:
        return "-"
    return f"{_interval(figures)} ({figures['heldout']}){'*' if figures['flagged'] else ''}"


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def markdown(records: list[dict[str, Any]], cutoffs: list[float]) -> str:
    figures = ["auc", *(f"p@{c:g}" for c in cutoffs)]
    heads = ["AUC", *(f"P@{c:.0%}" for c in cutoffs)]
    groups = rows_by_dataset(records)
    lines = ["# Audience quality on real data (`benchmarks/real_data.py`)", "",
             ("Means over each data set's draws (n = draws). Held-out converters: see the "
              "per-draw table."), "",
             "| data set | n | method | " + " | ".join(heads) + " |",
             "|---|---|---|" + "---|" * len(heads)]
    for label, members in groups.items():
        default = members[0][0]["default"]
        for method in members[0][1]["methods"]:
            cells = [f"{_mean([t['methods'][method][f] for _, t in members]):.3f}" for f in figures]
            name = f"**{method}**" if method == default else method
            lines.append(f"| {label} | {len(members)} | {name} | " + " | ".join(cells) + " |")
    lines += ["", ("Default minus the better of logistic regression and gradient boosting (chosen "
                   "per figure and draw: L / G), paired 95% bootstrap intervals over held-out "
                   "converters; `*` the interval excludes 0."), "",
              "| data set | draw | seeds | held out | " + " | ".join(heads) + " |",
              "|---|---|---|---|" + "---|" * len(heads)]
    for label, members in groups.items():
        for record, t in members:
            cells = []
            for f in figures:
                d = t["default_minus_best_propensity"].get(f)
                if d is None:
                    cells.append("-")
                    continue
                mark = "*" if d["clear"] else ""
                cells.append(f"{d['value']:+.3f}{mark} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] "
                             f"{d['other'][0].upper()}")
            lines.append(f"| {label} | {record['draw']} | {t['seeds']} | {t['heldout']} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Summary over draws: mean difference (draws clearly below / clearly above).", "",
              "| data set | n | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for label, members in groups.items():
        cells = []
        for f in figures:
            ds = [t["default_minus_best_propensity"][f] for _, t in members
                  if f in t["default_minus_best_propensity"]]
            below = sum(d["clear"] and d["value"] < 0 for d in ds)
            above = sum(d["clear"] and d["value"] > 0 for d in ds)
            cells.append(f"{_mean([d['value'] for d in ds]):+.3f} ({below}/{above})")
        lines.append(f"| {label} | {len(members)} | " + " | ".join(cells) + " |")
    lines += ["", ("Memorization (5-fold AUC, seeds vs held-out converters, 95% interval; 0.5 = "
                   "treated alike), the build's own figure on its held-out converters (`*`: "
                   "flagged, the export leaves out the embedding), and wall time per draw (tables "
                   "+ evaluation; training alone in brackets; CPU seconds of all threads beside "
                   "it: the machine may be shared)."), "",
              ("| data set | draw | users | seeds | held out | embedding | raw | build (held out) "
               "| epochs (best) | seconds | CPU s |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, members in groups.items():
        for record, t in members:
            s, tr = record["seconds"], record["training"]
            lines.append(
                f"| {label} | {record['draw']} | {record['users']} | {t['seeds']} | {t['heldout']} | "
                f"{_interval(t['memorization'])} | {t['memorization']['raw']:.3f} | "
                f"{_build_figure(t.get('build_memorization'))} | {tr['epochs_run']} ({tr['best_epoch']}) | {s['tables'] + s['evaluate']:.0f} "
                f"({s['training']:.0f}) | {s['cpu']:.0f} |"
            )
    return "\n".join(lines) + "\n"


# --- command line -------------------------------------------------------------------------------


def selected_cases(args: argparse.Namespace, kinds: dict[str, CaseKind]) -> list[tuple[CaseKind, int]]:
    if args.only:
        chosen = []
        for item in args.only.split(","):
            name, _, draw = item.strip().partition(":")
            if name not in kinds:
                raise SystemExit(f"--only: unknown case {name!r}; choose from {', '.join(kinds)}")
            draws = [int(draw)] if draw else list(range(min(kinds[name].draws, args.draws or 99)))
            chosen += [(kinds[name], d) for d in draws]
        return chosen
    return [(k, d) for k in kinds.values() if not k.optional or args.synthetic
            for d in range(min(k.draws, args.draws or 99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for tables, reports, results.")
    parser.add_argument("--only", default=None, help="Comma-separated cases (NAME or NAME:DRAW).")
    parser.add_argument("--draws", type=int, default=None, help="At most this many draws per case.")
    parser.add_argument("--synthetic", action="store_true", help="Add the synthetic draws.")
    parser.add_argument("--synthetic-users", type=int, default=50_000)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS,
                        help="Folder holding bank-marketing/ and adult/.")
    parser.add_argument("--config", type=Path, default=None, help="Config file (YAML/JSON/TOML).")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        help="section.key=value config override (repeatable), e.g. train.epochs=10.")
    parser.add_argument("--fast", action="store_true",
                        help="Smoke check: 3 epochs, patience 2, 50 bootstrap resamples.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training.")
    parser.add_argument("--keep-work", action="store_true", help="Keep each case's build and model.")
    parser.add_argument("--verbose", action="store_true", help="Print the evaluation's progress.")
    args = parser.parse_args()
    args.config = load_config(args.config)
    base = {**(FAST_SETTINGS if args.fast else {}), "train.threads": args.threads,
            **parse_settings(args.settings)}
    cases = selected_cases(args, case_kinds(args.synthetic_users))
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for kind, draw in cases:
        record = run_case(kind, draw, args, base)
        records.append(record)
        brief = ", ".join(
            f"{name}: memorization {t['memorization']['embedding']:.3f}, default AUC "
            f"{t['methods'][record['default']]['auc']:.3f} vs LR "
            f"{t['methods']['logistic_regression']['auc']:.3f} / GB "
            f"{t['methods']['gradient_boosting']['auc']:.3f}"
            for name, t in record["types"].items())
        print(f"{kind.name}:{draw} {record['seconds']['tables'] + record['seconds']['evaluate']:.0f}s "
              f"({brief})", flush=True)
        write_json(args.out / "results.json", {"settings": base, "cases": records})
    text = markdown(records, args.config.evaluate.cutoffs)
    with atomic_write(args.out / "results.md") as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
