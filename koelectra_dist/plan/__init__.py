"""The run planner: memory per ZeRO stage, step and total time, traffic against the interconnect,
GPU-hours and cost, with warnings and their fixes, from a config and a GPU count, without a cluster
(`koelectra-dist plan --config FILE --gpus N --gpu h100`; docs/cluster.md)."""
