"""The driver's side of the probes: a thread beside the pre-training run that notices newly
committed checkpoints, starts a probe (`runner.probe_checkpoint`, one Ray task per checkpoint with
the probe's own resources) for each scheduled one, and records each result as it arrives: a line
in probe.jsonl, a console line, TensorBoard scalars (and MLflow metrics when the run names a
tracking URI). Training never waits for it.

Why Ray tasks of our own and not Ray Train's asynchronous validation (`ValidationConfig`,
`report(..., validation=...)`): see docs/probe.md.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
import time
from typing import Any

from koelectra_dist import storage, tracking
from koelectra_dist.config import Config
from koelectra_dist.errors import ConfigError
from koelectra_dist.finetune.config import resolve_tasks
from koelectra_dist.finetune.data import read_split
from koelectra_dist.finetune.task_specs import recipe_size
from koelectra_dist.pretrain.checkpoint import store
from koelectra_dist.probe import records
from koelectra_dist.probe.config import finetune_section
from koelectra_dist.probe.schedule import DONE, FAILED, SKIPPED, Backlog, pending

log = logging.getLogger(__name__)

POLL_S = 2.0
"""How often the driver looks for newly committed checkpoints and finished probes."""


def format_line(run: str, record: dict[str, Any]) -> str:
    """The console line of one record."""
    head = f"[{run}] probe step {record['step']}:"
    if record["status"] != DONE:
        return f"{head} {record['status']} ({record.get('reason', '')})"
    parts = [
        f"{name} {t['metric']} {t['mean']:.2f} ±{t['std']:.2f} ({len(t['scores'])} seed{'s' * (len(t['scores']) > 1)})"
        for name, t in record["tasks"].items()
    ]
    return f"{head} {' | '.join(parts)} in {record['seconds']:.0f}s"


def check_resources(cfg: Config, can_grow: bool) -> None:
    """A probe asking for more than a cluster that cannot grow has would wait forever: refuse it."""
    import ray

    if can_grow:
        return
    have = ray.cluster_resources()
    p = cfg.probe
    for name, amount, field in [
        ("CPU", p.cpus, "probe.cpus"),
        *((k, v, f"probe.resources.{k}") for k, v in p.resources.items()),
    ]:
        if have.get(name, 0) < amount:
            raise ConfigError(
                f"{field}={amount}, but this local Ray has {have.get(name, 0):g} {name} and cannot grow; lower it "
                "or run on a cluster whose autoscaler offers it"
            )


class ProbeWatcher:
    """Use as a context manager around pre-training. Entering reads every probe task's rows (bad
    data fails now, before training) and starts the thread; leaving picks up the final checkpoint,
    then awaits or abandons what is still running or queued (`probe.at_end`) and draws the curve."""

    def __init__(self, cfg: Config):
        p = cfg.probe
        self.cfg, self.run = cfg, cfg.run.name
        self.root = cfg.paths.checkpoints
        self.folder = records.probe_dir(self.root)
        self.rule = records.rule(cfg)
        ft = finetune_section(cfg.finetune, p)
        # probes score dev (never test: picking a checkpoint on test would leak it)
        self.specs = [
            dataclasses.replace(s, eval_split="dev")
            for s in resolve_tasks(ft, recipe_size(cfg.model.hidden_size, cfg.model.num_hidden_layers))
        ]
        self.data = {
            s.name: {
                "train": read_split(ft.data_dir, s, "train", p.max_train_examples),
                "dev": read_split(ft.data_dir, s, "dev", p.max_eval_examples),
            }
            for s in self.specs
        }
        self.seeds = [cfg.finetune.seed + i for i in range(p.seeds)]
        self.backlog = Backlog(p.max_running, p.when_busy, cfg.train.steps)
        self.seen = {r["step"] for r in records.read(self.folder)}
        self.running: dict[Any, int] = {}  # Ray ObjectRef -> step
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._tb_uri = storage.join(self.root, "tensorboard", "probe")
        self._tb_local = storage.local_path(self._tb_uri) or tempfile.mkdtemp(prefix="koelectra-probe-tb-")
        self._writer = None
        self._tracker: tracking.Tracker | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> ProbeWatcher:
        import ray

        from koelectra_dist import ray_runtime
        from koelectra_dist.probe.runner import probe_checkpoint

        ray_runtime.connect(self.cfg)
        check_resources(self.cfg, ray_runtime.cluster_can_grow())
        p = self.cfg.probe
        gpus = p.gpus if ray.cluster_resources().get("GPU", 0) > 0 else 0
        self._remote = ray.remote(probe_checkpoint).options(
            num_cpus=p.cpus, num_gpus=gpus, resources=dict(p.resources) or None, max_retries=0
        )
        self._data_ref = ray.put(self.data)
        tracking.start_run(self.cfg, self.root)
        self._tracker = tracking.Tracker.open(self.cfg, self.root)
        log.info(
            "probes: %s on checkpoints at multiples of step %d and the last, %d rows x %g epochs x %d seed(s), "
            "%d CPU %g GPU %s each",
            [s.name for s in self.specs],
            self.cfg.checkpoint.interval_steps * p.every,
            p.max_train_examples,
            p.epochs,
            p.seeds,
            p.cpus,
            gpus,
            dict(p.resources) or "",
        )
        self._thread = threading.Thread(target=self._loop, name="probe-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc_type is None:
            self.finish()
        else:  # training failed: what runs is lost with this driver; a restart probes it (no record)
            self.abandon()
        self._close_tensorboard()

    def finish(self) -> None:
        """Training ended: take in the final checkpoint, then await or abandon (`probe.at_end`)."""
        self.tick()
        if self.cfg.probe.at_end == "abandon":
            if not self.backlog.idle():
                log.warning(
                    "probes: training ended, abandoning the probes of steps %s (probe.at_end=abandon; the next run of "
                    "the pretrain stage on these checkpoints probes them)",
                    sorted(self.backlog.running | set(self.backlog.queued)),
                )
            self.abandon()
        else:
            if not self.backlog.idle():
                log.info(
                    "probes: training ended; awaiting the probes of steps %s (probe.at_end=await)",
                    sorted(self.backlog.running | set(self.backlog.queued)),
                )
            while not self.backlog.idle():
                time.sleep(0.5)
                self.tick()
            # retention ran at each commit while probes still held their checkpoints: apply it now
            pruned = store.prune(self.root, self.cfg.checkpoint.keep_last, self._held)
            if pruned:
                log.info(
                    "probes: all read; checkpoint.keep_last=%d prunes steps %s", self.cfg.checkpoint.keep_last, pruned
                )
        self.draw()

    def _held(self, committed: list[int]) -> set[int]:
        return records.held_steps(self.cfg, committed)

    def abandon(self) -> None:
        import ray

        for ref in list(self.running):
            ray.cancel(ref, force=True)
        self.running.clear()

    def draw(self) -> None:
        from koelectra_dist.probe.report import write_curves

        try:
            where = write_curves(self.folder, self.run)
            if where:
                log.info("probes: curves in %s", where)
        except Exception as e:  # noqa: BLE001 - a picture must not fail a finished run
            log.warning("probes: could not draw the curves (%s: %s)", type(e).__name__, e)

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - a storage hiccup must not stop the watcher; next tick retries
                log.warning("probes: %s: %s", type(e).__name__, e)

    def tick(self) -> None:
        """One look: new scheduled checkpoints, finished probes, queued probes that may start."""
        import ray

        with self._lock:
            committed = store.committed_steps(self.root)
            for step in pending(committed, [{"step": s} for s in self.seen], self.rule):
                self.seen.add(step)
                action = self.backlog.due(step)
                if action == "start":
                    self._start(step)
                elif action == "skip":
                    self._record(
                        {"step": step, "status": SKIPPED, "reason": "a probe was running (probe.when_busy=skip)"}
                    )
            if self.running:
                done, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
                for ref in done:
                    step = self.running.pop(ref)
                    self.backlog.finished(step)
                    try:
                        result = ray.get(ref)
                        record = {"step": step, "status": DONE, **result}
                    except Exception as e:  # noqa: BLE001 - recorded, so that it is not retried forever
                        record = {"step": step, "status": FAILED, "reason": f"{type(e).__name__}: {str(e)[-500:]}"}
                    self._record(record)
            while (step := self.backlog.next()) is not None:
                self._start(step)

    def _start(self, step: int) -> None:
        uri = store.step_uri(self.root, step)
        ref = self._remote.remote(
            uri, self.cfg.export.vocab_uri, self.specs, self._data_ref, self.seeds, self.cfg.probe.cpus
        )
        self.running[ref] = step

    def _record(self, record: dict[str, Any]) -> None:
        record = {"checkpoint": f"step-{record['step']:08d}", **record}
        records.append(self.folder, record)
        print(format_line(self.run, record), flush=True)
        if record["status"] == DONE:
            self._scalars(record)

    # ------------------------------------------------------------ TensorBoard

    def _scalars(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self._tb_local)
        scalars = {}
        for name, t in record["tasks"].items():
            scalars[f"probe/{name}_{t['metric']}"] = t["mean"]
            scalars[f"probe/{name}_{t['metric']}_std"] = t["std"]
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, record["step"])
        if self._tracker:
            self._tracker.log(scalars, record["step"])
        self._writer.flush()
        if storage.local_path(self._tb_uri) is None:
            storage.upload_dir(self._tb_local, self._tb_uri)

    def _close_tensorboard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if storage.local_path(self._tb_uri) is None:
            shutil.rmtree(self._tb_local, ignore_errors=True)
