"""A teacher's Hugging Face tokenizer, as one transformers fast tokenizer, for the corpus, distill
and finetune stages alike.

A folder (local, s3:// or hf://ORG/NAME) loads with `AutoTokenizer` when transformers knows its
class (never with code from the Hub: no `trust_remote_code`). A KoBERT-family folder (KoBERT,
DistilKoBERT: a SentencePiece `.model` and a `vocab.txt` ordered `[UNK] [PAD] [CLS] [SEP] [MASK]`
then pieces, whose tokenizer_config names `KoBertTokenizer`, a class transformers lacks) is
converted: a `tokenizers` Unigram model over vocab.txt's tokens in vocab.txt's order, scored with
the SentencePiece model's piece scores, behind the normalizer KoBertTokenizer applies (ALBERT's:
NFKD without accents, then NFKC and the model's own NFKC map) and SentencePiece's ▁ word prefix. A piece
that vocab.txt lacks becomes [UNK] in KoBertTokenizer and cannot be chosen here; a piece ending in
digit + comma is scored down, as transformers' ALBERT converter does for the same rule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from koelectra_dist import storage
from koelectra_dist.errors import DataError, StorageError
from koelectra_dist.tokens import CLS, MASK, PAD, SEP, UNK, SpecialIds

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".index")
KOBERT_CLASSES = ("KoBertTokenizer", "KoBERTTokenizer")
KOBERT_SPECIALS = {"unk_token": UNK, "pad_token": PAD, "cls_token": CLS, "sep_token": SEP, "mask_token": MASK}


def tokenizer_files(uri: str) -> list[str]:
    """The files of a model or tokenizer folder that a tokenizer may need (all but weights)."""
    try:
        files = storage.list_files(uri)
    except StorageError as e:  # a missing folder, an unknown Hub name
        raise DataError(f"{uri}: cannot be listed ({e})") from None
    return sorted(f for f in files if not os.path.basename(f).endswith(WEIGHT_SUFFIXES))


def fetch(uri: str, dest: str) -> str:
    """Copy the tokenizer files of `uri` into the local folder `dest`; return `dest`."""
    os.makedirs(dest, exist_ok=True)
    for f in tokenizer_files(uri):
        with open(os.path.join(dest, os.path.basename(f)), "wb") as out:
            out.write(storage.read_bytes(f))
    return dest


def files_sha256(folder: str) -> str:
    """One sha256 over a local folder's files but weights (`tokenizer_files`: name and content, in
    name order)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not name.endswith(WEIGHT_SUFFIXES):
            with open(path, "rb") as f:
                digest.update(f"{name}\0{hashlib.sha256(f.read()).hexdigest()}\n".encode())
    return digest.hexdigest()


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _sentencepiece_model(folder: str) -> str | None:
    models = sorted(n for n in os.listdir(folder) if n.endswith(".model"))
    return os.path.join(folder, models[0]) if len(models) == 1 else None


def is_kobert_folder(folder: str) -> bool:
    """A SentencePiece `.model` + `vocab.txt` with no tokenizer.json, whose tokenizer_config names a
    KoBERT tokenizer class or no class at all (KoBERT's own files name none)."""
    if not (_sentencepiece_model(folder) and os.path.exists(os.path.join(folder, "vocab.txt"))):
        return False
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        return False
    named = _read_json(os.path.join(folder, "tokenizer_config.json")).get("tokenizer_class")
    return named is None or named in KOBERT_CLASSES


def kobert_tokenizer(folder: str) -> Any:
    """The KoBERT-family folder `folder` (module docstring) as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import check_number_comma, import_protobuf

    config = _read_json(os.path.join(folder, "tokenizer_config.json"))
    proto = import_protobuf().ModelProto()
    with open(_sentencepiece_model(folder), "rb") as f:
        proto.ParseFromString(f.read())
    if proto.trainer_spec.model_type != 1:
        raise DataError(f"{folder}: the SentencePiece model is not a unigram model; only unigram models convert")
    with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read().rstrip("\n").split("\n")
    specials = {key: config.get(key, token) for key, token in KOBERT_SPECIALS.items()}
    missing = [t for t in specials.values() if t not in vocab]
    if missing:
        raise DataError(f"{folder}/vocab.txt lacks the special tokens {missing}")
    scores = {p.piece: p.score for p in proto.pieces if p.type in (1, 4)}  # normal and user-defined pieces
    floor = min(scores.values(), default=0.0) - 100.0  # tokens the model has no score for: last resort
    unigram = [
        (t, scores[t] if check_number_comma(t) else scores[t] - 100.0) if t in scores else (t, floor) for t in vocab
    ]
    tok = Tokenizer(models.Unigram(unigram, unk_id=vocab.index(specials["unk_token"]), byte_fallback=False))
    steps = [normalizers.Strip(), normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not config.get("keep_accents", False):
        # KoBertTokenizer's NFKD splits Hangul into jamo, which SentencePiece's own normalizer joins
        # again; the Precompiled map of `tokenizers` does not, so NFKC joins them here
        steps += [normalizers.NFKD(), normalizers.StripAccents(), normalizers.NFKC()]
    if config.get("do_lower_case", False):
        steps.append(normalizers.Lowercase())
    if proto.normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    cls, sep = specials["cls_token"], specials["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab.index(cls)), (sep, vocab.index(sep))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=config.get("model_max_length", 512), **specials
    )


def load_local(folder: str, where: str) -> Any:
    """The tokenizer of the local folder `folder` as a transformers fast tokenizer (`where`: the
    setting or source that named it, for errors)."""
    if is_kobert_folder(folder):
        return kobert_tokenizer(folder)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise DataError(
            f"{where}: not a tokenizer transformers loads without code from the Hub ({e}); name a folder with "
            "tokenizer.json, a tokenizer class transformers has, or a KoBERT-style SentencePiece .model + vocab.txt"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise DataError(f"{where}: {type(tok).__name__} has no fast (Rust) version; the corpus stage needs one")
    return tok


@contextlib.contextmanager
def local_folder(uri: str) -> Iterator[str]:
    """The folder at `uri` as a local folder: itself when it is one, else a temporary copy of its
    tokenizer files (weights are not fetched)."""
    local = storage.local_path(uri)
    if local and os.path.isdir(local):
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="koelectra-tokenizer-") as scratch:
        yield fetch(uri, scratch)


def load_tokenizer(uri: str, where: str) -> Any:
    """`load_local` on a tokenizer folder at any URI."""
    with local_folder(uri) as folder:
        return load_local(folder, where)


def special_ids(tok: Any, where: str) -> SpecialIds:
    try:
        return SpecialIds.from_tokenizer(tok)
    except ValueError as e:
        raise DataError(f"{where}: {e}; the corpus and the models need [PAD] [UNK] [CLS] [SEP] [MASK]") from None


def vocab_list(tok: Any) -> list[str]:
    """Every token, added ones included, in id order (vocab.txt's lines)."""
    size = len(tok)
    tokens = tok.convert_ids_to_tokens(list(range(size)))
    if any(t is None for t in tokens):
        raise DataError(f"{type(tok).__name__}: its ids are not contiguous from 0 to {size - 1}")
    return tokens


def save(tok: Any, folder: str) -> None:
    """Write `tok` to the local folder `folder` as a standard transformers tokenizer folder
    (tokenizer.json + its config, loadable by AutoTokenizer) plus vocab.txt in id order (what the
    shards' vocab_sha256 hashes)."""
    tok.save_pretrained(folder)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write(_vocab_text(tok))


def describe(tok: Any, uri: str, sha256: str) -> dict[str, Any]:
    """What a shard manifest records of the tokenizer it was built with."""
    ids = special_ids(tok, uri)
    return {
        "uri": uri,
        "sha256": sha256,
        "class": type(tok).__name__,
        "model": json.loads(tok.backend_tokenizer.to_str())["model"]["type"],
        "special_ids": dataclasses.asdict(ids),
        "vocab_size": len(tok),
    }


def vocab_sha256(tok: Any) -> str:
    """sha256 of the tokenizer's vocab.txt as `save` writes it: what a shard manifest's
    vocab_sha256 is for shards built with that tokenizer."""
    return hashlib.sha256(_vocab_text(tok).encode("utf-8")).hexdigest()


def _vocab_text(tok: Any) -> str:
    return "\n".join(vocab_list(tok)) + "\n"


def copy_loadable(src: str, dest: str, names: tuple[str, ...]) -> None:
    """Give the local folder `dest` the tokenizer of the folder `src` (any URI) in a form
    AutoTokenizer loads: a KoBERT-family one converted (`save`), any other's files `names` copied
    as they are."""
    with local_folder(src) as local:
        if is_kobert_folder(local):
            save(kobert_tokenizer(local), dest)
            return
        for name in names:
            if os.path.exists(os.path.join(local, name)):
                with open(os.path.join(local, name), "rb") as f, open(os.path.join(dest, name), "wb") as out:
                    out.write(f.read())
