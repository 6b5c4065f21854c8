"""The model card (README.md) of a published tower, built from the export folder alone:
export_info.json (the checkpoint's meta.json, corpus statistics, parameter counts), the towers'
config.json, and the fine-tuning stage's results.md. Its YAML metadata is checked offline the way
the Hub parses it."""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from koelectra_dist.errors import DataError
from koelectra_dist.export.hf_layout import ExportInfo

PIPELINE_TAGS = {"discriminator": "feature-extraction", "generator": "fill-mask", "student": "feature-extraction"}
WIDGETS = {"discriminator": "한국어 ELECTRA를 공유합니다.", "generator": "대한민국의 수도는 [MASK]이다."}
# The Hub's task type for each fine-tuning metric, and the Hub datasets of the built-in tasks known there.
TASK_TYPES = {
    "accuracy": "text-classification",
    "macro_f1": "text-classification",
    "spearman": "sentence-similarity",
    "pearson": "sentence-similarity",
    "entity_f1": "token-classification",
    "korquad_f1": "question-answering",
}
HUB_DATASETS = {"nsmc": "e9t/nsmc", "korquad": "KorQuAD/squad_kor_v1"}
CLASSES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}
OPTIMIZERS = {
    "electra_adam": "Adam, decoupled weight decay, no bias correction (ELECTRA's)",
    "adamw": "AdamW, decoupled weight decay, bias-corrected",
}


def _training_rows(info: ExportInfo, train: dict[str, Any]) -> list[tuple[str, Any]]:
    """The schedule and optimizer rows every card's training table starts with (pre-training, distillation)."""
    return [
        ("steps", _num(info.step)),
        ("examples seen", _num(info.meta.consumed_samples)),
        ("global batch size", train.get("global_batch_size")),
        ("peak learning rate", train.get("learning_rate")),
        ("warm-up steps", train.get("warmup_steps")),
        ("schedule", "lr x min(1, step/warmup) x (1 - step/total)"),
        ("optimizer", OPTIMIZERS.get(train.get("optimizer", "electra_adam"))),
        ("weight decay", train.get("weight_decay")),
        ("Adam betas / eps", f"{train.get('adam_betas')} / {train.get('adam_eps')}" if train else None),
        ("gradient clipping", train.get("grad_clip")),
    ]


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows if v is not None)]


def _num(value: Any) -> str | None:
    """Thousands separators for integers; None stays None (the row is left out)."""
    if value is None:
        return None
    return f"{value:,}" if isinstance(value, int) else str(value)


def build_card(
    tower: str,
    repo_id: str,
    sibling: str,
    info: ExportInfo,
    configs: dict[str, dict],
    license: str,
    results: tuple[str, dict] | None,
    base_model: str | None = None,
) -> str:
    """README.md with YAML metadata; `configs` are the towers' config.json; `results` the fine-tuning
    stage's results.md and results.json (or None); `base_model` the Hub model this one continues."""
    meta = info.meta
    run_cfg = meta.config
    train, dist = run_cfg.get("train", {}), run_cfg.get("distributed", {})
    disc, gen = configs["discriminator"], configs["generator"]
    params = info.parameters
    table, scores = results if results else (None, {})
    evals = _eval_results(scores) if tower == "discriminator" else []
    metadata = ModelCardData(
        language="ko",
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS[tower],
        tags=["electra", "koelectra", "korean", tower, "pretraining"],
        widget=[{"text": WIDGETS[tower]}],
        base_model=base_model,
        datasets=sorted({HUB_DATASETS[t] for t in scores.get("tasks", {}) if t in HUB_DATASETS}) or None,
        model_name=repo_id.split("/")[-1] if evals else None,
        eval_results=evals or None,
    )
    usage = (
        f'fill = pipeline("fill-mask", model="{repo_id}")\nfill("대한민국의 수도는 [MASK]이다.")'
        if tower == "generator"
        else f'model = {CLASSES[tower]}.from_pretrained("{repo_id}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
        'logits = model(**tokenizer("한국어 ELECTRA를 공유합니다.", return_tensors="pt")).logits'
    )
    imports = "pipeline" if tower == "generator" else f"AutoTokenizer, {CLASSES[tower]}"
    role = (
        "the discriminator (replaced-token detection); fine-tune it for downstream tasks "
        "(`ElectraForSequenceClassification`, `ElectraForTokenClassification`, ...)"
        if tower == "discriminator"
        else "the generator (masked language model) used to train the discriminator"
    )
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"Korean ELECTRA (KoELECTRA recipe) pre-trained with koelectra_dist: this repository holds {role}. "
        f"Its pair is [{sibling}](https://huggingface.co/{sibling}).",
        "",
        "## Usage",
        "",
        "```python",
        f"from transformers import {imports}",
        "",
        usage,
        "```",
        "",
        "## Architecture",
        "",
        "| | discriminator | generator |",
        "|---|---|---|",
        *(
            f"| {label} | {_num(disc.get(key)) or 'n/a'} | {_num(gen.get(key)) or 'n/a'} |"
            for label, key in [
                ("layers", "num_hidden_layers"),
                ("embedding size", "embedding_size"),
                ("hidden size", "hidden_size"),
                ("attention heads", "num_attention_heads"),
                ("FFN size", "intermediate_size"),
                ("max sequence length", "max_position_embeddings"),
            ]
        ),
        f"| parameters | {_num(params.get('discriminator')) or 'n/a'} | {_num(params.get('generator')) or 'n/a'} |",
        "",
        "The generator and discriminator share their embeddings (word, position, token type); the "
        "generator's output layer reuses the word embeddings.",
        "",
        "## Vocabulary",
        "",
        *_table(
            [
                ("type", "WordPiece, cased (`do_lower_case: false`, no accent stripping)"),
                ("size", _num(disc.get("vocab_size"))),
                ("pre-tokenizer (training)", run_cfg.get("corpus", {}).get("vocab", {}).get("pretokenizer")),
                ("special tokens", "`[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4"),
                ("vocab.txt sha256", f"`{info.vocab_sha256}`"),
            ]
        ),
        "",
        "## Corpus",
        "",
        *_corpus_section(info.corpus),
        "",
        "## Pre-training",
        "",
        *_table(
            _training_rows(info, train)
            + [
                ("mask probability", train.get("mask_prob")),
                ("loss weights (generator / discriminator)", f"{train.get('gen_weight')} / {train.get('disc_weight')}"),
                ("generator size", run_cfg.get("model", {}).get("generator_size")),
                ("workers / ZeRO stage / precision", f"{meta.world_size} / {meta.zero_stage} / {meta.precision}"),
            ]
        ),
        "",
        *_selection_section(info.selection),
        "## Throughput",
        "",
        *_throughput_section(meta.metrics, train.get("global_batch_size"), dist.get("gpus_per_worker")),
        "",
        "## Final pre-training metrics",
        "",
        *_final_metrics_section(meta.metrics),
        "",
        "## Downstream results",
        "",
        table.strip() if table else "Not evaluated yet (run the finetune stage, then publish again).",
        "",
        "## Limitations",
        "",
        *_limitations(info, run_cfg, base_model, bool(table)),
        "",
    ]
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines))
    validate_card(card.content, tower)
    return card.content


def _eval_results(results: dict) -> list[EvalResult]:
    """model-index entries: each fine-tuned task's mean score on the split it was scored on."""
    evals = []
    for task, entry in results.get("tasks", {}).items():
        if entry.get("mean") is None or entry.get("metric") not in TASK_TYPES:
            continue
        split = entry["runs"][0].get("eval_split") or results.get("eval_split")
        evals.append(
            EvalResult(
                task_type=TASK_TYPES[entry["metric"]],
                dataset_type=HUB_DATASETS.get(task, task),
                dataset_name=task,
                dataset_split=split,
                metric_type=entry["metric"],
                metric_value=round(entry["mean"], 2),
                metric_name=f"{entry['metric']} (x100, mean of {len(entry['runs'])} seeds)",
            )
        )
    return evals


def _selection_section(selection: dict[str, Any] | None) -> list[str]:
    """Which checkpoint was published and why, with the probe curve it was chosen from."""
    if not selection:
        return []
    return [
        "## Checkpoint selection",
        "",
        f"Step {selection['step']:,} was chosen: {selection['why']}. Probes fine-tuned committed checkpoints "
        f"on a small budget while pre-training ran; their dev {selection['metric']} of {selection['task']}:",
        "",
        "| step | mean | spread (std over seeds) |",
        "|---|---|---|",
        *(
            f"| {p['step']:,}{' (chosen)' if p['step'] == selection['step'] else ''} | {p['mean']:.2f} | {p['std']:.2f} |"
            for p in selection["curve"]
        ),
        "",
    ]


def _final_metrics_section(metrics: dict[str, Any] | None) -> list[str]:
    """The objective's figures at the exported step."""
    if not metrics or "loss" not in metrics:
        return ["Not recorded in the checkpoint."]

    def value(key: str) -> str | None:
        return f"{metrics[key]:.3f}" if key in metrics else None

    pr = f"{value('disc_precision')} / {value('disc_recall')}" if "disc_precision" in metrics else None
    rows = [
        ("loss (generator + weighted discriminator)", value("loss")),
        ("generator MLM loss", value("gen_loss")),
        ("generator accuracy at masked positions", value("gen_acc")),
        ("discriminator precision / recall", pr),
        ("discriminator AUC", value("disc_auc")),
    ]
    return [*_table(rows), "", "Measured on training batches over the last logging window, in training mode."]


def _limitations(info: ExportInfo, run_cfg: dict[str, Any], base_model: str | None, evaluated: bool) -> list[str]:
    """What this model is not, stated plainly."""
    train = run_cfg.get("train", {})
    lines = [
        f"- Pre-trained for {info.step:,} steps of the {train.get('steps', info.step):,} its config planned."
        if train.get("steps", info.step) != info.step
        else f"- Pre-trained for {info.step:,} steps; its quality depends on that budget and on the corpus above.",
        "- Trained on the corpus above only; it reproduces that text's biases and knows nothing beyond it.",
    ]
    if not evaluated:
        lines.append("- Not evaluated on downstream tasks: no score vouches for it yet.")
    if train.get("init_from") and not base_model:
        lines.append("- Continued from an earlier pre-training run that is not named here (no base_model given).")
    return lines


def _corpus_section(corpus: dict[str, Any] | None) -> list[str]:
    if not corpus:
        return ["Corpus statistics were not recorded (no shard manifest at export time)."]
    rows = [
        ("examples", _num(corpus.get("total_rows"))),
        ("tokens", _num(corpus.get("total_tokens"))),
        ("shards", _num(corpus.get("num_shards"))),
        ("max length", corpus.get("max_length")),
    ]
    cleaning = corpus.get("cleaning") or {}
    rows += [(f"cleaning: {k}", _num(v)) for k, v in cleaning.items() if isinstance(v, int | float)]
    return _table(rows)


def _throughput_section(metrics: dict[str, Any] | None, batch: int | None, gpus: int | None) -> list[str]:
    if not metrics:
        return ["Not recorded in the checkpoint."]
    step_time = metrics.get("step_time_s")
    rows = [
        ("device", "GPU" if gpus else "CPU"),
        ("tokens / s (non-padding)", f"{metrics['tokens_per_s']:,.0f}" if "tokens_per_s" in metrics else None),
        ("sequences / s", f"{batch / step_time:,.1f}" if batch and step_time else None),
        ("step time", f"{step_time:.3f} s" if step_time else None),
        ("MFU", f"{100 * metrics['mfu']:.1f}%" if "mfu" in metrics else None),
    ]
    return _table(rows)


def validate_card(text: str, tower: str) -> None:
    """Parse the card's YAML the way the Hub does (offline) and check the fields it must carry."""
    data = ModelCard(text).data
    problems = [
        f"{key}: {getattr(data, key, None)!r}"
        for key, want in [("language", "ko"), ("library_name", "transformers"), ("pipeline_tag", PIPELINE_TAGS[tower])]
        if getattr(data, key, None) != want
    ]
    if not data.license or not data.tags:
        problems.append("license and tags are required")
    if problems:
        raise DataError("model card metadata is wrong: " + "; ".join(problems))


def _tokenizer(record: dict[str, Any] | None) -> str:
    """The shards' tokenizer as the manifest records it (corpus.tokenizer_uri), else the project's own."""
    if not record:
        return "the project's WordPiece vocabulary (corpus stage)"
    return f"`{record.get('uri')}` ({record.get('class')}, special ids {record.get('special_ids')})"


def _hub_id(uri: str | None) -> str | None:
    """ORG/NAME of an hf:// location, else None."""
    return uri[len("hf://") :] if uri and uri.startswith("hf://") else None


def build_student_card(
    repo_id: str,
    info: ExportInfo,
    config: dict,
    license: str,
    results: tuple[str, dict] | None,
    base_model: str | None = None,
) -> str:
    """README.md of a distilled student (the distill stage's export, `info.kind == "student"`): its
    teacher, the teacher layers it started from, the corpus it was distilled on (fingerprint and
    vocabulary hash), the losses and their weights, sizes, training and downstream results."""
    meta = info.meta
    run_cfg = meta.config
    train, d = run_cfg.get("train", {}), run_cfg.get("distill", {})
    params = info.parameters
    teacher = d.get("teacher_uri")
    base_model = base_model or _hub_id(teacher)
    table, scores = results if results else (None, {})
    evals = _eval_results(scores)
    architecture = (config.get("architectures") or ["?"])[0]
    metadata = ModelCardData(
        language="ko",
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS["student"],
        tags=["distillation", "korean", config.get("model_type", "bert"), "student"],
        base_model=base_model,
        datasets=sorted({HUB_DATASETS[t] for t in scores.get("tasks", {}) if t in HUB_DATASETS}) or None,
        model_name=repo_id.split("/")[-1] if evals else None,
        eval_results=evals or None,
    )
    corpus = info.corpus or {}
    rtd = architecture == "ElectraForPreTraining"  # a discriminator student of a discriminator teacher
    generator = d.get("generator_uri") or "a fresh generator (the teacher had none beside it)"
    soft_where = (
        "every real token (replaced-token logits, sigmoid)"
        if rtd
        else {"real": "every real (non-pad) token", "masked": "the masked positions"}.get(d.get("soft_targets"))
    )
    own = (
        f"replaced-token detection on input corrupted by {generator}"
        if rtd
        else "masked-LM cross-entropy at the masked positions"
    )
    masking = {
        "electra": "ELECTRA's: uniform over real tokens, 85% [MASK] / 15% kept",
        "distilbert": f"DistilBERT's: weighted by token count^-{d.get('smoothing')}, 80% [MASK] / 10% kept / 10% random",
    }.get(d.get("masking"), d.get("masking"))
    student_params, teacher_params = params.get("student"), params.get("teacher")
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A {config.get('num_hidden_layers')}-layer student (`{architecture}`) distilled by koelectra_dist's `distill` "
        f"stage from the teacher `{teacher}`, its layers initialised from the teacher's layers {d.get('layers')} "
        "(0-based).",
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        f'model = AutoModel.from_pretrained("{repo_id}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        'hidden = model(**tokenizer("한국어 모델을 공유합니다.", return_tensors="pt")).last_hidden_state',
        "```",
        "",
        "## Teacher and student",
        "",
        *_table(
            [
                ("teacher", f"`{teacher}`"),
                ("teacher layers kept (0-based)", d.get("layers")),
                ("student class", f"`{architecture}` ({d.get('student')} shape)"),
                ("student layers", config.get("num_hidden_layers", config.get("n_layers"))),
                ("hidden size", config.get("hidden_size", config.get("dim"))),
                ("parameters (student / teacher)", f"{_num(student_params)} / {_num(teacher_params)}"),
                ("size ratio", f"{student_params / teacher_params:.0%}" if student_params and teacher_params else None),
                ("position embeddings", "frozen at the teacher's" if d.get("freeze_position_embeddings") else None),
            ]
        ),
        "",
        "## Corpus",
        "",
        *_table(
            [
                ("corpus fingerprint", f"`{corpus['fingerprint']}`" if corpus.get("fingerprint") else None),
                ("vocab.txt sha256", f"`{info.vocab_sha256}`"),
                ("tokenizer", _tokenizer(corpus.get("tokenizer"))),
                ("examples", _num(corpus.get("total_rows"))),
                ("tokens", _num(corpus.get("total_tokens"))),
                ("max length", corpus.get("max_length")),
            ]
        ),
        "",
        "## Losses",
        "",
        *_table(
            [
                (
                    "soft targets",
                    f"weight {d.get('soft_weight')}, temperature {d.get('temperature')} (x T^2), over {soft_where}",
                ),
                ("hidden-state cosine", f"weight {d.get('cosine_weight')}, last layer, every real token"),
                ("student's own loss", f"weight {d.get('student_weight')}, {own}"),
                ("masking", f"{masking}, {train.get('mask_prob')} of the real tokens"),
            ]
        ),
        "",
        "## Training",
        "",
        *_table(
            _training_rows(info, train)
            + [("workers / ZeRO stage / precision", f"{meta.world_size} / {meta.zero_stage} / {meta.precision}")]
        ),
        "",
        "## Downstream results",
        "",
        table.strip() if table else "Not evaluated yet (run the finetune stage on this folder, then publish again).",
        "",
        "## Limitations",
        "",
        f"- Distilled for {info.step:,} steps; it inherits its teacher's biases and knows no more than its teacher "
        "and the corpus above.",
        *([] if table else ["- Not evaluated on downstream tasks: no score vouches for it yet."]),
        "",
    ]
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines))
    validate_card(card.content, "student")
    return card.content
