"""SSRF-safe download of client-supplied media URLs.

A URL in a request makes the server open a connection on the client's behalf, so every hop
is checked before any byte is sent: the scheme must be http(s), and every address the host
resolves to must be globally routable unless ``settings.url_allowed_hosts`` names the host or
covers the address. The connection then goes to the very address that was checked (no second
DNS lookup an attacker could rebind), redirects are followed here rather than by httpx so each
hop is checked again, and time and size are capped so a hostile server cannot hold a worker.

Every download's time and body bytes are counted, and every failure by its reason (README,
"Metrics").
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from embedding_server.http_api.errors import ApiError, InvalidInput, payload_too_large
from embedding_server.http_api.metrics import FETCH_FAILURES, FETCH_SECONDS, FETCHED_BYTES
from embedding_server.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Sink = Callable[[bytes], object]  # takes the body chunk by chunk

_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# identity: the byte cap must count the bytes we keep, not what a decompressor makes of them.
_HEADERS = {"Accept": "*/*", "Accept-Encoding": "identity", "User-Agent": "embedding-server/1"}
# 100.64.0.0/10 is neither private nor reserved in Python's tables; named for a clear reason.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_MAX_REASON_CHARS = 200
_MAX_PORT = 65535


async def fetch_url(url: str, *, max_bytes: int, settings: Settings, what: str = "image") -> bytes:
    """Download ``url`` under the remote-media policy and return its body (see :func:`download`)."""
    body = bytearray()
    await download(url, body.extend, max_bytes=max_bytes, settings=settings, what=what)
    return bytes(body)


async def download(url: str, sink: Sink, *, max_bytes: int, settings: Settings, what: str) -> None:
    """Download ``url`` under the remote-media policy, handing the body to ``sink`` as it
    arrives (so a video can go straight to disk instead of being held in memory).

    Raises only :class:`ApiError`: 400 for a destination the policy forbids, 408 when a
    time-out or the overall deadline passes, 413 when the body exceeds ``max_bytes`` (``sink``
    has then been given at most ``max_bytes`` and one chunk), and 422 (:class:`InvalidInput`)
    for a bad URL, too many redirects, an unreachable host or an upstream answer other than 2xx.
    """
    try:
        with FETCH_SECONDS.labels(media=what).time():
            async with asyncio.timeout(settings.url_total_timeout_s):
                await _follow_redirects(url, sink, max_bytes, settings, what)
    except (TimeoutError, httpx.TimeoutException):
        raise _failure(what, "timeout", ApiError(
            408, f"Timed out fetching {what} URL (limit {settings.url_total_timeout_s:g} s)"
        )) from None
    except httpx.HTTPError as error:
        raise _failure(what, "connection",
                       InvalidInput(f"could not fetch {what} URL: {_short_reason(error)}")) from None


def _failure(what: str, reason: str, error: ApiError) -> ApiError:
    """``error``, counted as a failed download of ``what`` for ``reason``."""
    FETCH_FAILURES.labels(media=what, reason=reason).inc()
    return error


async def _follow_redirects(url: str, sink: Sink, max_bytes: int, settings: Settings, what: str) -> None:
    """Fetch ``url``, following at most ``url_max_redirects`` hops, each one checked anew."""
    current = _check_url(url, what)
    for _ in range(settings.url_max_redirects + 1):
        addresses = await _resolve_and_check(current, settings, what)
        location = await _fetch_hop(current, addresses, sink, max_bytes, settings, what)
        if location is None:
            return
        current = _check_url(location, what, base=current)
    raise _failure(what, "redirects", InvalidInput(
        f"could not fetch {what} URL: more than {settings.url_max_redirects} redirects"
    ))


def _check_url(raw: str, what: str, base: httpx.URL | None = None) -> httpx.URL:
    """Parse with httpx's own parser (the one that will send the request) and vet the parts.

    ``base`` resolves a relative redirect ``Location`` against the URL that answered it.
    """
    try:
        url = base.join(raw) if base is not None else httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise _failure(what, "invalid_url", InvalidInput(f"{what} URL is not a valid URL")) from None
    if url.scheme not in _SCHEMES:
        shown = f"'{url.scheme}'" if url.scheme else "missing"
        raise _failure(what, "invalid_url",
                       InvalidInput(f"{what} URL scheme is {shown}; only http and https are allowed"))
    if not url.host:
        raise _failure(what, "invalid_url", InvalidInput(f"{what} URL has no host"))
    if url.userinfo:
        raise _failure(what, "invalid_url", InvalidInput(f"{what} URL must not contain credentials"))
    if url.port is not None and not 1 <= url.port <= _MAX_PORT:
        # httpx keeps any integer here (70000, 0, -1); the socket layer would fail on it.
        raise _failure(what, "invalid_url",
                       InvalidInput(f"{what} URL port {url.port} is not between 1 and {_MAX_PORT}"))
    return url


async def _resolve_and_check(url: httpx.URL, settings: Settings, what: str) -> list[IPAddress]:
    """Every address of the URL's host, after checking each one against the policy.

    All addresses are checked, not just the first, so that a name with one public and one
    internal record cannot be used to reach the internal one.
    """
    host = url.raw_host.decode("ascii")
    addresses = await _resolve(url, settings, what)
    if host not in settings.url_allowed_hosts:
        for address in addresses:
            reason = _blocked_reason(address)
            if reason is not None and not _is_allow_listed(address, settings.url_allowed_hosts):
                shown = host if _ip_literal(host) else f"{host} ({address})"
                raise _failure(what, "policy", ApiError(400, f"URL not allowed: {shown} is {reason}"))
    return addresses


async def _resolve(url: httpx.URL, settings: Settings, what: str) -> list[IPAddress]:
    """Addresses for the URL's host: an IP literal as is, a name via getaddrinfo in the DNS
    threads, given at most ``url_connect_timeout_s`` (408 beyond)."""
    literal = _ip_literal(url.host)
    if literal is not None:
        return [literal]
    host = url.raw_host.decode("ascii")
    port = url.port or _DEFAULT_PORTS[url.scheme]
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        async with asyncio.timeout(settings.url_connect_timeout_s):
            infos = await asyncio.get_running_loop().run_in_executor(
                _dns_threads(settings.url_dns_threads), lookup)
        # sockaddr[0] is the address; an IPv6 one may carry a "%scope" suffix.
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    except TimeoutError:
        raise _failure(what, "timeout", ApiError(408, f"Timed out resolving {what} URL host {host} "
                                                      f"(limit {settings.url_connect_timeout_s:g} s)")) from None
    except (OSError, ValueError):  # gaierror, or a name the idna codec refuses
        addresses = []
    if not addresses:
        raise _failure(what, "dns", InvalidInput(f"could not fetch {what} URL: cannot resolve host {host}"))
    return list(dict.fromkeys(addresses))


@functools.cache
def _dns_threads(count: int) -> ThreadPoolExecutor:
    """The threads that run DNS look-ups, apart from asyncio's default executor.

    ``getaddrinfo`` blocks its thread and cannot be cancelled, so look-ups that hang would
    otherwise occupy the default executor that ``asyncio.to_thread`` gives image and video
    decoding. A hung look-up here holds one of these threads until the resolver gives up;
    its request is answered at its deadline all the same.
    """
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="dns")


def _ip_literal(host: str) -> IPAddress | None:
    """The address when ``host`` is written as an IP (httpx gives IPv6 without brackets)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination, or ``None`` if it is globally routable.

    ``is_global`` alone is not enough on Python 3.11 (it calls multicast and some reserved
    IPv6 ranges global), so the specific properties are tested first. IPv4 addresses carried
    inside IPv6 (``::ffff:a.b.c.d``, 6to4 ``2002::/16``) are judged as the IPv4 address.
    """
    address = _embedded_ipv4(address) or address
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    checks = (
        ("an unspecified address", address.is_unspecified),
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved),
        ("a site-local address", site_local),
        ("in the carrier-grade NAT range", address in _SHARED_ADDRESS_SPACE),
        ("not globally routable", not address.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped or 6to4 IPv6 address stands for, if any."""
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped or address.sixtofour
    return None


def _is_allow_listed(address: IPAddress, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether an entry of ``allowed_hosts`` is this IP or a CIDR that contains it.

    Host names in the list are matched by the caller; entries that are neither an IP nor a
    CIDR are simply names and never match an address.
    """
    candidates = {address, _embedded_ipv4(address) or address}
    for entry in allowed_hosts:
        try:
            if "/" in entry:
                network = ipaddress.ip_network(entry, strict=False)
                if any(candidate in network for candidate in candidates):
                    return True
            elif ipaddress.ip_address(entry) in candidates:
                return True
        except ValueError:
            continue
    return False


async def _fetch_hop(
    url: httpx.URL, addresses: list[IPAddress], sink: Sink, max_bytes: int, settings: Settings, what: str
) -> str | None:
    """One request, trying the checked addresses in order until one accepts a connection
    (before any byte of a body has reached ``sink``)."""
    for address in addresses[:-1]:
        try:
            return await _request(url, address, sink, max_bytes, settings, what)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            continue
    return await _request(url, addresses[-1], sink, max_bytes, settings, what)


async def _request(
    url: httpx.URL, address: IPAddress, sink: Sink, max_bytes: int, settings: Settings, what: str
) -> str | None:
    """GET ``url`` from ``address``: the body into ``sink`` (``None``), or the ``Location``
    of a redirect.

    The URL's host is replaced by the checked IP so httpx cannot resolve the name again;
    ``Host`` and, for https, the ``sni_hostname`` extension keep the real name for virtual
    hosting, SNI and certificate verification. A fresh client per hop means no pooled
    connection made for one name is ever reused for another.
    """
    target = url.copy_with(host=str(address))
    headers = {**_HEADERS, "Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    async with _client(settings) as client:
        async with client.stream("GET", target, headers=headers, extensions=extensions) as response:
            location = response.headers.get("location")
            if response.status_code in _REDIRECT_STATUSES and location:
                return location
            if not response.is_success:
                raise _failure(what, "http_status", InvalidInput(
                    f"could not fetch {what} URL: upstream answered HTTP {response.status_code}"
                ))
            await _read_capped(response, sink, max_bytes, what)
            return None


def _client(settings: Settings) -> httpx.AsyncClient:
    """A client for one hop: our time-outs, no automatic redirects, nothing from the environment.

    ``trust_env=False`` keeps any proxy from ``HTTP(S)_PROXY`` from standing between us and
    the checked address.
    """
    timeout = httpx.Timeout(
        connect=settings.url_connect_timeout_s,
        read=settings.url_read_timeout_s,
        write=settings.url_read_timeout_s,
        pool=settings.url_connect_timeout_s,
    )
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)


async def _read_capped(response: httpx.Response, sink: Sink, max_bytes: int, what: str) -> None:
    """The body into ``sink``, refused as soon as it is known to exceed ``max_bytes``; the bytes
    received are counted however it ends."""
    too_large = payload_too_large(what, max_bytes)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Decoding could turn one small chunk into an unbounded amount of memory.
        raise _failure(what, "content_encoding",
                       InvalidInput(f"could not fetch {what} URL: upstream sent {encoding}-encoded content"))
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _failure(what, "too_large", too_large)
    received = 0
    try:
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > max_bytes:
                raise _failure(what, "too_large", too_large)
            sink(chunk)
    finally:
        FETCHED_BYTES.labels(media=what).inc(received)


def _short_reason(error: httpx.HTTPError) -> str:
    """A one-line account of a transport failure, fit for a client-facing message."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return reason[:_MAX_REASON_CHARS]
