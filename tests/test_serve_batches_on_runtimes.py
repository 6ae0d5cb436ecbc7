"""``serve``'s ``/v1/files`` and ``/v1/batches`` against two real SGLang CPU servers (SmolLM2-135M
each), through the unchanged ``openai`` client: a small batch (three lines, max_tokens 16) of a
chat, a completion-free chat with a refused field, and every line answered or refused in
OpenAI's shape. Kept small: well under a minute once the servers are up."""

import json

import openai
import pytest

from live_app import live_app
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.serve import ServeSettings, create_app

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(900)]

CFG = SpecReasonConfig(token_budget=16, step_max_tokens=16, answer_max_tokens=8, seed=0, framing="plain")


def line(custom_id, content, **body):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "sr", "messages": [{"role": "user", "content": content}],
                                "max_tokens": 16, **body}})


def test_the_openai_client_runs_a_batch_on_real_runtimes(roles, tmp_path):
    app = create_app(roles, CFG, ServeSettings(model_name="sr", data_dir=tmp_path / "data", max_in_flight=2))
    lines = [line("a", "What is 2 + 3?"), line("b", "Name a colour."), line("c", "Hi", seed=1)]
    with live_app(app, grace_s=5) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        uploaded = client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        assert app.state.batches.wait(batch.id, lambda b: b["status"] in ("completed", "failed"), 600)
        batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed", batch
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (3, 2, 1)
        output = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in output) == ["a", "b"]
    for record in output:
        body = record["response"]["body"]
        assert record["response"]["status_code"] == 200 and body["object"] == "chat.completion"
        assert body["usage"]["completion_tokens"] <= 16 and body["choices"][0]["message"]["content"]
    [refused] = errors
    assert refused["custom_id"] == "c" and refused["response"]["status_code"] == 400
    assert "seed" in refused["error"]["message"]
