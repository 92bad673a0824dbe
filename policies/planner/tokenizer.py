"""The planner's tokenizer: word-level, trained with ``tokenizers`` on the planner corpus.

The planner's language is closed (skills, colours, a grid of position numbers, a few function words) and
its text is canonical (space-separated words and punctuation, see ``data.canonical``), so one token per
word is the smallest model input and decoding is exact: ``decode(encode(text)) == text``. The trained
tokenizer is wrapped as a transformers fast tokenizer so that it saves and loads next to the model
with ``save_pretrained`` / ``from_pretrained`` (``lm`` extra).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from robot.core.extras import require

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]


def train_tokenizer(texts: Iterable[str]) -> Any:
    """A word-level tokenizer whose vocabulary is every word of ``texts`` plus the four special tokens."""
    tokenizers = require("tokenizers", "lm")
    transformers = require("transformers", "lm")
    model = tokenizers.models.WordLevel(unk_token=UNK)
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##", cleanup=False)  # joins words with one space
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS
    )


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in a checkpoint folder (local files only; nothing is downloaded)."""
    transformers = require("transformers", "lm")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint folder (expected a tokenizer saved with save_pretrained)")
    return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of canonical text, without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def decode(tokenizer: Any, ids: Iterable[int]) -> str:
    """Text of token ids, special tokens dropped."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)
