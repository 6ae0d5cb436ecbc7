"""``serve`` keeps the thinking apart from the answer (issue 31, parts 2 and 4): on fake runtimes
that write like a reasoning model (``<think>`` ... ``</think>``, then the base model's answer) or
like a chat model, under each model's own chat template: ``reasoning_content`` and ``content``,
whole and streamed, ``reasoning_tokens``, the log-probabilities of both, one ``content`` when
asked, the framing and the template arguments a request sets, and the roles a template refuses."""

import json

import pytest
from fastapi.testclient import TestClient

from fake_runtime import END, OneStepRuntime, script
from own_templates import Retemplated, offline_template, offline_tokenizer, r1_template
from sgl_specreason.calls import Role
from sgl_specreason.cli import build_parser
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.rendering import OwnTemplate
from sgl_specreason.serve import ServeSettings, create_app
from sgl_specreason.serve.command import serve_config
from sgl_specreason.trace import BASE, DRAFT

pytestmark = pytest.mark.timeout(120)

CFG = SpecReasonConfig(token_budget=400, step_max_tokens=60, answer_max_tokens=40, seed=0, framing="plain")
BASE_ANSWER = "The base model says: 4."
THOUGHTS = script("<think>I add 2 and 2.", "That makes 4.", "Sure.\n</think>\nThe draft says: 4.")
CHAT = {"model": "specreason", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}

#: a ChatML template that refuses a system message and opens thinking when asked to
#: (Qwen3's ``enable_thinking``, the other way round)
STRICT = ("{%- for m in messages -%}"
          "{%- if m['role'] == 'system' -%}{{ raise_exception('System role not supported') }}{%- endif -%}"
          "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{%- endfor -%}"
          "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}"
          "{%- if enable_thinking is defined and enable_thinking -%}{{ '<think>\\n' }}{%- endif -%}{%- endif -%}")


def app_of(template, draft_script, settings=ServeSettings(), cfg=CFG):
    draft = OneStepRuntime(DRAFT, draft_script, model_path="/models/fake-draft")
    base = OneStepRuntime(BASE, script("base writes."), answer=BASE_ANSWER, model_path="/models/fake-base")
    roles = {DRAFT: Role(DRAFT, draft, template), BASE: Role(BASE, base, template)}
    return create_app(roles, cfg, settings), draft, base


def streamed(http, body):
    events = [e[len("data: "):] for e in http.post("/v1/chat/completions", json={**body, "stream": True}).text
              .split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def joined(chunks, field):
    return "".join(c["choices"][0]["delta"].get(field) or "" for c in chunks if c["choices"])


def test_a_reasoning_models_thinking_is_reasoning_content_and_the_base_models_answer_is_content():
    app, draft, base = app_of(r1_template(), THOUGHTS)
    with TestClient(app) as http:
        reply = http.post("/v1/chat/completions", json=CHAT).json()
        chunks = streamed(http, CHAT)
    message = reply["choices"][0]["message"]
    assert message["reasoning_content"] == "I add 2 and 2.\n\nThat makes 4.\n\nSure."
    assert message["content"] == BASE_ANSWER
    assert reply["specreason"]["stop_reason"] == "thought"
    usage = reply["usage"]
    # the kept steps are the thinking; the closing answer is not (the fake: a character a token)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == usage["completion_tokens"] - len(BASE_ANSWER) > 0
    # streamed: the same two texts, the markers in neither, each in its own field
    assert joined(chunks, "reasoning_content") == message["reasoning_content"]
    assert joined(chunks, "content") == message["content"]
    assert not any("think>" in json.dumps(c["choices"][0]["delta"]) for c in chunks if c["choices"])
    # the closing answer is the last text: its chunk carries the end
    assert chunks[-1]["choices"][0]["delta"] == {"content": BASE_ANSWER}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_one_content_when_the_request_or_the_server_asks_for_it():
    whole = "<think>I add 2 and 2.\n\nThat makes 4.\n\nSure.\n</think>\n\n" + BASE_ANSWER
    app, *_ = app_of(r1_template(), THOUGHTS)
    with TestClient(app) as http:
        reply = http.post("/v1/chat/completions", json={**CHAT, "separate_reasoning": False}).json()
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": whole}
    app, *_ = app_of(r1_template(), THOUGHTS, ServeSettings(separate_reasoning=False))
    with TestClient(app) as http:
        assert http.post("/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]["content"] == whole
        chunks = streamed(http, CHAT)
        assert joined(chunks, "content") == whole and not joined(chunks, "reasoning_content")
        # the request's field wins over the server's flag
        again = http.post("/v1/chat/completions", json={**CHAT, "separate_reasoning": True}).json()
    assert again["choices"][0]["message"]["content"] == BASE_ANSWER


def test_a_chat_model_under_plain_has_no_reasoning_and_its_steps_are_the_reply():
    app, draft, _ = app_of(offline_template("smollm2-135m"), script("Dear Sam,", "Thanks: 4." + END))
    with TestClient(app) as http:
        reply = http.post("/v1/chat/completions", json=CHAT).json()
        chunks = streamed(http, CHAT)
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "Dear Sam,\n\nThanks: 4.",
                                              "reasoning_content": None}
    assert reply["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert reply["specreason"]["stop_reason"] == "ended"
    assert joined(chunks, "content") == "Dear Sam,\n\nThanks: 4." and not joined(chunks, "reasoning_content")
    assert "Solve the following" not in draft.requests[0].prompt


def test_logprobs_cover_the_thinking_and_the_answer_in_the_order_written():
    cfg = CFG.replace(score_method="likelihood", threshold=0)
    app, *_ = app_of(r1_template(), THOUGHTS, cfg=cfg)
    with TestClient(app) as http:
        body = {**CHAT, "logprobs": True}
        reply = http.post("/v1/chat/completions", json=body).json()
        chunks = streamed(http, body)
    tokens = "".join(t["token"] for t in reply["choices"][0]["logprobs"]["content"])
    assert tokens.startswith("<think>I add 2 and 2.") and tokens.endswith(BASE_ANSWER)
    # streamed: each chunk carries the tokens of its text, thinking or answer
    thinking = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("reasoning_content")]
    assert thinking and all(c["choices"][0]["logprobs"]["content"] for c in thinking)


def test_template_arguments_and_the_framing_come_from_the_request():
    own = OwnTemplate(Retemplated(offline_tokenizer("smollm2-135m"), STRICT), "strict")
    app, draft, _ = app_of(own, script("I add.", "4.\n</think>"))
    with TestClient(app) as http:
        body = {**CHAT, "chat_template_kwargs": {"enable_thinking": True}}
        reply = http.post("/v1/chat/completions", json=body).json()
        assert draft.requests[0].prompt.endswith("<|im_start|>assistant\n<think>\n")
        # the template opened the thinking: the reply is thinking from its first token
        assert reply["choices"][0]["message"]["reasoning_content"] == "I add.\n\n4."
        assert reply["choices"][0]["message"]["content"] == BASE_ANSWER
        draft.requests.clear()
        http.post("/v1/chat/completions", json={**CHAT, "specreason": {"framing": "paper"}})
        assert "Solve the following math problem" in draft.requests[0].prompt


def test_roles_the_template_refuses_are_a_400_naming_the_messages_before_any_run():
    own = OwnTemplate(Retemplated(offline_tokenizer("smollm2-135m"), STRICT), "strict")
    app, draft, base = app_of(own, script("Hi." + END))
    body = {**CHAT, "messages": [{"role": "system", "content": "Be brief."}, *CHAT["messages"]]}
    with TestClient(app) as http:
        reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "messages" and "refuses the conversation (roles system, user)" in error["message"]
    assert "System role not supported" in error["message"]
    assert not draft.requests and not base.requests


@pytest.mark.parametrize("field, value, param", [
    ("specreason", {"framing": "poem"}, "specreason.framing"),
    ("chat_template_kwargs", {"nested": {"a": 1}}, "chat_template_kwargs"),
    ("separate_reasoning", "yes", "separate_reasoning"),
])
def test_bad_reasoning_fields_are_named(field, value, param):
    app, *_ = app_of(offline_template("smollm2-135m"), script("Hi." + END))
    with TestClient(app) as http:
        reply = http.post("/v1/chat/completions", json={**CHAT, field: value})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param


def test_serve_frames_a_chat_as_written_unless_told_otherwise():
    urls = ["serve", "--draft-url", "http://a:1", "--base-url", "http://b:2"]
    args = build_parser().parse_args(urls)
    assert serve_config(args).framing == "plain" and args.separate_reasoning is True
    args = build_parser().parse_args(urls + ["--framing", "paper", "--no-separate-reasoning"])
    assert serve_config(args).framing == "paper" and args.separate_reasoning is False


def test_a_chat_put_as_written_is_judged_by_the_rule_measured_on_general_requests():
    from sgl_specreason.flags import LOCAL_PAIR_DEFAULTS, PLAIN_DEFAULTS

    urls = ["serve", "--draft-url", "http://a:1", "--base-url", "http://b:2"]
    plain = serve_config(build_parser().parse_args(urls))
    assert (plain.score_method, plain.threshold) == (PLAIN_DEFAULTS["score_method"], PLAIN_DEFAULTS["threshold"])
    paper = serve_config(build_parser().parse_args(urls + ["--framing", "paper"]))
    assert (paper.score_method, paper.threshold) == (SpecReasonConfig().score_method, SpecReasonConfig().threshold)
    named = serve_config(build_parser().parse_args(urls + ["--score-method", "average", "--threshold", "5"]))
    assert (named.score_method, named.threshold) == ("average", 5.0)
    local = serve_config(build_parser().parse_args(["serve"]))  # plain over the local pair's math rule
    assert (local.score_method, local.first_n_base_steps) == ("likelihood-min", 0)
    assert LOCAL_PAIR_DEFAULTS["first_n_base_steps"] == 1
    local_paper = serve_config(build_parser().parse_args(["serve", "--framing", "paper"]))
    assert (local_paper.score_method, local_paper.threshold) == ("likelihood-numbers", 9.0)
