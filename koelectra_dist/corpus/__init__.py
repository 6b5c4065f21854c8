"""Corpus stage: cleaning, WordPiece vocabulary, ELECTRA example packing, Parquet shards."""
