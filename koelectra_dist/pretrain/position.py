"""Where a training run stands in the example stream (data.py), as pure arithmetic: the stream
position a run starts or resumes from, how far each optimizer step moves it, and which micro-batches
of the stream each rank trains in a step. None of it depends on the worker count or the micro-batch
size, only on the global batch, which a resumed run must keep (resume.check_resume)."""

from __future__ import annotations

from dataclasses import dataclass

from koelectra_dist.errors import CheckpointError
from koelectra_dist.pretrain.meta import CheckpointMeta


@dataclass(frozen=True)
class Position:
    step: int
    """Optimizer steps done."""
    consumed: int
    """Stream positions consumed by all workers together: step x global batch."""
    global_batch_size: int
    """What each optimizer step consumes, whatever the worker count and micro-batch size."""

    def after_step(self) -> Position:
        """The position after one more optimizer step, which consumes [consumed, consumed + G)."""
        return Position(self.step + 1, self.consumed + self.global_batch_size, self.global_batch_size)


def start_position(meta: CheckpointMeta | None, global_batch_size: int, where: str = "the checkpoint") -> Position:
    """The position a run starts from: 0 without a checkpoint, else the checkpoint's, which must be
    `step` global batches into the stream (CheckpointError otherwise: it was written with another
    global batch, or its meta.json is wrong, and resuming would train on other examples)."""
    if meta is None:
        return Position(0, 0, global_batch_size)
    if meta.consumed_samples != meta.step * global_batch_size:
        raise CheckpointError(
            f"{where} is at step {meta.step} with {meta.consumed_samples} examples consumed, not step x "
            f"train.global_batch_size ({meta.step} x {global_batch_size}); resume with the global batch it was "
            "trained with, or point checkpoint.storage_uri at a new folder"
        )
    return Position(meta.step, meta.consumed_samples, global_batch_size)


def micro_batch_indices(step: int, micro_batches: int, rank: int, world: int) -> list[int]:
    """Global indices of this rank's micro-batches in optimizer step `step` (0-based), in the order
    it trains them: micro-batch c of the stream (positions [c x micro, (c + 1) x micro)) belongs to
    rank c % world (data.py); a step is micro_batches x world of them."""
    per_step = micro_batches * world
    return [step * per_step + j * world + rank for j in range(micro_batches)]
