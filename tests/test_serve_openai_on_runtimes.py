"""``serve`` as OpenAI's API reads, against two real SGLang CPU servers (SmolLM2-135M each),
through the unchanged ``openai`` client: max_tokens as a hard cap, n choices from one cached
prompt, the base model's logprobs, completions of lists, token ids and echo, model retrieval,
and structured output served by the base runtime's constrained decoding."""

import json

import openai
import pytest

from live_app import live_app
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.serve import ServeSettings, create_app
from sgl_specreason.tokens import local_tokenizer

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(900)]

# a judge that reads the step's log-probabilities: logprobs can be served
CFG = SpecReasonConfig(score_method="likelihood-numbers", threshold=6, token_budget=40, step_max_tokens=16,
                       answer_max_tokens=8, seed=0)
MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def url(roles):
    with live_app(create_app(roles, CFG, ServeSettings(model_name="sr")), grace_s=5) as (base, _):
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)


@pytest.mark.parametrize("cap", [5, 24])
def test_max_tokens_caps_the_whole_completion(client, cap):
    reply = client.chat.completions.create(model="sr", messages=MESSAGES, max_tokens=cap,
                                           extra_body={"specreason": {"trace": True}})
    assert reply.usage.completion_tokens <= cap
    trace = reply.model_extra["specreason"]["trace"]
    written = sum(s["kept_tokens"] for s in trace["steps"]) + (
        trace["answer_call"]["completion_tokens"] if trace["answer_call"] else 0)
    assert written == reply.usage.completion_tokens
    if reply.model_extra["specreason"]["stop_reason"] == "budget":
        assert reply.choices[0].finish_reason == "length"


def test_n_choices_read_one_cached_prompt(client):
    reply = client.chat.completions.create(model="sr", messages=MESSAGES, n=2, max_tokens=16)
    assert [c.index for c in reply.choices] == [0, 1]
    runs = reply.model_extra["specreason"]
    assert len(runs) == 2 and all(run["tokens"]["draft"]["cached"] > 0 for run in runs)
    chunks = list(client.chat.completions.create(model="sr", messages=MESSAGES, n=2, max_tokens=16, stream=True))
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_logprobs_are_the_base_models_with_the_top_k_asked(client, roles):
    reply = client.chat.completions.create(model="sr", messages=MESSAGES, max_tokens=24, logprobs=True,
                                           top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert content and all(t.logprob <= 0 for t in content)
    assert all(len(t.top_logprobs) == 3 for t in content)
    assert reply.model_extra["specreason"]["logprobs_model"] == roles["base"].backend.model_path


def test_completions_of_a_list_token_ids_and_echo_with_logprobs(client, roles):
    tokenizer = local_tokenizer(roles["base"].backend.model_path)
    ids = tokenizer.encode("The capital of France is")
    listed = client.completions.create(model="sr", prompt=["One, two,", "A, B,"], max_tokens=8)
    assert [c.index for c in listed.choices] == [0, 1] and listed.usage.completion_tokens > 0
    by_ids = client.completions.create(model="sr", prompt=[ids, ids[:3]], max_tokens=8)
    assert [c.index for c in by_ids.choices] == [0, 1] and by_ids.usage.prompt_tokens == len(ids) + 3
    echoed = client.completions.create(model="sr", prompt="The capital of France is", echo=True, logprobs=2,
                                       max_tokens=8)
    choice = echoed.choices[0]
    assert choice.text.startswith("The capital of France is")
    assert choice.logprobs.token_logprobs[0] is None and isinstance(choice.logprobs.top_logprobs[1], dict)


def test_the_model_is_retrieved_with_its_context_and_an_unknown_one_is_a_404(client):
    card = client.models.retrieve("sr")
    assert card.id == "sr" and isinstance(card.model_extra["max_model_len"], int)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("non-existent-model")


def test_structured_output_is_the_base_runtimes_constrained_decoding(client):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    reply = client.chat.completions.create(
        model="sr", messages=MESSAGES, max_tokens=64,
        response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema}})
    assert isinstance(json.loads(reply.choices[0].message.content)["answer"], int)
    assert reply.model_extra["specreason"]["routed"] == "base"
    picked = client.chat.completions.create(model="sr", messages=MESSAGES, max_tokens=8,
                                            extra_body={"regex": "(yes|no)"})
    assert picked.choices[0].message.content in ("yes", "no")


def test_a_stream_under_the_papers_judge_has_logprobs_and_ends_on_its_last_tokens(client):
    """As SGLang's test_completion_stream reads a stream: every chunk with a choice has tokens and
    alternatives, and the finish_reason comes on one of them (issue 33, parts 3 and 4)."""
    chunks = list(client.completions.create(model="sr", prompt="One, two, three,", max_tokens=12, logprobs=2,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"specreason": {"judge": "greedy", "threshold": 0}}))
    *pieces, usage = chunks
    assert usage.choices == [] and usage.usage.completion_tokens > 0
    assert pieces and all(c.choices[0].logprobs.tokens and c.choices[0].logprobs.top_logprobs[0] for c in pieces)
    assert [c.choices[0].finish_reason for c in pieces][-1] in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in pieces[:-1])
    assert usage.model_extra["specreason"]["judge"] == "greedy"
