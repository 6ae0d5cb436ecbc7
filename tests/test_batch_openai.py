"""``sgl-specreason batch`` on OpenAI Batch lines (issue 33, part 1): each body answered as
``serve`` answers it, one OpenAI output line per request, every kind of bad line named and
answered with an error line, the file's format told from its first good line, resumable by
``custom_id``, and no web server imported. The real programs on scripted fake runtimes."""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fake_runtime import fake_roles
from sgl_specreason import openai_batch, runner
from sgl_specreason.cli import main
from sgl_specreason.errors import RuntimeServerError
from sgl_specreason.openai_batch import answer_file
from sgl_specreason.store import ResultStore
from test_serve import CFG, QUESTION, app_on_fakes, fakes

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "specreason", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 200}
COMPLETION = {"model": "specreason", "prompt": "Count: 1, 2,", "max_tokens": 12}


def line(custom_id, url="/v1/chat/completions", body=CHAT, **more):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body, **more})


GOOD = [line("chat-1"), line("cmpl-1", "/v1/completions", COMPLETION), line("chat-2")]
BAD = {
    "not JSON": '{"custom_id": "torn", "url": ',
    "no custom_id": json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": CHAT}),
    "duplicate custom_id": line("chat-1"),
    "unknown url": line("emb-1", "/v1/embeddings", {"model": "m", "input": "x"}),
    "stream": line("stream-1", body={**CHAT, "stream": True}),
    "refused field": line("seed-1", body={**CHAT, "seed": 7}),
    "unknown field": line("typo-1", body={**CHAT, "temprature": 0.5}),
    "another format": json.dumps({"id": "p", "prompt": "Write a haiku."}),
}
#: what each bad line's error says, and the custom_id its error line carries
SAYS = {"not JSON": ("not JSON", None), "no custom_id": ("custom_id: every line needs one", None),
        "duplicate custom_id": ("duplicate custom_id 'chat-1' (first on line 1)", "chat-1"),
        "unknown url": ("'/v1/embeddings' is not an endpoint", "emb-1"),
        "stream": ("stream: a batch line is answered whole", "stream-1"),
        "refused field": ("body.seed: per-request seeds", "seed-1"),
        "unknown field": ("body.temprature: unknown or unsupported field", "typo-1"),
        "another format": ("a line in the problems format; this file is in the openai-batch format", None)}


def write_input(tmp_path, lines):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def answer(path, out, roles=None, log=lambda text: None, parallel=2):
    roles = roles or fake_roles(*fakes())
    return answer_file(path.read_bytes(), str(path), ResultStore(out, log=log), roles, CFG, "specreason",
                       parallel=parallel, log=log)


def records(out):
    return [json.loads(x) for x in out.read_text().splitlines()]


def test_good_lines_are_answered_as_serve_answers_and_every_bad_line_gets_a_named_error_line(tmp_path):
    path = write_input(tmp_path, GOOD[:2] + list(BAD.values()) + GOOD[2:])
    said = []
    # one line at a time, in the order the live requests below are sent: the fake runtimes keep
    # a prefix cache, and with chat-2 (the same conversation) running beside chat-1, chat-1's
    # cached tokens depended on which went first (now and then 215 against the live reply's 0)
    counts = answer(path, tmp_path / "out.jsonl", log=said.append, parallel=1)
    assert counts == {"answered": 3, "failed": 0, "bad": len(BAD), "done_before": 0}
    lines = records(tmp_path / "out.jsonl")
    assert len(lines) == 3 + len(BAD)
    assert all(set(x) == {"id", "custom_id", "response", "error"} for x in lines)  # one shape for all
    answered = {x["custom_id"]: x for x in lines if x["error"] is None}
    assert set(answered) == {"chat-1", "cmpl-1", "chat-2"}
    # the body is the one serve gives the same request, but for its ids, times and wall clock
    with TestClient(app_on_fakes()) as http:
        live = {"chat-1": http.post("/v1/chat/completions", json=CHAT).json(),
                "cmpl-1": http.post("/v1/completions", json=COMPLETION).json()}
    for custom_id, reply in live.items():
        response = answered[custom_id]["response"]
        assert response["status_code"] == 200 and response["request_id"] == response["body"]["id"]
        for key in ("object", "model", "choices", "usage"):
            assert response["body"][key] == reply[key], (custom_id, key)
    errors = [x for x in lines if x["error"] is not None]
    assert len(errors) == len(BAD)
    for kind, (text, custom_id) in SAYS.items():
        [hit] = [x for x in errors if text in x["error"]["message"]]
        assert hit["custom_id"] == custom_id, kind
        assert hit["response"]["status_code"] == 400 and hit["response"]["body"]["error"]["message"] == hit["error"]["message"]
        assert f"{path}:" in hit["error"]["message"]  # the line is named
    assert sum("bad input:" in x for x in said) == len(BAD)  # each reported too


def test_a_rerun_answers_only_what_the_output_lacks_and_writes_no_line_twice(tmp_path):
    path = write_input(tmp_path, GOOD + [BAD["stream"]])
    out = tmp_path / "out.jsonl"
    answer(path, out)
    first = records(out)
    # a killed run: the last answer lost, and a torn line where it was being written
    kept = [x for x in first if x["custom_id"] != "chat-2"]
    out.write_text("".join(json.dumps(x) + "\n" for x in kept) + '{"id": "batch_req_x", "custom_')
    draft, base = fakes()
    counts = answer(path, out, fake_roles(draft, base))
    assert counts == {"answered": 1, "failed": 0, "bad": 1, "done_before": 2}
    again = records(out)
    assert [x["custom_id"] for x in again] == [x["custom_id"] for x in kept] + ["chat-2"]
    assert sum(x["custom_id"] == "stream-1" for x in again) == 1  # the bad line's error is not repeated
    assert {QUESTION in r.prompt for r in draft.requests if r.kind == "step"} == {True}  # chat-2 alone ran
    assert answer(path, out)["done_before"] == 3 and records(out) == again  # nothing left: nothing written


def test_a_run_that_fails_gets_its_error_line_and_the_others_go_on(tmp_path, monkeypatch):
    class FailingSolver(openai_batch.ProgramSolver):
        """The base runtime answers HTTP 500 to the completion."""

        def __call__(self, job, on_step, scope):
            if not job.is_chat:
                raise RuntimeServerError("the base runtime answered HTTP 500")
            return super().__call__(job, on_step, scope)

    monkeypatch.setattr(openai_batch, "ProgramSolver", FailingSolver)
    counts = answer(write_input(tmp_path, GOOD), tmp_path / "out.jsonl")
    assert counts == {"answered": 2, "failed": 1, "bad": 0, "done_before": 0}
    [failed] = [x for x in records(tmp_path / "out.jsonl") if x["error"]]
    assert failed["custom_id"] == "cmpl-1" and failed["response"]["status_code"] == 502
    assert failed["error"]["code"] == "runtime_error"


def test_the_command_tells_openai_lines_from_problems_and_exits_1_on_bad_lines(tmp_path, monkeypatch, capsys):
    @contextlib.contextmanager
    def open_fakes(opts, cfg, roles, log=print):
        yield fake_roles(*fakes())

    monkeypatch.setattr(runner, "open_runtimes", open_fakes)
    path = write_input(tmp_path, GOOD + [BAD["unknown url"]])
    out = tmp_path / "out.jsonl"
    argv = ["batch", "--input", str(path), "--output", str(out), "--base-url", "fake", "--draft-url", "fake",
            "--step-max-tokens", "40", "--token-budget", "400"]
    assert main(argv) == 1
    assert "3 answered, 0 failed, 1 bad input lines" in capsys.readouterr().out
    assert len(records(out)) == 4
    assert main(argv + ["--on-bad-line", "reject"]) == 2  # refused before any run
    assert "in.jsonl:4: url: '/v1/embeddings'" in capsys.readouterr().err
    assert len(records(out)) == 4


NO_WEB_SERVER = """
import sys
from pathlib import Path
from fake_runtime import FakeRuntime, fake_roles
import sgl_specreason.cli
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.openai_batch import answer_file
from sgl_specreason.store import ResultStore

path, out = Path(sys.argv[1]), Path(sys.argv[2])
roles = fake_roles(*(FakeRuntime(role, lambda steps, fork: "so \\\\boxed{4}") for role in ("draft", "base")))
counts = answer_file(path.read_bytes(), str(path), ResultStore(out), roles, SpecReasonConfig(step_max_tokens=40),
                     "specreason", parallel=1, log=lambda text: None)
assert counts["answered"] == 1, counts
print(sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "uvicorn") or m == "sgl_specreason.serve.app"))
"""


def test_batch_imports_no_web_server(tmp_path):
    path = write_input(tmp_path, GOOD[:1])
    proc = subprocess.run([sys.executable, "-c", NO_WEB_SERVER, str(path), str(tmp_path / "out.jsonl")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
