"""Export: checkpoints to Hugging Face folders, model cards, Hub publishing."""
