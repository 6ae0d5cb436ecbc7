"""Fixtures that start what the tests need: real SGLang CPU servers serving SmolLM2-135M."""


import pytest

from sgl_specreason import models
from sgl_specreason.backend import Endpoint
from sgl_specreason.calls import Role
from sgl_specreason.runtime import LocalServer, ServerSpec, free_port
from sgl_specreason.templates import template_for_model

TEST_MODEL = "smollm2-135m"


@pytest.fixture(scope="session")
def smol_path():
    return str(models.prepare(TEST_MODEL))


def start_server(path, role, log_dir):
    # One thread each: two servers and the client share two cores. fp32 prefills fastest here.
    spec = ServerSpec(model_path=path, port=free_port(), role=role, device="cpu", dtype="float32",
                      max_total_tokens=8192, threads=1, seed=0, log_dir=log_dir)
    server = LocalServer(spec)
    server.start()
    return server


@pytest.fixture(scope="session")
def servers(smol_path, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("logs")
    started = [start_server(smol_path, role, log_dir) for role in ("draft", "base")]
    try:
        for server in started:
            server.wait_ready(timeout=600)
        yield {server.spec.role: server for server in started}
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def roles(servers):
    out = {}
    for name, server in servers.items():
        backend = Endpoint(server.url, role=name, timeout=120)
        out[name] = Role(name, backend, template_for_model(backend.model_path))
    return out
