"""The training loop's checkpointing: which steps are saved, what a checkpoint records, and
reporting saves and commits to the metrics.

A step is saved every `checkpoint.interval_steps`, at `train.steps`, and once when Ray Train says a
node of the worker group is being preempted (asked every `checkpoint.preemption_check_steps`
steps). Every rank takes the same decision: the notice is agreed on by Ray Train's barrier."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from koelectra_dist.pretrain.checkpoint.upload import Uploader
from koelectra_dist.pretrain.meta import CheckpointMeta
from koelectra_dist.probe import records as probe_records

if TYPE_CHECKING:
    from koelectra_dist.config import Config
    from koelectra_dist.pretrain.engine import Engine
    from koelectra_dist.pretrain.metrics import MetricsLog

log = logging.getLogger(__name__)


def preemption_announced(step: int, every: int) -> bool:
    """Whether Ray Train reports a node of this worker group as being preempted (Ray's drain notice),
    asked every `every` steps: the question is a barrier across the workers."""
    if not every or step % every:
        return False
    import ray.train

    return ray.train.get_preemption_info() is not None


class Checkpointer:
    """One rank's checkpoints of a run of `world` workers on shards of vocabulary `vocab_sha256`,
    resumed at `resumed_step`. Call `step_done` after every optimizer step, `finish` after the last,
    `close` always. A background upload's failure is raised by the next `step_done` or `finish`,
    at a step boundary."""

    def __init__(self, cfg: Config, rank: int, world: int, vocab_sha256: str, resumed_step: int, metrics: MetricsLog):
        self.cfg, self.rank, self.world, self.vocab_sha256 = cfg, rank, world, vocab_sha256
        self.metrics = metrics
        # keep_last never prunes a checkpoint a probe still needs (the driver's probes, probe.jsonl)
        held = functools.partial(probe_records.held_steps, cfg) if cfg.probe.enabled() else None
        self.uploader = Uploader(cfg.paths.checkpoints, cfg.checkpoint.keep_last, resumed_step=resumed_step, held=held)
        self._noticed_at: int | None = None  # the step at which a preemption notice was checkpointed

    def due(self, step: int) -> bool:
        """Whether optimizer step `step` (just done) is saved."""
        c = self.cfg.checkpoint
        if step % c.interval_steps == 0 or step == self.cfg.train.steps:
            return True
        if self._noticed_at is None and preemption_announced(step, c.preemption_check_steps):
            self._noticed_at = step
            if self.rank == 0:
                log.warning("a node of this run is being preempted: checkpointing step %d now", step)
            return True
        return False

    def step_done(self, engine: Engine, step: int, consumed_samples: int) -> None:
        """After optimizer step `step`, `consumed_samples` into the stream: save it if `due`, then
        report a commit that finished in the background."""
        if self.due(step):
            self.metrics.checkpoint_saved(step, **self.uploader.save(engine, step, self.meta(step, consumed_samples)))
        if committed := self.uploader.poll():
            self.metrics.checkpoint_committed(*committed)

    def finish(self) -> None:
        """Wait until the last save is committed: a worker returns only then."""
        if committed := self.uploader.wait():
            self.metrics.checkpoint_committed(*committed)

    def close(self) -> None:
        self.uploader.close()

    def meta(self, step: int, consumed_samples: int) -> CheckpointMeta:
        d = self.cfg.distributed
        return CheckpointMeta(
            step=step,
            consumed_samples=consumed_samples,
            world_size=self.world,
            zero_stage=d.zero_stage,
            precision=d.precision,
            vocab_sha256=self.vocab_sha256,
            metrics=self.metrics.last,
            config=self.cfg.to_dict(),
        )
