"""Downstream probes while pre-training: committed checkpoints fine-tuned on small task budgets in
Ray tasks of their own, results in probe.jsonl, a curve, and the best checkpoint for export."""
