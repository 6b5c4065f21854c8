"""Pre-training: the ELECTRA objective, DeepSpeed engines under Ray Train, checkpoints."""
