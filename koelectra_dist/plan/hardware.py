"""GPU and interconnect figures the planner computes with, each with its source (docs/cluster.md
lists them). Bandwidths are per GPU and per direction, the figure a ring collective is bounded by."""

from __future__ import annotations

from dataclasses import dataclass

from koelectra_dist.pretrain.metrics import peak_flops_of

GiB = 2**30


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    """Device memory as CUDA reports it (torch.cuda.get_device_properties().total_memory)."""
    peak_flops: float
    """Dense bf16 peak (koelectra_dist.pretrain.metrics.PEAK_FLOPS, NVIDIA's datasheets)."""
    nvlink_gbps: float
    """NVLink bandwidth per GPU per direction, GB/s: half the datasheet's bidirectional figure."""
    nvlink_source: str
    instance: str
    """The AWS instance type with 8 of these GPUs (cluster/aws-gpu.yaml)."""
    efa_node_gbit: float
    """EFA bandwidth of that instance, Gbit/s per node (AWS's instance type pages)."""


GPUS = {
    "a100-40": Gpu(
        "a100-40", 39.4, peak_flops_of("A100"), 300.0, "A100 datasheet: NVLink 3, 600 GB/s", "p4d.24xlarge", 400
    ),
    "a100-80": Gpu(
        "a100-80", 79.2, peak_flops_of("A100"), 300.0, "A100 datasheet: NVLink 3, 600 GB/s", "p4de.24xlarge", 400
    ),
    "h100": Gpu(
        "h100", 79.1, peak_flops_of("H100"), 450.0, "H100 SXM datasheet: NVLink 4, 900 GB/s", "p5.48xlarge", 3200
    ),
    "h200": Gpu(
        "h200", 139.8, peak_flops_of("H200"), 450.0, "H200 SXM datasheet: NVLink 4, 900 GB/s", "p5e.48xlarge", 3200
    ),
}

INTERCONNECTS = ("efa", "ib", "tcp")

# InfiniBand as NVIDIA's DGX systems wire it: one HDR (200 Gbit/s, DGX A100) or NDR (400 Gbit/s,
# DGX H100/H200) adapter per GPU.
IB_GBIT_PER_GPU = {"a100-40": 200, "a100-80": 200, "h100": 400, "h200": 400}
TCP_NODE_GBIT = 100
"""Assumed, not a datasheet figure: NCCL's socket transport over the instance's ENA interface
(no EFA plugin) at about 100 Gbit/s per node. Measure yours with nccl-tests before trusting it."""


def inter_node_gbps(gpu: Gpu, interconnect: str, gpus_per_node: int) -> tuple[float, str]:
    """Bandwidth across nodes per GPU per direction (GB/s) and where the figure comes from."""
    if interconnect == "efa":
        return gpu.efa_node_gbit / 8 / gpus_per_node, f"{gpu.instance}: {gpu.efa_node_gbit:g} Gbit/s EFA per node"
    if interconnect == "ib":
        gbit = IB_GBIT_PER_GPU[gpu.name]
        return gbit / 8, f"InfiniBand, one {gbit} Gbit/s adapter per GPU (DGX wiring)"
    if interconnect == "tcp":
        return TCP_NODE_GBIT / 8 / gpus_per_node, f"TCP sockets, assumed {TCP_NODE_GBIT} Gbit/s per node"
    raise ValueError(f"interconnect: one of {', '.join(INTERCONNECTS)}, got {interconnect!r}")
