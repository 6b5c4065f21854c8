"""Helpers shared by the tests: where things are, the tiny config, a vocabulary from real Korean
text, and shard sets in the corpus stage's format written directly (for pre-training tests)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from koelectra_dist import storage
from koelectra_dist.config import Config, ModelConfig, load_config
from koelectra_dist.corpus.shards import ShardFile, ShardManifest, vocab_sha256, write_manifest
from koelectra_dist.finetune.task_specs import FinetuneTaskConfig
from koelectra_dist.tokens import CLS_ID, SEP_ID, SPECIAL_TOKENS

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "tiny.json"
SHARED_DATA = ROOT.parent / "shared" / "data"
NSMC_CORPUS = SHARED_DATA / "nsmc" / "corpus.txt.gz"


def require_shared_data(*parts: str) -> Path:
    """The path of a file in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path.relative_to(ROOT.parent)} (the shared Korean data beside the project); absent here")
    return path


def tiny_config(output_uri: str, *overrides: str) -> Config:
    """configs/tiny.json (the tests' model) with its output under `output_uri`."""
    return load_config(TINY_CONFIG, [f"run.output_uri={output_uri}", *overrides])


def write_vocab(vocab_dir: Path, cfg: Config) -> str:
    """The corpus stage's vocabulary (its own trainer and writer) from real Korean text; returns
    the sha256 of vocab.txt."""
    from koelectra_dist.corpus.vocab import train_vocab, write_vocab_dir

    text = storage.read_bytes("pkg://konlpy/data/corpus/kolaw/constitution.txt").decode("utf-8").splitlines()
    tokens = train_vocab(text, cfg.corpus.vocab, cfg.model.vocab_size)
    write_vocab_dir(tokens, str(vocab_dir), cfg.model.max_length)
    return vocab_sha256(str(vocab_dir))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What every rank of a spawned process group imports: a fork server imports it once, so that a rank
# starts in milliseconds instead of paying ~5 s of imports on these 2 cores. Not DeepSpeed: it picks
# its accelerator at import, which a rank chooses itself (DS_ACCELERATOR).
RANK_PRELOAD = ["torch", "torch.distributed", "transformers", "koelectra_dist.pretrain.loop"]


def spawn_ranks(fn: Callable[..., None], world: int, *args: object) -> None:
    """`fn(rank, world, *args)` in `world` processes, like torch.multiprocessing.spawn (a rank's
    exception is raised here), forked from a server that has the heavy modules imported. Each rank
    gets this process's environment and folder of the moment, as a spawned one would."""
    import multiprocessing

    import torch.multiprocessing as mp

    multiprocessing.set_forkserver_preload(RANK_PRELOAD)
    here = (dict(os.environ), os.getcwd())
    mp.start_processes(_rank, args=(here, fn, world, *args), nprocs=world, start_method="forkserver")


def _rank(rank: int, here: tuple[dict[str, str], str], fn: Callable[..., None], *args: object) -> None:
    env, cwd = here
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    fn(rank, *args)


def write_shard_set(
    out: str,
    vocab_size: int,
    max_length: int,
    rows: list[int],
    seed: int = 0,
    several: bool = False,
    validation: int = 0,
) -> ShardManifest:
    """Write OUT/vocab/vocab.txt and OUT/shards (one Parquet file per entry of `rows`, then one
    validation shard of `validation` held-out rows if any); return the manifest. Example i of shard
    k starts with token id 5 + (global row index mod (vocab_size - 5)) so tests can tell examples
    apart. `several`: each row holds two examples (an `example_lengths` column, as
    `corpus.several_examples_per_row` writes)."""
    vocab = list(SPECIAL_TOKENS) + [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS))]
    vocab_bytes = ("\n".join(vocab) + "\n").encode()
    storage.write_bytes(storage.join(out, "vocab", "vocab.txt"), vocab_bytes)
    rng = np.random.default_rng(seed)
    shards, row = [], 0
    names = [f"part-{k:05d}.parquet" for k in range(len(rows))] + ["validation-00000.parquet"] * bool(validation)
    for name, n in zip(names, [*rows, validation], strict=False):
        ids, types, lengths = [], [], []
        for _ in range(n):
            length = int(rng.integers(6, max_length - 1))
            body = rng.integers(5, vocab_size, size=length).astype(np.uint16)
            body[0] = 5 + row % (vocab_size - 5)
            if several:  # [CLS] first [SEP] [CLS] second [SEP], as long as the one example
                half = length // 2
                ids.append(
                    np.concatenate([[CLS_ID], body[:half], [SEP_ID, CLS_ID], body[half + 2 :], [SEP_ID]]).astype(
                        np.uint16
                    )
                )
                lengths.append([half + 2, length - half])
            else:
                ids.append(np.concatenate([[CLS_ID], body, [SEP_ID]]).astype(np.uint16))
            types.append(np.zeros(length + 2, np.uint8))
            row += 1
        columns = {
            "input_ids": pa.array(ids, pa.list_(pa.uint16())),
            "token_type_ids": pa.array(types, pa.list_(pa.uint8())),
        }
        if several:
            columns["example_lengths"] = pa.array(lengths, pa.list_(pa.int32()))
        table = pa.table(columns)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(storage.join(out, "shards", name), buf.getvalue())
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        shards.append(ShardFile(path=name, rows=n, tokens=int(sum(len(x) for x in ids)), bytes=len(data), sha256=sha))
    held = shards[len(rows) :]
    shards = shards[: len(rows)]
    manifest = ShardManifest(
        vocab_sha256=hashlib.sha256(vocab_bytes).hexdigest(),
        vocab_size=vocab_size,
        max_length=max_length,
        id_dtype="uint16",
        shards=shards,
        total_rows=sum(rows),
        total_tokens=sum(s.tokens for s in shards),
        cleaning={},
        config={},
        validation=held,
    )
    write_manifest(storage.join(out, "shards"), manifest)
    return manifest


def write_electra_pair(
    out: Path, vocab_txt: bytes, max_length: int = 64, embeddings_noise: float = 0.0, layers: int = 2
) -> None:
    """A tiny published-style ELECTRA pair in KoELECTRA's layout: OUT/discriminator and
    OUT/generator saved by transformers' `save_pretrained`, each with its own copy of the embeddings
    (the generator's equal to the discriminator's plus `embeddings_noise`), embedding_size 16 !=
    hidden_size 32, and vocab.txt in both."""
    import torch
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    vocab_size = len(vocab_txt.decode().split())
    common = dict(
        vocab_size=vocab_size, embedding_size=16, num_hidden_layers=layers, max_position_embeddings=max_length
    )
    torch.manual_seed(7)
    disc = ElectraForPreTraining(ElectraConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, **common))
    gen = ElectraForMaskedLM(ElectraConfig(hidden_size=16, num_attention_heads=1, intermediate_size=64, **common))
    with torch.no_grad():
        # a trained pair: non-trivial LayerNorm and biases, so that a wrong mapping shows in the logits
        for model in (disc, gen):
            for p in model.parameters():
                if p.dim() == 1:
                    p.add_(0.1 * torch.randn_like(p))
        for name, p in gen.electra.embeddings.named_parameters():
            p.copy_(dict(disc.electra.embeddings.named_parameters())[name] + embeddings_noise * torch.randn_like(p))
    for name, model in (("discriminator", disc), ("generator", gen)):
        model.save_pretrained(out / name)
        (out / name / "vocab.txt").write_bytes(vocab_txt)


# A tiny ELECTRA for model tests. Embedding 8 != hidden (32 discriminator, 16 generator): both
# towers get a projection.
TINY_MODEL = ModelConfig(
    vocab_size=97,
    embedding_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    generator_size=0.5,
    max_length=40,
)


def no_dropout(model_cfg: ModelConfig) -> ModelConfig:
    return ModelConfig(**{**model_cfg.__dict__, "hidden_dropout": 0.0, "attention_dropout": 0.0})


def publish_to_hub_cache(repo: str, folder: Path, revision: str = "0" * 40) -> None:
    """Put the files of `folder` into the session's Hugging Face cache (HF_HUB_CACHE, set in
    conftest.py) as huggingface_hub lays a downloaded repository out: blobs named by their sha256,
    snapshots/<revision>/<file> linking to them, refs/main naming the revision."""
    import os

    root = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo.replace("/", "--"))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / revision / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)


class SwitchableProxy:
    """A TCP forwarder on 127.0.0.1 to an HTTP endpoint, that can be taken down (connections are cut
    and refused, as when a store restarts) and brought back on the same port."""

    def __init__(self, target: str):
        host, _, port = target.removeprefix("http://").partition(":")
        self.target = (host, int(port))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # taken down
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def korean_lines() -> list[str]:
    """Real Korean text that ships with a dependency (konlpy's constitution and assembly bills):
    non-empty lines, stripped."""
    lines = []
    for name in ["kolaw/constitution.txt", *(f"kobill/18098{i:02d}.txt" for i in range(90, 100))]:
        text = storage.read_bytes(f"pkg://konlpy/data/corpus/{name}").decode("utf-8")
        lines += [line.strip() for line in text.splitlines() if line.strip()]
    return lines


KOBERT_MODEL_NAME = "tokenizer_78b3253a26.model"  # KoBERT's file name


def write_kobert_folder(folder: Path, pieces: int = 1000) -> Path:
    """A KoBERT-family tokenizer folder, trained here: a SentencePiece unigram model on
    `korean_lines()` (its own ids: <unk>=0, <s>=1, </s>=2, then pieces) and a vocab.txt in KoBERT's
    order, [UNK]=0 [PAD]=1 [CLS]=2 [SEP]=3 [MASK]=4 then the pieces (so the two orders differ), with
    a tokenizer_config naming KoBertTokenizer (a class transformers lacks)."""
    import json

    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(korean_lines()),
        model_writer=model,
        vocab_size=pieces,
        model_type="unigram",
        character_coverage=0.9995,
        num_threads=1,
        minloglevel=2,
    )
    (folder / KOBERT_MODEL_NAME).write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    own = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_unknown(i) or sp.is_control(i))]
    (folder / "vocab.txt").write_text("\n".join(["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", *own]) + "\n")
    config = {
        "tokenizer_class": "KoBertTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_kobert.KoBertTokenizer", None]},
        "do_lower_case": False,
        "model_max_length": 512,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    specials = {
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    return folder


def toy_finetune_config(folder: Path, model_uri: str) -> Config:
    """A finetune-only config of one epoch on a toy two-class task over the words w5..w30 (written
    under `folder`/toy; 40 rows scored on themselves): enough to show a model fine-tunes."""
    rows = ["id\tdocument\tlabel"] + [f"{i}\tw{i % 7 + 5} w{i % 3 + 20} w30\t{int(i % 7 < 3)}" for i in range(40)]
    (folder / "toy").mkdir()
    for name in ("train.txt", "test.txt"):
        (folder / "toy" / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = {"name": "toy", "train_file": "train.txt", "test_file": "test.txt", "text_columns": ["document"]}
    spec |= {"label_column": "label", "labels": ["0", "1"], "metric": "accuracy", "eval_split": "test"}
    return tiny_config(
        str(folder / "ft"),
        f"finetune.model_uri={model_uri}",
        f"finetune.data_dir={folder}",
        'finetune.tasks=["toy"]',
        f"finetune.task_specs=[{json.dumps(spec)}]",
        "finetune.epochs=1",
        "finetune.allow_same_files=true",
        'run.stages=["finetune"]',
    )


# A two-class task in NSMC's layout (id, document, label) under <data_dir>/sentiment/{train,dev}.txt,
# written by the fine-tuning tests that use it.
SENTIMENT_SPEC = FinetuneTaskConfig(
    name="sentiment",
    train_file="train.txt",
    dev_file="dev.txt",
    text_columns=["document"],
    label_column="label",
    labels=["0", "1"],
    metric="accuracy",
)
