"""Loading a committed step: into an engine of any worker count (through DeepSpeed's universal form
when the count changed), or as one consolidated fp32 state dict (export, distill)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING

import torch

from koelectra_dist import storage
from koelectra_dist.errors import CheckpointError
from koelectra_dist.pretrain.checkpoint import store
from koelectra_dist.pretrain.meta import CheckpointMeta

if TYPE_CHECKING:
    from koelectra_dist.pretrain.engine import Engine

log = logging.getLogger(__name__)


def load(engine: Engine, uri: str, world_size: int) -> CheckpointMeta:
    """Load the committed checkpoint `uri` (chosen by `latest_verified`) into `engine`, one rank of
    `world_size`, and return its meta.json. A checkpoint written by another number of workers is
    loaded through its universal form; the engine must then have been built with
    `load_universal=True` (`needs_universal`)."""
    meta = store.read_meta(uri)
    scratch = tempfile.mkdtemp(prefix="koelectra-resume-")
    try:
        local = store.materialize(uri, scratch)
        if storage.local_path(uri) is None and (problems := store.verify(uri, local)):
            # damaged in transit: a transient fault, so not a user error (the attempt is retried)
            raise RuntimeError(f"{uri}: the downloaded copy does not match its seal: {'; '.join(problems)}")
        load_dir, tag = os.path.join(local, store.DEEPSPEED_DIR), store.DEEPSPEED_TAG
        if needs_universal(meta, world_size):
            load_dir, tag = to_universal(os.path.join(load_dir, tag), os.path.join(scratch, "universal"))
            log.info("%s: written by %d workers, loaded on %d via its universal form", uri, meta.world_size, world_size)
        load_path, _ = engine.load_checkpoint(
            load_dir, tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if load_path is None:
            raise CheckpointError(
                f"{uri}: DeepSpeed found no engine state under {store.DEEPSPEED_DIR}/{store.DEEPSPEED_TAG}"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return meta


def needs_universal(meta: CheckpointMeta, world_size: int) -> bool:
    """Whether `world_size` workers must load this checkpoint through its universal form."""
    return meta.world_size != world_size


def to_universal(state_dir: str, out_root: str) -> tuple[str, str]:
    """Convert DeepSpeed's per-rank files in `state_dir` (any ZeRO stage) to a universal checkpoint
    under `out_root`; return (load_dir, tag) for `engine.load_checkpoint`. In this process (no
    worker pool): it runs on every rank that needs it, beside training's own threads."""
    import argparse

    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    tag = "universal"
    args = argparse.Namespace(
        input_folder=state_dir,
        output_folder=os.path.join(out_root, tag),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        # our engines do not record `universal_checkpoint_info` (a Megatron-style client state);
        # its defaults (no tensor or pipeline parallelism) are ours
        inject_missing_state=True,
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ds_to_universal(args)
    log.debug("ds_to_universal: %s", printed.getvalue())
    return out_root, tag


def consolidated_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """The full fp32 model state dict of a committed checkpoint, whatever its ZeRO stage (no
    distributed setup needed). Keys start with `generator.` / `discriminator.`."""
    meta = store.read_meta(uri)
    with tempfile.TemporaryDirectory(prefix="koelectra-consolidate-") as scratch:
        local = os.path.join(store.materialize(uri, scratch), store.DEEPSPEED_DIR)
        if meta.zero_stage == 0:
            path = os.path.join(local, store.DEEPSPEED_TAG, "mp_rank_00_model_states.pt")
            module = torch.load(path, map_location="cpu", weights_only=False)["module"]
            return {k: v.float() for k, v in module.items()}
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = dict(get_fp32_state_dict_from_zero_checkpoint(local, tag=store.DEEPSPEED_TAG))
        if meta.zero_stage == 1:
            # ZeRO 1 records frozen parameters (requires_grad False, e.g. distill's frozen position
            # embeddings) only in the module states, which hold every parameter whole at this stage
            path = os.path.join(local, store.DEEPSPEED_TAG, "mp_rank_00_model_states.pt")
            module = torch.load(path, map_location="cpu", weights_only=False)["module"]
            state |= {k: v.float() for k, v in module.items() if k not in state}
        return state
