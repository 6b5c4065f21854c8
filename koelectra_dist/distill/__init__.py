"""The distill stage: a smaller student distilled from a pre-trained teacher (DistilBERT / DistilKoBERT)."""
