"""Throwaway HTTP servers on 127.0.0.1 for URL inputs: fixed responses, responses held until
the test lets them go, or any handler."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

Route = tuple[int, bytes, str]  # status, body, content type
HOLD_LIMIT_S = 60  # a held response goes out by then even if the test never released it


def _respond(handler: BaseHTTPRequestHandler, route: Route) -> None:
    status, body, content_type = route
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        """Quiet."""


@contextmanager
def serve_routes(routes: dict[str, Route]) -> Iterator[str]:
    """Serve ``routes`` (path -> response); yields the base URL. Unknown paths get 404."""

    class Handler(_QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            _respond(self, routes.get(self.path, (404, b"not found", "text/plain")))

    with serve_handler(Handler) as url:
        yield url


@dataclass(frozen=True)
class HeldResponses:
    """What :func:`serve_held` yields. ``arrived`` is released once per request that reached
    the server (acquire it to wait for one); ``release`` lets every held response go."""

    url: str
    arrived: threading.Semaphore
    release: threading.Event


@contextmanager
def serve_held(route: Route) -> Iterator[HeldResponses]:
    """Serve ``route`` at every path, each response held until ``release`` is set, which the
    end of the block also does. A client that gave up meanwhile is not an error."""
    arrived = threading.Semaphore(0)
    release = threading.Event()

    class Handler(_QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            arrived.release()
            release.wait(HOLD_LIMIT_S)
            try:
                _respond(self, route)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped waiting (its request timed out)

    with serve_handler(Handler) as url:
        try:
            yield HeldResponses(url, arrived, release)
        finally:
            release.set()


@contextmanager
def serve_handler(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve requests with ``handler`` in threads; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
