"""Throwaway HTTP servers on 127.0.0.1 for URL inputs: fixed responses, responses held until
the test lets them go, any handler, and a reverse proxy that refuses its first requests."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import httpx

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


@dataclass
class RefusingProxy:
    """What :func:`serve_refusing_proxy` yields: its URL, and each request's method and path
    as it arrived (refused or relayed)."""

    url: str
    seen: list[tuple[str, str]]


@contextmanager
def serve_refusing_proxy(target: str, refusals: list[int], retry_after: str = "0") -> Iterator[RefusingProxy]:
    """A reverse proxy to ``target`` that answers its first POSTs with the ``refusals``
    statuses in turn (``Retry-After`` and a ``detail`` each), then relays every request."""
    left = list(refusals)
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    class Handler(_QuietHandler):
        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                seen.append((self.command, self.path))
                status = left.pop(0) if left and self.command == "POST" else None
            if status is not None:
                detail = f'{{"detail": "refused with {status} on purpose"}}'.encode()
                self.send_response(status)
                self.send_header("Retry-After", retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(detail)))
                self.end_headers()
                self.wfile.write(detail)
                return
            headers = {key: value for key, value in self.headers.items()
                       if key.lower() not in ("host", "content-length", "connection")}
            answer = httpx.request(self.command, f"{target}{self.path}", headers=headers, content=body, timeout=120)
            _respond(self, (answer.status_code, answer.content, answer.headers.get("Content-Type", "")))

        do_GET = do_POST = _relay  # noqa: N815 (http.server's naming)

    with serve_handler(Handler) as url:
        yield RefusingProxy(url, seen)
