"""``sgl-specreason serve`` without a model: the real programs on scripted fake runtimes
(``fake_runtime``), or a scripted solver where a test needs a run to fail or wait, reached
through the official ``openai`` client, raw HTTP, and a real uvicorn server for disconnects
and shutdown. The same against real SGLang servers: ``test_serve_on_runtimes``."""

import json
import threading
import time

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from fake_runtime import FakeRuntime, fake_roles
from live_app import live_app
from sgl_specreason.cli import main
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import (
    PromptTooLongError,
    RuntimeServerError,
    RuntimeTimeoutError,
    RuntimeUnavailableError,
)
from sgl_specreason.serve import ServeSettings, StopScan, check_listen, create_app
from sgl_specreason.trace import BASE, DRAFT, Call, ProblemResult, Step

pytestmark = pytest.mark.timeout(60)

# serve frames a chat as written (plain) unless asked otherwise: the fakes answer as a chat model
CFG = SpecReasonConfig(token_budget=400, step_max_tokens=40, answer_max_tokens=30, seed=0, framing="plain")
QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have now?"
STEPS = ["d0: 0 + 1 = 1.", "d1: 1 + 1 = 2.", "d2: 2 + 1 = 3.", "so \\boxed{5}"]


def draft_writes(steps, fork):
    k = len(steps)
    return STEPS[3] if k >= 3 else f"d{k}: {k} + 1 = {k + 1}."


def base_writes(steps, fork):
    k = len(steps)
    return "thus \\boxed{5}" if k >= 3 else f"b{k}: {k} + 1 = {k + 1}!"


def fakes(score=lambda step: 9, draft_delay=lambda kind, steps: 0.0):
    return (FakeRuntime(DRAFT, draft_writes, delay=draft_delay),
            FakeRuntime(BASE, base_writes, score=score))


def app_on_fakes(draft=None, base=None, settings=ServeSettings(), cfg=CFG):
    if draft is None:
        draft, base = fakes()
    return create_app(fake_roles(draft, base), cfg, settings)


def client_of(url, key="none"):
    """The official client, unchanged, on a server at ``url`` (``live_app``)."""
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


CHAT = {"model": "specreason", "messages": [{"role": "user", "content": QUESTION}]}


# -- what a response carries ---------------------------------------------------------------------

def test_a_chat_completion_through_the_openai_client():
    draft, base = fakes(score=lambda step: 2 if step.startswith("d1") else 9)
    with live_app(app_on_fakes(draft, base)) as (url, _):
        reply = client_of(url).chat.completions.create(
            model="specreason", messages=[{"role": "user", "content": QUESTION}],
            extra_body={"specreason": {"trace": True}})
    text = reply.choices[0].message.content
    assert text == "\n\n".join([STEPS[0], "b1: 1 + 1 = 2!", STEPS[2], STEPS[3]])
    assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion"
    assert reply.usage.completion_tokens == len(text) - 3 * len("\n\n")  # the fake: a character a token
    first_draft = draft.requests[0]
    assert reply.usage.prompt_tokens == len(first_draft.prompt)  # the conversation as the runtime read it
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    ext = reply.model_extra["specreason"]
    assert ext["steps"] == {"total": 4, "drafted": 4, "kept": 3, "rewritten": 1}
    assert ext["acceptance"] == 0.75 and ext["judge_calls"] == 4 and ext["judge"] == "greedy"
    assert ext["tokens"][BASE]["kept"] == len("b1: 1 + 1 = 2!")
    assert ext["tokens"][DRAFT]["generated"] == sum(len(s) for s in (STEPS[0], "d1: 1 + 1 = 2.", STEPS[2], STEPS[3]))
    assert [s["text"] for s in ext["trace"]["steps"]] == text.split("\n\n")
    assert [c["kind"] for c in ext["trace"]["steps"][1]["calls"]] == ["draft", "judge", "step"]


def test_the_conversation_becomes_the_problem_and_its_context():
    draft, base = fakes()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    earlier = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
               "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n")
    with TestClient(app_on_fakes(draft, base)) as http:
        # the paper's framing, asked for by the request
        body = {**CHAT, "messages": messages, "specreason": {"framing": "paper"}}
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        paper = draft.requests[0].prompt
        # serve's default: the conversation as written
        draft.requests.clear()
        assert http.post("/v1/chat/completions", json={**CHAT, "messages": messages}).status_code == 200
        plain = draft.requests[0].prompt
    assert paper.startswith(earlier + "Solve the following")
    assert paper.endswith("Problem: " + QUESTION + "<|im_end|>\n<|im_start|>assistant\n<think>")
    assert plain == earlier + QUESTION + "<|im_end|>\n<|im_start|>assistant\n"


def test_a_streamed_chat_sends_one_chunk_per_kept_step_the_last_with_the_end_and_the_usage():
    with live_app(app_on_fakes()) as (url, _):
        stream = client_of(url).chat.completions.create(
            model="specreason", messages=[{"role": "user", "content": QUESTION}], stream=True,
            extra_body={"specreason": {"trace": True}})
        chunks = list(stream)
    *pieces, last = chunks
    texts = [c.choices[0].delta.content for c in chunks]
    assert texts == [STEPS[0]] + ["\n\n" + s for s in STEPS[1:]]
    assert pieces[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in pieces)
    # the step that ended the run is known as it is kept: its chunk ends the choice
    assert last.choices[0].finish_reason == "stop" and last.usage.completion_tokens == sum(map(len, STEPS))
    trace = last.model_extra["specreason"]["trace"]["steps"]
    assert "".join(texts) == "\n\n".join(step["text"] for step in trace)
    assert [step["final"] for step in trace] == [False, False, False, True]


def test_max_tokens_caps_the_reasoning_and_the_answer_together():
    """20 tokens: a quarter (5) is kept for the answer; the steps take 15 (14, then 1), the
    answer the 5 left, and the choice ends on "length"."""
    with TestClient(app_on_fakes()) as http:
        # the paper's framing: a budget cuts the reasoning, and the model states an answer after
        # it; today's one content, thinking and answer together
        lines = http.post("/v1/chat/completions", json={**CHAT, "stream": True, "max_tokens": 20,
                                                        "specreason": {"framing": "paper"},
                                                        "separate_reasoning": False}).text
    events = [line[len("data: "):] for line in lines.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert texts == [STEPS[0], "\n\nd", "\n\nThe a"]  # the answer cut by the cap ends the choice
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 20
    assert chunks[-1]["specreason"]["stop_reason"] == "budget"


def test_a_stop_string_cuts_the_text_and_ends_the_run():
    # the draft's third step waits 30 s unless aborted: the run must be ended by the stop string,
    # not outrun it (instant fakes would finish a whole run before the reply saw its first step)
    draft, base = fakes(draft_delay=lambda kind, steps: 30.0 if kind == "step" and len(steps) >= 2 else 0.0)
    with TestClient(app_on_fakes(draft, base)) as http:
        reply = http.post("/v1/chat/completions", json={**CHAT, "stop": ["1 + 1"]}).json()
        streamed = http.post("/v1/chat/completions", json={**CHAT, "stop": "1 + 1", "stream": True}).text
    assert reply["choices"][0]["message"]["content"] == STEPS[0] + "\n\nd1: "
    assert reply["choices"][0]["finish_reason"] == "stop"
    pieces = [json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in streamed.split("\n\n")
              if e.startswith("data: {")]
    assert "".join(pieces) == STEPS[0] + "\n\nd1: "
    # both runs ended at the stop: the third step was aborted, or cancelled before it was sent
    later = [r for r in draft.requests if r.kind == "step" and len(r.steps) >= 2]
    assert all(r.finish == {"type": "abort"} for r in later), later
    assert not [r for r in draft.requests + base.requests if r.kind == "answer"]


def test_stop_scan_holds_back_what_may_begin_a_stop_string():
    scan = StopScan(["</s>"])
    assert [scan.feed("a </"), scan.feed("b> c"), scan.flush()] == ["a ", "</b> c", ""]
    assert StopScan().feed("anything") == "anything"


PROMPT = "Q: 2 + 3?\n<think>"


def test_a_completion_continues_the_prompt_through_the_dropin_path():
    draft, base = fakes()
    with live_app(app_on_fakes(draft, base)) as (url, _):
        client = client_of(url)
        # (the fake runtime reads steps after a <think>)
        reply = client.completions.create(model="specreason", prompt=PROMPT, max_tokens=500)
        stream = list(client.completions.create(model="specreason", prompt=PROMPT, max_tokens=500, stream=True))
    assert reply.choices[0].text == "\n\n".join(STEPS) and reply.choices[0].finish_reason == "stop"
    assert draft.requests[0].prompt == PROMPT  # the prompt as given, no chat framing
    assert [c.choices[0].text for c in stream] == [STEPS[0]] + ["\n\n" + s for s in STEPS[1:]]
    assert stream[-1].usage.completion_tokens == sum(map(len, STEPS))
    assert [c.choices[0].finish_reason for c in stream] == [None] * 3 + ["stop"]


def test_a_request_overrides_the_judge_and_threshold_within_their_ranges():
    draft, base = fakes(score=lambda step: 5)
    with TestClient(app_on_fakes(draft, base)) as http:
        kept = http.post("/v1/chat/completions", json={**CHAT, "specreason": {"threshold": 5}}).json()
        other = http.post("/v1/chat/completions", json={
            **CHAT, "specreason": {"judge": "likelihood-numbers", "threshold": 0}, "temperature": 0.2}).json()
    assert kept["specreason"]["steps"]["kept"] == 4 and kept["specreason"]["threshold"] == 5
    assert other["specreason"]["judge"] == "likelihood-numbers"
    assert draft.requests[-1].params["temperature"] == 0.2


def test_models_and_health():
    with live_app(app_on_fakes(settings=ServeSettings(model_name="sr"))) as (url, _):
        models = client_of(url).models.list()
        health = httpx.get(url + "/health").json()
    assert [m.id for m in models.data] == ["sr"]
    assert health["status"] == "ok" and health["in_flight"] == 0


# -- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, param", [
    ({"model": "m"}, "messages"),
    ({"messages": CHAT["messages"]}, "model"),
    ({**CHAT, "temperature": "hot"}, "temperature"),
    ({**CHAT, "temperature": 2.5}, "temperature"),
    ({**CHAT, "top_p": 0}, "top_p"),
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "stream": "yes"}, "stream"),
    ({**CHAT, "n": 0}, "n"),
    ({**CHAT, "top_k": 5}, "top_k"),  # no API of serve's defines it: unknown, not ignored
    ({**CHAT, "frequency_penalty": 0.5}, "frequency_penalty"),
    ({**CHAT, "repetition_penalty": 1.2}, "repetition_penalty"),
    ({**CHAT, "seed": 3}, "seed"),
    ({**CHAT, "logit_bias": {"50256": -100}}, "logit_bias"),
    ({**CHAT, "stop_token_ids": [2]}, "stop_token_ids"),
    ({**CHAT, "ignore_eos": True}, "ignore_eos"),
    ({**CHAT, "ebnf": "root ::= 'a'"}, "ebnf"),
    ({**CHAT, "tools": [{"type": "function"}]}, "tools"),
    ({**CHAT, "messages": [{"role": "user", "content": "x", "name": "ann"}]}, "messages[0].name"),
    ({**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({**CHAT, "messages": [{"role": "assistant", "content": "x"}]}, "messages"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].type"),
    ({**CHAT, "specreason": {"judge": "oracle"}}, "specreason.judge"),
    ({**CHAT, "specreason": {"judge": "agreement"}}, "specreason.judge"),  # needs several drafts
    ({**CHAT, "specreason": {"threshold": 11}}, "specreason.threshold"),
])
def test_a_bad_body_is_a_400_naming_the_field(body, param):
    with TestClient(app_on_fakes()) as http:
        reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(param)


def test_bad_json_and_a_body_that_is_not_an_object_are_400s_and_the_server_stays_up():
    with TestClient(app_on_fakes()) as http:
        broken = http.post("/v1/chat/completions", content=b'{"model": "m", "messa',
                           headers={"Content-Type": "application/json"})
        listed = http.post("/v1/chat/completions", json=[1, 2])
        fine = http.post("/v1/chat/completions", json=CHAT)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    assert listed.status_code == 400 and listed.json()["error"]["message"]
    assert fine.status_code == 200


def test_the_openai_client_sees_a_bad_request_error():
    with live_app(app_on_fakes()) as (url, _), pytest.raises(openai.BadRequestError, match="seed: per-request"):
        client_of(url).chat.completions.create(model="m", messages=CHAT["messages"], seed=3)


def scripted(error=None, wait=None, entered=None):
    """A solver that fails with ``error``, or waits for ``wait`` and keeps one step."""
    def solve(job, on_step, scope):
        if entered is not None:
            entered.release()
        if error is not None:
            raise error
        if wait is not None:
            assert wait.wait(20)
        step = Step(0, DRAFT, "x \\boxed{1}", 3, score=9.0, calls=[Call(DRAFT, "draft", 10, 4, 3, 0.1)])
        on_step(step)
        return ProblemResult(job.id, "", "specreason", text=step.text, steps=[step], stop_reason="finished")
    return solve


@pytest.mark.parametrize("error, status, code", [
    (RuntimeUnavailableError("cannot reach the base runtime"), 503, "runtime_unavailable"),
    (RuntimeTimeoutError("the base runtime did not answer within 2 s"), 504, "runtime_timeout"),
    (RuntimeServerError("the base runtime answered HTTP 500"), 502, "runtime_error"),
    (PromptTooLongError("rejected the prompt: longer than the model's context length"), 400, "context_length_exceeded"),
    (KeyError("bug"), 500, "internal_error"),
])
def test_runtime_failures_map_to_status_codes_streamed_or_not(error, status, code):
    app = create_app(None, CFG, solver=scripted(error))
    with TestClient(app) as http:
        for stream in (False, True):
            reply = http.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert reply.status_code == status, reply.text
            assert reply.json()["error"]["code"] == code
        assert http.post("/v1/completions", json={"model": "m", "prompt": "x"}).status_code == status
        assert http.get("/health").status_code == 200  # still up


def test_the_prompt_too_long_error_names_the_prompt_field():
    app = create_app(None, CFG, solver=scripted(PromptTooLongError("too long")))
    with TestClient(app) as http:
        chat = http.post("/v1/chat/completions", json=CHAT).json()["error"]
        completion = http.post("/v1/completions", json={"model": "m", "prompt": "x"}).json()["error"]
    assert chat["param"] == "messages" and completion["param"] == "prompt"


def test_a_full_queue_answers_429_and_a_queued_request_runs_when_a_slot_frees():
    release, entered = threading.Event(), threading.Semaphore(0)
    app = create_app(None, CFG, ServeSettings(max_in_flight=1, max_queue=1),
                     solver=scripted(wait=release, entered=entered))
    replies = {}
    with live_app(app) as (url, _), httpx.Client(base_url=url, timeout=30) as http:
        def ask(name):
            replies[name] = http.post("/v1/chat/completions", json=CHAT)

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        assert entered.acquire(timeout=10)  # the first runs
        second = threading.Thread(target=ask, args=("second",))
        second.start()
        deadline = time.monotonic() + 10
        while app.state.service.queued < 1:  # the second waits for the slot
            assert time.monotonic() < deadline
            time.sleep(0.01)
        third = http.post("/v1/chat/completions", json=CHAT)
        with pytest.raises(openai.RateLimitError):
            client_of(url).chat.completions.create(model="m", messages=CHAT["messages"])
        release.set()
        first.join(10)
        second.join(10)
    assert third.status_code == 429 and third.json()["error"]["type"] == "rate_limit_error"
    assert "--max-in-flight 1" in third.json()["error"]["message"]
    assert replies["first"].status_code == 200 and replies["second"].status_code == 200


def test_an_api_key_is_required_when_set():
    app = app_on_fakes(settings=ServeSettings(api_key="s3cret"))
    with live_app(app) as (url, _), httpx.Client(base_url=url) as http:
        with pytest.raises(openai.AuthenticationError):
            client_of(url, key="wrong").chat.completions.create(model="m", messages=CHAT["messages"])
        missing = http.post("/v1/chat/completions", json=CHAT)
        models = http.get("/v1/models")
        reply = client_of(url, key="s3cret").chat.completions.create(model="m", messages=CHAT["messages"])
        health = http.get("/health")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert models.status_code == 401
    assert reply.choices[0].message.content and health.status_code == 200


def test_a_non_loopback_address_needs_a_key_or_allow_no_key(capsys):
    for host in ("127.0.0.1", "::1", "localhost"):
        check_listen(host, None, False)
    check_listen("0.0.0.0", "key", False)
    check_listen("0.0.0.0", None, True)
    assert main(["serve", "--host", "0.0.0.0", "--base-url", "http://127.0.0.1:9",
                 "--draft-url", "http://127.0.0.1:9"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_a_body_over_the_limit_is_a_413():
    app = app_on_fakes(settings=ServeSettings(max_body_bytes=1000))
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
    with TestClient(app) as http:
        sized = http.post("/v1/chat/completions", json=big)
        chunked = http.post("/v1/chat/completions", content=iter([json.dumps(big).encode()]),
                            headers={"Content-Type": "application/json"})
        fine = http.post("/v1/chat/completions", json=CHAT)
    assert sized.status_code == 413 and "1000 bytes" in sized.json()["error"]["message"]
    assert chunked.status_code == 413
    assert fine.status_code == 200


def test_serve_dry_run_prints_the_local_servers_and_starts_nothing(capsys):
    assert main(["serve", "--dry-run", "--port", "8123", "--base-url", "http://127.0.0.1:9"]) == 0
    out = capsys.readouterr().out
    assert "would serve http://127.0.0.1:8123/v1" in out and "sglang.launch_server" in out
    assert "base: http://127.0.0.1:9 (given" in out
