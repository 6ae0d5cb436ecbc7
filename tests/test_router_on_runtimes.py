"""SGLang's router in front of a real SGLang CPU worker (SmolLM2-135M): a run's requests go
through the router's URL, token counts and the judge's likelihood reads work there, and an abort
reaches the worker that runs the request: its log shows it."""

import time

import pytest

from sgl_specreason.backend import Endpoint
from sgl_specreason.calls import Role, call, start
from sgl_specreason.programs import draft_steps
from sgl_specreason.router import RouterSpec
from sgl_specreason.runtime import LocalServer, free_port
from sgl_specreason.templates import template_for_model
from sgl_specreason.trace import BASE, DRAFT
from apples import solve

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def routed(servers, tmp_path_factory):
    """The session's two workers, each behind a router of its own: {role: (Role, worker)}."""
    log_dir = tmp_path_factory.mktemp("routers")
    fronts, out = [], {}
    try:
        for role, worker in servers.items():
            front = LocalServer(RouterSpec((worker.url,), free_port(), role, "cache_aware", log_dir=log_dir))
            fronts.append(front)
            front.start()
            front.wait_ready(timeout=120)
            backend = Endpoint(front.url, role=role, timeout=300)
            out[role] = (Role(role, backend, template_for_model(backend.model_path)), worker)
        yield out
    finally:
        for front in fronts:
            front.stop()


def aborts_in(server):
    return server.log_path.read_text(errors="replace").count("POST /abort_request")


def test_a_run_goes_through_the_routers_with_the_judges_likelihood_reads(routed):
    roles = {role: role_ for role, (role_, _) in routed.items()}
    result = solve(roles, score_method="likelihood-numbers", threshold=6)
    assert result.error is None and result.steps
    judged = [s for s in result.steps if s.score is not None]
    assert judged and all(0 <= s.score <= 10 for s in judged)
    assert roles[BASE].backend.tokenize(["2 + 3"]) == roles[BASE].backend.tokenize_on_runtime(["2 + 3"])


def test_an_abort_through_the_router_reaches_the_worker_that_runs_the_request(routed):
    role, worker = routed[DRAFT]
    before = aborts_in(worker)
    pending = start(lambda cancel=None: call(draft_steps, role.backend, prompt="1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
                                             num_drafts=1, max_step_tokens=300, temp=0.0, top_p_=1.0, stops=[],
                                             cancel=cancel))
    time.sleep(2.0)  # under way on the worker
    [(text, meta)] = pending.cancel()
    assert meta["finish_reason"]["type"] == "abort" and meta["completion_tokens"] < 300
    deadline = time.monotonic() + 10
    while aborts_in(worker) <= before:
        assert time.monotonic() < deadline, "no abort in the worker's log"
        time.sleep(0.2)
