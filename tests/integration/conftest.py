"""Integration tests start real Ray clusters, DeepSpeed engines, moto S3 servers or subprocesses:
all of them are `slow` (plain `pytest` skips them; `pytest -m "slow or not slow"` runs everything)."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.slow)
