"""A teacher's tokenizer: KoBERT-family folders (SentencePiece .model + vocab.txt in KoBERT's order)
convert to a standard fast tokenizer whose ids are the SentencePiece model's pieces mapped through
vocab.txt; the converted folder loads with AutoTokenizer; other folders load as transformers has them."""

from __future__ import annotations

import unicodedata

import pytest
from helpers import korean_lines, write_kobert_folder

from koelectra_dist import hf_tokenizer
from koelectra_dist.errors import DataError
from koelectra_dist.tokens import SpecialIds

spm = pytest.importorskip("sentencepiece", reason="sentencepiece trains the test's KoBERT-style model")


@pytest.fixture(scope="module")
def kobert(tmp_path_factory):
    return write_kobert_folder(tmp_path_factory.mktemp("kobert"))


def reference_ids(folder, text: str) -> list[int]:
    """What KoBertTokenizer does (its preprocess_text with the defaults: spaces collapsed, `` and ''
    as ", NFKD without combining marks), then the SentencePiece pieces, each looked up in vocab.txt
    ([UNK] if absent)."""
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer_78b3253a26.model"))
    vocab = {t: i for i, t in enumerate((folder / "vocab.txt").read_text().rstrip("\n").split("\n"))}
    text = " ".join(text.strip().split()).replace("``", '"').replace("''", '"')
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return [vocab.get(p, vocab["[UNK]"]) for p in sp.encode_as_pieces(text)]


def test_kobert_folder_converts_to_the_same_ids(kobert):
    assert hf_tokenizer.is_kobert_folder(str(kobert))
    tok = hf_tokenizer.load_tokenizer(str(kobert), "test")
    sample = korean_lines()  # konlpy's constitution and ten bills: 2,480 lines
    assert len(sample) >= 2000
    pairs = [(tok(t, add_special_tokens=False)["input_ids"], reference_ids(kobert, t)) for t in sample]
    mismatched = [(ours, ref) for ours, ref in pairs if ours != ref]
    # The only difference allowed: the same pieces in another order, an exact tie of scores that
    # the two Viterbi searches break differently (e.g. a run of hyphens: '-' + '--------' + '-')
    assert all(sorted(ours) == sorted(ref) for ours, ref in mismatched), mismatched[:3]
    assert len(mismatched) <= len(sample) // 100
    ids = SpecialIds.from_tokenizer(tok)
    assert ids == SpecialIds(pad=1, unk=0, cls=2, sep=3, mask=4)
    framed = tok(sample[0])["input_ids"]
    assert framed[0] == ids.cls and framed[-1] == ids.sep
    assert len(tok) == len((kobert / "vocab.txt").read_text().splitlines())


def test_converted_folder_loads_with_auto_tokenizer(kobert, tmp_path):
    from transformers import AutoTokenizer

    tok = hf_tokenizer.load_tokenizer(str(kobert), "test")
    hf_tokenizer.save(tok, str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    text = korean_lines()[3]
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.pad_token_id == 1 and again.mask_token_id == 4
    assert (tmp_path / "vocab.txt").read_text() == (kobert / "vocab.txt").read_text()
    # a saved folder is a standard one: no longer a KoBERT folder, loads the same through the module
    assert not hf_tokenizer.is_kobert_folder(str(tmp_path))
    assert hf_tokenizer.load_tokenizer(str(tmp_path), "test")(text)["input_ids"] == tok(text)["input_ids"]


def test_describe_records_the_tokenizer(kobert):
    tok = hf_tokenizer.load_tokenizer(str(kobert), "test")
    sha = hf_tokenizer.files_sha256(str(kobert))
    d = hf_tokenizer.describe(tok, "somewhere", sha)
    assert d["special_ids"] == {"pad": 1, "unk": 0, "cls": 2, "sep": 3, "mask": 4}
    assert d["vocab_size"] == len(tok) and d["model"] == "Unigram" and d["sha256"] == sha


def test_wordpiece_folder_loads_as_transformers_has_it(tmp_path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "안녕", "##하세요"]
    bert = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False, strip_accents=False)
    bert.save_pretrained(str(tmp_path))
    tok = hf_tokenizer.load_tokenizer(str(tmp_path), "test")
    assert tok("안녕하세요", add_special_tokens=False)["input_ids"] == [5, 6]
    assert SpecialIds.from_tokenizer(tok).as_tuple() == (0, 1, 2, 3, 4)
    assert hf_tokenizer.vocab_list(tok) == vocab


def test_not_a_tokenizer_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DataError, match="corpus.tokenizer_uri"):
        hf_tokenizer.load_tokenizer(str(tmp_path), "corpus.tokenizer_uri")


def test_check_names_the_key_and_the_fix(tmp_path):
    from helpers import TINY_CONFIG

    from koelectra_dist.config import load_config
    from koelectra_dist.errors import ConfigError

    def check(*overrides):
        try:
            load_config(TINY_CONFIG, [f"run.output_uri={tmp_path}", *overrides])
        except ConfigError as e:
            return str(e)
        return ""

    assert check(f"corpus.tokenizer_uri={tmp_path}") == ""
    assert check("corpus.tokenizer_uri=hf://org/name") == ""
    assert "corpus.tokenizer_uri=" in check(f"corpus.tokenizer_uri={tmp_path / 'absent'}")
    assert "no such folder" in check(f"corpus.tokenizer_uri={tmp_path / 'absent'}")
    assert "hf://ORG/NAME" in check("corpus.tokenizer_uri=hf://only-org")
    both = check(f"corpus.tokenizer_uri={tmp_path}", f"corpus.vocab.vocab_uri={tmp_path}")
    assert "corpus.vocab.vocab_uri: set with corpus.tokenizer_uri" in both


def test_export_writes_a_teachers_tokenizer_as_it_is(kobert, tmp_path):
    """An ELECTRA pre-trained on a teacher's tokenizer exports that tokenizer, not an ElectraTokenizer."""
    from transformers import AutoTokenizer

    from koelectra_dist.export.stage import write_tokenizer

    vocab_dir, out = tmp_path / "vocab", tmp_path / "out"
    out.mkdir()
    tok = hf_tokenizer.load_tokenizer(str(kobert), "test")
    hf_tokenizer.save(tok, str(vocab_dir))
    write_tokenizer(str(vocab_dir), str(out), 64)
    text = korean_lines()[7]
    assert AutoTokenizer.from_pretrained(str(out))(text)["input_ids"] == tok(text)["input_ids"]
