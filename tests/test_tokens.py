"""Token counts in process (``sgl_specreason.tokens``): the likelihood judge's spans without a
``/tokenize`` round trip where the runtime's tokenizer folder is at hand, and the fallbacks.
Reads the offline models' converted tokenizer folders, converting them first where needed."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from http_runtime import HttpRuntime
from sgl_specreason import models, tokens
from sgl_specreason.backend import ASK_RUNTIME, Endpoint
from sgl_specreason.calls import step_spans
from sgl_specreason.templates import STEP_SEPARATOR

pytestmark = pytest.mark.timeout(120)

PREFIX = "<|im_start|>user\nJanet has 16 eggs.<|im_end|>\n<|im_start|>assistant\n<think>\nShe eats 3." + STEP_SEPARATOR
STEPS = ["She bakes 4: 16 - 3 - 4 = 9.", "  9 × $2 = $18 — naïve café 🙂", "1,234.5" + STEP_SEPARATOR, ""]


def folder(name):
    """The offline model's converted folder, converted here first if it never was (CI starts
    from a clean machine: a skip there would prove nothing)."""
    path = tokens.tokenizer_folder(str(models.prepare(name)))
    assert path is not None, f"{name}'s converted folder holds no tokenizer"
    return path


@pytest.fixture(scope="module")
def smol():
    return folder("smollm2-135m")


def test_a_tokenizer_folder_is_one_that_holds_a_tokenizer(tmp_path, smol):
    assert tokens.tokenizer_folder(None) is None
    assert tokens.tokenizer_folder(str(tmp_path)) is None  # a folder without tokenizer files
    assert tokens.tokenizer_folder("HuggingFaceTB/SmolLM2-135M-Instruct") is None  # a hub name
    assert tokens.tokenizer_folder(smol) == smol


def test_one_tokenizer_per_folder_even_when_threads_ask_at_once(smol):
    barrier = threading.Barrier(4)

    def load(_):
        barrier.wait()
        return tokens.local_tokenizer(smol)

    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(load, range(4)))
    assert all(t is loaded[0] for t in loaded) and tokens.local_tokenizer(smol) is loaded[0]


def test_encode_adds_special_tokens_as_the_runtime_does(smol):
    tokenizer = tokens.local_tokenizer(smol)
    texts = [PREFIX + step for step in STEPS]
    assert tokens.encode(tokenizer, texts) == [tokenizer.encode(t, add_special_tokens=True) for t in texts]


def serving(path, tokenize):
    """A stand-in runtime that reports ``path`` as its model and counts with ``tokenize``."""
    return HttpRuntime(model_path=path, tokenize=tokenize)


def test_spans_are_computed_in_process_when_the_runtimes_tokenizer_is_here(smol):
    tokenizer = tokens.local_tokenizer(smol)
    with serving(smol, lambda text: tokenizer.encode(text, add_special_tokens=True)) as runtime:
        endpoint = Endpoint(runtime.url, role="base")
        asking = Endpoint(runtime.url, role="base", tokenizer=ASK_RUNTIME)
        assert endpoint.prepare_tokenizer() is tokenizer and endpoint.tokenizer_note is None
        probes = len(runtime.paths("/tokenize"))
        assert probes == 1  # checked once against the runtime
        here = step_spans(endpoint, PREFIX, STEPS)
        assert len(runtime.paths("/tokenize")) == probes  # no round trip
        assert here == step_spans(asking, PREFIX, STEPS)  # what the runtime's /tokenize gives
        assert len(runtime.paths("/tokenize")) == probes + 1
        start, lengths = here
        assert 0 < start < len(tokenizer.encode(PREFIX)) and all(n > 0 for n in lengths[:-1])


def test_a_tokenizer_that_counts_unlike_the_runtime_is_not_used(smol):
    with serving(smol, lambda text: [ord(ch) for ch in text]) as runtime:
        endpoint = Endpoint(runtime.url, role="base")
        assert endpoint.prepare_tokenizer() is None
        assert "counts tokens unlike the runtime's /tokenize" in endpoint.tokenizer_note
        assert endpoint.tokenize(["ab"]) == [[97, 98]]  # asked of the runtime


def test_without_a_folder_here_the_runtime_is_asked(smol, tmp_path):
    with serving("Qwen/QwQ-32B", lambda text: [len(text)]) as runtime:
        endpoint = Endpoint(runtime.url, role="base")
        assert endpoint.tokenize(["abc"]) == [[3]] and runtime.paths("/tokenize")
        assert "is not a folder here" in endpoint.tokenizer_note
        given = Endpoint(runtime.url, role="base", tokenizer=str(tmp_path))
        assert given.prepare_tokenizer() is None and "holds no tokenizer" in given.tokenizer_note
        asked = Endpoint(runtime.url, role="base", tokenizer=ASK_RUNTIME)
        assert asked.prepare_tokenizer() is None and "tokenizer: runtime" in asked.tokenizer_note


def test_a_tokenizer_folder_can_be_given_when_the_runtime_serves_from_elsewhere(smol):
    tokenizer = tokens.local_tokenizer(smol)
    with serving("/remote/models/SmolLM2-135M-Instruct",
                 lambda text: tokenizer.encode(text, add_special_tokens=True)) as runtime:
        endpoint = Endpoint(runtime.url, role="base", tokenizer=smol)
        assert endpoint.prepare_tokenizer() is tokenizer
        before = len(runtime.paths("/tokenize"))
        assert endpoint.tokenize([PREFIX]) == [tokenizer.encode(PREFIX, add_special_tokens=True)]
        assert len(runtime.paths("/tokenize")) == before


@pytest.mark.timeout(900)  # a clean machine converts each Qwen model first (about 1.5 min)
@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_the_local_pairs_tokenizers_load_and_count_the_probes(name):
    tokenizer = tokens.local_tokenizer(folder(name))
    ids = tokens.encode(tokenizer, tokens.PROBES)
    assert ids[-1] == [] and all(ids[:-1])  # Qwen2 adds no BOS: the empty text has no tokens
