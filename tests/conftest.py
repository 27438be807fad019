from __future__ import annotations

import functools
import http.server
import signal
import threading
from pathlib import Path

import pytest

from fake_cifar import write_archive

# The probes that press Ctrl-C send SIGINT to a child and need the child to take it. A background job of a
# non-interactive shell (`nohup pytest &`, some CI runners) starts with SIGINT ignored, and an ignored signal
# stays ignored across exec: every child would shrug the probe's Ctrl-C off and it would wait for nothing.
# A handler does not survive exec, so with one here the children start with SIGINT's default, as on a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def cifar_archive(tmp_path_factory) -> tuple[Path, str]:
    """A small learnable CIFAR-format archive (500 train + 200 test images) and its md5."""
    path = tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz"
    md5 = write_archive(path)
    return path, md5


@pytest.fixture(scope="session")
def http_root(tmp_path_factory):
    """A folder served over HTTP on 127.0.0.1; yields (folder, base_url)."""
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass
