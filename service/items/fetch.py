"""Fetch a URL without letting it reach the service's own network (the SSRF guard).

One guard for every URL the service is given: ingestion's URL sources (``indexer``) and search's
``image_url`` queries (the gateway) fetch through it, under the same ``sources`` settings.

Every hop resolves its host once, refuses the whole host if ANY address is loopback, private,
link-local (the cloud metadata endpoint), CGNAT, multicast, reserved or otherwise not public
(unless inside ``sources.allowed_networks``), and then connects to the vetted IP itself: the URL
is rewritten to the IP while the Host header and TLS SNI / certificate checks keep the hostname.
So a second DNS answer (rebinding) is never consulted. Redirects are followed here, one vetted
hop at a time, never by httpx. The transport is used without a Client: no cookies, no proxies
from the environment, no automatic redirects. DNS lookups themselves are not under the time
limit (``getaddrinfo`` has none); the resolver's own timeout bounds them.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

import httpx

from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, invalid, too_large, unsupported

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MEDIA_TYPES: tuple[str, ...] = ("image/*", "video/*")
CAPTION_TYPES: tuple[str, ...] = ("text/plain",)
REDIRECTS = frozenset({301, 302, 303, 307, 308})

_METADATA = ipaddress.ip_address("169.254.169.254")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str  # the media type, lower case, parameters dropped
    final_url: str  # after redirects, with the hostname (not the pinned IP)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address that an IPv6 one reaches through mapping, NAT64 or 6to4."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _address_class(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip == _METADATA:
        return "a link-local address (the cloud metadata endpoint)"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _CGNAT:
        return "a carrier-grade NAT (100.64.0.0/10) address"
    if any(ip in net for net in _PRIVATE):
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    # The catch-all: documentation, benchmarking, IETF protocol ranges and the like.
    if not ip.is_global:
        return "a non-public special-purpose address"
    return None


def forbidden_reason(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why ``ip`` may not be fetched from, or None when it may."""
    inner = _embedded_ipv4(ip)
    if any(ip in net or (inner is not None and inner in net) for net in allowed):
        return None
    if inner is not None:
        reason = _address_class(inner)
        return None if reason is None else f"{reason} (as {inner})"
    return _address_class(ip)


def parse_networks(cidrs: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def validate_url(url: str | httpx.URL) -> httpx.URL:
    """Syntax only: http(s), a host, no credentials. Addresses are checked when fetching."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise invalid(f"{url!s:.200} is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise invalid(f"only http and https URLs can be fetched, not {parsed.scheme or 'none'!r}")
    if not parsed.raw_host:
        raise invalid(f"URL {url!s:.200} has no host")
    if parsed.userinfo:
        raise invalid("URLs with credentials (user:password@) are refused")
    return parsed


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    try:
        target = current.join(location)
    except httpx.InvalidURL as exc:
        raise invalid(f"{current} redirected to an invalid URL {location!r:.200}") from exc
    return validate_url(target)


def vet_host(host: str, port: int, allowed: Sequence[IPNetwork]) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing it if ANY address is forbidden."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        message = f"cannot resolve host {host!r}: {exc}"
        raise ClipsearchError(ErrorType.unavailable, message) from exc
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0])
        ip = ipaddress.ip_address(text.partition("%")[0])
        reason = forbidden_reason(ip, allowed)
        if reason is not None:
            raise ClipsearchError(
                ErrorType.forbidden,
                f"host {host!r} resolves to {ip}, {reason}; URLs may only reach public "
                "addresses (or networks listed in sources.allowed_networks)",
                {"host": host, "address": str(ip)},
            )
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise ClipsearchError(ErrorType.unavailable, f"host {host!r} has no addresses")
    return addresses


def _accepts(media_type: str, accept: Sequence[str]) -> bool:
    for pattern in accept:
        if pattern.endswith("/*"):
            if media_type.startswith(pattern[:-1]):
                return True
        elif media_type == pattern:
            return True
    return False


class Fetcher:
    """Fetches URLs under one settings object; reuse it across many fetches of a job."""

    def __init__(self, settings: Settings, *, verify: ssl.SSLContext | bool = True) -> None:
        self._sources = settings.sources
        self._max_bytes = settings.limits.max_upload_bytes
        self._allowed = parse_networks(settings.sources.allowed_networks)
        # No keep-alive: a pooled connection is keyed by IP, so reusing one could carry a
        # request for host B over a TLS session that was verified for host A on the same IP.
        # (A transport's trust_env reads only SSL_CERT_FILE/DIR; proxies are a Client's.)
        self._transport = httpx.HTTPTransport(
            verify=verify, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def fetch(
        self, url: str, *, accept: Sequence[str] = MEDIA_TYPES, max_bytes: int | None = None
    ) -> Fetched:
        limit = self._max_bytes if max_bytes is None else max_bytes
        timeout = self._sources.fetch_timeout_s
        deadline = time.monotonic() + timeout
        current = validate_url(url)
        try:
            for _ in range(self._sources.max_redirects + 1):
                response = self._send(current, accept, deadline)
                try:
                    location = response.headers.get("location")
                    if response.status_code not in REDIRECTS or location is None:
                        return self._body(current, response, accept, limit, deadline)
                finally:
                    response.close()
                current = _redirect_target(current, location)
        except httpx.TimeoutException as exc:
            raise self._timeout(current, timeout) from exc
        except httpx.RequestError as exc:
            raise ClipsearchError(
                ErrorType.unavailable, f"fetching {current} failed: {exc or type(exc).__name__}"
            ) from exc
        raise invalid(f"{url:.200} redirected more than {self._sources.max_redirects} times")

    def _send(self, url: httpx.URL, accept: Sequence[str], deadline: float) -> httpx.Response:
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = vet_host(host, port, self._allowed)
        headers = {
            "Host": url.netloc.decode("ascii"),
            "Accept": ", ".join(accept),
            # Sizes are checked on the bytes that arrive; identity keeps that the real size.
            "Accept-Encoding": "identity",
            "User-Agent": "clipsearch",
        }
        for i, address in enumerate(addresses):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise httpx.TimeoutException("deadline passed before connecting")
            extensions: dict[str, object] = {"timeout": httpx.Timeout(remaining).as_dict()}
            if url.scheme == "https":
                extensions["sni_hostname"] = host
            request = httpx.Request(
                "GET", url.copy_with(host=address), headers=headers, extensions=extensions
            )
            try:
                return self._transport.handle_request(request)
            except httpx.ConnectError:
                # Another vetted address of the same answer may be reachable (IPv4 vs IPv6).
                if i == len(addresses) - 1:
                    raise
        raise AssertionError("unreachable: vet_host returns at least one address")

    def _body(
        self,
        url: httpx.URL,
        response: httpx.Response,
        accept: Sequence[str],
        limit: int,
        deadline: float,
    ) -> Fetched:
        status = response.status_code
        if not 200 <= status < 300:
            kind = ErrorType.not_found if status in (404, 410) else ErrorType.unavailable
            raise ClipsearchError(kind, f"{url} answered HTTP {status}", {"status": status})
        media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if not _accepts(media_type, accept):
            raise unsupported(
                f"{url} has content type {media_type or 'none'!r}; expected {', '.join(accept)}"
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large(f"{url} is {declared} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise too_large(f"{url} is more than {limit} bytes; the limit is {limit}")
            # Read timeouts bound each wait; this bounds a server that trickles bytes forever.
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("total fetch time exceeded")
            chunks.append(chunk)
        return Fetched(data=b"".join(chunks), content_type=media_type, final_url=str(url))

    def _timeout(self, url: httpx.URL, timeout: float) -> ClipsearchError:
        return ClipsearchError(
            ErrorType.timeout, f"fetching {url} took longer than {timeout:g} s", {"url": str(url)}
        )


def fetch(
    url: str,
    *,
    settings: Settings,
    accept: Sequence[str] = MEDIA_TYPES,
    max_bytes: int | None = None,
) -> Fetched:
    """Fetch one URL (a one-off :class:`Fetcher`); see the module docstring for the guard."""
    with Fetcher(settings) as fetcher:
        return fetcher.fetch(url, accept=accept, max_bytes=max_bytes)


IMAGE_TYPES: tuple[str, ...] = ("image/*",)


def fetch_query_image(url: str, *, settings: Settings) -> bytes:
    """A search query's ``image_url``, under the same guard and limits as a URL source. A URL
    that cannot be reached, or answers an error status, is the caller's bad input (400), not
    this service being unavailable; refused addresses stay ``forbidden``, a wrong type
    ``unsupported_media``, an oversize body ``payload_too_large``, a slow one ``timeout``."""
    try:
        return fetch(url, settings=settings, accept=IMAGE_TYPES).data
    except ClipsearchError as exc:
        if exc.type not in (ErrorType.unavailable, ErrorType.not_found):
            raise
        raise invalid(
            f"image_url could not be fetched: {exc.message}", {"url": url, "cause": exc.type}
        ) from exc
