"""``sgl-specreason serve``: flags, checks before the runtimes start, and the server's run."""

from __future__ import annotations

import argparse
import ipaddress
import socket
from pathlib import Path
from typing import Optional

from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError
from sgl_specreason.framing import PLAIN
from sgl_specreason.flags import config_from_args, positive_int, runtime_options
from sgl_specreason.modes import MODES, roles_for
from sgl_specreason.runner import dry_run, session
from sgl_specreason.serve.runs import ServeSettings


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """The server's own flags. Call after ``flags.add_runtime_flags`` on a parser made with
    ``conflict_handler="resolve"``: ``--api-key`` is the server's key here, the runtimes' is
    ``--runtime-api-key``."""
    group = parser.add_argument_group("serving")
    group.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; another needs --api-key or --allow-no-key)")
    group.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    group.add_argument("--api-key", dest="serve_api_key",
                       help="clients must send Authorization: Bearer KEY (default: no check, loopback only)")
    group.add_argument("--allow-no-key", action="store_true",
                       help="listen on a non-loopback address without --api-key")
    group.add_argument("--runtime-api-key", dest="api_key", help="API key of the given runtime servers")
    group.add_argument("--max-in-flight", type=positive_int, default=4,
                       help="SpecReason runs at once (default 4)")
    group.add_argument("--max-queue", type=int, default=64,
                       help="requests that wait for a run slot; the next one gets HTTP 429 (default 64)")
    group.add_argument("--max-body-bytes", type=positive_int, default=1 << 20,
                       help="largest request body (default 1 MiB)")
    group.add_argument("--grace-seconds", type=float, default=30.0,
                       help="on SIGTERM or Ctrl-C, how long requests in flight may take to finish "
                            "before they are aborted (default 30)")
    group.add_argument("--mode", choices=list(MODES), default="specreason",
                       help="how a chat is solved: " + "; ".join(f"{name}: {mode.help}" for name, mode in MODES.items())
                            + " (a completion is continued by SpecReason under a judged mode, by the "
                              "mode's one model otherwise)")
    group.add_argument("--separate-reasoning", action=argparse.BooleanOptionalAction, default=True,
                       help="a chat reply's thinking in message.reasoning_content (delta.reasoning_content "
                            "when streamed), its answer in content, as SGLang's --reasoning-parser returns "
                            "them; --no-separate-reasoning: one content, thinking and answer together. A "
                            "request's separate_reasoning overrides it (default on)")
    group.add_argument("--data-dir", type=Path,
                       help="where /v1/files and /v1/batches keep files and batch state; a restarted serve "
                            "resumes its unfinished batches from it (default: no batch endpoints)")
    group.add_argument("--batch-slots", type=positive_int,
                       help="run slots batch lines may hold at once, of --max-in-flight (default half, at "
                            "least 1); a batch line starts only when no live request waits for a slot")
    group.add_argument("--max-file-bytes", type=positive_int, default=200 << 20,
                       help="largest file uploaded to /v1/files (default 200 MiB)")
    group.add_argument("--max-batch-lines", type=positive_int, default=50_000,
                       help="requests one batch may hold (default 50000)")
    group.add_argument("--files-keep-days", type=float, default=30.0,
                       help="days a file (batch input, output, errors) is kept unless deleted (default 30)")
    group.add_argument("--served-model-name", default="specreason",
                       help="the model name /v1/models lists (default specreason; requests may name any)")


def serve_config(args) -> SpecReasonConfig:
    """The server's config from its flags: a chat is put to the models as written (``plain``)
    unless ``--framing`` says otherwise, since a server's clients bring their own requests (a
    request's ``specreason.framing`` may still ask for ``paper``)."""
    return config_from_args(args, framing=PLAIN)


def check_listen(host: str, api_key: Optional[str], allow_no_key: bool) -> None:
    """Refuse to listen on a non-loopback address without an API key, unless told to.

    >>> check_listen("0.0.0.0", None, False)
    Traceback (most recent call last):
    ...
    sgl_specreason.errors.ConfigError: --host 0.0.0.0 is not a loopback address: anyone who can reach it could use the runtimes. Pass --api-key KEY (clients then send it as a bearer token), or --allow-no-key if the network is yours
    """
    if api_key or allow_no_key or _is_loopback(host):
        return
    raise ConfigError(f"--host {host} is not a loopback address: anyone who can reach it could use the "
                      f"runtimes. Pass --api-key KEY (clients then send it as a bearer token), or "
                      f"--allow-no-key if the network is yours")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def _check_port_free(host: str, port: int) -> None:
    """Fail before the runtimes start (minutes) if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port") from None


def serve(args) -> int:
    """``sgl-specreason serve``: open the runtimes (the URLs given, or local servers), then
    serve until SIGTERM or Ctrl-C; requests in flight get ``--grace-seconds`` to finish, the
    rest are aborted, and the local servers are stopped."""
    cfg = serve_config(args)
    check_listen(args.host, args.serve_api_key, args.allow_no_key)
    if args.max_queue < 0:
        raise ConfigError(f"--max-queue must be at least 0, got {args.max_queue}")
    settings = ServeSettings(model_name=args.served_model_name, api_key=args.serve_api_key,
                             max_in_flight=args.max_in_flight, max_queue=args.max_queue,
                             max_body_bytes=args.max_body_bytes, mode=args.mode,
                             separate_reasoning=args.separate_reasoning, data_dir=args.data_dir,
                             batch_slots=args.batch_slots, max_file_bytes=args.max_file_bytes,
                             max_batch_lines=args.max_batch_lines, files_keep_s=args.files_keep_days * 86400)
    opts = runtime_options(args, args.max_in_flight)
    if args.dry_run:
        print(f"# would serve http://{args.host}:{args.port}/v1 once the runtimes below are ready")
        return dry_run(opts, cfg, roles_for(args.mode))
    _check_port_free(args.host, args.port)
    # the web server is imported here, not with the flags: ``batch`` shares them and runs without it
    import uvicorn

    from sgl_specreason.serve.app import create_app

    with session(opts, cfg, args.mode) as roles:
        print(f"at most {settings.max_in_flight} runs at once, {settings.max_queue} waiting; serving "
              f"http://{args.host}:{args.port}/v1 (model {settings.model_name!r}"
              f"{', API key required' if settings.api_key else ''})")
        app = create_app(roles, cfg, settings)
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info",
                                               timeout_graceful_shutdown=args.grace_seconds))
        server.run()
    return 0
