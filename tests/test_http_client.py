"""``Endpoint``'s HTTP client against an in-process stand-in runtime (``http_runtime``) and the
fault proxy: pooled keep-alive connections, a deadline on every path (streaming included),
retries only where safe with a fresh request id, the same clear errors. No model, seconds."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from sglang.lang.ir import SglSamplingParams

from faultproxy import FaultProxy
from http_runtime import HttpRuntime
from sgl_specreason.backend import Endpoint
from sgl_specreason.calls import CancelScope, Cancelled
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.dropin import SpecReasonBackend
from sgl_specreason.errors import (
    PromptTooLongError,
    RuntimeCallError,
    RuntimeServerError,
    RuntimeTimeoutError,
    RuntimeUnavailableError,
)

pytestmark = pytest.mark.timeout(60)


def state(text="Q: 1 + 1?", cancel=None):
    """What a backend reads of a program's state."""
    return SimpleNamespace(text_=text, images_=[], arguments={} if cancel is None else {"cancel": cancel})


def params(**kw):
    return SglSamplingParams(**{"max_new_tokens": 16, **kw})


def test_requests_reuse_keep_alive_connections_and_threads_share_the_pool():
    with HttpRuntime() as runtime:
        endpoint = Endpoint(runtime.url, role="draft")
        for _ in range(20):
            assert endpoint.generate(state(), params())[0] == "ok"
        endpoint.tokenize_on_runtime(["a"])
        endpoint.flush_cache()
        assert endpoint.health()
        assert runtime.connections == 1  # model info, 20 generates, tokenize, flush, health: one connection
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: endpoint.generate(state(), params()), range(80)))
        assert runtime.connections <= 8


def test_the_pool_bounds_the_connections_and_requests_wait_for_a_free_one():
    with HttpRuntime(reply=lambda payload: 0.2) as runtime:
        endpoint = Endpoint(runtime.url, role="base", connections=2)
        with ThreadPoolExecutor(6) as pool:
            texts = list(pool.map(lambda _: endpoint.generate(state(), params())[0], range(6)))
        assert texts == ["ok"] * 6 and runtime.peak <= 2 and runtime.connections <= 2


def test_a_refused_connection_is_tried_again_by_the_transport():
    runtime = HttpRuntime(listen=False)  # the port is bound, nothing accepts yet
    with runtime:
        threading.Timer(0.2, runtime.listen).start()
        started = time.monotonic()
        endpoint = Endpoint(runtime.url, role="draft", retries=3)  # tries at 0, 0, 0.5, 1.5 s
        assert endpoint.model_path and time.monotonic() - started < 5
    runtime = HttpRuntime(listen=False)
    with runtime, pytest.raises(RuntimeUnavailableError, match=r"cannot reach the base runtime at .*\(tried 3 times\)"):
        Endpoint(runtime.url, role="base", retries=2)
    with runtime, pytest.raises(RuntimeUnavailableError) as info:
        Endpoint(runtime.url, role="base", retries=0)
    assert "tried" not in str(info.value)


def test_a_5xx_or_a_dropped_connection_is_sent_again_with_a_fresh_request_id():
    with HttpRuntime() as runtime:
        faults = iter(["503", "drop"])

        def fault(path, body):
            return next(faults, None) if path == "/generate" else None

        with FaultProxy(runtime.url, fault) as proxy:
            endpoint = Endpoint(proxy.url, role="base", retries=2, backoff=0.01)
            scope = CancelScope()
            assert endpoint.generate(state(cancel=scope), params())[0] == "ok"
            tries = [what for path, what in proxy.seen if path == "/generate"]
        assert tries == ["503", "drop", None]
        rids = [payload["rid"] for payload in runtime.paths("/generate")]
        sent = [body for body in proxy.bodies if b'"rid"' in body]
        assert len(sent) == 3 and len({body for body in sent}) == 3  # each try its own rid
        assert len(rids) == 1 and rids[0].encode() in sent[-1]
        assert not scope._in_flight  # the last rid left the scope with the request


def test_retries_are_bounded_and_say_how_many_were_made():
    with HttpRuntime() as runtime:
        with FaultProxy(runtime.url, lambda path, body: "503" if path == "/generate" else None) as proxy:
            endpoint = Endpoint(proxy.url, role="base", retries=2, backoff=0.01)
            with pytest.raises(RuntimeServerError, match=r"HTTP 503 to /generate.*\(tried 3 times\)"):
                endpoint.generate(state(), params())
            once = Endpoint(proxy.url, role="base", retries=0)
            with pytest.raises(RuntimeServerError) as info:
                once.generate(state(), params())
            assert "tried" not in str(info.value)
        assert len([p for p, what in proxy.seen if p == "/generate"]) == 4


def test_a_cancelled_scope_stops_a_retry():
    with HttpRuntime() as runtime:
        scope = CancelScope()

        def fault(path, body):
            if path == "/generate":
                scope.cancel()
                return "503"
            return None

        with FaultProxy(runtime.url, fault) as proxy:
            endpoint = Endpoint(proxy.url, role="base", retries=2, backoff=0.01)
            with pytest.raises(Cancelled):
                endpoint.generate(state(cancel=scope), params())
        assert len([p for p, _ in proxy.seen if p == "/generate"]) == 1


def test_a_timeout_is_not_sent_again():
    with HttpRuntime() as runtime:
        with FaultProxy(runtime.url, lambda path, body: ("hang", 3) if path == "/generate" else None) as proxy:
            endpoint = Endpoint(proxy.url, role="base", timeout=0.5, retries=2)
            started = time.monotonic()
            with pytest.raises(RuntimeTimeoutError, match="did not answer /generate within 0.5 s"):
                endpoint.generate(state(), params())
            assert time.monotonic() - started < 2
            assert len([p for p, _ in proxy.seen if p == "/generate"]) == 1


@pytest.mark.parametrize("path", ["/flush_cache", "/tokenize", "/health", "/abort_request", "/get_model_info"])
def test_every_other_path_has_a_deadline_too(path):
    with HttpRuntime() as runtime:
        with FaultProxy(runtime.url, lambda p, body: ("hang", 5) if p == path else None) as proxy:
            if path == "/get_model_info":
                with pytest.raises(RuntimeTimeoutError, match="did not answer /get_model_info within 0.5 s"):
                    Endpoint(proxy.url, role="base", timeout=0.5)
                return
            endpoint = Endpoint(proxy.url, role="base", timeout=0.5, retries=0)
            started = time.monotonic()
            if path == "/health":
                assert endpoint.health(timeout=0.5) is False
            elif path == "/abort_request":
                endpoint.abort("some-rid")  # best effort: gives up quietly
            else:
                with pytest.raises(RuntimeTimeoutError, match=f"did not answer {path} within 0.5 s"):
                    endpoint.flush_cache() if path == "/flush_cache" else endpoint.tokenize_on_runtime(["x"])
            assert time.monotonic() - started < 2


def test_a_stream_yields_each_chunk_as_it_comes():
    with HttpRuntime(chunks=lambda payload: ["one ", 0.3, "two ", "three"]) as runtime:
        endpoint = Endpoint(runtime.url, role="base")
        arrived = []
        for text, meta in endpoint.generate_stream(state(), params()):
            arrived.append((text, meta["completion_tokens"], time.monotonic()))
        assert [(t, n) for t, n, _ in arrived] == [("one ", 4), ("two ", 8), ("three", 13)]
        assert arrived[1][2] - arrived[0][2] > 0.2  # not buffered until the end
        assert runtime.paths("/generate")[0]["stream"] is True
        assert endpoint.generate(state(), params())[0] == "ok"  # the connection is usable again
        assert runtime.connections == 1


def test_a_stream_from_a_runtime_that_stops_answering_ends_with_a_timeout_within_the_deadline():
    with HttpRuntime(chunks=lambda payload: ["one ", "two ", 30]) as runtime:
        endpoint = Endpoint(runtime.url, role="base", timeout=1)
        got = []
        started = time.monotonic()
        with pytest.raises(RuntimeTimeoutError, match="did not send the next chunk of /generate within 1 s"):
            for text, _ in endpoint.generate_stream(state(), params()):
                got.append(text)
        assert got == ["one ", "two "] and time.monotonic() - started < 3


def test_a_stream_through_the_fault_proxy_to_a_stopped_runtime_times_out():
    with HttpRuntime() as runtime:
        with FaultProxy(runtime.url, lambda path, body: ("hang", 10) if path == "/generate" else None) as proxy:
            endpoint = Endpoint(proxy.url, role="base", timeout=1, retries=2)
            started = time.monotonic()
            with pytest.raises(RuntimeTimeoutError, match="did not answer /generate within 1 s"):
                list(endpoint.generate_stream(state(), params()))
            assert time.monotonic() - started < 3
            assert len([p for p, _ in proxy.seen if p == "/generate"]) == 1  # not sent again


def test_stream_errors_are_the_usual_ones():
    too_long = ("error", "The input (9000 tokens) is longer than the model's context length (8192 tokens).")
    with HttpRuntime(chunks=lambda payload: [too_long]) as runtime:
        with pytest.raises(PromptTooLongError, match="base runtime .* rejected the prompt"):
            list(Endpoint(runtime.url, role="base").generate_stream(state(), params()))
    with HttpRuntime(chunks=lambda payload: ["a", ("error", "boom")]) as runtime:
        with pytest.raises(RuntimeCallError, match="ended the stream of /generate with an error: boom"):
            list(Endpoint(runtime.url, role="base").generate_stream(state(), params()))
    with HttpRuntime() as runtime:
        with FaultProxy(runtime.url, lambda path, body: "503" if path == "/generate" else None) as proxy:
            with pytest.raises(RuntimeServerError, match=r"HTTP 503 to /generate.*\(tried 2 times\)"):
                list(Endpoint(proxy.url, role="base", retries=1, backoff=0.01).generate_stream(state(), params()))


def test_a_streamed_request_in_a_cancel_scope_carries_a_request_id_and_leaves_the_scope():
    with HttpRuntime() as runtime:
        scope = CancelScope()
        stream = Endpoint(runtime.url, role="base").generate_stream(state(cancel=scope), params())
        next(stream)
        assert list(scope._in_flight) == [runtime.paths("/generate")[0]["rid"]]
        stream.close()
        assert not scope._in_flight


def test_the_dropin_backend_streams_through_the_endpoint_with_its_deadline():
    with HttpRuntime(chunks=lambda payload: ["one ", 30]) as runtime:
        backend = SpecReasonBackend(runtime.url, runtime.url, SpecReasonConfig(request_timeout=1),
                                    base_template="smollm2")  # its model folder is not here
        got = []
        started = time.monotonic()
        with pytest.raises(RuntimeTimeoutError, match="base runtime .* did not send the next chunk"):
            for text, _ in backend.generate_stream(state(), params()):  # short: straight to the base
                got.append(text)
        assert got == ["one "] and time.monotonic() - started < 3


def test_a_stream_through_a_scoped_backend_is_aborted_with_its_scope():
    from sgl_specreason.calls import ScopedBackend

    with HttpRuntime(chunks=lambda payload: ["one ", 30]) as runtime:
        scope = CancelScope()
        scoped = ScopedBackend(Endpoint(runtime.url, role="draft", timeout=2), scope)
        stream = scoped.generate_stream(state(), params())
        assert next(stream)[0] == "one "
        rid = runtime.paths("/generate")[0]["rid"]
        scope.cancel()
        assert runtime.paths("/abort_request") == [{"rid": rid}]
        with pytest.raises(RuntimeTimeoutError):  # the stand-in does not stop on an abort
            next(stream)
        assert len(scoped.errors) == 1


def test_the_keep_alive_flag_reaches_the_endpoints_of_given_urls():
    from sgl_specreason.cli import build_parser
    from sgl_specreason.config import SpecReasonConfig
    from sgl_specreason.flags import runtime_options
    from sgl_specreason.runner import open_runtimes
    from sgl_specreason.trace import BASE

    with HttpRuntime() as runtime:
        for argv, expected in ((["--keep-alive", "119"], 119.0), ([], 4.0)):
            # the stand-in's model is no folder here: a hand-written template stands in for its own
            args = build_parser().parse_args(["solve", "--base-url", runtime.url, "--base-template", "smollm2",
                                              *argv, "q"])
            with open_runtimes(runtime_options(args, 1), SpecReasonConfig(), (BASE,), log=lambda _: None) as roles:
                assert roles[BASE].backend.keepalive == expected


def test_saturation_is_read_from_the_runtimes_own_queue_at_most_once_a_second(monkeypatch):
    from sgl_specreason.backend import endpoint as endpoint_module

    queue = {"num_running_reqs": 3, "num_waiting_reqs": 0, "max_running_requests": 8}
    with HttpRuntime(loads=lambda: {"loads": [dict(queue, dp_rank=0)]}) as runtime:
        endpoint = Endpoint(runtime.url, role="base")
        assert endpoint.saturated() is False
        queue["num_waiting_reqs"] = 2
        assert endpoint.saturated() is False  # the reading of a moment ago still stands
        reads = sum(1 for path, _ in runtime.requests if path.startswith("/v1/loads"))
        assert reads == 1
        monkeypatch.setattr(endpoint_module, "QUEUE_READ_S", 0.0)
        assert endpoint.saturated() is True  # requests wait
        queue.update(num_waiting_reqs=0, num_running_reqs=8)
        assert endpoint.saturated() is True  # the running batch is full
        queue["num_running_reqs"] = 7
        assert endpoint.saturated() is False


def test_without_a_queue_to_read_saturation_is_not_assumed():
    with HttpRuntime() as runtime:  # answers 404 to /v1/loads and /server_info, as a router may
        endpoint = Endpoint(runtime.url, role="base")
        assert endpoint.saturated() is False


def test_a_flush_refused_while_requests_run_is_tried_again_until_the_runtime_is_idle():
    """SGLang empties only an idle cache (HTTP 400 "Flush cache failed." while requests a client
    gave up on are still finishing); the flush waits that out, and says so when it lasts."""
    with HttpRuntime(flush_busy=2) as runtime:
        Endpoint(runtime.url, role="base").flush_cache()
        assert [path for path, _ in runtime.requests].count("/flush_cache") == 3
    with HttpRuntime(flush_busy=10 ** 6) as runtime:
        with pytest.raises(RuntimeCallError, match=r"base runtime at .* still had requests running or queued after 0.3 s"):
            Endpoint(runtime.url, role="base").flush_cache(wait_s=0.3)
