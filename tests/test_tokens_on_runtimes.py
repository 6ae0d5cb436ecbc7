"""Token counts in process against a real SGLang CPU server (SmolLM2-135M): the tokenizer loaded
here from the runtime's own model folder gives the ids and the likelihood judge's spans that the
runtime's ``/tokenize`` gives, for steps with digits, spaces, unicode and the step separator."""

import pytest

from apples import QUESTION
from sgl_specreason.backend import Endpoint
from sgl_specreason.calls import step_spans
from sgl_specreason.templates import STEP_SEPARATOR
from sgl_specreason.trace import BASE

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(900)]

STEPS = [
    "Tom has 3 apples and buys 12 more: 3 + 12 = 15.",
    "So 1,234.5 x 0.07 = 86.415, and 15 / 4 = 3.75",
    "Two  spaces,   three spaces,\ta tab and a trailing space ",
    "  Leading spaces, then 42.",
    "Ünïcödé: naïve café, 数学, ∑ x² ≤ π, −3 °C, emoji 🙂",
    "First part." + STEP_SEPARATOR + "Second part after the separator.",
    STEP_SEPARATOR + "A step that starts with the separator.",
    "ends with the separator" + STEP_SEPARATOR,
    "\n",
    "",
]


class OnRuntime:
    """The endpoint, with every token count asked of the runtime's ``/tokenize``."""

    def __init__(self, endpoint: Endpoint):
        self.tokenize = endpoint.tokenize_on_runtime


def test_in_process_tokens_and_spans_are_the_runtimes(roles):
    base = roles[BASE]
    endpoint = Endpoint(base.backend.base_url, role=BASE, timeout=120)
    tokenizer = endpoint.prepare_tokenizer()
    assert tokenizer is not None, endpoint.tokenizer_note  # the model folder is on this machine
    asked = OnRuntime(endpoint)
    for kept in ([], ["Tom has 3 apples."], ["Tom has 3 apples.", "He buys 12 more: 3 + 12 = 15."]):
        prefix = base.template.reasoning(QUESTION, kept)
        texts = [prefix] + [prefix + step for step in STEPS]
        assert endpoint.tokenize(texts) == endpoint.tokenize_on_runtime(texts)
        assert step_spans(endpoint, prefix, STEPS) == step_spans(asked, prefix, STEPS)
        for step in STEPS:  # one candidate at a time, as a judge of one draft asks
            assert step_spans(endpoint, prefix, [step]) == step_spans(asked, prefix, [step])
    loose = [step for step in STEPS] + [s + " " + t for s, t in zip(STEPS, STEPS[1:])]
    assert endpoint.tokenize(loose) == endpoint.tokenize_on_runtime(loose)  # without the template


def test_the_shared_endpoint_counts_in_process(roles):
    """The runtime fixtures' endpoint finds its tokenizer too: the judge asks no /tokenize."""
    assert roles[BASE].backend.prepare_tokenizer() is not None, roles[BASE].backend.tokenizer_note
