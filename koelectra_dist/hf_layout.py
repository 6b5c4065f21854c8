"""The export folder's layout: what the export stage writes and the Hub publisher reads. Kept
apart from export.py so that publishing needs neither torch nor transformers."""

TOWERS = ("discriminator", "generator")
"""Sub-folders holding a transformers model each (`<name>-discriminator`/`-generator` on the Hub)."""
PRETRAINING = "pretraining"
"""Sub-folder with the joint generator+discriminator weights for continued pre-training."""
EXPORT_INFO = "export_info.json"
"""Written last: checkpoint meta.json and corpus statistics; its presence marks a complete export."""
MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
