"""The probe rules without Ray: which checkpoints are probed, the busy rule (skip or queue), which
checkpoints retention keeps for them, the best one, the records file, the config checks, the
curve."""

from __future__ import annotations

import pytest
from helpers import tiny_config

from koelectra_dist.errors import ConfigError
from koelectra_dist.probe import records
from koelectra_dist.probe.report import curves, png, report
from koelectra_dist.probe.schedule import Backlog, best, held, pending, scheduled


def done(step: int, score: float, task: str = "nsmc", std: float = 0.0) -> dict:
    return {
        "step": step,
        "status": "done",
        "tasks": {task: {"metric": "accuracy", "mean": score, "std": std, "scores": [score]}},
        "train_loss": 10.0 - step / 100,
    }


def test_the_schedule_is_multiples_of_interval_times_every_and_the_final_step():
    rule = [s for s in range(1, 1001) if scheduled(s, interval_steps=100, every=3, final_step=1000)]
    assert rule == [300, 600, 900, 1000]
    assert not scheduled(0, 100, 1, 1000)  # nothing trained yet


def test_skip_rule_skips_while_busy_but_never_the_final_step():
    backlog = Backlog(max_running=1, when_busy="skip", final_step=400)
    assert backlog.due(100) == "start"
    assert backlog.due(200) == "skip"
    assert backlog.due(400) == "queue"  # the final step is always probed
    assert backlog.next() is None  # the slot is still taken
    backlog.finished(100)
    assert backlog.next() == 400
    backlog.finished(400)
    assert backlog.idle()


def test_queue_rule_probes_every_due_step_in_order():
    backlog = Backlog(max_running=1, when_busy="queue", final_step=400)
    assert [backlog.due(s) for s in (100, 200, 300)] == ["start", "queue", "queue"]
    backlog.finished(100)
    assert backlog.next() == 200
    assert backlog.next() is None
    assert backlog.due(400) == "queue"
    backlog.finished(200)
    assert [backlog.next(), backlog.next()] == [300, None]
    backlog.finished(300)
    assert backlog.next() == 400


def test_best_is_the_highest_mean_and_the_later_step_on_a_tie():
    recs = [done(100, 60.0), done(200, 71.5), {"step": 300, "status": "skipped"}, done(400, 71.5), done(500, 65.0)]
    assert best(recs, "nsmc")["step"] == 400
    assert best(recs, "korsts") is None
    assert best([done(100, 60.0), done(200, 59.0)], "nsmc")["step"] == 100


def test_retention_holds_unprobed_scheduled_steps_and_the_best_so_far():
    rule = lambda s: scheduled(s, 100, 1, 500)  # noqa: E731
    recs = [done(100, 80.0), done(200, 60.0), {"step": 300, "status": "skipped"}]
    committed = [100, 200, 300, 400, 500]
    assert pending(committed, recs, rule) == [400, 500]
    assert held(committed, recs, rule, best_task=None) == {400, 500}
    assert held(committed, recs, rule, best_task="nsmc") == {100, 400, 500}


def test_records_append_keeps_every_line_and_the_first_of_a_repeated_step(tmp_path):
    folder = str(tmp_path / "probe")
    assert records.read(folder) == []
    records.append(folder, done(100, 60.0))
    records.append(folder, done(200, 70.0))
    records.append(folder, done(100, 99.0))  # a step recorded twice: the first line counts
    got = records.read(folder)
    assert [(r["step"], r["tasks"]["nsmc"]["mean"]) for r in got] == [(100, 60.0), (200, 70.0)]


def test_held_steps_reads_the_runs_records(tmp_path):
    cfg = tiny_config(str(tmp_path / "run"), 'probe.tasks=["nsmc"]', "export.checkpoint=best")
    folder = records.probe_dir(cfg.paths.checkpoints)
    records.append(folder, done(4, 70.0))
    # tiny: interval 4, 8 steps; step 4 is probed and best, step 8 still needs its probe
    assert records.held_steps(cfg, [4, 8]) == {4, 8}
    assert records.held_steps(tiny_config(str(tmp_path / "run")), [4, 8]) == set()  # probes off


@pytest.mark.parametrize(
    "overrides, message",
    [
        (['probe.tasks=["nsmc"]', "probe.every=0"], "probe.every: must be > 0"),
        (['probe.tasks=["nope"]'], "probe.tasks[0]: unknown task 'nope'"),
        (['probe.tasks=["nsmc"]', 'probe.resources={"GPU": 1}'], "probe.resources.GPU: set probe.gpus instead"),
        (['probe.tasks=["nsmc"]', 'probe.when_busy="later"'], 'probe.when_busy: "later" is not one of'),
        (["export.checkpoint=best"], 'export.checkpoint: "best" picks the checkpoint with the best probe score'),
        (['probe.tasks=["nsmc"]', "export.checkpoint=best", "export.best_task=korsts"], "export.best_task: 'korsts'"),
        (['probe.tasks=["naver_ner"]'], "probe.tasks: 'naver_ner' has no dev file to probe on"),
    ],
)
def test_bad_probe_settings_are_refused_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        tiny_config(str(tmp_path / "run"), *overrides)
    assert message in str(e.value)


def test_best_stays_a_name_not_a_path(tmp_path):
    cfg = tiny_config(str(tmp_path / "run"), 'probe.tasks=["nsmc"]', "export.checkpoint=best")
    assert cfg.export.checkpoint == "best"
    assert cfg.probe.enabled()


def test_the_curve_is_a_png_of_every_task_and_the_report_finds_it(tmp_path):
    recs = [done(100, 60.0, std=1.0), done(200, 65.0, std=0.5), {"step": 300, "status": "skipped"}]
    recs[1]["tasks"]["korsts"] = {"metric": "spearman", "mean": 40.0, "std": 0.0, "scores": [40.0]}
    assert curves(recs) == {"nsmc": [(100, 60.0, 1.0), (200, 65.0, 0.5)], "korsts": [(200, 40.0, 0.0)]}
    assert png(recs, "t")[:8] == b"\x89PNG\r\n\x1a\n"
    folder = tmp_path / "run" / "checkpoints" / "probe"
    for r in recs:
        records.append(str(folder), r)
    out = report(str(tmp_path / "run"))
    assert out["png"] == str(folder / "curves.png") and (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert out["skipped"] == [300]


def test_prune_never_removes_a_held_step(tmp_path):
    from koelectra_dist import storage
    from koelectra_dist.pretrain.checkpoint import store

    root = str(tmp_path / "ck")
    for s in (2, 4, 6, 8):
        storage.write_json(storage.join(store.step_uri(root, s), store.COMMITTED), {"step": s})
    seen = []
    assert store.prune(root, keep_last=1, held=lambda committed: seen.append(committed) or {4}) == [2, 6]
    assert seen == [[2, 4, 6, 8]]
    assert store.committed_steps(root) == [4, 8]
