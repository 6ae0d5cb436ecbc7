"""SGLang's real router (``sglang_router.launch_router``) in front of scripted HTTP workers
(``http_runtime``): requests, token counts and aborts go through the router's URL and reach the
worker that runs the request, a dead worker is routed around with nothing lost, and a router
that is down gets the same error as a runtime that is down. The same with real SGLang workers:
``eval/reports/router`` and ``test_router_on_runtimes``."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from http_runtime import HttpRuntime
from sgl_specreason.backend import Endpoint
from sgl_specreason.errors import RuntimeUnavailableError
from sgl_specreason.router import RouterSpec
from sgl_specreason.runtime import LocalServer, free_port

pytestmark = pytest.mark.timeout(120)


def router_for(workers, tmp_path, policy="round_robin"):
    spec = RouterSpec(tuple(w.url for w in workers), free_port(), "base", policy, log_dir=tmp_path)
    front = LocalServer(spec)
    front.start()
    try:
        front.wait_ready(timeout=60)
    except BaseException:
        front.stop()
        raise
    return front


def test_requests_token_counts_and_aborts_go_through_the_router_to_the_workers(tmp_path):
    with HttpRuntime() as a, HttpRuntime() as b:
        front = router_for([a, b], tmp_path)
        try:
            endpoint = Endpoint(front.url, role="base", timeout=30, tokenizer="runtime")
            assert endpoint.model_path == a.model_path
            assert sorted(endpoint.workers()) == sorted([a.url, b.url])
            assert endpoint.tokenize_on_runtime(["hi"]) == [[ord("h"), ord("i")]]  # a worker's /tokenize
            endpoint.abort("run-7")  # the router does not forward aborts: every worker is asked
            assert {"rid": "run-7"} in a.paths("/abort_request") and {"rid": "run-7"} in b.paths("/abort_request")
            endpoint.flush_cache()
            assert a.paths("/flush_cache") and b.paths("/flush_cache")
        finally:
            front.stop()


def test_a_dead_worker_is_routed_around_and_nothing_is_lost(tmp_path):
    slow = lambda payload: 0.2  # noqa: E731 - each request takes 0.2 s, so that some are in flight
    with HttpRuntime(reply=slow) as live:
        dying = HttpRuntime(reply=slow)
        front = router_for([live, dying], tmp_path)
        try:
            endpoint = Endpoint(front.url, role="base", timeout=30, retries=3)
            killed = threading.Event()

            def one(i):
                if i == 8:  # half-way through the batch
                    dying.__exit__(None, None, None)
                    killed.set()
                return endpoint.request("/generate", {"text": f"q{i}", "sampling_params": {"max_new_tokens": 2}})

            with ThreadPoolExecutor(4) as pool:
                replies = list(pool.map(one, range(24)))
            assert killed.is_set() and len(replies) == 24 and all(r["text"] == "ok" for r in replies)
            served = len(live.paths("/generate"))
            after = [endpoint.request("/generate", {"text": f"late{i}", "sampling_params": {}}) for i in range(6)]
            assert all(r["text"] == "ok" for r in after)
            assert len(live.paths("/generate")) == served + 6  # the live worker took every later request
        finally:
            front.stop()


def test_a_router_that_is_down_gets_the_error_a_runtime_that_is_down_gets(tmp_path):
    with HttpRuntime() as worker:
        front = router_for([worker], tmp_path)
        url = front.url
        front.stop()
    errors = []
    for target in (url, f"http://127.0.0.1:{free_port()}"):
        with pytest.raises(RuntimeUnavailableError) as caught:
            Endpoint(target, role="base", timeout=5, connect_timeout=2, retries=0)
        errors.append(str(caught.value).replace(target, "URL"))
    assert errors[0] == errors[1] and "Is the server running and the URL right?" in errors[0]


def test_two_routers_run_side_by_side_on_one_host(tmp_path):
    # one router per role on one host: each must bind its own metrics port, or the second exits
    with HttpRuntime() as a, HttpRuntime() as b:
        fronts = [router_for([a], tmp_path), router_for([b], tmp_path)]
        try:
            assert [Endpoint(f.url, role="base", timeout=30).workers() for f in fronts] == [[a.url], [b.url]]
        finally:
            for front in fronts:
                front.stop()
