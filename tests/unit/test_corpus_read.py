"""Reading the raw corpus: input resolution, gzip sniffing, blocks of whole documents."""

from __future__ import annotations

import gzip

import pytest

from koelectra_dist.corpus.clean import Deduplicator
from koelectra_dist.corpus.read import ReadStats, decode_documents, iter_blocks, resolve_inputs
from koelectra_dist.errors import DataError


def write_docs(path, docs: list[list[str]], compress: bool = False) -> None:
    data = "\n\n".join("\n".join(doc) for doc in docs).encode() + b"\n"
    path.write_bytes(gzip.compress(data) if compress else data)


def test_resolve_inputs_recurses_sorted_and_skips_hidden(tmp_path):
    (tmp_path / "b").mkdir()
    write_docs(tmp_path / "b" / "2.txt", [["둘"]])
    write_docs(tmp_path / "1.txt", [["하나"]])
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "_SUCCESS").write_text("")
    files = resolve_inputs([str(tmp_path)])
    assert [f.uri for f in files] == [str(tmp_path / "1.txt"), str(tmp_path / "b" / "2.txt")]
    assert all(f.size > 0 and f.version for f in files)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        resolve_inputs([str(tmp_path / "empty")])


def test_blocks_hold_whole_documents_and_gzip_is_sniffed(tmp_path):
    docs = [[f"문서{d} 문장{i}" for i in range(3)] for d in range(10)]
    write_docs(tmp_path / "corpus.data", docs, compress=True)  # gzip without a .gz name
    stats = ReadStats()
    blocks = list(iter_blocks(resolve_inputs([str(tmp_path)]), 4, None, stats))
    decoded = [decode_documents(b, {}) for b in blocks]
    assert [doc for block in decoded for doc in block] == docs
    assert all(len(block) == 2 for block in decoded)  # 6 lines >= 4: cut after the second document
    assert stats.lines_read == 30 and stats.documents == 10 and stats.files == 1


def test_a_huge_document_is_cut_and_duplicates_dropped(tmp_path):
    write_docs(tmp_path / "a.txt", [[f"줄 {i}" for i in range(50)] + ["줄 0"], ["끝"]])
    stats = ReadStats()
    blocks = list(iter_blocks(resolve_inputs([str(tmp_path / "a.txt")]), 5, Deduplicator(), stats))
    sizes = [sum(map(len, decode_documents(b, {}))) for b in blocks]
    assert sizes == [20, 20, 10, 1]  # cut every 4 x 5 lines; the document end flushes
    assert stats.duplicate_lines == 1
    anywhere = list(iter_blocks(resolve_inputs([str(tmp_path / "a.txt")]), 5, None, ReadStats(), split_anywhere=True))
    assert len(anywhere) == 11
