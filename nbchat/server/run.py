"""Running `nbchat serve`: bind the socket, check the exposure rules, run uvicorn."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable

from ..backends.base import Backend
from ..errors import NbChatError, ValidationError
from .app import create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_ENV = "NBCHAT_SERVER_TOKEN"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    model: str | None = None,
    backend: Backend | str | None = None,
    allow_remote: bool = False,
    base_url: str | None = None,
    *,
    max_body: int = 1_000_000,
    max_streams: int = 8,
    log_level: str = "warning",
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the server until interrupted (blocking).

    backend: a Backend, or a name for `get_backend` ("local" by default; base_url is its endpoint
    for openai/v2). token falls back to
    the NBCHAT_SERVER_TOKEN environment variable. A non-loopback host needs allow_remote=True
    and prints a warning when no token is set. `ready(url)` is called once the socket is bound.
    """
    import socket

    import uvicorn

    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host):
        if not allow_remote:
            raise ValidationError(
                "host",
                host,
                "a loopback address (127.0.0.1, ::1, localhost); pass --allow-remote to bind elsewhere",
            )
        if not token:
            print(
                f"nbchat serve: WARNING: listening on {host} without a token: anyone who can "
                f"reach this port can use the model. Set --token or {TOKEN_ENV}.",
                file=sys.stderr,
                flush=True,
            )
    factory = None
    backend_obj: Backend | None = None
    if backend is None or isinstance(backend, str):
        from ..backends import default_model, get_backend

        name = backend or "local"
        model = model or default_model(name) or None

        def factory() -> Backend:
            return get_backend(name, model=model, base_url=base_url)

        if name != "local":  # remote backends are cheap to build: fail early on bad config
            backend_obj = factory()
    else:
        backend_obj = backend
    app = create_app(
        backend_obj,
        token=token,
        max_body=max_body,
        max_streams=max_streams,
        model=model,
        backend_factory=factory,
    )
    # Bind ourselves so port 0 works and the real address is known before serving.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise NbChatError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)  # connections made right after the banner wait in the backlog
    bound_port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound_port}"
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=3,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    print(
        f"nbchat serve: {url}/v2/chat (model {model or 'default'}"
        f"{', token required' if token else ''}); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    if ready is not None:
        ready(url)
    server.run(sockets=[sock])
