"""Several examples per row end to end: the corpus stage packs whole examples into rows
(`corpus.several_examples_per_row`), and pre-training runs on them (Ray, a DeepSpeed engine, the
tiny model) with per-example position ids and attention."""

from __future__ import annotations

import io
import json
import math

import pyarrow.parquet as pq
import pytest
from helpers import ROOT

from koelectra_dist import storage
from koelectra_dist.config import config_from_dict
from koelectra_dist.corpus import stage as corpus
from koelectra_dist.corpus.shards import EXAMPLE_LENGTHS, read_manifest
from koelectra_dist.pretrain import stage as pretrain
from koelectra_dist.pretrain.data import collate, read_shard

pytestmark = pytest.mark.slow


def test_corpus_and_pretraining_with_several_examples_per_row(ray_local, tmp_path):
    data = json.loads((ROOT / "configs" / "tiny.json").read_text())
    data["run"]["output_uri"] = str(tmp_path / "run")
    data["corpus"]["several_examples_per_row"] = True
    data["train"].update(steps=2, log_every=1)
    data["distributed"].update(num_workers=1)
    data["checkpoint"].update(interval_steps=2)
    cfg = config_from_dict(data)

    report = corpus.run(cfg)
    shards = cfg.paths.corpus_shards
    manifest = read_manifest(shards)
    packing = report["packing"]
    assert packing["rows"] == manifest.total_rows < packing["examples"]
    assert packing["fill_rate"] > 0.9
    first = storage.join(shards, manifest.shards[0].path)
    assert EXAMPLE_LENGTHS in pq.read_schema(io.BytesIO(storage.read_bytes(first))).names
    shard = read_shard(first)
    several = [r for r in range(len(shard.offsets) - 1) if len(shard.row(r)[2]) > 1]
    assert several, "no row holds several examples"
    batch = collate([shard.row(r) for r in several[:4]])
    assert {"position_ids", "example_ids"} <= set(batch)

    result = pretrain.run(cfg)
    assert result["steps"] == 2, result
    assert math.isfinite(result["metrics"]["loss"]) and result["metrics"]["replaced_frac"] > 0
