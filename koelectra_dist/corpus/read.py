"""Reading the raw corpus in Ray tasks: input URIs to files, files to chunks (a whole file, or a
byte range of a large plain file cut at line starts), chunks to lines.

Every pass reads a chunk through `iter_chunk_lines`, so a line's index inside its chunk names it
in every pass. Each task looks at the head of its chunk's file itself, so every chunk of a file
agrees on what the file is: binary (skipped, counted), gzip (read whole by its first chunk), JSON
lines (read through corpus.text_field), or text in the wrong encoding (a DataError). Bad input is a
clear DataError naming the file or a counted skip: see docs/corpus.md.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import posixpath
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from koelectra_dist import storage
from koelectra_dist.errors import DataError, StorageError

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 8192
# How much of a file's head decides its encoding and format.
_HEAD_BYTES = 1 << 16
# A file is in another encoding when more than this share of its head's lines do not decode.
_MOSTLY_INVALID = 0.5


@dataclass(frozen=True)
class InputFile:
    uri: str
    size: int
    version: str
    """mtime or ETag: with the size, what the re-run check compares."""


@dataclass(frozen=True)
class Chunk:
    """What one read task reads: the lines of `uri` that start in [start, end) (end None: to the
    end). A gzip file is read whole by the chunk that starts at 0; its other chunks are empty."""

    index: int
    uri: str
    start: int
    end: int | None
    last_of_file: bool
    """Whether the file ends with this chunk (a file end closes a document)."""


@dataclass(frozen=True)
class ReadOptions:
    encoding: str = "utf-8"
    text_field: str | None = None


def _info_version(info: dict) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def hidden(relative: str) -> bool:
    """Whether a file found below an input folder is hidden: a name starting with '.' or '_' at
    any depth of its path below the folder (.git/, _tmp/, .DS_Store, _SUCCESS)."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def resolve_inputs(uris: list[str]) -> list[InputFile]:
    """Every file named by `uris` (files, or folders searched recursively, skipping `hidden`
    files), sorted within each folder. DataError for a missing path."""
    files: list[InputFile] = []
    for uri in uris:
        fs, path = storage.filesystem(uri)
        try:
            if not fs.exists(path):
                raise DataError(f"corpus input {uri} does not exist; fix corpus.inputs")
            folder = fs.isdir(path)
            found = fs.find(path, detail=True) if folder else {path: fs.info(path)}
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - any backend failure names the input and its likely cause
            raise StorageError(f"corpus input {storage._wrap(uri, e)}") from e
        before = len(files)
        skipped = 0
        for p in sorted(found):
            if folder and hidden(posixpath.relpath(p, path)):
                skipped += 1
                continue
            full = f"s3://{p}" if storage.is_s3(uri) else p
            files.append(InputFile(full, int(found[p].get("size") or 0), _info_version(found[p])))
        if skipped:
            log.info("corpus input %s: %d hidden files skipped (a name starting with '.' or '_')", uri, skipped)
        if len(files) == before:
            raise DataError(
                f"corpus input {uri} is an empty folder"
                + (f" ({skipped} hidden files skipped)" if skipped else "")
                + "; fix corpus.inputs"
            )
    return files


def plan_chunks(files: list[InputFile], chunk_bytes: int) -> list[Chunk]:
    """Chunks in corpus order: files larger than `chunk_bytes` in ranges of `chunk_bytes`."""
    chunks: list[Chunk] = []
    for file in files:
        starts = list(range(0, max(file.size, 1), chunk_bytes))
        for i, start in enumerate(starts):
            last = i == len(starts) - 1
            chunks.append(Chunk(len(chunks), file.uri, start, None if last else starts[i + 1], last))
    return chunks


def _open_text_stream(raw: IO[bytes]) -> tuple[IO[bytes], bool]:
    """`raw` as a stream of decompressed bytes (gzip recognised by its magic number), and whether
    it was gzip."""
    buffered = io.BufferedReader(raw, 1 << 20) if not isinstance(raw, io.BufferedReader) else raw
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"), 1 << 20), True
    return buffered, False


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _check_head(uri: str, head: bytes, options: ReadOptions) -> bool:
    """Whether the file is JSON lines; DataError when it is JSON without corpus.text_field or when
    most of its head's lines are not in corpus.encoding."""
    lines = [line.strip() for line in head.split(b"\n")[:-1]]  # the last one may be cut
    lines = [line for line in lines if line] or [head.strip()]
    if _is_json_object(lines[0]):
        if options.text_field is None:
            raise DataError(
                f"corpus input {uri} is JSON lines (its first line is a JSON object): set corpus.text_field "
                "to the field that holds each document's text"
            )
        return True
    invalid = 0
    for line in lines:
        try:
            line.decode(options.encoding)
        except UnicodeDecodeError:
            invalid += 1
    if invalid > _MOSTLY_INVALID * len(lines):
        raise DataError(
            f"corpus input {uri} is not {options.encoding} text ({invalid} of the first {len(lines)} lines do "
            'not decode): set corpus.encoding to its encoding (e.g. "cp949" for older Korean text), or '
            "convert or remove the file"
        )
    return False


def _json_lines(uri: str, lines: Iterator[bytes], field: str, counts: Counter[str]) -> Iterator[bytes]:
    """Each object's `field` as a document: its non-blank lines, then a blank line."""
    for line in lines:
        if not line:
            continue
        try:
            text = json.loads(line)[field]
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, IndexError):
            counts["invalid_json_lines"] += 1
            continue
        for part in text.split("\n"):
            if part := part.strip():
                yield part.encode("utf-8")
        yield b""


def _transcode(lines: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    """Lines re-encoded as UTF-8; a line that does not decode is passed on as it is (and counted
    as not UTF-8 where it is decoded)."""
    for line in lines:
        try:
            yield line.decode(encoding).encode("utf-8")
        except UnicodeDecodeError:
            yield line


def _range_lines(stream: IO[bytes], start: int, end: int | None) -> Iterator[bytes]:
    """The raw lines of a seekable plain stream that start in [start, end)."""
    pos = start
    if start:
        stream.seek(start - 1)
        if stream.read(1) != b"\n":  # mid-line: that line belongs to the chunk before
            pos += len(stream.readline())
    for line in stream:
        if end is not None and pos >= end:
            return
        pos += len(line)
        yield line


def iter_chunk_lines(chunk: Chunk, options: ReadOptions, counts: Counter[str]) -> Iterator[bytes]:
    """Stripped UTF-8 lines of one chunk as bytes (blank ones included: they end documents). A
    file with NUL bytes in its first 8 KiB is binary: skipped, and its first chunk counts it in
    `counts['skipped_binary']`; each file's first chunk counts it in `counts['files']`."""
    try:
        with storage.open_uri(chunk.uri, "rb") as raw:
            stream, gzipped = _open_text_stream(raw)
            head = stream.peek(_HEAD_BYTES)[:_HEAD_BYTES]
            if b"\x00" in head[:_SNIFF_BYTES]:
                if chunk.start == 0:
                    log.warning("corpus: skipping %s: binary data (NUL bytes), not a text file", chunk.uri)
                    counts["skipped_binary"] += 1
                return
            if gzipped and chunk.start:
                return
            counts["files"] += chunk.start == 0
            is_json = _check_head(chunk.uri, head, options)
            raw_lines = stream if gzipped else _range_lines(stream, chunk.start, chunk.end)
            lines = (line.strip() for line in raw_lines)
            if is_json:
                lines = _json_lines(chunk.uri, lines, options.text_field, counts)
            elif options.encoding.replace("_", "-").lower() not in ("utf-8", "utf8"):
                lines = _transcode(lines, options.encoding)
            yield from lines
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"corpus input {chunk.uri} is a damaged gzip file ({e}); re-create or remove it") from e
    except StorageError as e:
        raise DataError(f"corpus input {chunk.uri} cannot be read: {e}") from e
    except OSError as e:
        raise DataError(f"corpus input {chunk.uri} cannot be read: {type(e).__name__}: {e}") from e


def decode_documents(block: list[list[bytes]], counts: Counter[str]) -> list[list[str]]:
    """A block's documents as lists of str lines; lines that are not valid UTF-8 are dropped and
    counted under 'invalid_utf8'."""
    documents: list[list[str]] = []
    for raw_doc in block:
        try:
            lines = b"\n".join(raw_doc).decode("utf-8").split("\n")
        except UnicodeDecodeError:
            lines = []
            for raw in raw_doc:
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    counts["invalid_utf8"] += 1
        if lines:
            documents.append(lines)
    return documents
