"""Reading the raw corpus: input URIs to files, files to lines, lines to blocks of whole documents.

The driver streams the input once per pass; it never holds more than one block. Bad input is a
clear DataError naming the file (missing path, damaged gzip, unreadable object) or a counted skip
(binary files, lines that are not UTF-8: see docs/corpus.md).
"""

from __future__ import annotations

import gzip
import io
import logging
import posixpath
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from koelectra_dist import storage
from koelectra_dist.corpus.clean import Deduplicator
from koelectra_dist.errors import DataError, StorageError

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 8192
# A document longer than this many blocks' worth of lines is cut (an example closes at the cut),
# so one huge document cannot become one huge task.
MAX_BLOCK_FACTOR = 4


@dataclass(frozen=True)
class InputFile:
    uri: str
    size: int
    version: str
    """mtime or ETag: with the size, what the re-run check compares."""


@dataclass
class ReadStats:
    files: int = 0
    lines_read: int = 0
    documents: int = 0
    duplicate_lines: int = 0
    skipped_files: list[str] = field(default_factory=list)


def _info_version(info: dict) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def resolve_inputs(uris: list[str]) -> list[InputFile]:
    """Every file named by `uris` (files, or folders searched recursively; names starting with
    '.' or '_' are skipped), sorted within each folder. DataError for a missing path."""
    files: list[InputFile] = []
    for uri in uris:
        fs, path = storage.filesystem(uri)
        try:
            if not fs.exists(path):
                raise DataError(f"corpus input {uri} does not exist; fix corpus.inputs")
            if fs.isdir(path):
                found = fs.find(path, detail=True)
            else:
                found = {path: fs.info(path)}
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - any backend failure names the input
            raise StorageError(f"corpus input {uri} cannot be listed: {type(e).__name__}: {e}") from e
        before = len(files)
        for p in sorted(found):
            if posixpath.basename(p).startswith((".", "_")):
                continue
            full = f"s3://{p}" if storage.is_s3(uri) else p
            files.append(InputFile(full, int(found[p].get("size") or 0), _info_version(found[p])))
        if len(files) == before:
            raise DataError(f"corpus input {uri} is an empty folder; fix corpus.inputs")
    return files


def _open_text_stream(uri: str, raw: IO[bytes]) -> IO[bytes]:
    """Wrap `raw` so it yields decompressed bytes (gzip recognised by its magic number)."""
    buffered = io.BufferedReader(raw, 1 << 20) if not isinstance(raw, io.BufferedReader) else raw
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"), 1 << 20)
    return buffered


def iter_file_lines(file: InputFile, stats: ReadStats) -> Iterator[bytes]:
    """Stripped lines of one file as bytes (blank ones included: they separate documents). A file
    with NUL bytes in its first 8 KiB is binary: it is skipped and recorded in `stats`."""
    try:
        with storage.open_uri(file.uri, "rb") as raw:
            stream = _open_text_stream(file.uri, raw)
            if b"\x00" in stream.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]:
                log.warning("corpus: skipping %s: binary data (NUL bytes), not a text file", file.uri)
                stats.skipped_files.append(file.uri)
                return
            stats.files += 1
            for line in stream:
                yield line.strip()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"corpus input {file.uri} is a damaged gzip file ({e}); re-create or remove it") from e
    except StorageError as e:
        raise DataError(f"corpus input {file.uri} cannot be read: {e}") from e
    except OSError as e:
        raise DataError(f"corpus input {file.uri} cannot be read: {type(e).__name__}: {e}") from e


def iter_lines(files: list[InputFile], dedup: Deduplicator | None, stats: ReadStats) -> Iterator[bytes]:
    """Non-blank raw lines of all files, raw duplicates dropped when `dedup` is given."""
    for file in files:
        for line in iter_file_lines(file, stats):
            if line:
                stats.lines_read += 1
                if dedup is None or not dedup.is_duplicate(line):
                    yield line


def iter_blocks(
    files: list[InputFile],
    lines_per_block: int,
    dedup: Deduplicator | None,
    stats: ReadStats,
    split_anywhere: bool = False,
) -> Iterator[bytes]:
    """Blocks of about `lines_per_block` raw lines, cut only at document ends (blank lines and file
    ends) unless `split_anywhere`. A block is the lines joined by '\\n', an empty line between
    documents. Raw duplicates are dropped here when `dedup` is given."""
    limit = lines_per_block if split_anywhere else lines_per_block * MAX_BLOCK_FACTOR
    block: list[bytes] = []
    doc_lines = 0  # kept lines of the current document
    doc_read = False  # whether it had any line at all (all may be duplicates)
    block_lines = 0

    def end_document() -> None:
        nonlocal doc_lines, doc_read
        stats.documents += doc_read
        if doc_lines:
            block.append(b"")
        doc_lines, doc_read = 0, False

    for file in files:
        for line in iter_file_lines(file, stats):
            if not line:
                end_document()
                if block_lines >= lines_per_block:
                    yield b"\n".join(block)
                    block, block_lines = [], 0
                continue
            stats.lines_read += 1
            doc_read = True
            if dedup is not None and dedup.is_duplicate(line):
                continue
            block.append(line)
            doc_lines += 1
            block_lines += 1
            if block_lines >= limit:
                end_document()
                yield b"\n".join(block)
                block, block_lines = [], 0
        end_document()
    if dedup is not None:
        stats.duplicate_lines = dedup.duplicates
    if block_lines:
        yield b"\n".join(block)


def decode_documents(block: bytes, counts: dict[str, int]) -> list[list[str]]:
    """A block's documents as lists of str lines; lines that are not valid UTF-8 are dropped and
    counted under 'invalid_utf8'."""
    documents: list[list[str]] = []
    for raw_doc in block.split(b"\n\n"):
        try:
            lines = raw_doc.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            lines = []
            for raw in raw_doc.split(b"\n"):
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    counts["invalid_utf8"] = counts.get("invalid_utf8", 0) + 1
        lines = [line for line in lines if line]
        if lines:
            documents.append(lines)
    return documents
