"""``serve``'s OpenAI Files and Batch APIs (issue 33, part 2) on fake runtimes and scripted
solvers: the unchanged ``openai`` client end to end, cancel, a restart on the same --data-dir
that resumes a batch with no line lost or written twice, live requests first, the API key,
size limits, and 404s in OpenAI's shape. Waits are on events, never sleeps."""

import json
import threading

import openai
import pytest
from fastapi.testclient import TestClient

from live_app import live_app
from sgl_specreason.serve import ServeSettings, create_app
from sgl_specreason.trace import DRAFT, Call, ProblemResult, Step
from test_serve import CFG, QUESTION, app_on_fakes, client_of

pytestmark = pytest.mark.timeout(60)

DONE = ("completed", "failed", "expired", "cancelled")


def chat_line(custom_id, content=QUESTION, **body):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "specreason", "messages": [{"role": "user", "content": content}], **body}})


def settings(tmp_path, **more):
    return ServeSettings(data_dir=tmp_path / "data", **more)


def ended(app, batch_id, timeout=30):
    assert app.state.batches.wait(batch_id, lambda b: b["status"] in DONE, timeout), "the batch did not end"


class Scripted:
    """A solver that answers "<question> done" and records the questions it was asked, in order;
    a question in ``hold`` waits for ``release`` (and says so on ``entered``)."""

    def __init__(self, hold=()):
        self.hold, self.asked = set(hold), []
        self.release, self.entered = threading.Event(), threading.Semaphore(0)

    def __call__(self, job, on_step, scope):
        question = job.conversation.question
        self.asked.append(question)
        if question in self.hold:
            self.entered.release()
            assert self.release.wait(30)
        step = Step(0, DRAFT, f"{question} done", 3, score=9.0, calls=[Call(DRAFT, "draft", 10, 4, 3, 0.1)])
        on_step(step)
        return ProblemResult(job.id, "", "specreason", text=step.text, steps=[step], stop_reason="finished")


def upload(http, lines):
    content = ("\n".join(lines) + "\n").encode()
    reply = http.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert reply.status_code == 200, reply.text
    return reply.json()["id"]


def create(http, file_id):
    reply = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                           "completion_window": "24h"})
    assert reply.status_code == 200, reply.text
    return reply.json()["id"]


def test_the_openai_client_runs_a_batch_end_to_end(tmp_path):
    lines = [chat_line(f"r{i}") for i in range(4)] + [chat_line("bad", seed=1), "not json"]
    app = app_on_fakes(settings=settings(tmp_path))
    with live_app(app) as (url, _):
        client = client_of(url)
        uploaded = client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes == len("\n".join(lines))
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata={"job": "t"})
        assert batch.status == "validating" and batch.metadata == {"job": "t"}
        ended(app, batch.id)
        batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed"
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (6, 4, 2)
        output = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
        assert sorted(x["custom_id"] for x in output) == ["r0", "r1", "r2", "r3"]
        reply = output[0]["response"]["body"]
        assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"].endswith("\\boxed{5}")
        assert {x["custom_id"] for x in errors} == {"bad", None}
        assert any("body.seed" in x["error"]["message"] for x in errors)
        assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
        assert batch.id in [b.id for b in client.batches.list()]
        assert client.files.delete(uploaded.id).deleted
        with pytest.raises(openai.NotFoundError) as e:
            client.files.retrieve(uploaded.id)
        assert e.value.body["code"] == "file_not_found"


def test_cancel_aborts_the_lines_in_flight_and_keeps_what_was_answered(tmp_path):
    solver = Scripted(hold={"q1"})
    app = create_app(None, CFG, settings(tmp_path, max_in_flight=2), solver=solver)
    with live_app(app) as (url, _):
        client = client_of(url)
        file_id = client.files.create(file=("in.jsonl", "\n".join(
            chat_line(f"r{i}", f"q{i}") for i in range(4)).encode()), purpose="batch").id
        batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        assert solver.entered.acquire(timeout=30)  # q0 answered, q1 in flight
        assert client.batches.cancel(batch.id).status == "cancelling"
        ended(app, batch.id)
        solver.release.set()
        batch = client.batches.retrieve(batch.id)
        assert batch.status == "cancelled" and batch.cancelled_at
        assert batch.request_counts.completed == 1 and batch.error_file_id is None
        assert [json.loads(x)["custom_id"] for x in client.files.content(batch.output_file_id).text.splitlines()] == ["r0"]
        with pytest.raises(openai.APIStatusError) as e:
            client.batches.cancel(batch.id)
        assert e.value.status_code == 409


def test_a_restart_on_the_same_data_dir_resumes_with_no_line_lost_or_written_twice(tmp_path):
    lines = [chat_line(f"r{i}", f"q{i}") for i in range(6)] + ["{torn"]
    first = Scripted(hold={"q2"})
    app = create_app(None, CFG, settings(tmp_path, max_in_flight=2), solver=first)
    with TestClient(app) as http:
        batch_id = create(http, upload(http, lines))
        assert first.entered.acquire(timeout=30)  # q0, q1 and the bad line written; q2 in flight
        assert app.state.batches.wait(batch_id, lambda b: b["request_counts"]["completed"] == 2, 30)
    # the app stopped mid-batch, q2 in flight; the worker it left is let go only now
    first.release.set()
    out = tmp_path / "data" / "batches" / batch_id / "output.jsonl"
    with open(out, "a") as handle:  # a kill mid-write leaves a torn line
        handle.write('{"id": "batch_req_x", "custom_id": "r')
    second = Scripted()
    app = create_app(None, CFG, settings(tmp_path, max_in_flight=2), solver=second)
    with TestClient(app) as http:
        ended(app, batch_id)
        batch = http.get(f"/v1/batches/{batch_id}").json()
        output = [json.loads(x) for x in http.get(f"/v1/files/{batch['output_file_id']}/content").text.splitlines()]
        errors = http.get(f"/v1/files/{batch['error_file_id']}/content").text.splitlines()
    assert batch["status"] == "completed" and batch["request_counts"] == {"total": 7, "completed": 6, "failed": 1}
    assert sorted(x["custom_id"] for x in output) == [f"r{i}" for i in range(6)]  # each once
    assert len({x["id"] for x in output}) == 6 and len(errors) == 1
    assert second.asked == ["q2", "q3", "q4", "q5"]  # the one in flight at the stop ran again; no other


def test_live_requests_go_first_and_keep_slots_of_their_own(tmp_path):
    solver = Scripted(hold={"q0"})
    app = create_app(None, CFG, settings(tmp_path, max_in_flight=2, batch_slots=1), solver=solver)
    with TestClient(app) as http:
        batch_id = create(http, upload(http, [chat_line(f"r{i}", f"q{i}") for i in range(3)]))
        assert solver.entered.acquire(timeout=30)  # the batch holds its one slot
        live = http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "live"}]})
        assert live.status_code == 200  # the other slot is the live requests'
        solver.release.set()
        ended(app, batch_id)
    assert solver.asked == ["q0", "live", "q1", "q2"]


def test_errors_in_openai_shape_limits_and_the_api_key(tmp_path):
    app = create_app(None, CFG, settings(tmp_path, api_key="k", max_file_bytes=200), solver=Scripted())
    with TestClient(app, headers={"Authorization": "Bearer k"}) as http:
        assert TestClient(app).get("/v1/batches").status_code == 401
        for path in ("/v1/files/file-nope", "/v1/files/file-nope/content", "/v1/batches/batch_nope"):
            reply = http.get(path)
            assert reply.status_code == 404 and reply.json()["error"]["type"] == "not_found_error", path
        assert "No file found with id 'file-nope'" in http.delete("/v1/files/file-nope").json()["error"]["message"]
        too_big = http.post("/v1/files", files={"file": ("in.jsonl", b"x" * 300)}, data={"purpose": "batch"})
        assert too_big.status_code == 413 and "--max-file-bytes" in too_big.json()["error"]["message"]
        wrong = http.post("/v1/files", files={"file": ("in.jsonl", b"{}")}, data={"purpose": "fine-tune"})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "purpose"
        file_id = upload(http, [json.dumps({"id": "p", "prompt": "Hi"})])
        reply = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/embeddings",
                                               "completion_window": "24h"})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "endpoint"
        batch_id = create(http, file_id)  # a file of problems, not requests: the batch fails
        ended(app, batch_id)
        batch = http.get(f"/v1/batches/{batch_id}").json()
        assert batch["status"] == "failed" and "not OpenAI Batch requests" in batch["errors"]["data"][0]["message"]
    off = create_app(None, CFG, ServeSettings(), solver=Scripted())
    with TestClient(off) as http:
        reply = http.get("/v1/batches")
        assert reply.status_code == 404 and "--data-dir" in reply.json()["error"]["message"]


def test_answering_a_line_writes_no_batch_state_the_counts_are_kept_in_memory(tmp_path, monkeypatch):
    """batch.json is written at the batch's status changes, as many times for 2 lines as for 8;
    the counts each answered line moves are read from memory, and a restart counts them again
    from the output files (the restart test above)."""
    import sgl_specreason.serve.batches as batches

    writes = []
    real = batches.write_json
    monkeypatch.setattr(batches, "write_json", lambda path, value: (writes.append(path.name), real(path, value)))
    seen = {}
    for n in (2, 8):
        writes.clear()
        app = create_app(None, CFG, settings(tmp_path / str(n)), solver=Scripted())
        with TestClient(app) as http:
            batch_id = create(http, upload(http, [chat_line(f"r{i}", f"q{i}") for i in range(n)]))
            ended(app, batch_id)
            batch = http.get(f"/v1/batches/{batch_id}").json()
        assert batch["status"] == "completed" and batch["request_counts"] == {"total": n, "completed": n, "failed": 0}
        seen[n] = writes.count("batch.json")
    assert seen[2] == seen[8] > 0
