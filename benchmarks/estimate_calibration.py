"""Is the export's quality estimate honest on real data? Its interval against unseen converters.

Data: UCI Bank Marketing ("bank-additional-full"): S. Moro, P. Cortez and P. Rita, "A Data-Driven
Approach to Predict the Success of Bank Telemarketing", Decision Support Systems 62 (2014) 22-31;
UCI Machine Learning Repository, Bank Marketing, licence CC BY 4.0. One client per row
(``user_id`` = row number), ``duration`` dropped (known only after the call), ``y = yes`` the
conversion ``term_deposit`` (tables as in ``benchmarks/real_data.py``).

For each draw (seeded): the subscribers are split into seeds and unseen converters
(``--unseen-fraction``); a build (features, encoder, embeddings, index) is made from every client
and the seeds' conversions only, so the encoder trained on the seeds' type but never saw the
unseen converters; the seeds are exported with the default config (strategy and quality estimate
included) at the largest tier; then, at each tier, the estimate's recall interval is checked
against the recall measured on the unseen converters (their share inside the tier's top users).
Prints one table (draw x tier) and how many draws contain the measured recall per tier, and
writes ``calibration.json`` to ``--out``.

Example::

    python benchmarks/estimate_calibration.py --out /tmp/calibration
    python benchmarks/estimate_calibration.py --out /tmp/cal-fast --draws 2 --set train.epochs=3
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_data import (
    BANK_TYPE,
    DEFAULT_DATASETS,
    parse_settings,
    read_bank,
    with_settings,
)

from lookalike.audience.export import export_audience
from lookalike.build_steps import BuildRequest, run_build
from lookalike.core.artifacts import write_json
from lookalike.core.config import LookalikeConfig, load_config
from lookalike.core.workdir import Workdir


def split_converters(
    converters: np.ndarray, unseen_fraction: float, draw: int
) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, unseen): a seeded random ``unseen_fraction`` of ``converters`` held out, both sorted.

    Example::

        >>> seeds, unseen = split_converters(np.arange(10), 0.3, 0)
        >>> len(seeds), len(unseen), sorted([*seeds, *unseen]) == list(range(10))
        (7, 3, True)
    """
    shuffled = np.random.default_rng(draw).permutation(converters)
    held = round(unseen_fraction * len(converters))
    return np.sort(shuffled[held:]), np.sort(shuffled[:held])


def run_draw(
    frame: pl.DataFrame, draw: int, args: argparse.Namespace, config: LookalikeConfig
) -> list[dict[str, Any]]:
    """One draw: split Bank's subscribers (``frame.converted``) into seeds and unseen converters,
    build from every client and the seeds' conversions, export the seeds at the largest tier, and
    return :func:`tier_rows` with the draw number and the build and export seconds."""
    folder = args.out / f"d{draw}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ids = frame.get_column("user_id")
    seeds, unseen = split_converters(
        ids.filter(frame.get_column("converted")).to_numpy(), args.unseen_fraction, draw
    )
    profiles, conversions, seed_file = (
        folder / f"{name}.parquet" for name in ("profiles", "conversions", "seeds")
    )
    frame.drop("converted").write_parquet(profiles)
    pl.DataFrame({"user_id": seeds, "conversion_type": BANK_TYPE}).write_parquet(conversions)
    pl.DataFrame({"user_id": seeds}).write_parquet(seed_file)
    started = time.perf_counter()
    build = run_build(
        Workdir(folder / "work"),
        BuildRequest(None, str(profiles), str(conversions), config=config),
        progress=lambda _: None,
    )
    built = time.perf_counter()
    result = export_audience(
        build,
        seed_file,
        folder / "audience.parquet",
        fraction=max(config.audience.tiers),
        config=config,
        progress=lambda _: None,
    )
    exported = time.perf_counter()
    audience = pl.read_parquet(result.audience).get_column("user_id")
    found = audience.is_in(pl.Series(unseen).implode()).to_numpy()
    report = json.loads(result.report_json.read_text())
    timing = {
        "build_s": round(built - started, 1),
        "export_s": round(exported - built, 1),
        "quality_s": report["timings_s"]["quality"],
        "seeds": len(seeds),
    }
    if not args.keep_work:
        shutil.rmtree(folder / "work", ignore_errors=True)
    return [
        {"draw": draw, **row, **timing} for row in tier_rows(report["quality"], found, len(unseen))
    ]


def tier_rows(quality: dict[str, Any], found: np.ndarray, unseen: int) -> list[dict[str, Any]]:
    """Per tier of the report's quality section: the estimate and the recall of the ``unseen``
    converters (``found``: bool per audience user, best first, "is an unseen converter").

    Example (4 unseen converters, 2 of them in a tier of 3 users)::

        >>> size = {"tier": 0.1, "size": 3, "fraction": 0.1,
        ...         "recall": {"value": 0.4, "ci95": [0.2, 0.6]}, "lift": {"value": 4.0}}
        >>> found = np.array([True, False, True, False, True, True])
        >>> row = tier_rows({"sizes": [size]}, found, 4)[0]
        >>> row["measured"], row["contained"], row["lift_measured"]
        (0.5, True, 5.0)
    """
    rows = []
    for size in quality["sizes"]:
        if size["tier"] is None:
            continue
        measured = float(found[: size["size"]].sum() / unseen)
        low, high = size["recall"]["ci95"]
        rows.append(
            {
                "tier": size["tier"],
                "size": size["size"],
                "unseen": unseen,
                "estimate": size["recall"]["value"],
                "ci95": [low, high],
                "measured": measured,
                "contained": low <= measured <= high,
                "lift_estimate": size["lift"]["value"],
                "lift_measured": measured / size["fraction"],
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The draw x tier table and, per tier, the draws whose interval holds the measured recall."""
    lines = [
        (
            "| draw | tier | users | estimated recall (95% interval) | measured on unseen "
            "| contained | lift estimated / measured |"
        ),
        "|---:|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        low, high = r["ci95"]
        lines.append(
            f"| {r['draw']} | {r['tier']:.0%} | {r['size']} | {r['estimate']:.3f} "
            f"({low:.3f}-{high:.3f}) | {r['measured']:.3f} | {'yes' if r['contained'] else 'no'} "
            f"| {r['lift_estimate']:.2f} / {r['lift_measured']:.2f} |"
        )
    lines.append("")
    for tier in sorted({r["tier"] for r in rows}):
        of_tier = [r for r in rows if r["tier"] == tier]
        contained = sum(r["contained"] for r in of_tier)
        gap = np.mean([r["estimate"] - r["measured"] for r in of_tier])
        lines.append(
            f"- tier {tier:.0%}: the interval contains the measured recall on {contained} of "
            f"{len(of_tier)} draws; mean estimate - measured {gap:+.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--unseen-fraction", type=float, default=0.3)
    parser.add_argument("--config", type=Path, default=None, help="Config file (YAML/JSON/TOML).")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="Override a config value (repeatable).",
    )
    parser.add_argument("--keep-work", action="store_true", help="Keep each draw's build.")
    args = parser.parse_args()
    config = with_settings(load_config(args.config), parse_settings(args.set))
    frame = read_bank(args.datasets)
    rows = []
    for draw in range(args.draws):
        rows += run_draw(frame, draw, args, config)
        last = rows[-1]
        seconds = f"build {last['build_s']} s, export {last['export_s']} s"
        print(f"draw {draw}: {seconds} (estimate {last['quality_s']} s)", flush=True)
    table = markdown(rows)
    print(table)
    write_json(args.out / "calibration.json", {"rows": rows, "markdown": table})


if __name__ == "__main__":
    main()
