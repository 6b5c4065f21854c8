"""Training metrics of the pre-training loop: accumulated on the device between log steps (no
host sync per micro-batch), averaged over ranks at log steps, then printed by rank 0, reported
to Ray Train by every rank (at most once per poll of its controller, and at the last step), and
written by rank 0 as TensorBoard events beside the checkpoints (and to MLflow when the run names
a tracking URI)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING

import torch

from koelectra_dist import storage, tracking
from koelectra_dist.config import Config
from koelectra_dist.training import format_eta

if TYPE_CHECKING:
    from koelectra_dist.pretrain.engine import Engine

# Dense (no sparsity) bf16 tensor-core peak FLOP/s per GPU, from the vendor's datasheets, by a
# fragment of torch.cuda.get_device_name(); the first fragment found in the name wins, so the
# specific ones (H100 PCIe, L40S) come before the general ones (H100, L40). MFU is reported only
# for these: a device not listed gets no MFU rather than another device's peak.
PEAK_FLOPS = {
    "B200": 2250e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H200 NVL": 835e12,
    "GH200": 989e12,
    "H200": 989e12,  # SXM
    "H100": 989e12,  # SXM ("NVIDIA H100 80GB HBM3")
    "H800": 989e12,
    "A100": 312e12,  # SXM and PCIe
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "A10G": 70e12,  # AWS's A10 variant, as AWS quotes it
    "A10": 125e12,
    "L4": 121e12,
}
SUMMED = ("real_tokens", "masked_tokens")
"""Counts, summed over micro-batches and ranks; every other metric a model returns is averaged."""
HEADLINE = (
    "gen_acc",
    "disc_precision",
    "disc_recall",
    "disc_auc",
    "heldout_gen_loss",
    "heldout_disc_loss",
    "soft_loss",
    "cos_loss",
    "student_loss",
)
"""Metrics printed on rank 0's line, when the model returns them."""


def peak_flops(device: torch.device) -> float | None:
    """The dense bf16 peak of a CUDA device (PEAK_FLOPS); None on CPU or for a GPU not listed."""
    if device.type != "cuda":
        return None
    return peak_flops_of(torch.cuda.get_device_name(device))


def peak_flops_of(name: str) -> float | None:
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def ray_train_poll_s() -> float:
    """How often Ray Train's controller takes a worker's reported result (its health-check period).
    A worker holds one unread result: a report sooner than this waits for the poll."""
    return float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0"))


class MetricsLog:
    def __init__(self, cfg: Config, rank: int, world: int, root: str, resumed_step: int, flops_per_token: float):
        """`flops_per_token`: the trained model's matmul FLOPs per real token of a step (MFU's numerator)."""
        self.cfg, self.rank, self.world = cfg, rank, world
        self.flops_per_token = flops_per_token
        self.last: dict[str, float] = {}
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._window = {"steps": 0, "seconds": 0.0, "wait": 0.0}
        self._heldout: dict[str, float] = {}
        self._heldout_s = 0.0
        self._report_every_s = ray_train_poll_s()
        self._reported_at = float("-inf")  # rank 0's clock decides for every rank (see end_step)
        self._tb_uri = storage.join(root, "tensorboard")
        self._tb_local = None
        self._writer = None
        self._tracker = tracking.Tracker.open(cfg, root) if rank == 0 else None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            local = storage.local_path(self._tb_uri)
            self._tb_local = local or tempfile.mkdtemp(prefix="koelectra-tb-")
            self._writer = SummaryWriter(self._tb_local, purge_step=resumed_step + 1)

    def start_step(self, wait_seconds: float, lr: float) -> None:
        self._t0, self._wait0, self._lr = time.perf_counter(), wait_seconds, lr

    def add_micro(self, loss: torch.Tensor, metrics: dict[str, torch.Tensor]) -> None:
        values = {"loss": loss, **metrics}
        for k, v in values.items():
            v = v.detach().float()
            self._sums[k] = self._sums[k] + v if k in self._sums else v
            self._counts[k] = self._counts.get(k, 0) + 1  # disc_auc comes on log steps only

    def add_heldout(self, values: dict[str, float], seconds: float) -> None:
        """Held-out losses for this log step, and the seconds they took (not counted as training)."""
        self._heldout, self._heldout_s = values, seconds

    def end_step(self, step: int, wait_seconds: float, engine: Engine) -> None:
        self._window["steps"] += 1
        self._window["seconds"] += time.perf_counter() - self._t0 - self._heldout_s
        self._heldout_s = 0.0
        self._window["wait"] += wait_seconds - self._wait0
        if step % self.cfg.train.log_every and step != self.cfg.train.steps:
            return
        import ray.train
        import torch.distributed as dist

        # Report to Ray Train only when its controller has taken the previous report (else the
        # report blocks training until the next poll: log_every=1 would run a step per 2 s). Rank
        # 0's clock decides; its vote rides in the metrics' all-reduce, so every rank agrees.
        now = time.monotonic()
        due = float(self.rank == 0 and now - self._reported_at >= self._report_every_s)
        keys = list(self._sums)
        stacked = torch.stack([*(self._sums[k] for k in keys), torch.tensor(due, device=self._sums[keys[0]].device)])
        dist.all_reduce(stacked)  # sums over ranks; a collective, so every rank logs at the same steps
        *sums, report_due = stacked.tolist()
        totals = dict(zip(keys, sums, strict=True))
        seconds = self._window["seconds"]
        tokens_per_s = totals["real_tokens"] / seconds
        out = {k: totals[k] / (self._counts[k] * self.world) for k in keys if k not in SUMMED}
        grad_norm = engine.get_global_grad_norm()
        out.update(
            step=step,
            lr=self._lr,
            grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
            tokens_per_s=tokens_per_s,
            step_time_s=seconds / self._window["steps"],
            data_wait_frac=self._window["wait"] / seconds,
            overflow_steps=int(getattr(engine, "skipped_steps", 0)),
            **self._heldout,
        )
        self._heldout = {}
        peak = peak_flops(engine.device)
        if peak:
            out["mfu"] = self.flops_per_token * tokens_per_s / (peak * self.world)
        self.last = out
        self._sums, self._counts = {}, {}
        self._window = {"steps": 0, "seconds": 0.0, "wait": 0.0}
        if self._writer is not None:
            scalars = {f"train/{k}": v for k, v in out.items() if k != "step"}
            for tag, v in scalars.items():
                self._writer.add_scalar(tag, v, step)
            if self._tracker:
                self._tracker.log(scalars, step)
            print(self.format(out), flush=True)
        if report_due or step == self.cfg.train.steps:  # the last step's metrics are the run's result
            ray.train.report(out)
            self._reported_at = now

    def format(self, m: dict[str, float]) -> str:
        steps = self.cfg.train.steps
        text = (
            f"[{self.cfg.run.name}] step {m['step']}/{steps} ({100 * m['step'] / steps:.0f}%, "
            f"ETA {format_eta((steps - m['step']) * m['step_time_s'])}) loss {m['loss']:.4f} "
            + "".join(f"{k} {m[k]:.3f} " for k in HEADLINE if k in m)
            + f"lr {m['lr']:.2e} gnorm {m['grad_norm']:.3f} {m['tokens_per_s']:.0f} tok/s "
            f"step {m['step_time_s'] * 1000:.0f} ms wait {100 * m['data_wait_frac']:.1f}%"
        )
        if m["overflow_steps"]:
            text += f" overflows {m['overflow_steps']}"
        if "mfu" in m:
            text += f" MFU {100 * m['mfu']:.1f}%"
        return text

    def checkpoint_saved(self, step: int, stall_s: float, write_s: float) -> None:
        """A checkpoint's state is captured: the step was blocked `stall_s`, `write_s` of it writing locally."""
        if self.rank != 0:
            return
        self._writer.add_scalar("train/checkpoint_stall_s", stall_s, step)
        self._writer.add_scalar("train/checkpoint_write_s", write_s, step)

    def checkpoint_committed(self, step: int, seconds: float) -> None:
        """Rank 0 committed `step`, `seconds` after its local write (uploads and seal, in the background)."""
        if self.rank != 0:
            return
        print(
            f"[{self.cfg.run.name}] step {step}: checkpoint committed {seconds:.1f}s after its local write", flush=True
        )
        self._writer.add_scalar("train/checkpoint_commit_s", seconds, step)
        self._sync_tensorboard()

    def _sync_tensorboard(self) -> None:
        self._writer.flush()
        if storage.local_path(self._tb_uri) is None:
            storage.upload_dir(self._tb_local, self._tb_uri)

    def close(self) -> None:
        if self._writer is None:
            return
        self._sync_tensorboard()
        self._writer.close()
        if storage.local_path(self._tb_uri) is None:
            shutil.rmtree(self._tb_local, ignore_errors=True)
        self._writer = None
