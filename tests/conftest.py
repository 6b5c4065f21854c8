"""Shared fixtures: the real Korean data beside the project, a real S3 endpoint (moto's HTTP
server), and one local Ray instance for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
NSMC_CORPUS = SHARED_DATA / "nsmc" / "corpus.txt.gz"

# Workers must not fight over 2 cores with their own thread pools.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def require_shared_data(*parts: str) -> Path:
    """The path of a file in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path.relative_to(ROOT.parent)} (the shared Korean data beside the project); absent here")
    return path


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 with fake credentials; yields its endpoint URL. The
    environment points every S3 client (s3fs, boto3, workers) at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh, empty bucket on the moto server; yields `s3://NAME`."""
    import boto3

    name = "test-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    yield f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(s3_endpoint):
    """One local Ray instance (2 CPUs) shared by the tests that need it. It starts after the S3
    endpoint so that its workers inherit the endpoint and credentials from the environment."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}},
        )
    yield ray
    ray.shutdown()
