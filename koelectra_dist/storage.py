"""One storage interface for local paths, s3:// URIs and files shipped inside Python packages.

URIs:
- `path/to/x` or `file:///abs/x`: local files;
- `s3://bucket/prefix`: any S3-compatible store; the endpoint comes from AWS_ENDPOINT_URL_S3 /
  AWS_ENDPOINT_URL, which `use_storage_config` sets from `storage.s3_endpoint_url` before any
  stage touches storage (and `worker_env` hands to Ray tasks), credentials only from the
  environment or the instance profile;
- `pkg://package/relative/path`: read-only data inside an installed package (the demo corpus);
- `hf://ORG/NAME[/path]`: read-only, a model repository on the Hugging Face Hub, fetched once with
  `huggingface_hub` into its cache (needs network, or the repository already in the cache;
  HF_HUB_CACHE and HF_HUB_OFFLINE are honoured). A pair's name (`ORG/NAME` for
  `ORG/NAME-discriminator` + `ORG/NAME-generator`) reads the discriminator; see `hub_model`.

Writers put a marker file last (`write_json(..., marker)`): readers trust a folder only once its
marker exists, so a half-written output is never mistaken for a whole one.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import json
import logging
import os
import posixpath
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import fsspec

from koelectra_dist.errors import StorageError, StorageUnavailable

log = logging.getLogger(__name__)

S3_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
# Faults of the store, not of the request: the S3 error codes and HTTP statuses of a server error,
# throttling or a timeout.
_TRANSIENT = re.compile(
    r"\b(InternalError|ServiceUnavailable|SlowDown|Throttling\w*|RequestLimitExceeded|TooManyRequests|"
    r"RequestTimeout|ReadTimeout\w*|ConnectTimeout\w*|timed out)\b|\((50[0234]|429)\)"
)


def use_storage_config(s3_endpoint_url: str | None, s3_region: str | None = None) -> dict[str, str]:
    """Export the S3 endpoint/region as environment variables (inherited by local Ray workers) and
    return them so that a driver can pass them on in a Ray runtime_env."""
    env = {}
    if s3_endpoint_url:
        env["AWS_ENDPOINT_URL_S3"] = s3_endpoint_url
    if s3_region:
        env["AWS_DEFAULT_REGION"] = s3_region
    os.environ.update(env)
    return env


def worker_env() -> dict[str, str]:
    """This process's S3 settings, for Ray tasks: a Ray that was running before the config was read
    did not pass them to its workers."""
    return {k: os.environ[k] for k in S3_ENV if os.environ.get(k)}


def when_available(call: Any, what: str, limit_s: float = 600.0) -> Any:
    """`call()`, tried again while the store does not answer (StorageUnavailable), waiting 1, 2, 4
    ... up to 30 s between tries, for at most `limit_s`."""
    deadline, delay = time.monotonic() + limit_s, 1.0
    while True:
        try:
            return call()
        except StorageUnavailable as e:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: %s; trying again in %.0fs", what, e, delay)
            time.sleep(delay)
            delay = min(2 * delay, 30.0)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _package_path(uri: str) -> str:
    package, _, rest = uri[len("pkg://") :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StorageError(f"{uri}: Python package {package!r} is not installed (pip install {package})")
    return str(Path(next(iter(spec.submodule_search_locations))) / rest)


def hf_repo(uri: str) -> tuple[str, str]:
    """The Hub repository id and the path inside it of `hf://ORG/NAME[/path]` (no network)."""
    parts = uri[len("hf://") :].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise StorageError(
            f"{uri}: a Hugging Face Hub URI is hf://ORG/NAME (e.g. hf://monologg/koelectra-base-v3-discriminator)"
        )
    return "/".join(parts[:2]), "/".join(parts[2:])


TOWER_SUFFIXES = ("-discriminator", "-generator")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    # the environment read at each call too: huggingface_hub reads it once, at import
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in (
        "1",
        "ON",
        "YES",
        "TRUE",
    )


def _hub_cache() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def _hub_has(repo: str) -> bool | None:
    """Whether the Hub model repository `repo` exists: True when its config.json is in the local
    cache, else what the Hub says; None when offline or the Hub cannot be reached."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo, "config.json", cache_dir=_hub_cache()), str):
        return True
    return None if _hub_offline() else _hub_says(repo)


@functools.lru_cache(maxsize=64)
def _hub_says(repo: str) -> bool | None:
    """The Hub's answer, once per process (every read of an hf:// URI resolves its name)."""
    from huggingface_hub import HfApi

    try:
        return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).repo_exists(repo)
    except Exception as e:  # noqa: BLE001 - no network, DNS, proxy, timeouts...
        _HUB_ERRORS[repo] = f"{type(e).__name__}: {e}"
        return None


_HUB_ERRORS: dict[str, str] = {}


def hub_model(uri: str) -> tuple[str, str | None]:
    """The repositories `hf://ORG/NAME` names, as (model, generator) hf:// URIs. A pair when
    `ORG/NAME-discriminator` exists: (its discriminator, its generator or None); otherwise the
    single repository `ORG/NAME` (an ELECTRA discriminator, or a BERT) and None. `ORG/NAME-discriminator`
    names the same pair. Looks in the local Hugging Face cache first, then asks the Hub; StorageError
    naming the id when neither knows it."""
    repo, _ = hf_repo(uri)
    base = repo
    for suffix in TOWER_SUFFIXES:
        base = base.removesuffix(suffix)
    disc, gen = f"{base}-discriminator", f"{base}-generator"
    seen = {}
    for candidate in dict.fromkeys([disc, repo]):
        seen[candidate] = _hub_has(candidate)
        if seen[candidate]:
            if candidate == disc:
                return f"hf://{disc}", f"hf://{gen}" if _hub_has(gen) else None
            return f"hf://{repo}", None
    if any(found is None for found in seen.values()):
        why = "HF_HUB_OFFLINE is set" if _hub_offline() else "; ".join(_HUB_ERRORS.get(r, "") for r in seen)
        raise StorageError(
            f"{uri}: neither {' nor '.join(seen)} is in the local Hugging Face cache ({_hub_cache()}), and the Hub "
            f"cannot be asked ({why.strip('; ') or 'unreachable'}); download it where there is network "
            f"(`hf download {repo}`, and the cache folder copied here, or HF_HUB_CACHE pointed at it) or name a "
            "local folder"
        )
    raise StorageError(f"{uri}: the Hugging Face Hub has no model repository {' or '.join(seen)}; check the name")


def _hub_snapshot(uri: str) -> str:
    """The local folder of the Hub repository named by `uri` (downloaded on first use): a pair's
    name reads its discriminator."""
    from huggingface_hub import snapshot_download

    repo, rest = hf_repo(uri)
    if not repo.endswith(TOWER_SUFFIXES):
        repo, _ = hf_repo(hub_model(f"hf://{repo}")[0])
    try:
        folder = snapshot_download(repo, cache_dir=_hub_cache(), local_files_only=_hub_offline())
    except Exception as e:  # noqa: BLE001 - no network, unknown repository, gated model...
        raise StorageError(
            f"{uri}: could not fetch {repo} from the Hugging Face Hub ({type(e).__name__}: {e}); check the name "
            f"and the network, or download it where there is network and use the local folder instead"
        ) from None
    return os.path.join(folder, rest) if rest else folder


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for `uri` and the path to use with it."""
    if is_s3(uri):
        import s3fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        if os.environ.get("AWS_DEFAULT_REGION"):
            client_kwargs["region_name"] = os.environ["AWS_DEFAULT_REGION"]
        # fsspec reuses one instance per process and settings (a new client costs ~0.3 s of CPU);
        # the listings cache stays off so that files written by other processes are seen at once.
        fs = s3fs.S3FileSystem(client_kwargs=client_kwargs, use_listings_cache=False)
        return fs, uri[len("s3://") :]
    if uri.startswith("pkg://"):
        uri = _package_path(uri)
    if uri.startswith("hf://"):
        uri = _hub_snapshot(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return fsspec.filesystem("file"), os.path.abspath(uri)


def join(uri: str, *parts: str) -> str:
    if is_s3(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(uri, *parts)


_S3_CREDENTIALS = (
    "S3 credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) or the "
    "instance profile"
)


def _wrap(uri: str, exc: Exception) -> StorageError:
    """A StorageError that names the likely cause and the fix."""
    if isinstance(exc, StorageError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if is_s3(uri):
        bucket = uri[len("s3://") :].split("/")[0]
        if "NoSuchBucket" in text or "bucket does not exist" in text:
            return StorageError(f"{uri}: the bucket {bucket} does not exist; create it or correct the URI")
        if "NoCredentials" in text or "Unable to locate credentials" in text:
            return StorageError(f"{uri}: no S3 credentials were found; {_S3_CREDENTIALS}")
        if isinstance(exc, PermissionError) or any(
            code in text for code in ("AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch")
        ):
            return StorageError(
                f"{uri}: access denied ({exc}); check that the credentials are valid and may read and write "
                f"s3://{bucket}. {_S3_CREDENTIALS}"
            )
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
        if "EndpointConnectionError" in text or "Could not connect" in text or isinstance(exc, ConnectionError):
            return StorageUnavailable(
                f"{uri}: the S3 endpoint {endpoint} cannot be reached ({exc}); if it is not down, check "
                "storage.s3_endpoint_url"
            )
        if isinstance(exc, TimeoutError) or _TRANSIENT.search(text):
            return StorageUnavailable(f"{uri}: the S3 endpoint {endpoint} did not answer in time or failed ({text})")
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"{uri}: not found")
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EROFS:
        return StorageError(
            f"{uri}: not writable (read-only or owned by another user: {exc}); choose a location this user may write"
        )
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return StorageError(f"{uri}: no space left on the device; free some space or write elsewhere")
    return StorageError(f"{uri}: {text}")


def check_writable(uri: str) -> None:
    """Write and delete a small probe file below `uri`: a missing bucket, read-only folder or refused
    credentials show up before any work, not hours later."""
    probe = join(uri, f".koelectra-write-probe-{os.getpid()}")
    write_bytes(probe, b"")
    remove(probe)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    try:
        return fs.exists(path)
    except Exception as e:  # noqa: BLE001 - any backend failure becomes a StorageError
        raise _wrap(uri, e) from e


@contextmanager
def open_uri(uri: str, mode: str = "rb", compression: str | None = None) -> Iterator[IO[Any]]:
    """Open a file for reading or writing; parents are created on write. `compression="infer"`
    decompresses .gz transparently."""
    fs, path = filesystem(uri)
    try:
        if "w" in mode and not is_s3(uri):
            fs.makedirs(os.path.dirname(path), exist_ok=True)
        handle = fs.open(path, mode, compression=compression)
    except Exception as e:  # noqa: BLE001
        raise _wrap(uri, e) from e
    with handle:
        yield handle


def read_bytes(uri: str) -> bytes:
    with open_uri(uri, "rb") as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file atomically: a local file appears under its name only when complete; an
    S3 PUT is atomic by itself."""
    fs, path = filesystem(uri)
    try:
        if is_s3(uri):
            fs.pipe_file(path, data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001
        raise _wrap(uri, e) from e


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_bytes(uri).decode("utf-8"))
    except json.JSONDecodeError as e:
        raise StorageError(f"{uri}: not valid JSON ({e}); the file is damaged, delete it to rebuild") from e


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8"))


def list_files(uri: str, recursive: bool = False) -> list[str]:
    """Files directly in (or, recursively, below) a folder, as URIs of the same scheme, sorted."""
    fs, path = filesystem(uri)
    try:
        found = fs.find(path) if recursive else [p for p in fs.ls(path, detail=False) if fs.isfile(p)]
    except Exception as e:  # noqa: BLE001
        raise _wrap(uri, e) from e
    return sorted(f"s3://{p}" if is_s3(uri) else p for p in found)


def file_sizes(uri: str) -> dict[str, int]:
    """Size in bytes of each file directly in a folder, by file name (empty when it does not exist)."""
    fs, path = filesystem(uri)
    try:
        if not fs.exists(path):
            return {}
        return {
            posixpath.basename(e["name"].rstrip("/")): int(e["size"])
            for e in fs.ls(path, detail=True)
            if e.get("type") == "file"
        }
    except Exception as e:  # noqa: BLE001
        raise _wrap(uri, e) from e


def list_dirs(uri: str) -> list[str]:
    """Sub-folder names of a folder (empty when the folder does not exist)."""
    fs, path = filesystem(uri)
    try:
        if not fs.exists(path):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False) if fs.isdir(p))
    except Exception as e:  # noqa: BLE001
        raise _wrap(uri, e) from e


def remove(uri: str) -> None:
    """Delete a file or a folder tree; a missing one is fine."""
    fs, path = filesystem(uri)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception as e:  # noqa: BLE001
        raise _wrap(uri, e) from e


def upload_file(src: str, uri: str) -> None:
    """Copy one local file to `uri` (parents are created when local)."""
    fs, path = filesystem(uri)
    try:
        if not is_s3(uri):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        fs.put_file(src, path)
    except Exception as e:  # noqa: BLE001
        raise _wrap(uri, e) from e


def upload_dir(local_dir: str, uri: str) -> None:
    """Copy a local folder's files below `uri` (a plain copy when `uri` is local)."""
    for root, _, files in os.walk(local_dir):
        for name in files:
            src = os.path.join(root, name)
            upload_file(src, join(uri, *os.path.relpath(src, local_dir).split(os.sep)))


def download_dir(uri: str, local_dir: str) -> str:
    """Copy the files below `uri` into `local_dir`; return `local_dir`."""
    fs, path = filesystem(uri)
    try:
        for src in fs.find(path):
            rel = posixpath.relpath(src, path) if is_s3(uri) else os.path.relpath(src, path)
            dst = os.path.join(local_dir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            fs.get_file(src, dst)
    except Exception as e:  # noqa: BLE001
        raise _wrap(uri, e) from e
    return local_dir


def local_path(uri: str) -> str | None:
    """The local filesystem path of a non-S3 URI, else None."""
    return None if is_s3(uri) else filesystem(uri)[1]
