"""How far do proxies carry denied columns into an audience? The fairness audit on UCI Adult.

Data: B. Becker and R. Kohavi, "Adult", UCI Machine Learning Repository, 1996,
https://doi.org/10.24432/C5XW20, licence CC BY 4.0. ``adult.data`` and ``adult.test`` together
(48,842 people, ``user_id`` = row number), tables as in ``benchmarks/real_data.py``; income
``>50K`` is the conversion ``high_income``.

A seeded sample of ``--seeds`` high earners is the seed list and the build's only conversions (the
other high earners are never seen). Three builds from the same profiles: one that uses ``sex`` and
``race`` as features (``allowed``), one with them in ``ingest.deny_columns`` (``denied``: they never
reach the model), and one that also denies the features its proxy check flagged (``proxies``).
Each exports the seeds at ``--fraction`` of the eligible users (everyone but the seeds) with
``sex`` and ``race`` in ``privacy.audit_columns``. Per group, the printed table gives its share of
the eligible users and the gap (audience share - eligible share, percentage points) of: the seeds
themselves (what a perfect copy of the seeds would show), a random audience of the same size
(seeded), and the three builds' audiences. Also: the share of unseen high earners in each
audience and the proxy warnings of the denying build. Writes ``fairness.json`` to ``--out``.

Example::

    python benchmarks/fairness_adult.py --out /tmp/fairness
    python benchmarks/fairness_adult.py --out /tmp/fair-fast --users 3000 --seeds 300 \
        --set train.epochs=1 --set audience.quality_estimate=false   # a quick check
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_data import (
    ADULT_TYPE,
    DEFAULT_DATASETS,
    parse_settings,
    read_adult,
    stratified_sample,
    with_settings,
)

from lookalike.audience.export import export_audience
from lookalike.build_steps import BuildRequest, run_build
from lookalike.core.artifacts import read_json, write_json
from lookalike.core.config import LookalikeConfig, load_config
from lookalike.core.workdir import Workdir
from lookalike.privacy.audit import audit_shares

AUDITED = ["sex", "race"]
AUDIENCES = ("seeds", "random", "allowed", "denied", "proxies")


def write_inputs(frame: pl.DataFrame, folder: Path, seeds: int, seed: int) -> dict[str, Any]:
    """Profiles, the seeds' conversions and the seed list; the other high earners' ids."""
    folder.mkdir(parents=True, exist_ok=True)
    earners = frame.filter(pl.col("converted")).get_column("user_id")
    chosen = earners.sample(seeds, seed=seed).sort()
    paths = {name: folder / f"{name}.parquet" for name in ("profiles", "conversions", "seeds")}
    frame.drop("converted").write_parquet(paths["profiles"])
    chosen.to_frame().with_columns(conversion_type=pl.lit(ADULT_TYPE)).write_parquet(paths["conversions"])
    chosen.to_frame().write_parquet(paths["seeds"])
    return {**paths, "seed_ids": chosen, "unseen": earners.filter(~earners.is_in(chosen.implode()))}


def build_and_export(inputs: dict[str, Any], folder: Path, config: LookalikeConfig,
                     fraction: float) -> dict[str, Any]:
    """One build from the inputs, the seeds' export and its report."""
    build = run_build(Workdir(folder / "work"), BuildRequest(
        None, str(inputs["profiles"]), str(inputs["conversions"]), config=config), progress=print)
    result = export_audience(build, inputs["seeds"], folder / "audience.parquet",
                             fraction=fraction, config=config, progress=print)
    report = json.loads(result.report_json.read_text())
    privacy = read_json(build.root / "ingest_report.json")["privacy"]
    return {"ids": pl.read_parquet(result.audience).get_column("user_id"), "report": report,
            "proxy_warnings": privacy["proxy_warnings"], "proxy_features": privacy["proxy_features"],
            "population": pl.read_parquet(build.users).get_column("user_id")}


def gap_table(shares: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per audited group: its eligible share and each audience's gap in points."""
    first = shares["seeds"]
    table = []
    for i, row in enumerate(first):
        gaps = {name: shares[name][i]["gap_points"] for name in AUDIENCES}
        assert all(shares[n][i]["group"] == row["group"] for n in AUDIENCES)
        table.append({"column": row["column"], "group": row["group"],
                      "eligible_share": row["eligible_share"], **gaps})
    return table


def markdown(table: list[dict[str, Any]], precision: dict[str, float], base_rate: float) -> str:
    lines = ["| column | group | eligible share | " + " | ".join(AUDIENCES) + " |",
             "|---|---|---|" + "---|" * len(AUDIENCES)]
    lines += [f"| {r['column']} | {r['group']} | {r['eligible_share']:.1%} | "
              + " | ".join(f"{r[n]:+.1f}" for n in AUDIENCES) + " |" for r in table]
    lines.append("")
    lines.append(f"unseen high earners in the audience (eligible rate {base_rate:.1%}): "
                 + ", ".join(f"{n} {p:.1%}" for n, p in precision.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS,
                        help="Folder holding adult/adult.data.csv.gz and adult/adult.test.csv.gz.")
    parser.add_argument("--out", type=Path, required=True, help="Folder for tables, builds, results.")
    parser.add_argument("--users", type=int, default=None,
                        help="A stratified sample of N people (a quick check); default all.")
    parser.add_argument("--seeds", type=int, default=2000, help="High earners in the seed list.")
    parser.add_argument("--fraction", type=float, default=0.05, help="Audience share of eligible.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the seed sample and random audience.")
    parser.add_argument("--config", type=Path, default=None, help="Base config file.")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        help="section.key=value override (repeatable).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training.")
    args = parser.parse_args()
    base = with_settings(load_config(args.config), {
        "train.threads": args.threads, "privacy.audit_columns": AUDITED,
        **parse_settings(args.settings)})
    shutil.rmtree(args.out, ignore_errors=True)  # a stale checkpoint would be resumed
    frame = stratified_sample(read_adult(args.datasets), args.users, args.seed)
    inputs = write_inputs(frame, args.out / "tables", args.seeds, args.seed)
    runs = {"denied": build_and_export(inputs, args.out / "denied", with_settings(
        base, {"ingest.deny_columns": AUDITED}), args.fraction)}
    proxies = [*AUDITED, *runs["denied"]["proxy_features"]]
    runs["proxies"] = build_and_export(inputs, args.out / "proxies", with_settings(
        base, {"ingest.deny_columns": proxies}), args.fraction)
    runs["allowed"] = build_and_export(inputs, args.out / "allowed", base, args.fraction)
    profiles = frame.select("user_id", *AUDITED)
    population = runs["denied"]["population"]
    eligible = population.filter(~population.is_in(inputs["seed_ids"].implode()))
    size = len(runs["denied"]["ids"])
    audiences = {"seeds": inputs["seed_ids"], "random": eligible.sample(size, seed=args.seed),
                 **{name: run["ids"] for name, run in runs.items()}}
    shares = {name: audit_shares(ids, eligible, profiles, AUDITED) for name, ids in audiences.items()}
    for name in runs:  # the export's own audit is the same computation
        assert shares[name] == runs[name]["report"]["fairness"]["rows"]
    unseen = inputs["unseen"].implode()
    precision = {n: float(ids.is_in(unseen).mean()) for n, ids in audiences.items() if n != "seeds"}
    base_rate = float(eligible.is_in(unseen).mean())
    table = gap_table(shares)
    print(markdown(table, precision, base_rate))
    print(f"denied in 'proxies': {proxies}; proxy warnings of the 'denied' build:")
    for warning in runs["denied"]["proxy_warnings"] or ["none"]:
        print(f"- {warning}")
    write_json(args.out / "fairness.json", {
        "seeds": args.seeds, "fraction": args.fraction, "audience_size": size, "gaps": table,
        "unseen_high_earner_share": precision, "eligible_high_earner_share": base_rate,
        "proxy_warnings": runs["denied"]["proxy_warnings"], "proxies_denied": proxies,
        "fairness_warnings": {n: [w for w in run["report"]["warnings"] if w.startswith("fairness")]
                              for n, run in runs.items()}})


if __name__ == "__main__":
    main()
