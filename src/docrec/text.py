"""What the models and the data share about text and labels: the character vocabulary of the
recognition head (built from the training texts, saved in checkpoints) and the ignored label."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

#: Label of pixels (and line kinds) that take no part in the class loss.
IGNORE_INDEX = 255

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
#: What an UNK token decodes to, so a reader sees that something was not recognisable.
UNK_CHAR = "\ufffd"


def normalize(text: str) -> str:
    """Unicode NFC, the one normal form of every text the model sees or emits."""
    return unicodedata.normalize("NFC", text)


class Charset:
    """Code-point vocabulary with PAD=0, BOS=1, EOS=2, UNK=3 followed by the characters."""

    def __init__(self, chars: Sequence[str]) -> None:
        chars = [normalize(c) for c in chars]
        for c in chars:
            if len(c) != 1:
                raise ValueError(f"charset entries must be single code points after NFC, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("charset has duplicate characters")
        self.chars: list[str] = list(chars)
        self._index = {c: i + len(SPECIALS) for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> Charset:
        """Collect every character seen at least ``min_count`` times (after NFC), sorted."""
        counts = Counter(ch for t in texts for ch in normalize(t))
        return cls(sorted(c for c, n in counts.items() if n >= min_count))

    pad_id = SPECIALS.index(PAD)
    bos_id = SPECIALS.index(BOS)
    eos_id = SPECIALS.index(EOS)
    unk_id = SPECIALS.index(UNK)

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Charset) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"Charset({len(self.chars)} characters + {len(SPECIALS)} special tokens)"

    def encode(self, text: str) -> list[int]:
        """BOS, one id per code point of the NFC text (UNK when unknown), EOS."""
        body = [self._index.get(ch, self.unk_id) for ch in normalize(text)]
        return [self.bos_id, *body, self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first EOS; PAD and BOS are skipped, UNK becomes U+FFFD."""
        out = []
        n_special = len(SPECIALS)
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i == self.unk_id:
                out.append(UNK_CHAR)
            elif i >= n_special:
                out.append(self.chars[i - n_special])
        return "".join(out)

    def case_partners(self) -> list[int]:
        """Per token id, the id of the same letter in the other case (``a`` <-> ``A``), or the id itself
        when the charset lacks it or it has none: what a loss that ignores case merges."""
        partners = list(range(len(self)))
        for c, i in self._index.items():
            other = c.swapcase()
            if other != c and other.swapcase() == c and other in self._index:  # 1:1 pairs only ('ß' -> 'SS' is not)
                partners[i] = self._index[other]
        return partners

    def count_unknown(self, text: str) -> int:
        """Number of code points of the NFC text that are not in the charset."""
        return sum(1 for ch in normalize(text) if ch not in self._index)

    def to_dict(self) -> dict:
        """Plain data for a checkpoint."""
        return {"chars": list(self.chars), "specials": list(SPECIALS)}

    @classmethod
    def from_dict(cls, data: dict) -> Charset:
        """Inverse of :meth:`to_dict`; refuses a checkpoint with other special tokens."""
        if list(data.get("specials", SPECIALS)) != list(SPECIALS):
            raise ValueError(f"checkpoint charset has special tokens {data.get('specials')}, expected {SPECIALS}")
        return cls(data["chars"])
