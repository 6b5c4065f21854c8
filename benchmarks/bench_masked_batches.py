"""Share of pre-training micro-batches that carry an attention mask, on shards shaped like Base v3's
(`shaped_shards`: the corpus stage's packing at max_length 512, 5% intentional short rows), read by
the stage's own `ShardStream`: without grouping (windows of one row: every micro-batch holding a short
row is masked) against the shipped grouping (`pretrain.data.GROUP_ROWS`: short rows gathered at the
end of each window). A masked micro-batch cannot use the fused attention kernel without a mask.

    python benchmarks/bench_masked_batches.py            # 16,384 rows (512 micro-batches of 32)
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile

import numpy as np
from shaped_shards import write_shaped_shards

from koelectra_dist.pretrain.data import GROUP_ROWS, ShardStream, read_shard


def masked_share(uris: list[str], rows: list[int], micro_batch: int, batches: int, group_rows: int) -> dict:
    stream = ShardStream(
        uris, rows, seed=0, rank=0, world_size=1, micro_batch=micro_batch, start=0, group_rows=group_rows
    )
    masked = padding = tokens = 0
    for batch in itertools.islice(stream.batches(), batches):
        tokens += batch["input_ids"].numel()
        if batch["attention_mask"] is not None:
            masked += 1
            padding += int((batch["attention_mask"] == 0).sum())
    return {
        "group_rows": group_rows,
        "masked_share": round(masked / batches, 4),
        "padding_share": round(padding / tokens, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16_384)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=32)
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-masked-")
    uris, rows = write_shaped_shards(folder, 4, args.rows // 4, args.max_length, vocab_size=35_000)
    lengths = np.concatenate([np.diff(read_shard(uri).offsets) for uri in uris])
    batches = args.rows // args.micro_batch
    before = masked_share(uris, rows, args.micro_batch, batches, group_rows=1)
    after = masked_share(uris, rows, args.micro_batch, batches, group_rows=GROUP_ROWS)
    print(
        json.dumps(
            {
                "benchmark": "bench_masked_batches",
                "rows": sum(rows),
                "max_length": args.max_length,
                "micro_batch": args.micro_batch,
                "short_row_share": round(float((lengths < args.max_length).mean()), 4),
                "before": before,
                "after": after,
                "masked_ratio_after_vs_before": round(after["masked_share"] / before["masked_share"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
