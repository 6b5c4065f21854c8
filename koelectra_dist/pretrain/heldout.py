"""Held-out losses: the generator's and the discriminator's loss on the first `train.heldout_rows`
rows of the corpus stage's validation shards, computed at log steps. No dropout, and masking and
sampling seeded per batch, so that runs of any recipe and any worker count are measured on the same
masked rows and compare at equal tokens. The batches are split across ranks; each rank sums on the
device and the sums meet in one all-reduce: one host sync per evaluation, none per micro-batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from koelectra_dist import storage
from koelectra_dist.config import Config
from koelectra_dist.pretrain.data import ShardSet, collate, read_shard

log = logging.getLogger(__name__)

HELDOUT_SEED_OFFSET = 7_919
"""Added to train.seed for the held-out batches' masking, apart from the training stream's seeds."""


@dataclass(frozen=True)
class HeldOut:
    batches: list[dict[str, torch.Tensor | None]]
    """Fixed micro-batches (train.micro_batch_size rows each, CPU tensors), the same on every rank."""
    seed: int


def load_heldout(cfg: Config, shards: ShardSet) -> HeldOut | None:
    """The held-out batches, or None (logged) when the shards have no validation rows or
    train.heldout_rows is 0."""
    wanted = cfg.train.heldout_rows
    if not wanted:
        return None
    if not shards.manifest.validation:
        log.info("no held-out loss: %s has no validation shards (corpus.validation_fraction)", shards.uri)
        return None
    rows = []
    for entry in shards.manifest.validation:
        shard = read_shard(storage.join(shards.uri, entry.path))
        rows += [shard.row(r) for r in range(min(entry.rows, wanted - len(rows)))]
        if len(rows) == wanted:
            break
    size = cfg.train.micro_batch_size
    batches = [collate(rows[i : i + size], pad_id=shards.manifest.special_ids.pad) for i in range(0, len(rows), size)]
    return HeldOut(batches=batches, seed=cfg.train.seed + HELDOUT_SEED_OFFSET)


@torch.no_grad()
def heldout_sums(model: torch.nn.Module, heldout: HeldOut, device: torch.device, rank: int, world: int) -> torch.Tensor:
    """[generator loss x masked positions, masked positions, discriminator loss x real tokens, real
    tokens] over this rank's batches (batch i on rank i % world), on the device. Every rank runs the
    same number of forwards (a spare one weighted 0 where the batches run out): ZeRO 3 gathers
    weights collectively inside each forward."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    rounds = -(-len(heldout.batches) // world)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for i in range(rounds):
            index = rank + i * world
            weight = 1.0 if index < len(heldout.batches) else 0.0
            index = index if weight else 0
            torch.manual_seed(heldout.seed + index)  # CPU and CUDA generators: the same masks on any rank
            batch = {
                k: None if v is None else v.to(device, non_blocking=True) for k, v in heldout.batches[index].items()
            }
            out = model(**batch, with_metrics=False)
            masked = out.masked.valid.sum().double()
            mask = batch["attention_mask"]
            real = mask.sum().double() if mask is not None else torch.tensor(float(out.replaced.numel()), device=device)
            sums += weight * torch.stack([out.gen_loss.double() * masked, masked, out.disc_loss.double() * real, real])
    model.train(was_training)
    return sums


def heldout_losses(sums: torch.Tensor) -> dict[str, float]:
    """The losses from the sums of every rank (all-reduced): one host sync."""
    gen, masked, disc, real = sums.tolist()
    return {"heldout_gen_loss": gen / max(masked, 1.0), "heldout_disc_loss": disc / max(real, 1.0)}


def evaluate(model: torch.nn.Module, heldout: HeldOut, device: torch.device) -> dict[str, float]:
    """Both held-out losses, the same on every rank (call it on all of them)."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    rank = torch.distributed.get_rank() if world > 1 else 0
    sums = heldout_sums(model, heldout, device, rank, world)
    if world > 1:
        torch.distributed.all_reduce(sums)
    return heldout_losses(sums)
