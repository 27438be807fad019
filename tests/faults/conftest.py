"""Loopback HTTP servers that misbehave on purpose, for the download probes."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable

import pytest


@pytest.fixture
def serve():
    """serve(handler) -> URL of a 127.0.0.1 server whose GET runs handler(request, stop_event)."""
    servers, stop = [], threading.Event()

    def start(handler: Callable[[http.server.BaseHTTPRequestHandler, threading.Event], None]) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes, unless Content-Length says

            def do_GET(self) -> None:
                try:
                    handler(self, stop)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"

    yield start
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()
