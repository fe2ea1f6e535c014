"""Fairness audit: group shares against a pandas group-by, the export's report section and
warnings, denied audit columns kept out of the features, and clear errors before any write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from audience_fixtures import clustered_embeddings, population_ids, write_build, write_ids

from lookalike.audience.export import export_audience
from lookalike.audience.html import NO_AUDIT, PLOTS
from lookalike.build_steps import BuildRequest, step_features
from lookalike.core.artifacts import write_json
from lookalike.core.config import AudienceConfig, LookalikeConfig
from lookalike.core.errors import AudienceError, InputError
from lookalike.core.workdir import Workdir
from lookalike.data.spec import FeatureSpec
from lookalike.privacy.audit import MISSING_GROUP, audit_shares
from lookalike.search.neighbours import ExactSearch

REPO = Path(__file__).resolve().parents[1]
N = 600
SEED_ROWS = np.flatnonzero(np.arange(N) % 6 == 5)[:40]  # cluster 5 of clustered_embeddings


def pandas_shares(audience: list, eligible: list, profiles: pd.DataFrame, column: str) -> pd.DataFrame:
    """The reference: value counts of the column over each side's users, missing as one group."""
    values = profiles[["user_id"]].assign(value=profiles[column].astype("string"))

    def shares(ids: list, side: str) -> pd.DataFrame:
        users = pd.DataFrame({"user_id": ids}).merge(values, on="user_id", how="left")
        groups = users["value"].fillna(MISSING_GROUP)
        counts = groups.groupby(groups).size()
        return pd.DataFrame({f"{side}_users": counts, f"{side}_share": counts / len(ids)})

    table = shares(eligible, "eligible").join(shares(audience, "audience"), how="outer").fillna(0)
    table["gap_points"] = 100 * (table["audience_share"] - table["eligible_share"])
    return table.sort_index()


@pytest.mark.parametrize("id_kind", ["int", "string"])
def test_group_shares_equal_a_pandas_group_by(id_kind: str) -> None:
    rng = np.random.default_rng(11)
    ids = population_ids(2000, id_kind)
    sex = rng.choice(np.array(["female", "male", None], dtype=object), 2000, p=[0.45, 0.5, 0.05])
    age_band = rng.integers(0, 5, 2000)
    has_profile = rng.random(2000) < 0.9  # the rest are missing from the profiles table
    profiles = pl.DataFrame({"user_id": ids, "sex": sex, "age_band": age_band}).filter(
        pl.Series(has_profile))
    eligible = ids.filter(pl.Series(rng.random(2000) < 0.7))
    audience = eligible.sample(300, seed=3)

    rows = audit_shares(audience, eligible, profiles, ["sex", "age_band"])

    assert [r["column"] for r in rows] == sorted([r["column"] for r in rows],
                                                 key=["sex", "age_band"].index)
    for column in ("sex", "age_band"):
        expected = pandas_shares(audience.to_list(), eligible.to_list(), profiles.to_pandas(), column)
        got = pd.DataFrame([r for r in rows if r["column"] == column]).set_index("group")
        assert list(got.index) == list(expected.index)
        for key in ("audience_users", "eligible_users"):
            np.testing.assert_array_equal(got[key], expected[key].astype(int))
        for key in ("audience_share", "eligible_share", "gap_points"):
            np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-12)
        assert got["eligible_share"].sum() == pytest.approx(1.0)
    assert MISSING_GROUP in {r["group"] for r in rows if r["column"] == "age_band"}


CONFIG = LookalikeConfig.model_validate({
    "audience": AudienceConfig(min_audience_size=10, min_seed_size=20).model_dump(),
    "privacy": {"audit_columns": ["segment", "sex"], "max_audit_gap_points": 10},
})


def write_audit_profiles(path: Path, ids: pl.Series) -> Path:
    """``segment`` follows the seeds' cluster (a large gap); ``sex`` is random (a small one)."""
    rng = np.random.default_rng(2)
    cluster = np.arange(len(ids)) % 6
    pl.DataFrame({"user_id": ids, "segment": np.where(cluster == 5, "s5", "other"),
                  "sex": rng.choice(["f", "m"], len(ids))}).write_parquet(path)
    return path


def export(build, tmp_path: Path, config: LookalikeConfig = CONFIG, **kwargs):
    ids = pl.read_parquet(build.users).get_column("user_id")
    tmp_path.mkdir(parents=True, exist_ok=True)
    seeds = write_ids(tmp_path / "seeds.csv", ids[SEED_ROWS])
    lines: list[str] = []
    result = export_audience(build, seeds, tmp_path / "out" / "a.parquet", size=90, config=config,
                             search=ExactSearch(np.load(build.embeddings)), progress=lines.append,
                             **kwargs)
    return result, lines


@pytest.mark.parametrize("id_kind", ["int", "string"])
def test_export_reports_each_groups_shares_against_the_eligible_users(tmp_path, id_kind):
    build = write_build(tmp_path / "w", clustered_embeddings(N), id_kind)
    ids = population_ids(N, id_kind)
    profiles = write_audit_profiles(tmp_path / "profiles.parquet", ids)
    excluded = write_ids(tmp_path / "exclude.csv", ids[np.arange(0, N, 7)])

    result, lines = export(build, tmp_path, exclude=excluded, audit_profiles=profiles)

    report = json.loads(result.report_json.read_text())
    fairness = report["fairness"]
    assert fairness["columns"] == ["segment", "sex"] and fairness["max_gap_points"] == 10
    audience = pl.read_parquet(result.audience).get_column("user_id").to_list()
    forbidden = set(ids[SEED_ROWS].to_list()) | set(ids[np.arange(0, N, 7)].to_list())
    eligible = [i for i in ids.to_list() if i not in forbidden]
    for column in ("segment", "sex"):
        expected = pandas_shares(audience, eligible, pl.read_parquet(profiles).to_pandas(), column)
        got = pd.DataFrame([r for r in fairness["rows"] if r["column"] == column]).set_index("group")
        np.testing.assert_allclose(got["gap_points"], expected["gap_points"], atol=1e-9)
        np.testing.assert_array_equal(got["eligible_users"], expected["eligible_users"].astype(int))
    over = [r for r in fairness["rows"] if abs(r["gap_points"]) > 10]
    assert {r["column"] for r in over} == {"segment"}  # the seeds' cluster; sex is random
    warnings = [w for w in report["warnings"] if w.startswith("fairness:")]
    assert len(warnings) == len(over) and all("'segment'" in w for w in warnings)
    assert [line for line in lines if line.startswith("warning: fairness:")] == [
        f"warning: {w}" for w in warnings]
    markdown = result.report_md.read_text()
    assert "## Fairness audit" in markdown and "(over limit)" in markdown
    page = result.report_html.read_text()
    assert f'<img alt="{PLOTS["fairness"]}"' in page and NO_AUDIT not in page
    for row in over:  # the HTML table lists every group over the limit
        assert f">{row['group']}<" in page


def test_a_gap_within_the_limit_is_no_warning(tmp_path):
    build = write_build(tmp_path / "w", clustered_embeddings(N))
    profiles = write_audit_profiles(tmp_path / "profiles.parquet", population_ids(N, "int"))
    config = CONFIG.model_copy(update={"privacy": CONFIG.privacy.model_copy(
        update={"max_audit_gap_points": 100.0})})

    result, lines = export(build, tmp_path, config=config, audit_profiles=profiles)

    report = json.loads(result.report_json.read_text())
    assert report["fairness"]["rows"] and not any("fairness" in w for w in report["warnings"])
    assert not any("fairness" in line for line in lines)


def test_the_audit_reads_the_builds_profiles_by_default(tmp_path):
    build = write_build(tmp_path / "w", clustered_embeddings(N))
    profiles = write_audit_profiles(tmp_path / "profiles.parquet", population_ids(N, "int"))
    write_json(build.manifest, {"inputs": {"profiles": {"path": str(profiles), "files": []}},
                                "files": {}})

    default, _ = export(build, tmp_path)
    explicit, _ = export(build, tmp_path / "again", audit_profiles=profiles)

    rows = [json.loads(r.report_json.read_text())["fairness"]["rows"] for r in (default, explicit)]
    assert rows[0] == rows[1] and rows[0]


def test_an_audit_column_missing_from_profiles_stops_the_export_before_any_write(tmp_path):
    build = write_build(tmp_path / "w", clustered_embeddings(N))
    profiles = tmp_path / "profiles.parquet"
    pl.DataFrame({"user_id": population_ids(N, "int"), "sex": ["f"] * N}).write_parquet(profiles)

    with pytest.raises(InputError, match=r"column 'segment'.*privacy.audit_columns"):
        export(build, tmp_path, audit_profiles=profiles)
    with pytest.raises(AudienceError, match="--audit-profiles"):
        export(build, tmp_path)  # no manifest: no recorded profiles
    assert not (tmp_path / "out").exists()
    assert not Workdir(tmp_path / "w").audience_dir("a").exists()


def test_a_denied_audit_column_never_reaches_the_feature_spec(tmp_path):
    rng = np.random.default_rng(4)
    profiles, conversions = tmp_path / "profiles.parquet", tmp_path / "conversions.parquet"
    sex = rng.choice(["f", "m"], 500)
    pl.DataFrame({"user_id": np.arange(500), "sex": sex, "title": np.where(sex == "f", "Ms", "Mr"),
                  "age": rng.integers(18, 90, 500), "plan": rng.choice(["a", "b"], 500)}
                 ).write_parquet(profiles)
    pl.DataFrame({"user_id": np.arange(0, 500, 5), "conversion_type": "buy"}).write_parquet(conversions)
    config = LookalikeConfig.model_validate({"ingest": {"deny_columns": ["sex"]},
                                             "privacy": {"audit_columns": ["sex"]}})
    build = Workdir(tmp_path / "w").build("b")
    build.root.mkdir(parents=True)

    reports = step_features(build, BuildRequest(None, str(profiles), str(conversions),
                                                config=config), progress=lambda _: None)

    names = FeatureSpec.load(build.spec).columns
    assert "age" in names and "plan" in names  # the allowed columns are features
    assert not [n for n in names if "sex" in n]
    assert not [c for c in pl.read_parquet(build.features).columns if "sex" in c]
    assert reports["privacy"]["proxy_features"] == ["title"]  # what still carries it


def test_the_export_command_reads_audit_columns_from_audit_profiles(tmp_path):
    build = write_build(tmp_path / "w", clustered_embeddings(N))
    ids = population_ids(N, "int")
    recorded = tmp_path / "recorded.parquet"  # the build's profiles, without the audit columns
    pl.DataFrame({"user_id": ids}).write_parquet(recorded)
    write_json(build.manifest, {"inputs": {"profiles": {"path": str(recorded), "files": []}},
                                "files": {}})
    Workdir(tmp_path / "w").set_current(build.build_id)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "audience": {"min_audience_size": 10, "min_seed_size": 20, "quality_estimate": False,
                     "strategy": "centroid"},
        "privacy": {"audit_columns": ["segment", "sex"]}}))
    profiles = write_audit_profiles(tmp_path / "profiles.parquet", ids)
    seeds = write_ids(tmp_path / "seeds.csv", ids[SEED_ROWS])
    command = [sys.executable, "-m", "flows.cli", "export", "--no-prefect", "--workdir",
               str(tmp_path / "w"), "--seeds", str(seeds), "--size", "90", "--config", str(config)]

    default = subprocess.run([*command, "--out", str(tmp_path / "a.parquet")], cwd=REPO,
                             capture_output=True, text=True, check=False)
    given = subprocess.run([*command, "--out", str(tmp_path / "b.parquet"), "--audit-profiles",
                            str(profiles)], cwd=REPO, capture_output=True, text=True, check=False)

    assert default.returncode == 1 and not (tmp_path / "a.parquet").exists()
    assert default.stderr.strip().splitlines()[-1].startswith(f"error: {recorded}: column 'segment'")
    assert given.returncode == 0, given.stderr
    fairness = json.loads((tmp_path / "b.report.json").read_text())["fairness"]
    assert fairness["profiles"] == str(profiles) and len(fairness["rows"]) == 4
