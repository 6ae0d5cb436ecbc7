"""``serve`` as OpenAI's API reads: max_tokens as a hard cap, n choices, logprobs, echo, lists of
prompts and token-id prompts, model retrieval, constrained decoding routed to the base runtime,
and no field accepted and ignored. The real programs on scripted fake runtimes, through the
unchanged ``openai`` client where it can speak; ``test_serve_openai_on_runtimes`` does the same
against real SGLang servers."""

import json

import openai
import pytest
from fastapi.testclient import TestClient

from fake_runtime import DRAFT_LOGPROB, fake_roles
from live_app import live_app
from sgl_specreason.serve import ServeSettings, create_app
from test_serve import CHAT, CFG, QUESTION, STEPS, app_on_fakes, client_of, fakes

pytestmark = pytest.mark.timeout(60)


def test_max_tokens_is_a_hard_cap_on_every_choice(tmp_path):
    with TestClient(app_on_fakes()) as http:
        for cap in (1, 3, 5, 17, 40):
            for field in ("max_tokens", "max_completion_tokens"):
                reply = http.post("/v1/chat/completions", json={**CHAT, field: cap}).json()
                choice = reply["choices"][0]
                assert reply["usage"]["completion_tokens"] <= cap, (field, cap, reply)
                assert choice["finish_reason"] == "length"
                assert len(choice["message"]["content"].replace("\n\n", "")) <= cap  # 1 char = 1 token here
        whole = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 500}).json()
    assert whole["choices"][0]["finish_reason"] == "stop"  # room enough: the reasoning ended on its own


def test_n_choices_are_independent_runs_with_their_index_and_summed_usage():
    with live_app(app_on_fakes()) as (url, _):
        client = client_of(url)
        reply = client.chat.completions.create(model="m", messages=CHAT["messages"], n=3)
        chunks = list(client.chat.completions.create(model="m", messages=CHAT["messages"], n=2, stream=True))
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content.endswith("\\boxed{5}") for c in reply.choices)
    assert reply.usage.completion_tokens == 3 * sum(map(len, STEPS))
    assert len(reply.model_extra["specreason"]) == 3
    indexes = {c.choices[0].index for c in chunks if c.choices}
    assert indexes == {0, 1}
    text = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
            for i in indexes}
    assert text[0].endswith("\\boxed{5}") and text[1].endswith("\\boxed{5}")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2 * sum(map(len, STEPS))


def test_include_usage_adds_a_last_chunk_with_the_usage_and_n_reads_the_prompt_once():
    with live_app(app_on_fakes()) as (url, _):
        client = client_of(url)
        chunks = list(client.chat.completions.create(
            model="m", messages=CHAT["messages"], stream=True, stream_options={"include_usage": True}))
        one = client.chat.completions.create(model="m", messages=CHAT["messages"])
        three = client.chat.completions.create(model="m", messages=CHAT["messages"], n=3)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == sum(map(len, STEPS))
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-2].usage is None  # only in the last
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # as OpenAI counts n choices


def likelihood(score=9):
    """Fake runtimes, and a config whose judge reads the step's log-probabilities."""
    draft, base = fakes(score=lambda step: score)
    return draft, base, CFG.replace(score_method="likelihood", threshold=5)


def test_logprobs_are_the_base_models_for_every_kept_token():
    draft, base, cfg = likelihood(score=9)  # every draft kept: each token -1.0 from the judge's prefill
    with live_app(create_app(fake_roles(draft, base), cfg)) as (url, _):
        client = client_of(url)
        reply = client.chat.completions.create(model="m", messages=CHAT["messages"], logprobs=True, top_logprobs=2)
        streamed = list(client.chat.completions.create(model="m", messages=CHAT["messages"], logprobs=True,
                                                       stream=True))
    content = reply.choices[0].logprobs.content
    assert "".join(t.token for t in content) == reply.choices[0].message.content.replace("\n\n", "")
    assert {t.logprob for t in content} == {9 - 10.0}  # the fake judge's -1 per prompt character
    assert reply.model_extra["specreason"]["logprobs_model"] == base.model_path
    judge_asks = [r.params["top_logprobs_num"] for r in base.requests if r.kind == "judge"]
    assert judge_asks and min(judge_asks) >= 2
    pieces = [c for c in streamed if c.choices and c.choices[0].delta.content]
    assert all(len(c.choices[0].logprobs.content) == len(c.choices[0].delta.content.lstrip("\n"))
               for c in pieces)


def test_logprobs_under_the_papers_judge_come_from_its_question_prefill():
    draft, base = fakes(score=lambda step: 8)  # the server's default judge: the paper's greedy
    with TestClient(app_on_fakes(draft, base)) as http:
        chat = http.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "top_logprobs": 3})
        completion = http.post("/v1/completions", json={"model": "m", "prompt": "Q: 2 + 3?\n<think>", "logprobs": 0,
                                                        "max_tokens": 200})
    assert chat.status_code == 200 and completion.status_code == 200, (chat.text, completion.text)
    reply = chat.json()
    assert reply["specreason"]["judge"] == "greedy" and reply["specreason"]["steps"]["rewritten"] == 0
    content = reply["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == reply["choices"][0]["message"]["content"].replace("\n\n", "")
    assert {t["logprob"] for t in content} == {8 - 10.0}  # the fake judge's prompt log-probs
    assert set(completion.json()["choices"][0]["logprobs"]["token_logprobs"]) == {8 - 10.0}
    judged = [r for r in base.requests if r.kind == "judge"]
    assert {r.kind for r in base.requests} == {"judge"}  # no prefill beside the judge's
    assert all(r.prompt.endswith("I think the quality score is: ") for r in judged)
    assert all(r.prompt[r.params["logprob_start_len"] + 1:].startswith(r.steps[-1]) for r in judged)


def test_logprobs_of_base_steps_come_from_the_base_models_own_reply():
    draft, base, cfg = likelihood(score=1)  # every draft rejected: the base model writes each step
    with TestClient(create_app(fake_roles(draft, base), cfg)) as http:
        reply = http.post("/v1/completions", json={"model": "m", "prompt": "Q: 2 + 3?\n", "logprobs": 0,
                                                   "max_tokens": 200}).json()
    logprobs = reply["choices"][0]["logprobs"]
    assert set(logprobs["token_logprobs"]) == {DRAFT_LOGPROB}  # the fake's log-prob of what it wrote
    assert logprobs["top_logprobs"] is None and logprobs["text_offset"][:2] == [0, 1]
    asked = [r for r in base.requests if r.kind == "step"]
    assert asked and all(r.params["return_logprob"] for r in asked)


def test_completions_take_lists_of_prompts_echo_and_token_ids():
    with live_app(app_on_fakes()) as (url, _):
        client = client_of(url)
        listed = client.completions.create(model="m", prompt=["Q: 1?\n", "Q: 2?\n"], n=2, max_tokens=60)
        echoed = client.completions.create(model="m", prompt="Q: 3?\n", echo=True, max_tokens=60)
        streamed = list(client.completions.create(model="m", prompt="Q: 3?\n", echo=True, max_tokens=60,
                                                  stream=True))
    assert [c.index for c in listed.choices] == [0, 1, 2, 3]
    assert echoed.choices[0].text.startswith("Q: 3?\n") and len(echoed.choices[0].text) > len("Q: 3?\n")
    assert streamed[0].choices[0].text.startswith("Q: 3?\n")
    draft, base, cfg = likelihood(score=9)
    with TestClient(create_app(fake_roles(draft, base), cfg)) as http:
        scored = http.post("/v1/completions", json={"model": "m", "prompt": "Q: 4?\n", "echo": True, "logprobs": 1,
                                                    "max_tokens": 30}).json()["choices"][0]
    tokens = scored["logprobs"]["tokens"]
    assert "".join(tokens[:len("Q: 4?\n")]) == "Q: 4?\n"  # the prompt's tokens first, scored by the base
    assert scored["logprobs"]["token_logprobs"][0] is None and scored["logprobs"]["text_offset"][:2] == [0, 1]
    with TestClient(app_on_fakes()) as http:  # fake runtimes have no tokenizer here: a clear 400
        reply = http.post("/v1/completions", json={"model": "m", "prompt": [1, 2, 3]})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "prompt"
    assert "tokenizer" in reply.json()["error"]["message"]


def test_token_id_prompts_are_decoded_with_the_base_models_tokenizer(monkeypatch):
    draft, base = fakes()

    class Words:
        def decode(self, ids):
            return " ".join(f"w{i}" for i in ids) + "\n"

    base.prepare_tokenizer = lambda: Words()
    with TestClient(create_app(fake_roles(draft, base), CFG)) as http:
        reply = http.post("/v1/completions", json={"model": "m", "prompt": [[1, 2], [3]], "max_tokens": 30}).json()
    assert [c["index"] for c in reply["choices"]] == [0, 1]
    prompts = {r.prompt.split("\n")[0] for r in draft.requests}
    assert {"w1 w2", "w3"} <= prompts


def test_the_model_can_be_retrieved_and_an_unknown_one_is_a_404():
    with live_app(app_on_fakes(settings=ServeSettings(model_name="sr"))) as (url, _):
        client = client_of(url)
        assert client.models.retrieve("sr").id == "sr"
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.models.retrieve("gpt-9")


@pytest.mark.parametrize("extra, expect", [
    ({"response_format": {"type": "json_object"}}, {"json_schema": json.dumps({"type": "object"})}),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string"}}}},
     {"json_schema": json.dumps({"type": "string"})}),
    ({"regex": "(yes|no)", "frequency_penalty": 0.5}, {"regex": "(yes|no)", "frequency_penalty": 0.5}),
])
def test_structured_output_is_the_base_runtimes_constrained_decoding(extra, expect):
    draft, base = fakes()
    with TestClient(app_on_fakes(draft, base)) as http:
        reply = http.post("/v1/chat/completions", json={**CHAT, **extra}).json()
    assert not draft.requests and len(base.requests) == 1
    asked = base.requests[0]
    assert {k: asked.params[k] for k in expect} == expect
    assert asked.prompt.endswith(f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")  # the user's words, no framing
    assert reply["specreason"]["routed"] == "base" and "constrained decoding" in reply["specreason"]["why"]


def test_response_format_text_is_the_default_and_a_json_schema_needs_its_schema():
    with TestClient(app_on_fakes()) as http:
        text = http.post("/v1/chat/completions", json={**CHAT, "response_format": {"type": "text"}})
        bad = http.post("/v1/chat/completions", json={**CHAT, "response_format": {"type": "json_schema"}})
    assert text.status_code == 200 and "routed" not in text.json()["specreason"]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format.json_schema"


def test_the_server_runs_any_registered_mode():
    draft, base = fakes()
    app = create_app(fake_roles(draft, base), CFG, ServeSettings(mode="base"))
    with TestClient(app) as http:
        reply = http.post("/v1/chat/completions", json=CHAT).json()
        completion = http.post("/v1/completions", json={"model": "m", "prompt": "Q: 1?\n", "max_tokens": 40}).json()
        scored = http.post("/v1/chat/completions", json={**CHAT, "logprobs": True}).json()  # no judge: fine
    assert not draft.requests
    assert scored["choices"][0]["logprobs"]["content"] and scored["specreason"]["logprobs_model"] == base.model_path
    assert reply["specreason"]["mode"] == "base" and reply["choices"][0]["message"]["content"].endswith("\\boxed{5}")
    assert completion["specreason"]["steps"]["drafted"] == 0


def test_per_request_speculation_policy():
    draft, base = fakes()
    with TestClient(app_on_fakes(draft, base)) as http:
        reply = http.post("/v1/chat/completions", json={**CHAT, "specreason": {"speculate": "never"}}).json()
        bad = http.post("/v1/chat/completions", json={**CHAT, "specreason": {"speculate": "often"}})
    assert not draft.requests and reply["specreason"]["speculated_share"] == 0.0
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "specreason.speculate"
    assert "always, never, auto" in bad.json()["error"]["message"]
