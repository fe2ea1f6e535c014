"""The notebook API (``import lookalike``) against the library calls it stands for."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import lookalike
from lookalike.audience.export import export_audience
from lookalike.build_steps import run_build
from lookalike.core.workdir import Workdir
from lookalike.testing.fixtures import reliability_config, request_for, small_data, write_seeds


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("api-data"))


def test_build_and_export_match_the_library_calls(data: Path, tmp_path: Path) -> None:
    config = reliability_config()
    config_file = tmp_path / "config.json"
    config_file.write_text(config.model_dump_json())
    seeds = tmp_path / "seeds.parquet"
    write_seeds(data, seeds)

    by_api = lookalike.build(tmp_path / "api", events=str(data / "events.parquet"),
                             profiles=str(data / "profiles.parquet"),
                             conversions=str(data / "conversions.parquet"), config=config_file,
                             progress=lambda _: None)
    by_library = run_build(Workdir(tmp_path / "lib"), request_for(data, config),
                           progress=lambda _: None)
    assert by_api.name == by_library.build_id  # same inputs and config: the same build id
    assert Workdir(tmp_path / "api").current().root == by_api
    assert not (by_library.embeddings_dir / "parts").exists()  # embedded by partition, assembled

    result = lookalike.export_audience(tmp_path / "api", seeds, tmp_path / "api.parquet", size=50,
                                       config=config, strategy="centroid", progress=lambda _: None)
    reference = export_audience(by_library, seeds, tmp_path / "lib.parquet", size=50, config=config,
                                strategy="centroid", progress=lambda _: None)
    columns = ["user_id", "rank", "score", "tier", "nearest_seed"]
    pd.testing.assert_frame_equal(pd.read_parquet(result.audience)[columns],
                                  pd.read_parquet(reference.audience)[columns])
    assert len(pd.read_parquet(result.audience)) == 50
