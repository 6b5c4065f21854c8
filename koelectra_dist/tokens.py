"""Special tokens shared by the vocabulary, the packer and the model.

The project's own WordPiece vocabulary puts [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4 (the
trainer's order: `DEFAULT_IDS`). A teacher's tokenizer may put them elsewhere (KoBERT: [UNK]=0,
[PAD]=1), so code that needs an id takes a `SpecialIds`, read from the shard manifest.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)


@dataclass(frozen=True)
class SpecialIds:
    """The ids of a vocabulary's special tokens."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    @property
    def never_masked(self) -> tuple[int, ...]:
        """Tokens masking never chooses: [CLS], [SEP], [MASK], [PAD]."""
        return (self.cls, self.sep, self.mask, self.pad)

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> SpecialIds:
        """A transformers tokenizer's ids; ValueError naming the missing ones."""
        ids = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("pad", "unk", "cls", "sep", "mask")}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"the tokenizer has no {', '.join(f'{m}_token' for m in missing)}")
        return cls(**ids)

    @classmethod
    def from_json(cls, data: dict[str, int]) -> SpecialIds:
        return cls(**{name: int(data[name]) for name in ("pad", "unk", "cls", "sep", "mask")})


DEFAULT_IDS = SpecialIds(PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID)
