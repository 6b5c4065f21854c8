"""Cluster provisioning files (cluster/), validated offline, and scripts/local_cluster.sh running a
real multi-node Ray cluster on this machine that a `ray job submit` pre-training runs on.

Strictness beyond the tools' own schemas, and why:
- Ray's cluster schema passes `node_config` through untyped (the AWS provider hands it to EC2's
  RunInstances), so node configs are also checked with botocore's client-side parameter validation
  against the EC2 RunInstances input shape (unknown keys, types, instance type names): what boto3
  would reject on the first scale-up, hours into a run, is rejected here.
- Kubernetes CRD schemas leave `additionalProperties` unset; the API server prunes or, with strict
  field validation (kubectl's default), rejects unknown fields. jsonschema would accept them, so the
  CRD schema is closed the same way (`x-kubernetes-preserve-unknown-fields` stays open) and
  `x-kubernetes-int-or-string` / `nullable` become plain JSON schema.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT

from koelectra_dist.config import load_config

CLUSTER = ROOT / "cluster"
AWS_YAML = CLUSTER / "aws-gpu.yaml"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
NCCL_EFA_ENV = CLUSTER / "nccl-efa.env"
DOCKERFILE = CLUSTER / "Dockerfile"
CRD_DIR = ROOT.parent / "shared" / "schemas" / "kuberay"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}


def typo_copy(src: Path, tmp_path: Path, old: str, new: str) -> Path:
    """A copy of `src` with exactly one occurrence of `old` replaced (the test's deliberate typo)."""
    text = src.read_text()
    assert text.count(old) >= 1, f"{old!r} not in {src.name}"
    dst = tmp_path / src.name
    dst.write_text(text.replace(old, new, 1))
    return dst


# ---------------------------------------------------------------- Ray cluster launcher (AWS)


def ec2_run_instances_params(node_config: dict[str, Any]) -> dict[str, Any]:
    """The RunInstances call Ray's AWS node provider makes for this node config (it drops its own
    SubnetIds / the copied SecurityGroupIds and adds counts and a subnet)."""
    from ray.autoscaler._private.aws.config import _configure_node_type_from_network_interface

    conf = copy.deepcopy(_configure_node_type_from_network_interface({"node_config": node_config})["node_config"])
    subnets = conf.pop("SubnetIds")
    if "NetworkInterfaces" in conf:
        conf.pop("SecurityGroupIds", None)
    else:
        conf["SubnetId"] = subnets[0]
    return {**conf, "MinCount": 1, "MaxCount": 1}


def validate_launcher_config(path: Path) -> dict[str, Any]:
    """Ray's own offline validation (what `ray up` does before calling AWS), then every node config
    against EC2's RunInstances shape. Returns the prepared config; raises on any problem."""
    import botocore.session
    from botocore.validate import ParamValidator
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(path.read_text()))
    validate_config(config)
    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    instance_types = set(shape.members["InstanceType"].enum)
    for name, node_type in config["available_node_types"].items():
        params = ec2_run_instances_params(node_type["node_config"])
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            raise ValueError(f"node type {name}: {report.generate_report()}")
        if params.get("InstanceType") not in instance_types:
            raise ValueError(f"node type {name}: unknown EC2 instance type {params.get('InstanceType')!r}")
        if not node_type["resources"]:
            raise ValueError(f"node type {name}: no explicit resources")
    return config


def test_aws_config_passes_ray_and_ec2_validation():
    config = validate_launcher_config(AWS_YAML)
    types = config["available_node_types"]
    assert config["idle_timeout_minutes"] > 0
    gpu = {n: t for n, t in types.items() if t["resources"].get("GPU")}
    instances = {t["node_config"]["InstanceType"] for t in gpu.values()}
    assert instances == {"p5.48xlarge", "p4d.24xlarge"}
    markets = {"InstanceMarketOptions" in t["node_config"] for t in gpu.values()}
    assert markets == {True, False}, "GPU nodes come both as spot and on-demand"
    for name, t in types.items():
        assert t.get("min_workers", 0) == 0, name
        assert "IamInstanceProfile" in t["node_config"], f"{name}: S3 access comes from an instance profile"
    # The pinned install: a revision variable, setup.sh, and Ray from the project's venv.
    setup = " ".join(config["setup_commands"])
    assert "KOELECTRA_REV=" in setup and "scripts/setup.sh" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert ".venv/bin/ray start" in start, key
        # Job entrypoints run `python` from the PATH of `ray start`: the project's venv must come first.
        assert "PATH=$HOME/koelectra_dist/.venv/bin:$PATH" in start, key
    # NCCL over EFA on every GPU node: cluster/nccl-efa.env sourced before `ray start`
    assert ". ~/koelectra_dist/cluster/nccl-efa.env" in " ".join(config["worker_start_ray_commands"])
    assert nccl_efa_env()["FI_PROVIDER"] == "efa"


def nccl_efa_env() -> dict[str, str]:
    lines = [line for line in NCCL_EFA_ENV.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_aws_gpu_node_types_reach_64_gpus_by_one_variable():
    raw = AWS_YAML.read_text()
    assert re.search(r"^  gpu_nodes: &gpu_nodes (\d+)$", raw, re.M), "the GPU node count is one anchor in metadata"
    config = validate_launcher_config(AWS_YAML)
    types = config["available_node_types"]
    gpu = {n: t for n, t in types.items() if t["resources"].get("GPU")}
    counts = {n: t["max_workers"] for n, t in gpu.items()}
    assert len(set(counts.values())) == 1 and raw.count("max_workers: *gpu_nodes") == len(gpu), counts
    nodes = next(iter(counts.values()))
    assert nodes * 8 >= 64 and all(t["resources"]["GPU"] == 8 for t in gpu.values())
    # the cluster-wide bound leaves room for a full GPU type and the CPU nodes at once
    cpu = sum(t["max_workers"] for t in types.values() if not t["resources"].get("GPU") and "max_workers" in t)
    assert config["max_workers"] >= nodes + cpu


@pytest.mark.parametrize(
    ("old", "new", "caught"),
    [
        # Ray's schema
        ("idle_timeout_minutes: 10", "idle_timeout_minute: 10", "'idle_timeout_minute' was unexpected"),
        (
            "    min_workers: 0\n    max_workers: 4\n    resources: {CPU: 64}",
            "    min_worker: 0\n    max_workers: 4\n    resources: {CPU: 64}",
            "'min_worker' was unexpected",
        ),
        ("resources: {CPU: 64}", 'resources: {CPU: "64"}', "'64' is not of type 'integer'"),
        # EC2's RunInstances shape
        ("InstanceType: c7i.16xlarge", "InstanceTyp: c7i.16xlarge", 'Unknown parameter in input: "InstanceTyp"'),
        ("InstanceType: p5.48xlarge", "InstanceType: p5.48xlage", "unknown EC2 instance type 'p5.48xlage'"),
        ("{Name: koelectra-ray-worker}", "koelectra-ray-worker", "Invalid type for parameter IamInstanceProfile"),
        ("NetworkCardIndex: 3}", "NetworkCardIndx: 3}", '"NetworkCardIndx"'),
    ],
)
def test_aws_config_typo_fails(tmp_path, old, new, caught):
    import jsonschema

    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(caught)):
        validate_launcher_config(typo_copy(AWS_YAML, tmp_path, old, new))


def planned_nodes(config: dict[str, Any], demand: list[dict[str, float]]) -> tuple[dict[str, int], list]:
    """What Ray's autoscaler would launch for `demand` on an empty cluster (its own bin packing)."""
    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    scorer = functools.partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    return get_nodes_for(
        config["available_node_types"],
        {config["head_node_type"]: 1},
        config["head_node_type"],
        config["max_workers"],
        demand,
        scorer,
    )


@pytest.mark.parametrize("num_workers", [8, 32, 64])
def test_autoscaler_launches_gpu_nodes_for_pretraining(num_workers):
    """`ray job submit` of configs/base_v3.json (as is, and on 32 and 64 GPUs): Ray Train asks for
    one bundle per worker; the autoscaler covers them with whole 8-GPU nodes and nothing else."""
    config = validate_launcher_config(AWS_YAML)
    micro = 256 // num_workers  # keeps the global batch at 256
    overrides = [f"distributed.num_workers={num_workers}", f"train.micro_batch_size={min(32, micro)}"]
    cfg = load_config(ROOT / "configs" / "base_v3.json", overrides)
    d = cfg.distributed
    demand = [{"CPU": d.cpus_per_worker, "GPU": d.gpus_per_worker}] * d.num_workers
    nodes, unmet = planned_nodes(config, demand)
    assert unmet == []
    types = config["available_node_types"]
    assert all(types[t]["resources"].get("GPU") for t in nodes), nodes
    assert sum(nodes.values()) == math.ceil(num_workers * d.gpus_per_worker / 8)


def test_autoscaler_keeps_cpu_work_off_gpu_nodes():
    config = validate_launcher_config(AWS_YAML)
    nodes, unmet = planned_nodes(config, [{"CPU": 1}] * 100)
    assert unmet == [] and set(nodes) == {"cpu_spot"}, nodes


# ---------------------------------------------------------------- KubeRay manifests


def _k8s_to_jsonschema(node: Any) -> Any:
    """A CRD's openAPIV3Schema as strict JSON schema (see the module docstring)."""
    if isinstance(node, list):
        return [_k8s_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _k8s_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {})
        for key in ("apiVersion", "kind", "metadata"):
            out["properties"].setdefault(key, {})
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _crd(kind: str) -> dict[str, Any]:
    path = CRD_DIR / CRD_FILES[kind]
    if not path.exists():
        pytest.skip(f"needs {path.relative_to(ROOT.parent)} (KubeRay's CRDs beside the project); absent here")
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)  # 2 MB: libyaml, not pure Python


@functools.cache
def crd_schema(kind: str, version: str, strict: bool = True) -> dict[str, Any]:
    (schema,) = [v["schema"]["openAPIV3Schema"] for v in _crd(kind)["spec"]["versions"] if v["name"] == version]
    return _k8s_to_jsonschema(schema) if strict else schema


def manifest_errors(path: Path, strict: bool = True) -> list[str]:
    import jsonschema

    manifest = yaml.safe_load(path.read_text())
    group, _, version = manifest["apiVersion"].partition("/")
    assert group == "ray.io", manifest["apiVersion"]
    validator = jsonschema.Draft7Validator(crd_schema(manifest["kind"], version, strict))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda p: p.stem)
def test_kuberay_manifest_matches_crd(path):
    assert manifest_errors(path) == []


@pytest.mark.parametrize(
    ("path", "old", "new", "caught"),
    [
        (
            RAYCLUSTER,
            "enableInTreeAutoscaling: true",
            "enableInTreeAutoscalling: true",
            "'enableInTreeAutoscalling' was unexpected",
        ),
        (RAYCLUSTER, "minReplicas: 0", "minReplica: 0", "'minReplicas' is a required property"),
        (RAYCLUSTER, "emptyDir: {medium: Memory", "emptyDir: {meduim: Memory", "emptyDir: Additional properties"),
        (RAYCLUSTER, "maxReplicas: 4", "maxReplicas: four", "maxReplicas: 'four' is not of type 'integer'"),
        (RAYJOB, "entrypoint:", "entrypiont:", "'entrypiont' was unexpected"),
        (RAYJOB, "clusterSelector:", "clusterSelecter:", "'clusterSelecter' was unexpected"),
    ],
    ids=lambda v: v.stem if isinstance(v, Path) else None,
)
def test_kuberay_typo_fails(tmp_path, path, old, new, caught):
    errors = manifest_errors(typo_copy(path, tmp_path, old, new))
    assert any(caught in e for e in errors), errors


def test_unknown_field_needs_the_strict_layer(tmp_path):
    """The raw CRD schema lets a misspelled field through (the API server would drop it: no
    autoscaling, silently); the strict layer is what catches it."""
    copy_ = typo_copy(RAYCLUSTER, tmp_path, "enableInTreeAutoscaling", "enableInTreeAutoscalling")
    assert manifest_errors(copy_, strict=False) == []
    assert any("enableInTreeAutoscalling" in e for e in manifest_errors(copy_))


def test_raycluster_autoscales_gpu_workers_from_zero():
    spec = yaml.safe_load(RAYCLUSTER.read_text())["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = spec["workerGroupSpecs"]
    gpu_groups = [
        g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert len(gpu_groups) >= 2
    for g in groups:
        assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1, g["groupName"]
    for pod in [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in groups]:
        shm = [v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
        for c in pod["containers"]:
            assert any(m["mountPath"] == "/dev/shm" and m["name"] in shm for m in c["volumeMounts"]), c["name"]


def test_kuberay_gpu_groups_reach_64_gpus_over_efa():
    """Every GPU group: up to 8 pods of 8 GPUs (one anchor), all of its node's EFA devices, huge
    pages and IPC_LOCK for libfabric, and cluster/nccl-efa.env's variables; the image has the stack."""
    raw = RAYCLUSTER.read_text()
    groups = yaml.safe_load(raw)["spec"]["workerGroupSpecs"]
    gpu_groups = [
        g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert raw.count("maxReplicas: *gpu_pods") == len(gpu_groups) - 1
    efa_devices = {"gpu-h100": 32, "gpu-a100": 4}  # p5.48xlarge, p4d.24xlarge
    for g in gpu_groups:
        (container,) = g["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        assert g["maxReplicas"] * limits["nvidia.com/gpu"] >= 64, g["groupName"]
        assert limits["vpc.amazonaws.com/efa"] == efa_devices[g["groupName"]]
        assert limits["hugepages-2Mi"] and container["resources"]["requests"] == limits
        assert "IPC_LOCK" in container["securityContext"]["capabilities"]["add"]
        assert {e["name"]: e["value"] for e in container["env"]} == nccl_efa_env(), g["groupName"]
    docker = DOCKERFILE.read_text()
    assert "efa_installer.sh" in docker and "--skip-kmod" in docker
    assert "ENV LD_LIBRARY_PATH=/opt/amazon/ofi-nccl/lib:/opt/amazon/efa/lib" in docker


def test_rayjob_runs_base_v3_on_the_raycluster():
    job = yaml.safe_load(RAYJOB.read_text())["spec"]
    cluster = yaml.safe_load(RAYCLUSTER.read_text())
    command = job["entrypoint"].split()
    assert command[:4] == ["python", "launch.py", "--config", "configs/base_v3_large_batch.json"]
    overrides = [command[i + 1] for i, arg in enumerate(command) if arg == "--set"]
    cfg = load_config(ROOT / command[3], overrides)
    # an elastic range whose maximum fills the GPU group's largest size
    from koelectra_dist.pretrain.config import allowed_worker_counts, is_elastic

    h100 = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-h100")
    gpus = h100["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert is_elastic(cfg.distributed)
    assert allowed_worker_counts(cfg.train, cfg.distributed)[-1] == h100["maxReplicas"] * gpus
    assert allowed_worker_counts(cfg.train, cfg.distributed)[0] == gpus
    assert job["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    env = yaml.safe_load(job["runtimeEnvYAML"])
    shared = yaml.safe_load(RUNTIME_ENV.read_text())
    assert env["env_vars"] == shared["env_vars"] and env["excludes"] == shared["excludes"]


# ---------------------------------------------------------------- runtime env, secrets


def test_runtime_env_file_is_a_valid_ray_runtime_env(tmp_path):
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load(RUNTIME_ENV.read_text())
    RuntimeEnv(**env)  # type checks (env_vars must be str -> str, ...)
    assert set(env) <= RuntimeEnv.known_fields, set(env) - RuntimeEnv.known_fields
    assert env["working_dir"] == "."
    typo = yaml.safe_load(typo_copy(RUNTIME_ENV, tmp_path, "excludes:", "exclude:").read_text())
    assert not set(typo) <= RuntimeEnv.known_fields


def test_no_secrets_in_cluster_files():
    pattern = re.compile(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|AWS_SECRET|hf_[A-Za-z0-9]{30,}|HF_TOKEN", re.I)
    for path in sorted(CLUSTER.rglob("*")):
        if path.is_file():
            assert not pattern.search(path.read_text()), path


# ---------------------------------------------------------------- local multi-node cluster


def free_port_base() -> int:
    """A port base whose every port the script derives for a head and 2 workers (GCS, dashboard,
    client, each node's fixed ports and worker ports) is free, below the kernel's ephemeral range:
    there no outgoing connection of this busy test session (S3 clients, Ray's own) can take one of
    them between this check and the nodes' start."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral = int(f.read().split()[0])
    # above Ray's default worker ports (10002-19999), which the session's own Ray uses
    for base in range(20000, ephemeral - 500, 997):
        fixed = [base + 10 + 10 * node + i for node in range(3) for i in range(6)]
        ports = [base, base + 1, base + 2, *fixed, *range(base + 200, base + 500)]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port base")


@pytest.fixture(scope="module")
def local_cluster():
    """Head (no CPUs, like the AWS head) + 2 worker nodes of 1 CPU each, via the script; one for the
    module (each job leaves the cluster idle: its workers end with it)."""
    base = free_port_base()
    env = {**os.environ, "KOELECTRA_RAY_PORT": str(base), "HEAD_CPUS": "0", "WORKER_CPUS": "1"}
    script = [str(ROOT / "scripts" / "local_cluster.sh")]
    try:
        started = subprocess.run([*script, "start", "2"], cwd=ROOT, env=env, capture_output=True, text=True)
        # its output names the cause when a start fails (a CalledProcessError would hide it)
        assert started.returncode == 0, f"local_cluster.sh start failed:\n{started.stdout}\n{started.stderr}"
        token = f"/tmp/koelectra-ray-{base}/auth_token"
        yield {
            **env,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": token,
            "RAY_ADDRESS": f"http://127.0.0.1:{base + 1}",
        }
    finally:
        subprocess.run([*script, "stop"], cwd=ROOT, env=env, check=False, capture_output=True)
        shutil.rmtree(f"/tmp/koelectra-ray-{base}", ignore_errors=True)


@pytest.mark.slow
def test_job_submit_pretrains_on_local_multinode_cluster(local_cluster, tmp_path):
    env = local_cluster
    status = subprocess.run(
        [str(ROOT / "scripts" / "local_cluster.sh"), "status"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    for resource in ("/1.0 head", "/2.0 worker", "/1.0 worker_1", "/1.0 worker_2"):
        assert resource in status.stdout, status.stdout + status.stderr
    # A short run: 4 steps, a checkpoint every 2.
    overrides = [f"run.output_uri={tmp_path / 'run'}", "train.steps=4", "checkpoint.interval_steps=2"]
    # The 2 training workers need 1 CPU each and the head has none: they run on the two worker nodes.
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--runtime-env", "cluster/runtime_env.yaml"]
    cmd += ["--", "python", "launch.py", "--config", "configs/tiny.json"]
    cmd += [arg for o in overrides for arg in ("--set", o)] + ["corpus", "pretrain"]
    job = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    from koelectra_dist.pretrain.checkpoint.store import committed_steps

    cfg = load_config(ROOT / "configs" / "tiny.json", overrides)
    root = cfg.paths.checkpoints
    assert committed_steps(root)[-1] == cfg.train.steps
    assert "stage pretrain: done" in job.stdout, job.stdout[-4000:]
    # (a resubmitted job resumes: the worker-range test below; a finished run run again returns at
    # once: test_train.py)


@pytest.mark.slow
def test_job_submit_with_a_worker_range_resumes_after_the_job_is_stopped(local_cluster, tmp_path):
    env = local_cluster
    steps = 60  # ~0.5 s a step here: the stop (seconds of CLI start-up) must land before the end
    overrides = [
        f"run.output_uri={tmp_path / 'run'}",
        f"train.steps={steps}",
        "checkpoint.interval_steps=2",
        "distributed.num_workers=[1, 2]",
    ]
    ray = str(Path(sys.executable).parent / "ray")
    job = [ray, "job", "submit", "--runtime-env", "cluster/runtime_env.yaml"]
    entry = ["--", "python", "launch.py", "--config", "configs/tiny.json"]
    entry += [arg for o in overrides for arg in ("--set", o)] + ["corpus", "pretrain"]
    first = subprocess.run(
        [*job, "--submission-id", "elastic-1", "--no-wait", *entry], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    from koelectra_dist.pretrain.checkpoint.store import committed_steps, read_meta, step_uri

    root = load_config(ROOT / "configs" / "tiny.json", overrides).paths.checkpoints
    deadline = time.time() + 400
    while time.time() < deadline and not (os.path.isdir(root) and committed_steps(root)):
        time.sleep(0.5)
    assert os.path.isdir(root) and committed_steps(root), "the first job committed no checkpoint"
    stop = subprocess.run([ray, "job", "stop", "elastic-1"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    stopped_at = committed_steps(root)[-1]
    assert stopped_at < steps, "the job finished before it could be stopped; raise train.steps"
    # resubmitted (pretrain only: the corpus is there), the run resumes and ends at train.steps
    again = subprocess.run(
        [*job, *entry[:-2], "pretrain"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "stage pretrain: done" in again.stdout and f'"steps": {steps},' in again.stdout, again.stdout[-4000:]
    resumed_from = re.search(r'"resumed_from": "[^"]+/step-(\d+)"', again.stdout)
    assert resumed_from, again.stdout[-4000:]
    assert int(resumed_from.group(1)) >= stopped_at  # (that step itself is pruned by now: keep_last)
    assert committed_steps(root)[-1] == steps and read_meta(step_uri(root, steps)).step == steps
