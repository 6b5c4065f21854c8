"""Shared fixtures: a real S3 endpoint (moto's HTTP server), one local Ray instance for the whole
session, the tiny config and a small shard set. Plain helpers live in helpers.py."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Workers must not fight over 2 cores with their own thread pools (set before torch is imported).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ray Train's controller polls its workers every 2 s by default, and a run's end and each metrics
# report wait for that poll; runs here last seconds, so it polls often (set before Ray starts, so
# that every controller, here or in a subprocess's cluster, inherits it).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# A Hugging Face Hub cache of the session's own (tests publish tiny models into it with
# helpers.publish_to_hub_cache) and no Hub: set before Ray starts, so that its workers see them too.
os.environ["HF_HUB_CACHE"] = HUB_CACHE = tempfile.mkdtemp(prefix="koelectra-test-hub-")
os.environ["HF_HUB_OFFLINE"] = "1"
atexit.register(shutil.rmtree, HUB_CACHE, ignore_errors=True)

import pytest  # noqa: E402
from helpers import tiny_config, write_shard_set  # noqa: E402


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
    endpoint so that its workers inherit the credentials from the environment, not the endpoint."""
    import ray

    # The workers do not inherit the test endpoint: each stage must hand its tasks the config's
    # storage settings itself (a Ray started before the config was read has no others).
    saved = {k: os.environ.pop(k) for k in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if k in os.environ}
    if not ray.is_initialized():
        ray.init(
            address="local",  # a Ray of its own, never one already running on this machine
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}},
        )
    os.environ.update(saved)
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny_cfg(tmp_path):
    """configs/tiny.json with its outputs under this test's temporary folder."""
    return tiny_config(str(tmp_path / "run"))


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """A small shard set (vocab 300, examples up to 16 tokens, shards of 7, 5 and 9 rows) beside its
    vocab/ folder; yields (corpus folder, manifest). Example i starts with token id 5 + i."""
    out = str(tmp_path_factory.mktemp("corpus"))
    return out, write_shard_set(out, 300, 16, [7, 5, 9])
