"""A Ray cluster with a real autoscaler on this machine, for elastic-training tests and benchmarks.

The head (no CPUs) runs Ray's autoscaler with its fake multi-node provider: a "node" it launches
is another raylet on this machine with the node type's resources, started when demand (a placement
group, Ray Train's resource request) needs it. `remove_node` kills one node's raylet and its
workers, as a preempted spot node vanishes; with `replace_lost_nodes=False` the autoscaler does
not replace it (a spot market out of capacity).

Everything lives under its own temp dir and ports, with its own auth token, so it never touches
another Ray instance on the machine (Ray's own `AutoscalingCluster` runs `ray stop --force`, which
would); `stop` ends this cluster's processes by PID and only them.

    with AutoscalingCluster(node_cpus=1, max_nodes=2) as cluster:
        subprocess.run([...], env=cluster.env)   # clients: RAY_ADDRESS and the token settings
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

NODE_TYPE = "cpu_spot"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _with_descendants(pids: list[int]) -> list[int]:
    found, todo = list(pids), list(pids)
    while todo:
        for child in _children(todo.pop()):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class AutoscalingCluster:
    def __init__(
        self,
        node_cpus: int = 1,
        max_nodes: int = 2,
        replace_lost_nodes: bool = False,
        object_store_bytes: int = 100_000_000,
    ):
        self.node_cpus, self.max_nodes = node_cpus, max_nodes
        self.replace_lost_nodes, self.object_store_bytes = replace_lost_nodes, object_store_bytes
        self.port = _free_port()
        # short: Ray's unix socket paths live below it
        self.dir = tempfile.mkdtemp(prefix=f"kas-{self.port}-", dir="/tmp")
        self.env: dict[str, str] = {}

    def _config(self, gcs: str) -> dict[str, Any]:
        return {
            "cluster_name": os.path.basename(self.dir),
            "max_workers": self.max_nodes,
            "provider": {
                # "external" with the fake provider's class: its own type needs an example.yaml
                # that Ray's wheel does not ship
                "type": "external",
                "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                "gcs_address": gcs,
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "worker_liveness_check": self.replace_lost_nodes,
            },
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                NODE_TYPE: {
                    "resources": {"CPU": self.node_cpus, "object_store_memory": self.object_store_bytes},
                    "node_config": {},
                    "min_workers": 0,
                    "max_workers": self.max_nodes,
                },
            },
            "head_node_type": "ray.head.default",
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": 10,
            "auth": {"ssh_user": "ray"},
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }

    def start(self) -> AutoscalingCluster:
        token = os.path.join(self.dir, "auth_token")
        with open(token, "w") as f:
            f.write(secrets.token_hex(32))
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token}
        ip = subprocess.run(
            [sys.executable, "-c", "import ray._private.services as s; print(s.get_node_ip_address())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        gcs = f"{ip}:{self.port}"
        config = os.path.join(self.dir, "autoscaler.json")
        with open(config, "w") as f:
            json.dump(self._config(gcs), f)
        # RAY_ADDRESS: Ray processes that look up "the" local cluster (Ray Train's helpers use the
        # state API) would otherwise find any Ray instance on this machine
        env = {**os.environ, **auth, "RAY_ADDRESS": gcs, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"}
        ray = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray, "start", "--head", f"--port={self.port}", f"--autoscaling-config={config}", "--num-cpus=0"]
        cmd += [f"--temp-dir={self.dir}", f"--object-store-memory={self.object_store_bytes}"]
        # the dashboard serves the state API, which Ray Train's placement group cleaner polls
        cmd += ["--dashboard-host=127.0.0.1", f"--dashboard-port={_free_port()}", "--disable-usage-stats"]
        cmd += [f"--ray-client-server-port={_free_port()}"]
        try:
            subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=120)
        except subprocess.SubprocessError:
            self.stop()
            raise
        self.env = {**os.environ, **auth, "RAY_ADDRESS": gcs}
        return self

    def _raylets(self) -> dict[str, int]:
        """node id -> raylet PID, for every live node of this cluster."""
        out = subprocess.run(["pgrep", "-af", "raylet/raylet"], capture_output=True, text=True).stdout
        found = {}
        for line in out.splitlines():
            pid, _, args = line.partition(" ")
            if self.dir + "/" in args:
                node = next((a.split("=", 1)[1] for a in args.split() if a.startswith("--node_id=")), None)
                if node:
                    found[node] = int(pid)
        return found

    def worker_nodes(self) -> list[str]:
        """Node ids of the live nodes the autoscaler launched (the head's id ends in 00000)."""
        return sorted(n for n in self._raylets() if not n.endswith("00000"))

    def wait_for_nodes(self, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(nodes := self.worker_nodes()) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return nodes

    def remove_node(self, node_id: str) -> None:
        """Kill a worker node's raylet and everything under it (its workers), without warning."""
        raylet = self._raylets()[node_id]
        _kill(_with_descendants([raylet]))

    def stop(self) -> None:
        """Kill this cluster's processes (those whose command line names its temp dir, and their
        descendants, which rename themselves) by PID; remove its temp dir."""
        out = subprocess.run(["pgrep", "-f", "--", self.dir + "/"], capture_output=True, text=True).stdout
        _kill(_with_descendants([int(p) for p in out.split() if int(p) != os.getpid()]))
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> AutoscalingCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
