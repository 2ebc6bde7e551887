"""Tests for the SSRF-safe URL downloader, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trustme

from embedding_server.http_api.errors import ApiError
from embedding_server.media import remote
from embedding_server.media.remote import fetch_url
from embedding_server.settings import Settings

PAYLOAD = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
CAP = 4096
LOCAL = ("127.0.0.1",)


class _Server(ThreadingHTTPServer):
    """Records the paths it was asked for; ``release`` wakes handlers that are stalling."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()
        self.paths: list[str] = []

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up on purpose (byte cap, time-out) are expected here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep test output quiet."""

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        self.server.paths.append(path)
        if path.startswith("/redirect/"):
            remaining = int(path.rsplit("/", 1)[1])
            self._redirect(f"/redirect/{remaining - 1}" if remaining > 1 else "/ok")
            return
        route = {
            "/ok": lambda: self._send(200, PAYLOAD),
            "/echo": self._echo,
            "/missing": lambda: self._send(404, b"not here"),
            "/error": lambda: self._send(500, b"boom"),
            "/to": lambda: self._redirect(parse_qs(urlsplit(self.path).query)["url"][0]),
            "/loop": lambda: self._redirect("/loop", status=301),
            "/big": self._big,
            "/big-chunked": self._big_chunked,
            "/gzip": lambda: self._send(200, gzip.compress(PAYLOAD), {"Content-Encoding": "gzip"}),
            "/slow": self._slow,
            "/trickle": self._trickle,
            "/trickle-forever": self._trickle_forever,
            "/endless-chunked": self._endless_chunked,
        }.get(path, lambda: self._send(404, b"unknown"))
        route()

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _redirect(self, location: str, status: int = 302) -> None:
        self._send(status, b"", {"Location": location})

    def _echo(self) -> None:
        seen = {name: self.headers.get(name) for name in ("Host", "User-Agent", "Accept-Encoding")}
        self._send(200, json.dumps(seen).encode())

    def _start(self, headers: dict[str, str]) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _big(self) -> None:
        self._start({"Content-Length": str(CAP * 4)})
        self.wfile.write(b"x" * CAP * 4)

    def _big_chunked(self) -> None:
        self._start({"Transfer-Encoding": "chunked"})
        chunk = b"y" * 1024
        for _ in range(64):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def _slow(self) -> None:
        self.server.release.wait(5)
        self._send(200, PAYLOAD)

    def _trickle(self) -> None:
        self._start({"Content-Length": "1000"})
        for _ in range(1000):
            self.wfile.write(b"z")
            self.wfile.flush()
            if self.server.release.wait(0.05):
                return


    def _trickle_forever(self) -> None:
        """A byte at a time, never reaching the byte cap, until released."""
        self._start({})
        while not self.server.release.wait(0.05):
            self.wfile.write(b"z")
            self.wfile.flush()

    def _endless_chunked(self) -> None:
        """One-byte chunks that never end, until released."""
        self._start({"Transfer-Encoding": "chunked"})
        while not self.server.release.wait(0.05):
            self.wfile.write(b"1\r\nz\r\n")
            self.wfile.flush()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture()
def base(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any DNS lookup or HTTP client creation fail the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(remote, "_client", forbidden)


def _settings(allowed: tuple[str, ...] = LOCAL, **overrides: object) -> Settings:
    return Settings(url_allowed_hosts=allowed, **overrides)


def fetch(
    url: str, settings: Settings | None = None, max_bytes: int = CAP, what: str = "image"
) -> bytes:
    settings = settings or _settings()
    return asyncio.run(fetch_url(url, max_bytes=max_bytes, settings=settings, what=what))


def fetch_error(url: str, settings: Settings | None = None, **kwargs: object) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fetch(url, settings, **kwargs)  # type: ignore[arg-type]
    return caught.value


# --- success and allow-listing ---


def test_success_returns_exact_bytes(base: str) -> None:
    assert fetch(f"{base}/ok") == PAYLOAD


def test_body_exactly_at_cap_is_accepted_and_one_byte_over_is_not(base: str) -> None:
    assert fetch(f"{base}/ok", max_bytes=len(PAYLOAD)) == PAYLOAD
    assert fetch_error(f"{base}/ok", max_bytes=len(PAYLOAD) - 1).status_code == 413


def test_sends_original_host_identity_encoding_and_user_agent(server: _Server) -> None:
    port = server.server_address[1]
    body = fetch(f"http://localhost:{port}/echo", _settings(("localhost",)))
    seen = json.loads(body)
    assert seen["Host"] == f"localhost:{port}"
    assert seen["Accept-Encoding"] == "identity"
    assert seen["User-Agent"].startswith("embedding-server/")


def test_loopback_refused_when_not_allow_listed(base: str, server: _Server) -> None:
    before = len(server.paths)
    error = fetch_error(f"{base}/ok", _settings(()))
    assert error.status_code == 400
    assert error.detail.startswith("URL not allowed: ")
    assert "loopback" in error.detail
    assert len(server.paths) == before


@pytest.mark.parametrize(
    "allowed", [("127.0.0.1",), ("127.0.0.0/8",), ("10.0.0.0/8", "127.0.0.1/32")]
)
def test_loopback_allowed_by_ip_or_cidr(base: str, allowed: tuple[str, ...]) -> None:
    assert fetch(f"{base}/ok", _settings(allowed)) == PAYLOAD


def test_unrelated_cidr_does_not_allow_loopback(base: str) -> None:
    assert fetch_error(f"{base}/ok", _settings(("10.0.0.0/8", "localhost"))).status_code == 400


def test_localhost_name_refused_unless_allow_listed(server: _Server) -> None:
    url = f"http://localhost:{server.server_address[1]}/ok"
    error = fetch_error(url, _settings(()))
    assert error.status_code == 400
    assert "localhost" in error.detail
    assert fetch(url, _settings(("localhost",))) == PAYLOAD


def test_legacy_numeric_host_is_judged_by_its_resolved_address(server: _Server) -> None:
    # 2130706433 == 127.0.0.1; the name is not an IP literal but resolves to loopback.
    error = fetch_error(f"http://2130706433:{server.server_address[1]}/ok", _settings(()))
    assert error.status_code == 400
    assert "127.0.0.1" in error.detail


# --- the address policy, refused before any traffic ---


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.1:8080/x.png", "private"),
        ("http://[::1]/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:a9fe:a9fe]/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00::1]/", "private"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://224.0.0.1/", "multicast"),
        ("https://127.0.0.1/", "loopback"),
    ],
)
def test_internal_ip_literals_refused_without_network(
    no_network: None, url: str, reason: str
) -> None:
    error = fetch_error(url, _settings(()))
    assert error.status_code == 400
    assert error.detail.startswith("URL not allowed: ")
    assert reason in error.detail


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.png",
        "gopher://127.0.0.1:70/_",
        "data:image/png;base64,AAAA",
        "not a url",
        "",
        "//127.0.0.1/x.png",
        "http:///x.png",
        "http://user:secret@127.0.0.1/x.png",
        "http://[::1",
    ],
)
def test_bad_urls_are_invalid_input_without_network(no_network: None, url: str) -> None:
    error = fetch_error(url)
    assert error.status_code == 422
    assert error.detail.startswith("Invalid input data: ")
    assert "image URL" in error.detail


def test_any_internal_record_refuses_the_name(
    no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def two_records(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_records)
    error = fetch_error("http://mixed.test/x.png", _settings(()))
    assert error.status_code == 400
    assert "mixed.test (127.0.0.1)" in error.detail


def test_unresolvable_host_is_invalid_input(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    error = fetch_error("http://no-such-host.test/x.png")
    assert error.status_code == 422
    assert "cannot resolve host no-such-host.test" in error.detail


def test_name_the_idna_codec_refuses_is_invalid_input() -> None:
    error = fetch_error("http://" + "a" * 64 + ".test/x.png")
    assert error.status_code == 422


def test_connects_to_the_checked_address_not_a_rebound_one(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["127.0.0.1"])  # a second lookup would get 10.255.255.1
    lookups: list[str] = []

    def rebinding(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        if host != "pinned.test":
            return real_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers, "10.255.255.1"), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = server.server_address[1]
    body = fetch(f"http://pinned.test:{port}/echo", _settings(("pinned.test",)))
    assert json.loads(body)["Host"] == f"pinned.test:{port}"
    assert lookups == ["pinned.test"]


# --- upstream answers ---


@pytest.mark.parametrize("path, status", [("/missing", 404), ("/error", 500)])
def test_upstream_error_status_is_invalid_input(base: str, path: str, status: int) -> None:
    error = fetch_error(f"{base}{path}")
    assert error.status_code == 422
    assert error.detail == (
        f"Invalid input data: could not fetch image URL: upstream answered HTTP {status}"
    )


def test_connection_refused_is_invalid_input() -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        error = fetch_error(f"http://127.0.0.1:{port}/ok")
    assert error.status_code == 422
    assert error.detail.startswith("Invalid input data: could not fetch image URL: ")


def test_compressed_body_is_refused(base: str) -> None:
    error = fetch_error(f"{base}/gzip")
    assert error.status_code == 422
    assert "gzip" in error.detail


# --- redirects ---


def test_redirects_are_followed_up_to_the_limit(base: str) -> None:
    assert fetch(f"{base}/redirect/2", _settings(url_max_redirects=2)) == PAYLOAD
    error = fetch_error(f"{base}/redirect/3", _settings(url_max_redirects=2))
    assert error.status_code == 422
    assert "more than 2 redirects" in error.detail


def test_zero_redirects_allowed_refuses_any_redirect(base: str) -> None:
    assert fetch_error(f"{base}/redirect/1", _settings(url_max_redirects=0)).status_code == 422


def test_redirect_loop_is_invalid_input(base: str) -> None:
    error = fetch_error(f"{base}/loop")
    assert error.status_code == 422
    assert "redirects" in error.detail


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/x.png", "private"),
    ],
)
def test_redirect_to_internal_address_is_refused(base: str, target: str, reason: str) -> None:
    error = fetch_error(f"{base}/to?url={target}")
    assert error.status_code == 400
    assert reason in error.detail


def test_redirect_target_is_checked_again(server: _Server) -> None:
    port = server.server_address[1]
    url = f"http://localhost:{port}/to?url=http://127.0.0.1:{port}/ok"
    before = len(server.paths)
    error = fetch_error(url, _settings(("localhost",)))
    assert error.status_code == 400
    assert server.paths[before:] == ["/to"]


def test_redirect_to_file_scheme_is_refused(base: str) -> None:
    error = fetch_error(f"{base}/to?url=file:///etc/passwd")
    assert error.status_code == 422
    assert "'file'" in error.detail


# --- size and time caps ---


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_body_over_cap_is_too_large(base: str, path: str) -> None:
    error = fetch_error(f"{base}{path}", what="video")
    assert error.status_code == 413
    assert error.detail == f"Video too large: exceeds {CAP} bytes"


def test_download_streams_the_body_to_the_sink_and_stops_at_the_cap(base: str) -> None:
    """The video path: chunks reach the sink as they arrive, never more than the cap plus one."""
    chunks: list[bytes] = []
    asyncio.run(remote.download(f"{base}/big-chunked", chunks.append, max_bytes=64 * 1024,
                                settings=_settings(), what="video"))
    assert b"".join(chunks) == b"y" * 64 * 1024
    assert len(chunks) > 1  # handed over piece by piece, not as one buffered body

    chunks.clear()
    with pytest.raises(ApiError) as caught:
        asyncio.run(remote.download(f"{base}/big-chunked", chunks.append, max_bytes=10 * 1024,
                                    settings=_settings(), what="video"))
    assert caught.value.status_code == 413
    assert sum(map(len, chunks)) <= 10 * 1024


# Beyond its limit, a fetch cut by a time-out costs at most what a whole ordinary fetch costs
# (client, connection); as many as this, timed in the same test, leave room for a busy machine.
OVERHEAD_FETCHES = 3


def ordinary_fetch_seconds(base: str, settings: Settings) -> float:
    """How long a whole fetch of a small body takes on this machine now."""
    started = time.monotonic()
    assert fetch(f"{base}/ok", settings) == PAYLOAD
    return time.monotonic() - started


def timed_fetch_error(url: str, settings: Settings, **kwargs: object) -> tuple[ApiError, float]:
    """The error of fetching ``url`` and the seconds it took to come."""
    started = time.monotonic()
    error = fetch_error(url, settings, **kwargs)
    return error, time.monotonic() - started


def test_read_timeout_is_408(base: str) -> None:
    settings = _settings(url_read_timeout_s=0.3, url_total_timeout_s=10)
    ordinary = ordinary_fetch_seconds(base, settings)
    error, elapsed = timed_fetch_error(f"{base}/slow", settings)  # answered after 5 s
    assert error.status_code == 408
    assert error.detail.startswith("Timed out fetching image URL")
    assert elapsed < settings.url_read_timeout_s + OVERHEAD_FETCHES * ordinary


def test_trickling_server_hits_overall_deadline(base: str) -> None:
    settings = _settings(url_read_timeout_s=5, url_total_timeout_s=0.5)
    ordinary = ordinary_fetch_seconds(base, settings)
    error, elapsed = timed_fetch_error(f"{base}/trickle", settings, what="video")  # 50 s of bytes
    assert error.status_code == 408
    assert error.detail.startswith("Timed out fetching video URL")
    assert elapsed < settings.url_total_timeout_s + OVERHEAD_FETCHES * ordinary


@pytest.mark.parametrize("path", ["/trickle-forever", "/endless-chunked"])
def test_never_ending_body_is_cut_at_the_overall_deadline(base: str, path: str) -> None:
    settings = _settings(url_read_timeout_s=5, url_total_timeout_s=1)
    ordinary = ordinary_fetch_seconds(base, settings)
    error, elapsed = timed_fetch_error(f"{base}{path}", settings, max_bytes=1 << 20)
    assert error.status_code == 408
    assert error.detail == "Timed out fetching image URL (limit 1 s)"
    assert elapsed < settings.url_total_timeout_s + OVERHEAD_FETCHES * ordinary


# --- https: SNI and certificate verification use the URL's name ---


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    """A throw-away certificate authority, made in-process (no ``openssl`` command needed)."""
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(tls_ca: trustme.CA) -> Iterator[tuple[_Server, list[str]]]:
    """An https server holding a certificate for ``localhost`` only; also the SNI names it saw."""
    sni_names: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost").configure_cert(context)

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sni_names.append(name or "")

    context.sni_callback = record_sni  # type: ignore[assignment]
    srv = _Server()
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, sni_names
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture()
def trusting_client(tls_ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust the test authority alone (the real client uses the system's CA bundle)."""
    verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    tls_ca.configure_trust(verify)
    monkeypatch.setattr(
        remote, "_client", lambda s: httpx.AsyncClient(verify=verify, trust_env=False, timeout=5)
    )


def test_https_uses_the_url_name_for_sni_and_verification(
    tls_server: tuple[_Server, list[str]], trusting_client: None
) -> None:
    srv, sni_names = tls_server
    port = srv.server_address[1]
    sni_names.clear()
    body = fetch(f"https://localhost:{port}/echo", _settings(("localhost",)))
    assert json.loads(body)["Host"] == f"localhost:{port}"
    assert sni_names == ["localhost"]


def test_https_certificate_must_match_the_url_host(
    tls_server: tuple[_Server, list[str]], trusting_client: None
) -> None:
    port = tls_server[0].server_address[1]
    error = fetch_error(f"https://127.0.0.1:{port}/echo")
    assert error.status_code == 422
    assert "certificate" in error.detail.lower()


def test_https_certificate_must_come_from_a_trusted_authority(tls_server: tuple[_Server, list[str]]) -> None:
    """The client as the server builds it, which knows nothing of the test authority."""
    port = tls_server[0].server_address[1]
    error = fetch_error(f"https://localhost:{port}/echo", _settings(("localhost",)))
    assert error.status_code == 422
    assert "certificate verify failed" in error.detail.lower()


# --- unit: the address policy ---


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("172.32.0.1", None),
        ("2606:4700:4700::1111", None),
        ("2002:808:808::1", None),  # 6to4 for 8.8.8.8
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.255", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", ""),
        ("255.255.255.255", ""),
        ("192.0.2.1", ""),
        ("198.18.0.1", ""),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", ""),
        ("64:ff9b::a00:1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 for 127.0.0.1
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 for 169.254.169.254
    ],
)
def test_blocked_reason(address: str, reason: str | None) -> None:
    # "" means refused for a reason that Python versions name differently (private/reserved).
    found = remote._blocked_reason(ipaddress.ip_address(address))
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


@pytest.mark.parametrize(
    ("address", "allowed", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1",), True),
        ("127.0.0.1", ("127.0.0.0/8",), True),
        ("::ffff:127.0.0.1", ("127.0.0.1",), True),
        ("::ffff:127.0.0.1", ("127.0.0.0/8",), True),
        ("::1", ("::1",), True),
        ("fd00::5", ("fd00::/8",), True),
        ("127.0.0.2", ("127.0.0.1",), False),
        ("10.0.0.1", ("127.0.0.0/8",), False),
        ("::1", ("127.0.0.0/8",), False),
        ("127.0.0.1", ("localhost",), False),
        ("127.0.0.1", (), False),
    ],
)
def test_is_allow_listed(address: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert remote._is_allow_listed(ipaddress.ip_address(address), allowed) is expected
