"""Keep-alive against a real SGLang CPU server (SmolLM2-135M): a local server keeps an idle
connection past SGLang's own 5 s, so a client thread that waited longer than that on the other
runtime (a base step on a CPU takes about 15 s) reuses its connection instead of opening one."""

import time

import pytest

from sgl_specreason.backend import KEEPALIVE_S, Endpoint, client_keepalive
from sgl_specreason.meters import connections_opened, count_connections
from sgl_specreason.runtime import LOCAL_KEEPALIVE_S

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(300)]


def opened_over_an_idle_gap(server, keepalive: float, idle_s: float = 6.0) -> int:
    count_connections()
    peer = f"127.0.0.1:{server.spec.port}"
    before = connections_opened().get(peer, 0)
    endpoint = Endpoint(server.url, role="draft", timeout=60, keepalive=keepalive)  # asks model info
    try:
        payload = {"text": "1 + 1 =", "sampling_params": {"max_new_tokens": 1, "temperature": 0}}
        endpoint.request("/generate", payload)
        time.sleep(idle_s)  # past SGLang's default keep-alive (5 s)
        endpoint.request("/generate", payload)
        return connections_opened().get(peer, 0) - before
    finally:
        endpoint.client.close()


def test_a_local_server_keeps_an_idle_connection_past_five_seconds(servers):
    server = servers["draft"]
    assert server.spec.environment_changes()["SGLANG_TIMEOUT_KEEP_ALIVE"] == str(LOCAL_KEEPALIVE_S)
    # the endpoint the runner gives a local server: one connection for both requests
    assert opened_over_an_idle_gap(server, client_keepalive(server.spec.keepalive_s)) == 1
    # the control: with the default expiry (for servers at SGLang's 5 s) the idle one was closed
    assert opened_over_an_idle_gap(server, KEEPALIVE_S) == 2
