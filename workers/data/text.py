"""Plain text as language-model data, tokenized offline by the model's own ``tokenizer.json``.

The ``tokenizers`` library reads the fast-tokenizer file a Hugging Face directory ships (no
network, no Python code from the checkpoint). The whole text is encoded once, without added
special tokens, and cut into consecutive windows of ``seq_len + 1`` token ids:
inputs = window[:-1], targets = window[1:] (next-token prediction, the ``lm`` loss).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from workers.data.batch import Dataset
from workers.errors import IntakeError

TEXT_SUFFIXES = (".txt",)


def tokenize_text(text_path: str | Path, tokenizer_path: str | Path, seq_len: int) -> Dataset:
    """Next-token windows of ``text_path`` encoded by ``tokenizer_path`` (a tokenizer.json)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise IntakeError("tokenizing text needs the tokenizers package (curvprof[hf])") from None
    text_file, tok_file = Path(text_path), Path(tokenizer_path)
    if seq_len < 1:
        raise IntakeError(f"seq_len must be positive, got {seq_len}")
    if not tok_file.is_file():
        raise IntakeError(
            f"no tokenizer for {text_file.name}: {tok_file} not found (plain text needs the "
            "model's tokenizer.json)"
        )
    try:
        tokenizer = Tokenizer.from_file(str(tok_file))
    except Exception as exc:
        raise IntakeError(f"not a readable tokenizer.json: {tok_file}: {exc}") from None
    try:
        raw = text_file.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IntakeError(f"cannot read {text_file} as UTF-8 text: {exc}") from None
    ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.long)
    windows = (len(ids) - 1) // seq_len
    if windows < 1:
        raise IntakeError(
            f"{text_file.name} holds {len(ids)} tokens, too few for one window of {seq_len}"
        )
    starts = torch.arange(windows) * seq_len
    offsets = starts[:, None] + torch.arange(seq_len + 1)[None, :]
    tokens = ids[offsets]
    digest = hashlib.sha256(raw + b"\0" + tok_file.read_bytes()).hexdigest()
    meta = {
        "path": str(text_file),
        "format": "text",
        "tokenizer": str(tok_file),
        "seq_len": seq_len,
        "tokens": len(ids),
        "vocab_size": tokenizer.get_vocab_size(),
    }
    return Dataset(
        tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), None, text_file.stem, digest, meta
    )
