"""``sgl-specreason serve`` against two real SGLang CPU servers (SmolLM2-135M each), through the
official ``openai`` client: completions plain and streamed, each error case, the API key, a
client that goes away (the runtime's log shows the abort), and SIGTERM of a ``serve`` process
that started its own runtimes (none is left behind)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import psutil
import pytest

from sgl_specreason.backend import Endpoint
from sgl_specreason.calls import Role
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.runtime import free_port
from sgl_specreason.serve import ServeSettings, create_app
from sgl_specreason.trace import BASE, DRAFT
from apples import QUESTION
from faultproxy import FaultProxy
from live_app import live_app

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(900)]

CFG = SpecReasonConfig(score_method="likelihood-numbers", threshold=6, token_budget=40, step_max_tokens=16,
                       answer_max_tokens=8, seed=0)
MESSAGES = [{"role": "user", "content": QUESTION}]
#: a prompt the models continue for a long time without a blank line: every step runs to its limit
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


def client(url, key="none"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def served(roles):
    app = create_app(roles, CFG)
    with live_app(app, grace_s=5) as (url, _server):
        yield url, app


def test_a_chat_completion(served):
    url, _ = served
    reply = client(url).chat.completions.create(model="specreason", messages=MESSAGES,
                                                extra_body={"specreason": {"trace": True}})
    message = reply.choices[0].message
    ext = reply.model_extra["specreason"]
    steps = ext["trace"]["steps"]
    # the paper's prompt opens thinking: the kept steps are the reasoning, the closing answer
    # (if one was asked) the content, as SGLang's reasoning parser splits them
    thinking = message.model_extra["reasoning_content"]
    assert steps and thinking.split() == "\n\n".join(step["text"] for step in steps).split()
    assert reply.choices[0].finish_reason in ("stop", "length")
    answer = ext["trace"]["answer_call"]
    assert bool(message.content) == bool(answer)
    assert reply.usage.completion_tokens == sum(s["kept_tokens"] for s in steps) + (
        answer["completion_tokens"] if answer else 0)
    assert reply.usage.prompt_tokens > 20  # the conversation, as the first call read it
    assert ext["steps"]["drafted"] == ext["steps"]["kept"] + ext["steps"]["rewritten"] == len(steps)
    assert ext["judge"] == "likelihood-numbers" and ext["judge_calls"] == len(steps)
    assert ext["tokens"][DRAFT]["generated"] > 0 and ext["tokens"][BASE]["prompt"] > 0
    # the same conversation again: its prompt comes from the radix cache
    again = client(url).chat.completions.create(model="specreason", messages=MESSAGES, max_tokens=8)
    assert again.usage.prompt_tokens_details.cached_tokens > 0


def test_a_streamed_chat_joins_to_the_steps_of_its_trace(served):
    url, _ = served
    chunks = list(client(url).chat.completions.create(
        model="specreason", messages=MESSAGES, stream=True, extra_body={"specreason": {"trace": True}}))
    *pieces, last = chunks
    thinking = [c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in pieces]
    steps = last.model_extra["specreason"]["trace"]["steps"]
    joined = "\n\n".join(step["text"] for step in steps)
    assert "".join(thinking[:len(steps)]).split() == joined.split()  # one chunk per kept step
    assert len(pieces) in (len(steps), len(steps) + 1)  # then the closing answer, if one was asked
    assert last.choices[0].finish_reason in ("stop", "length") and last.usage.completion_tokens > 0


def test_a_completion_continues_the_prompt(served):
    url, _ = served
    reply = client(url).completions.create(model="specreason", prompt=COUNTING, max_tokens=24,
                                           extra_body={"specreason": {"trace": True}})
    steps = reply.model_extra["specreason"]["trace"]["steps"]
    assert reply.choices[0].text == "\n\n".join(step["text"] for step in steps)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens <= 24


def test_bad_requests_are_400s_and_the_server_stays_up(served):
    url, _ = served
    with httpx.Client(base_url=url, timeout=600) as http:
        broken = http.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
        missing = http.post("/v1/chat/completions", json={"model": "m"})
        wrong = http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "temperature": "hot"})
        out_of_range = http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES,
                                                                "specreason": {"threshold": 12}})
        too_long = http.post("/v1/chat/completions", json={"model": "m", "messages": [
            {"role": "user", "content": "count: " + "one two three " * 3000}]})
    assert broken.status_code == 400
    assert [r.json()["error"]["param"] for r in (missing, wrong, out_of_range)] == [
        "messages", "temperature", "specreason.threshold"]
    assert too_long.status_code == 400, too_long.text
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    assert client(url).chat.completions.create(model="m", messages=MESSAGES, max_tokens=8).choices[0].message.content


def test_a_runtime_down_is_503_and_one_that_times_out_is_504(roles):
    template = roles[BASE].template

    def hang(path, body):
        return ("hang", 8) if path == "/generate" else None

    with FaultProxy(roles[BASE].backend.base_url, hang) as slow:
        slow_base = Endpoint(slow.url, role=BASE, timeout=2, retries=0)
        app = create_app({DRAFT: roles[DRAFT], BASE: Role(BASE, slow_base, template)}, CFG)
        with live_app(app) as (url, _), pytest.raises(openai.APIStatusError) as timed_out:
            client(url).chat.completions.create(model="m", messages=MESSAGES)
    with FaultProxy(roles[DRAFT].backend.base_url, lambda path, body: None) as proxy:
        gone_draft = Endpoint(proxy.url, role=DRAFT, timeout=30, retries=0)
    app = create_app({DRAFT: Role(DRAFT, gone_draft, roles[DRAFT].template), BASE: roles[BASE]}, CFG)
    with live_app(app) as (url, _):
        with pytest.raises(openai.APIStatusError) as down:
            client(url).chat.completions.create(model="m", messages=MESSAGES)
        assert httpx.get(url + "/health", timeout=30).status_code == 503
    assert timed_out.value.status_code == 504 and "within 2 s" in timed_out.value.message
    assert down.value.status_code == 503 and "cannot reach the draft runtime" in down.value.message


def test_the_api_key_is_checked(roles):
    app = create_app(roles, CFG, ServeSettings(api_key="s3cret"))
    with live_app(app) as (url, _):
        with pytest.raises(openai.AuthenticationError):
            client(url, key="wrong").chat.completions.create(model="m", messages=MESSAGES, max_tokens=8)
        reply = client(url, key="s3cret").chat.completions.create(model="m", messages=MESSAGES, max_tokens=8)
    assert reply.choices[0].message.content


def aborts_in(log_path):
    return log_path.read_text(errors="replace").count("POST /abort_request")


def test_a_client_that_goes_away_mid_stream_has_the_runtime_work_aborted(roles, servers):
    # threshold 0 keeps every draft: the next step's draft starts as soon as one is sent
    cfg = CFG.replace(threshold=0, step_max_tokens=48, token_budget=4000)
    app = create_app(roles, cfg)
    before = {role: aborts_in(server.log_path) for role, server in servers.items()}
    with live_app(app) as (url, _):
        with httpx.Client(timeout=600) as http:
            with http.stream("POST", url + "/v1/completions", json={
                    "model": "m", "prompt": COUNTING, "max_tokens": 4000, "stream": True}) as reply:
                # kept until the client leaves: a dropped iterator closes the connection at once
                lines = reply.iter_lines()
                first = next(line for line in lines if line.startswith("data: "))
                assert json.loads(first[6:])["choices"][0]["text"]
                time.sleep(1.0)  # the next step is being drafted
        gone = time.monotonic()
        wait_until(lambda: not app.state.service.runs, 30, "the run to end")
        assert time.monotonic() - gone < 15, "the run went on without its client"
    wait_until(lambda: sum(aborts_in(s.log_path) - before[r] for r, s in servers.items()) >= 1, 10,
               "an abort in a runtime's log")


def running(process):
    """Alive and not a zombie (an orphan's exit status waits for whoever adopts it)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigterm_during_requests_leaves_no_runtime_behind(smol_path, tmp_path):
    port = free_port()
    out = open(tmp_path / "serve.log", "w")
    cmd = [sys.executable, "-m", "sgl_specreason.cli", "serve", "--port", str(port),
           "--draft-model", smol_path, "--base-model", smol_path, "--device", "cpu", "--threads", "1",
           "--max-total-tokens", "8192", "--log-dir", str(tmp_path / "logs"), "--grace-seconds", "3",
           "--score-method", "likelihood-numbers", "--threshold", "0", "--step-max-tokens", "48",
           "--token-budget", "4000", "--seed", "0"]
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(url + "/health", timeout=30).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 600, "serve and its local runtimes")
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 2  # the two runtimes (and their workers)
        replies = []

        def ask():
            try:
                replies.append(httpx.post(url + "/v1/completions", timeout=120, json={
                    "model": "m", "prompt": COUNTING, "max_tokens": 4000}).status_code)
            except httpx.HTTPError as e:
                replies.append(type(e).__name__)

        asking = [threading.Thread(target=ask) for _ in range(2)]
        for thread in asking:
            thread.start()
        wait_until(lambda: httpx.get(url + "/health", timeout=30).json()["in_flight"] == 2, 60, "two runs")
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        proc.wait(timeout=120)
        for thread in asking:
            thread.join(60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        out.close()
    log = (tmp_path / "serve.log").read_text()
    assert proc.returncode == 143, log[-3000:]
    assert time.monotonic() - stopped < 60
    wait_until(lambda: not [p for p in tree if running(p)], 30, "the runtimes to end")
    assert len(replies) == 2  # each request was answered or its connection closed, none hangs
