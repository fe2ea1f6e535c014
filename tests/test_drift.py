"""Drift between builds (feature PSI, embedding shift) and the refresh-or-retrain decision.

PSI is checked against a naive loop over bins; the embedding shift against one user at a time;
the decision on three days of synthetic data: day 1 trains, day 2 reuses the day-1 encoder
without training, day 3 (a shifted population) retrains because drift crossed its limit.
"""

from __future__ import annotations

import html

import json
import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from lookalike.build_report import NO_DRIFT
from lookalike.build_steps import BuildRequest, run_build
from lookalike.core.artifacts import read_json
from lookalike.core.config import LookalikeConfig
from lookalike.core.errors import LookalikeError
from lookalike.core.workdir import BuildPaths, Workdir
from lookalike.data.drift import PSI_EPSILON, SKETCH_FILE, feature_psi, feature_sketch, psi
from lookalike.data.spec import FeatureSpec
from lookalike.data.synthetic import generate
from lookalike.encoder import train as train_module
from lookalike.encoder.drift import embedding_drift
from lookalike.encoder.embed import embed_frame
from lookalike.encoder.model import load_model
from lookalike.erasure import erase_users
from lookalike.testing.fixtures import drifted_copy, fast_config, request_for

DAY_ONE = datetime(2026, 1, 1, tzinfo=UTC)
USERS = 1500


def naive_psi(previous: list[float], current: list[float]) -> float:
    total = 0.0
    for p, c in zip(previous, current, strict=True):
        p, c = max(p, PSI_EPSILON), max(c, PSI_EPSILON)
        total += (c - p) * math.log(c / p)
    return total


def naive_numeric_shares(values: list[float | None], edges: list[float]) -> list[float]:
    """Share per bin (-inf, e0), [e0, e1), ..., [e_last, inf), then missing, one value at a time."""
    counts = [0] * (len(edges) + 2)
    for value in values:
        if value is None:
            counts[-1] += 1
        else:
            counts[sum(1 for e in edges if value >= e)] += 1
    return [c / len(values) for c in counts]


def test_psi_matches_a_naive_loop_with_the_documented_epsilon() -> None:
    rng = np.random.default_rng(0)
    previous = rng.dirichlet(np.ones(12))
    current = rng.dirichlet(np.ones(12))
    current[3] = 0.0  # an empty bin counts as PSI_EPSILON, not as an infinite term
    current /= current.sum()

    assert psi(previous, current) == pytest.approx(naive_psi(list(previous), list(current)), rel=1e-12)
    assert psi(previous, previous) == 0.0


def test_feature_psi_puts_new_users_in_the_previous_builds_bins(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    old_values = rng.normal(size=4000)
    new_values = rng.normal(0.5, 1.2, size=3000)
    old = pl.DataFrame({"user_id": np.arange(4000), "x": old_values,
                        "country": rng.choice(["de", "fr", "it"], 4000, p=[0.5, 0.3, 0.2])})
    new = pl.DataFrame({"user_id": np.arange(3000),
                        "x": [None if i % 10 == 0 else float(v) for i, v in enumerate(new_values)],
                        "country": rng.choice(["de", "fr", "es"], 3000, p=[0.3, 0.3, 0.4])})
    old.write_parquet(tmp_path / "old.parquet")
    new.write_parquet(tmp_path / "new.parquet")
    sketch = feature_sketch(tmp_path / "old.parquet", ["x"], ["country"], bins=10, max_categories=2)
    (tmp_path / "sketch.json").write_text(json.dumps(sketch))

    found = {f["feature"]: f["psi"] for f in feature_psi(tmp_path / "sketch.json", tmp_path / "new.parquet")}

    edges = sketch["numeric"]["x"]["edges"]
    assert edges == pytest.approx(list(np.quantile(old_values, np.linspace(0, 1, 11)[1:-1])))
    expected_x = naive_psi(naive_numeric_shares(list(old_values), edges),
                           naive_numeric_shares(new["x"].to_list(), edges))
    kept = sketch["categorical"]["country"]["values"]  # the two most frequent: de, fr
    old_c, new_c = old["country"].to_list(), new["country"].to_list()

    def share(values: list[str], value: str) -> float:
        return sum(x == value for x in values) / len(values)

    expected_country = naive_psi(
        [share(old_c, v) for v in kept] + [1 - sum(share(old_c, v) for v in kept), 0.0],
        [share(new_c, v) for v in kept] + [1 - sum(share(new_c, v) for v in kept), 0.0])
    assert kept == ["de", "fr"]
    assert found["x"] == pytest.approx(expected_x, abs=1e-6)
    assert found["country"] == pytest.approx(expected_country, abs=1e-6)


def test_embedding_shift_is_the_cosine_distance_of_each_users_two_embeddings(toy, model_dir,
                                                                             tmp_path) -> None:
    spec = FeatureSpec.load(toy.spec)
    old = pl.read_parquet(toy.features)
    column = spec.numeric[0].name
    new = old.with_columns(pl.col(column) * 3 + 1)
    new.write_parquet(tmp_path / "new.parquet")

    drift = embedding_drift(toy.features, tmp_path / "new.parquet", toy.spec, model_dir,
                            sample=300, seed=0)

    assert drift is not None and drift.users == 300
    model = load_model(model_dir)
    ids = old.get_column("user_id").sample(300, seed=0).sort()
    shifts = []
    for user in ids.to_list()[:60]:  # one user at a time, as a reference for the vectorized shift
        a = embed_frame(old.filter(pl.col("user_id") == user), spec, model, "candidate")[0]
        b = embed_frame(new.filter(pl.col("user_id") == user), spec, model, "candidate")[0]
        shifts.append(1 - float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b)))
    assert drift.median_shift > 0
    assert np.median(shifts) == pytest.approx(drift.median_shift, abs=0.25 * drift.p90_shift + 1e-3)
    same = embedding_drift(toy.features, toy.features, toy.spec, model_dir, sample=300)
    assert same is not None
    assert (same.median_shift, same.p90_shift, same.nn_similarity_psi) == pytest.approx((0, 0, 0),
                                                                                      abs=1e-5)


# ------------------------------------------------------------------------------------------
# Refresh or retrain over three days


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three days of inputs: days 1 and 2 one day apart, day 3 as day 2 with drifted features."""
    root = tmp_path_factory.mktemp("days")
    first = generate(root / "day1", USERS, events_per_user=8, seed=0, as_of=DAY_ONE).events.parent
    second = generate(root / "day2", USERS, events_per_user=8, seed=0,
                      as_of=DAY_ONE + timedelta(days=1)).events.parent
    return [first, second, drifted_copy(second, root / "day3")]


class Recorder:
    """Progress lines and how often the encoder was trained."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lines: list[str] = []
        self.trainings = 0
        trainer = train_module.train

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.trainings += 1
            return trainer(*args, **kwargs)

        monkeypatch.setattr(train_module, "train", counted)

    def build(self, workdir: Workdir, data: Path, config: LookalikeConfig,
              mode: str = "auto") -> tuple[BuildPaths, dict[str, Any]]:
        request = request_for(data, config)
        request = BuildRequest(request.events, request.profiles, request.conversions,
                               config=config, mode=mode)  # type: ignore[arg-type]
        self.lines.clear()
        build = run_build(workdir, request, progress=self.lines.append)
        return build, read_json(build.manifest)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return Recorder(monkeypatch)


@pytest.fixture(scope="module")
def three_builds(days: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The scheduled pipeline's library calls over the three days, in one workdir."""
    monkeypatch = pytest.MonkeyPatch()
    recorder = Recorder(monkeypatch)
    workdir = Workdir(tmp_path_factory.mktemp("work"))
    found: dict[str, Any] = {"workdir": workdir}
    try:
        for day, data in enumerate(days, start=1):
            before = recorder.trainings
            build, manifest = recorder.build(workdir, data, fast_config())
            found[day] = {"build": build, "manifest": manifest, "lines": list(recorder.lines),
                          "trained": recorder.trainings - before}
    finally:
        monkeypatch.undo()
    return found


def test_day_one_trains_its_own_encoder(three_builds) -> None:
    day = three_builds[1]
    train = day["manifest"]["steps"]["train"]
    assert day["trained"] == 1
    assert train["encoder_from"] == day["build"].build_id
    assert train["reason"] == "retrain: no previous build"
    assert day["manifest"]["steps"]["drift"]["previous_build"] is None


def test_day_two_refreshes_with_the_day_one_encoder_without_training(three_builds) -> None:
    first, second = three_builds[1], three_builds[2]
    train = second["manifest"]["steps"]["train"]
    assert second["trained"] == 0
    assert train["encoder_from"] == first["build"].build_id
    assert train["reason"].startswith("refresh: ")
    assert f"encoder: {train['reason']}" in second["lines"]
    done = second["lines"][-1]  # the last line: id, wall time and the reason
    assert done.startswith(f"build {second['build'].build_id} done in ") and done.endswith(
        f"s ({train['reason']})")
    assert second["build"].build_id != first["build"].build_id
    assert second["build"].spec.read_bytes() == first["build"].spec.read_bytes()
    assert second["build"].model_build_id() == first["build"].model_build_id()
    drift = second["manifest"]["steps"]["drift"]
    assert drift["previous_build"] == first["build"].build_id
    assert drift["crossed"] == []
    # the synthetic generator moved every event by one day: the same features, no drift
    assert max(f["psi"] for f in drift["features"]) == pytest.approx(0, abs=1e-9)
    assert drift["embedding"]["median_shift"] == pytest.approx(0, abs=1e-5)


def test_refreshed_embeddings_are_the_old_encoder_on_the_new_features(three_builds) -> None:
    build = three_builds[2]["build"]
    frame = pl.read_parquet(build.features)
    spec = FeatureSpec.load(three_builds[1]["build"].spec)
    expected = embed_frame(frame, spec, load_model(three_builds[1]["build"].model_dir), "candidate")
    np.testing.assert_allclose(np.load(build.embeddings), expected, atol=1e-6)


def test_day_three_retrains_because_drift_crossed_its_limit(three_builds) -> None:
    second, third = three_builds[2], three_builds[3]
    train = third["manifest"]["steps"]["train"]
    drift = third["manifest"]["steps"]["drift"]
    assert third["trained"] == 1
    assert train["encoder_from"] == third["build"].build_id
    assert train["reason"].startswith("retrain: drift ")
    assert f"encoder: {train['reason']}" in third["lines"]
    assert drift["previous_build"] == second["build"].build_id
    psis = [f["psi"] for f in drift["features"]]
    assert psis == sorted(psis, reverse=True)
    limit = drift["thresholds"]["feature_psi"]
    drifted = [f["feature"] for f in drift["features"] if f["psi"] > limit]
    assert "age" in drifted and "value_mean" in drifted and "n_events_total" not in drifted
    assert len(drifted) / len(psis) > drift["thresholds"]["max_drifted_share"]
    assert drift["crossed"] and drift["crossed"][0].startswith(f"{len(drifted)} of {len(psis)}")
    assert set(drift["embedding"]) == {"median_shift", "p90_shift", "nn_similarity_psi"}
    assert drift["embedding"]["p90_shift"] >= drift["embedding"]["median_shift"] > 0
    rates = {r["type"]: r for r in drift["converter_rate"]}
    conversions = pl.read_parquet(three_builds[3]["build"].conversions)
    card = conversions.filter(pl.col("conversion_type") == "card_signup")["user_id"].n_unique()
    assert rates["card_signup"]["current"] == pytest.approx(card / USERS, abs=1e-6)
    page = third["build"].report_html.read_text()  # the build report shows what the manifest says
    assert f"Compared with build {second['build'].build_id}." in page
    assert f"threshold crossed: {html.escape(drift['crossed'][0])}" in page
    assert f"<td>{drift['features'][0]['feature']}</td>" in page
    assert NO_DRIFT in three_builds[1]["build"].report_html.read_text()


def test_refresh_and_retrain_of_the_same_inputs_get_different_build_ids(three_builds, days,
                                                                         recorder, tmp_path) -> None:
    workdir = Workdir(tmp_path / "work")
    shutil.copytree(three_builds["workdir"].root, workdir.root)
    workdir.set_current(three_builds[1]["build"].build_id)

    retrained, manifest = recorder.build(workdir, days[1], fast_config(), mode="retrain")

    assert recorder.trainings == 1
    assert manifest["steps"]["train"]["reason"] == "retrain: asked"
    assert retrained.build_id != three_builds[2]["build"].build_id


def test_asked_refresh_keeps_the_encoder_despite_drift(three_builds, days, recorder,
                                                       tmp_path) -> None:
    workdir = Workdir(tmp_path / "work")
    shutil.copytree(three_builds["workdir"].root, workdir.root)
    workdir.set_current(three_builds[2]["build"].build_id)

    build, manifest = recorder.build(workdir, days[2], fast_config(), mode="refresh")

    assert recorder.trainings == 0
    assert manifest["steps"]["train"]["encoder_from"] == three_builds[1]["build"].build_id
    assert manifest["steps"]["drift"]["crossed"] == three_builds[3]["manifest"]["steps"]["drift"]["crossed"]
    assert build.build_id != three_builds[3]["build"].build_id


def test_the_retrain_interval_counts_from_the_encoders_training_build(three_builds, days,
                                                                      recorder, tmp_path) -> None:
    workdir = Workdir(tmp_path / "work")
    shutil.copytree(three_builds["workdir"].root, workdir.root)
    workdir.set_current(three_builds[1]["build"].build_id)
    shutil.rmtree(workdir.build(three_builds[2]["build"].build_id).root)  # else reused as it is

    _build, manifest = recorder.build(workdir, days[1], fast_config(retrain_interval_days=1))

    assert recorder.trainings == 1
    assert manifest["steps"]["train"]["reason"] == (
        f"retrain: interval (1.0 days since build {three_builds[1]['build'].build_id} trained the "
        "encoder, limit 1)")


def test_a_changed_suppression_list_retrains(three_builds, days, recorder, tmp_path) -> None:
    workdir = Workdir(tmp_path / "work")
    shutil.copytree(three_builds["workdir"].root, workdir.root)
    workdir.set_current(three_builds[1]["build"].build_id)
    opted_out = tmp_path / "optout.csv"
    pl.read_parquet(days[1] / "profiles.parquet").head(5).select("user_id").write_csv(opted_out)
    config = LookalikeConfig.model_validate({**fast_config().model_dump(),
                                             "privacy": {"suppression_list": str(opted_out)}})

    _build, manifest = recorder.build(workdir, days[1], config)

    assert recorder.trainings == 1
    assert manifest["steps"]["train"]["reason"] == "retrain: suppression list changed"


def test_an_erased_build_keeps_its_sketch_and_the_next_build_measures_drift_against_it(
        three_builds, days, recorder, tmp_path) -> None:
    workdir = Workdir(tmp_path / "work")
    shutil.copytree(three_builds["workdir"].root, workdir.root)
    workdir.set_current(three_builds[1]["build"].build_id)
    erased = tmp_path / "erase.csv"
    pl.read_parquet(days[0] / "profiles.parquet").head(5).select("user_id").write_csv(erased)
    erase_users(workdir, str(erased), fast_config(), progress=lambda _: None)

    build, manifest = recorder.build(workdir, days[2], fast_config(), mode="refresh")

    erased_build = workdir.build(three_builds[1]["build"].build_id)
    assert SKETCH_FILE in read_json(erased_build.manifest)["files"]
    assert manifest["steps"]["drift"]["features"] == feature_psi(erased_build.root / SKETCH_FILE,
                                                                 build.features)
    assert manifest["steps"]["drift"]["features"][0]["psi"] > 0.25


def test_an_interrupted_retrain_on_drift_resumes_its_training(three_builds, days, recorder,
                                                              tmp_path) -> None:
    workdir = Workdir(tmp_path / "work")
    shutil.copytree(three_builds["workdir"].root, workdir.root)
    workdir.set_current(three_builds[2]["build"].build_id)
    interrupted = workdir.build(three_builds[3]["build"].build_id)
    interrupted.manifest.unlink()  # as if killed after training's last checkpoint

    build, manifest = recorder.build(workdir, days[2], fast_config())

    assert build.build_id == interrupted.build_id
    assert manifest["steps"]["train"]["reason"].startswith("retrain: drift ")
    assert any(line.startswith("resuming after epoch 2") for line in recorder.lines)
    assert build.model_build_id() == three_builds[3]["build"].model_build_id()


def test_refresh_without_a_previous_build_is_refused(days, tmp_path, recorder) -> None:
    with pytest.raises(LookalikeError, match="cannot refresh: no previous build"):
        recorder.build(Workdir(tmp_path / "work"), days[0], fast_config(), mode="refresh")
    assert not (tmp_path / "work" / "builds").exists()
