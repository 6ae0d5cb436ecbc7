"""Token ids in process, as an SGLang runtime's ``/tokenize`` gives them, without a round trip.

SGLang 0.5.23's ``/tokenize`` runs ``tokenizer.encode(text, add_special_tokens=...)`` with the
tokenizer its server loaded (``AutoTokenizer``, fast, no remote code,
``clean_up_tokenization_spaces=False``); ``encode`` here does the same with the same files.
SGLang adjusts some tokenizers after loading them (BOS/EOS flags, pre-tokenizers under
transformers 5), so ``Endpoint`` uses a tokenizer from here only after it gave the runtime's
ids for ``PROBES``, and asks the runtime otherwise.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from sgl_specreason.templates import STEP_SEPARATOR

#: files of which one makes a folder a Hugging Face tokenizer's
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

#: what the in-process tokenizer must count as the runtime does before it is used: digits,
#: runs of spaces, unicode, the step separator, text a step's first characters merge into
PROBES = (
    "Tom has 3 apples and buys 12 more: 3 + 12 = 15.",
    "So 1,234.5 x 0.07 = 86.415" + STEP_SEPARATOR + "Next,   three spaces\tand a tab.",
    "Ünïcödé: naïve café, 数学, ∑ x² ≤ π, emoji 🙂" + STEP_SEPARATOR,
    STEP_SEPARATOR + "  leading spaces" + STEP_SEPARATOR + STEP_SEPARATOR,
    "",
)

_loaded: Dict[str, object] = {}
_load_lock = threading.Lock()
_encode_locks: Dict[int, threading.Lock] = {}


def tokenizer_folder(path: Optional[str]) -> Optional[str]:
    """``path`` when it is a local folder holding a tokenizer, else None.

    >>> tokenizer_folder("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B") is None
    True
    """
    if not path:
        return None
    folder = Path(path).expanduser()
    if folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES):
        return str(folder.resolve())
    return None


def local_tokenizer(folder: str):
    """The tokenizer in ``folder``, loaded once per folder (threads asking at once share one
    load) and kept for the life of the process."""
    tokenizer = _loaded.get(folder)
    if tokenizer is None:
        with _load_lock:
            tokenizer = _loaded.get(folder)
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(
                    folder, use_fast=True, trust_remote_code=False,
                    clean_up_tokenization_spaces=False, local_files_only=True)
                _encode_locks[id(tokenizer)] = threading.Lock()
                _loaded[folder] = tokenizer
    return tokenizer


def encode(tokenizer, texts: Sequence[str]) -> List[List[int]]:
    """Token ids of each text, special tokens added, as the runtime's ``/tokenize`` gives them.
    One thread at a time per tokenizer: a fast tokenizer's settings are shared state."""
    with _encode_locks.setdefault(id(tokenizer), threading.Lock()):
        return [list(tokenizer.encode(text, add_special_tokens=True)) for text in texts]
