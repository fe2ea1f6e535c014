"""Population and seed embedding: matches direct inference, keeps ids and order, checks inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from lookalike.build_steps import partition_rows
from lookalike.core.artifacts import sha256_file
from lookalike.core.config import ModelConfig
from lookalike.core.errors import ArtifactError, InputError
from lookalike.data.partitions import shard_of
from lookalike.data.spec import FeatureSpec, encode
from lookalike.encoder.embed import (
    assemble_embeddings,
    embed_partition,
    embed_population,
    embed_users,
    part_paths,
    remove_parts,
)
from lookalike.encoder.model import (
    Architecture,
    Tower,
    TwoTowerEncoder,
    embed_encoded,
    load_model,
    save_model,
)
from lookalike.testing.toy_tables import ToyPaths, write_toy_tables


def direct(features: Path, spec: Path, model_dir: Path, tower: Tower = "candidate") -> np.ndarray:
    encoded = encode(pl.read_parquet(features), FeatureSpec.load(spec))
    return embed_encoded(load_model(model_dir), encoded, tower)


def test_population_embeddings_match_direct_inference(
    toy: ToyPaths, model_dir: Path, tmp_path: Path
) -> None:
    # 6000 users = 3 batches of 1700 and a partial one of 900.
    paths = embed_population(toy.features, toy.spec, model_dir, tmp_path, batch_size=1700)
    embeddings = np.load(paths.embeddings)
    expected = direct(toy.features, toy.spec, model_dir)
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=1e-6)
    users = pl.read_parquet(paths.users)
    assert users.columns == ["user_id"]
    assert users.get_column("user_id").equals(pl.read_parquet(toy.features).get_column("user_id"))
    manifest = json.loads(paths.manifest.read_text())
    model_manifest = json.loads((model_dir / "model.json").read_text())
    assert manifest["model_build_id"] == model_manifest["model_build_id"]
    assert (manifest["count"], manifest["dim"]) == embeddings.shape
    assert manifest["embeddings_sha256"] == sha256_file(paths.embeddings)
    assert manifest["users_sha256"] == sha256_file(paths.users)
    assert not list(tmp_path.glob(".*tmp-*"))  # temporary files renamed away


@pytest.fixture(scope="module")
def string_toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[ToyPaths, Path]:
    """String user ids, with an untrained (random) encoder saved for its spec."""
    toy = write_toy_tables(tmp_path_factory.mktemp("strings"), 900, seed=3, string_ids=True)
    torch.manual_seed(0)
    spec = FeatureSpec.load(toy.spec)
    config = ModelConfig(embedding_dim=8, hidden_dims=[16], share_towers=False)
    model = TwoTowerEncoder(Architecture.for_spec(spec, config))
    model_dir = tmp_path_factory.mktemp("string-model")
    save_model(model, model_dir, spec_sha256=sha256_file(toy.spec), metadata={})
    return toy, model_dir


def test_string_ids_are_preserved(string_toy: tuple[ToyPaths, Path], tmp_path: Path) -> None:
    toy, model_dir = string_toy
    paths = embed_population(toy.features, toy.spec, model_dir, tmp_path, batch_size=256)
    users = pl.read_parquet(paths.users).get_column("user_id")
    assert users.dtype == pl.String
    assert users.equals(pl.read_parquet(toy.features).get_column("user_id"))
    expected = direct(toy.features, toy.spec, model_dir)
    np.testing.assert_allclose(np.load(paths.embeddings), expected, rtol=0, atol=1e-6)


def test_embed_users_uses_the_query_tower_in_request_order(
    string_toy: tuple[ToyPaths, Path],
) -> None:
    toy, model_dir = string_toy
    ids = pl.read_parquet(toy.features).get_column("user_id")
    requested = [ids[5], "nobody", ids[2], ids[5], ids[700]]
    result = embed_users(requested, toy.features, toy.spec, model_dir)
    assert result.user_ids.to_list() == [ids[5], ids[2], ids[700]]
    assert result.missing.to_list() == ["nobody"]
    query = direct(toy.features, toy.spec, model_dir, tower="query")
    np.testing.assert_allclose(result.embeddings, query[[5, 2, 700]], atol=1e-6)
    candidate = embed_users(requested, toy.features, toy.spec, model_dir, tower="candidate")
    assert not np.allclose(candidate.embeddings, result.embeddings)  # separate towers differ


def test_a_spec_the_model_was_not_trained_with_is_refused(
    string_toy: tuple[ToyPaths, Path], model_dir: Path, tmp_path: Path
) -> None:
    toy, _ = string_toy
    with pytest.raises(ArtifactError, match="not the feature spec"):
        embed_population(toy.features, toy.spec, model_dir, tmp_path)


def test_embed_users_accepts_any_integer_ids_and_refuses_strings_for_integer_ids(
    toy: ToyPaths, model_dir: Path
) -> None:
    ids = pl.read_parquet(toy.features, columns=["user_id"]).get_column("user_id")
    requested = np.array([ids[3], ids[1], -5], dtype=np.int32)
    result = embed_users(requested, toy.features, toy.spec, model_dir)
    assert result.user_ids.to_list() == [ids[3], ids[1]] and result.missing.to_list() == [-5]
    query = direct(toy.features, toy.spec, model_dir, tower="query")
    np.testing.assert_allclose(result.embeddings, query[[3, 1]], rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="type differs"):
        embed_users(["1000"], toy.features, toy.spec, model_dir)


@pytest.fixture(scope="module")
def random_model(toy: ToyPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained encoder for the toy table's spec (partitioning is about bytes, not quality)."""
    torch.manual_seed(1)
    spec = FeatureSpec.load(toy.spec)
    model = TwoTowerEncoder(Architecture.for_spec(spec, ModelConfig(embedding_dim=16,
                                                                     hidden_dims=[32])))
    folder = tmp_path_factory.mktemp("random-model")
    save_model(model, folder, spec_sha256=sha256_file(toy.spec), metadata={})
    return folder


@pytest.mark.parametrize("n_parts", [1, 3])
def test_partitioned_embedding_assembles_the_one_piece_files_byte_for_byte(
    toy: ToyPaths, random_model: Path, tmp_path: Path, n_parts: int
) -> None:
    # batch_size 1700: several batches per part, each batch split between the parts.
    whole = embed_population(toy.features, toy.spec, random_model, tmp_path / "whole",
                             batch_size=1700)
    out = tmp_path / "parts"
    user_ids = pl.read_parquet(toy.features).get_column("user_id")
    for part in range(n_parts):
        rows = partition_rows(toy.features, part, n_parts)
        np.testing.assert_array_equal(rows, np.flatnonzero(shard_of(user_ids, n_parts) == part))
        paths = embed_partition(toy.features, toy.spec, random_model, out, part, rows,
                                batch_size=1700)
        np.testing.assert_array_equal(np.load(paths.rows), rows)
        assert np.load(paths.embeddings).shape == (len(rows), 16)
    assembled = assemble_embeddings(toy.features, toy.spec, random_model, out, n_parts,
                                    batch_size=1700, block_rows=500)

    for name in ("embeddings", "users", "manifest"):
        assert getattr(assembled, name).read_bytes() == getattr(whole, name).read_bytes(), name
    remove_parts(out)
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.json", "embeddings.npy",
                                                     "users.parquet"]


def test_a_partition_reads_only_its_row_groups(toy: ToyPaths, random_model: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A feature table ordered by partition, each partition in its own row groups (as the
    feature merge writes it): embedding partition 1 reads only partition 1's row groups and gives
    the rows of the table embedded in one piece."""
    table = pl.read_parquet(toy.features)
    table = (table.with_columns(pl.Series("p", shard_of(table.get_column("user_id"), 3)))
             .sort("p", "user_id"))
    features = tmp_path / "features.parquet"
    with pq.ParquetWriter(features, table.drop("p").to_arrow().schema) as writer:
        for _, chunk in table.group_by("p", maintain_order=True):
            writer.write_table(chunk.drop("p").to_arrow(), row_group_size=400)
    read: list[int] = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: object, row_groups: list[int], **kwargs: object) -> object:
        read.extend(row_groups)
        return iter_batches(self, *args, row_groups=row_groups, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    rows = partition_rows(features, 1, 3)
    paths = embed_partition(features, toy.spec, random_model, tmp_path / "out", 1, rows,
                            batch_size=300)
    sizes = np.array([pq.ParquetFile(features).metadata.row_group(g).num_rows
                      for g in range(pq.ParquetFile(features).num_row_groups)])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    expected = [g for g in range(len(sizes)) if rows[0] <= starts[g] < rows[-1] + 1]
    assert read == expected and len(expected) < len(sizes)
    monkeypatch.undo()
    whole = embed_population(features, toy.spec, random_model, tmp_path / "whole")
    np.testing.assert_array_equal(np.load(paths.embeddings), np.load(whole.embeddings)[rows])


def test_assembly_refuses_parts_that_miss_users(toy: ToyPaths, random_model: Path,
                                                tmp_path: Path) -> None:
    for part in range(3):
        embed_partition(toy.features, toy.spec, random_model, tmp_path, part,
                        partition_rows(toy.features, part, 3))
    part_paths(tmp_path, 1).embeddings.unlink()
    with pytest.raises((ArtifactError, FileNotFoundError)):
        assemble_embeddings(toy.features, toy.spec, random_model, tmp_path, 3)
    embed_partition(toy.features, toy.spec, random_model, tmp_path, 1,  # another split's part
                    partition_rows(toy.features, 1, 2))
    with pytest.raises(ArtifactError, match="hold .* rows"):
        assemble_embeddings(toy.features, toy.spec, random_model, tmp_path, 3)
    assert not (tmp_path / "embeddings.npy").exists()


def test_embeddings_are_the_same_bytes_on_any_torch_thread_count(
    toy: ToyPaths, tmp_path: Path
) -> None:
    # MKL rounds products of this size differently on 1 and 2 threads (about 1 ulp on every row);
    # a Dask worker runs torch on one thread, the flow's process on every core
    torch.manual_seed(2)
    spec = FeatureSpec.load(toy.spec)
    model = TwoTowerEncoder(Architecture.for_spec(spec, ModelConfig(
        embedding_dim=32, hidden_dims=[128], numeric_bins=64)))  # about 2,000 inputs
    save_model(model, tmp_path / "model", spec_sha256=sha256_file(toy.spec), metadata={})
    threads = torch.get_num_threads()
    files = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            paths = embed_population(toy.features, toy.spec, tmp_path / "model", tmp_path / str(n),
                                     batch_size=3000)
            assert torch.get_num_threads() == n  # restored
            files.append(paths.embeddings.read_bytes())
    finally:
        torch.set_num_threads(threads)
    assert files[0] == files[1] == files[2]
