"""Pre-training checkpoints: `step-{N:08d}/` folders under a root (local path or s3://).

One module per role:
- `store`: the step folders, their seal (COMMITTED) and its verification, which step to use, retention;
- `upload`: one rank's background writer (local write, then upload, then rank 0 seals);
- `restore`: loading a step into an engine (through its universal form for another worker count)
  and consolidating its fp32 weights;
- `checkpointer`: the loop's side, which decides when a step is saved.

Layout of one step folder:
- `deepspeed/`: what `engine.save_checkpoint(local_dir, tag="state")` writes on every rank
  (each rank writes its own files into a local temp folder, then uploads them here);
- `meta.json`: a `CheckpointMeta` (step, data position, world size, ZeRO stage, precision, vocabulary
  hash, last metrics, the run config);
- `uploaded/rank-{R:05d}.json`: written by each rank once its files are uploaded, listing them with
  their sizes and sha256 (`uploaded/rank-{R:05d}.failed` when its upload failed);
- `COMMITTED`: written by rank 0 LAST, once every rank's `uploaded/` marker is there; it seals the
  step's file list, each file's size and sha256 (`files`).

Training goes on while the files upload (`upload.Uploader`): only writing the engine state to a local
folder blocks the step.

Only committed steps exist for readers: a step folder without COMMITTED (an upload cut short by
a crash) is never resumed from and is removed by the next save's retention pass. A committed step
is used only after its files match what COMMITTED sealed (`store.verify`); one that does not (a flipped
bit, a truncated or missing file) is rejected loudly, its COMMITTED replaced by `REJECTED` (the
files stay for inspection), and the newest earlier step that verifies is used instead.

Any number of workers can resume a step: the same number loads DeepSpeed's own per-rank files
(bit-exact); another number first converts them to DeepSpeed's universal checkpoint (full fp32
weights and Adam moments per parameter, `deepspeed.checkpoint.ds_to_universal`) in a local scratch
folder and loads that, each rank taking its own ZeRO partition. No RNG state is saved: every
random draw of a micro-batch comes from a seed derived from its stream position (loop.py).
"""
