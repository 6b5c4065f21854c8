"""Reading the raw corpus: input resolution, chunks (byte ranges cut at line starts, gzip read
whole), and what each file is (binary, another encoding, JSON lines)."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter

import pytest

from koelectra_dist.corpus.read import ReadOptions, decode_documents, iter_chunk_lines, plan_chunks, resolve_inputs
from koelectra_dist.errors import DataError, StorageError


def write_docs(path, docs: list[list[str]], compress: bool = False) -> None:
    data = "\n\n".join("\n".join(doc) for doc in docs).encode() + b"\n"
    path.write_bytes(gzip.compress(data) if compress else data)


def read_all(paths, chunk_bytes: int, options: ReadOptions | None = None) -> tuple[list[bytes], Counter]:
    counts: Counter[str] = Counter()
    chunks = plan_chunks(resolve_inputs([str(p) for p in paths]), chunk_bytes)
    return [line for c in chunks for line in iter_chunk_lines(c, options or ReadOptions(), counts)], counts


def test_resolve_inputs_recurses_sorted_and_skips_hidden(tmp_path):
    (tmp_path / "b").mkdir()
    write_docs(tmp_path / "b" / "2.txt", [["둘"]])
    write_docs(tmp_path / "1.txt", [["하나"]])
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "_SUCCESS").write_text("")
    for folder in (".git", "b/.ipynb_checkpoints", "_tmp/deep"):  # hidden at any depth
        (tmp_path / folder).mkdir(parents=True)
        write_docs(tmp_path / folder / "3.txt", [["셋"]])
    files = resolve_inputs([str(tmp_path)])
    assert [f.uri for f in files] == [str(tmp_path / "1.txt"), str(tmp_path / "b" / "2.txt")]
    assert all(f.size > 0 and f.version for f in files)
    assert [f.uri for f in resolve_inputs([str(tmp_path / ".git")])] == [str(tmp_path / ".git" / "3.txt")]  # named
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        resolve_inputs([str(tmp_path / "empty")])
    (tmp_path / "empty" / ".cache").mkdir()
    write_docs(tmp_path / "empty" / ".cache" / "x.txt", [["넷"]])
    with pytest.raises(DataError, match=r"empty folder \(1 hidden files skipped\)"):
        resolve_inputs([str(tmp_path / "empty")])


def test_refused_s3_credentials_on_an_input_name_the_cause_and_fix(tmp_path, monkeypatch):
    """A real S3 endpoint that checks credentials (moto with authentication on) refuses ours."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the moto server did not start"
                time.sleep(0.1)
        for key, value in [("AWS_ACCESS_KEY_ID", "wrong"), ("AWS_SECRET_ACCESS_KEY", "wrong")]:
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
        with pytest.raises(StorageError) as e:
            resolve_inputs(["s3://corpus/in"])
        assert "corpus input s3://corpus/in: access denied" in str(e.value)
        assert "check that the credentials are valid" in str(e.value) and "AWS_ACCESS_KEY_ID" in str(e.value)
    finally:
        server.terminate()
        server.wait()


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1000, 1 << 20])
def test_byte_ranges_hold_every_line_once(tmp_path, chunk_bytes):
    docs = [[f"문서{d} 문장{i}" * (i + 1) for i in range(3)] for d in range(20)]
    write_docs(tmp_path / "a.txt", docs)
    write_docs(tmp_path / "b.data", docs[:5], compress=True)  # gzip without a .gz name: read whole
    lines, counts = read_all([tmp_path / "a.txt", tmp_path / "b.data"], chunk_bytes)
    expected = [line.strip().encode() for line in (tmp_path / "a.txt").read_text().split("\n")[:-1]]
    expected += [
        line.strip().encode() for line in gzip.decompress((tmp_path / "b.data").read_bytes()).decode().split("\n")[:-1]
    ]
    assert lines == expected
    assert counts["files"] == 2


def test_binary_files_are_skipped_and_counted_once(tmp_path):
    (tmp_path / "b.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)) * 40)
    lines, counts = read_all([tmp_path / "b.bin"], 100)
    assert lines == [] and counts["skipped_binary"] == 1 and counts["files"] == 0


def test_a_file_in_another_encoding_is_refused_then_read_with_corpus_encoding(tmp_path):
    text = "".join(f"좋은 영화 {i}번째 리뷰입니다\n" for i in range(50))
    (tmp_path / "old.txt").write_bytes(text.encode("cp949"))
    with pytest.raises(DataError, match=r"old.txt is not utf-8 text .*corpus.encoding.*cp949"):
        read_all([tmp_path / "old.txt"], 1 << 20)
    lines, _ = read_all([tmp_path / "old.txt"], 64, ReadOptions(encoding="cp949"))
    assert [line.decode("utf-8") for line in lines] == text.splitlines()


def test_a_few_invalid_lines_are_not_a_wrong_encoding(tmp_path):
    (tmp_path / "a.txt").write_bytes("좋은 영화\n".encode() * 5 + b"\xff\xfe broken\n")
    lines, _ = read_all([tmp_path / "a.txt"], 1 << 20)
    assert len(lines) == 6


def test_json_lines_need_text_field_and_give_one_document_per_object(tmp_path):
    rows = [{"id": 1, "text": "첫 문장\n둘째 문장"}, {"id": 2, "text": "다음 문서"}, {"id": 3}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\nnot json\n")
    with pytest.raises(DataError, match=r"a.jsonl is JSON lines .*corpus.text_field"):
        read_all([tmp_path / "a.jsonl"], 1 << 20)
    lines, counts = read_all([tmp_path / "a.jsonl"], 1 << 20, ReadOptions(text_field="text"))
    assert [line.decode() for line in lines] == ["첫 문장", "둘째 문장", "", "다음 문서", ""]
    assert counts["invalid_json_lines"] == 2  # no "text" field; not JSON


def test_invalid_utf8_lines_are_counted_and_dropped():
    counts: Counter[str] = Counter()
    block = [["좋은 영화".encode(), b"\xff\xfe broken \xc3", "두번째 줄".encode()], ["다음 문서".encode()]]
    assert decode_documents(block, counts) == [["좋은 영화", "두번째 줄"], ["다음 문서"]]
    assert counts == {"invalid_utf8": 1}
