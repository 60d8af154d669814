"""The SSRF-safe fetcher against a real HTTP server on 127.0.0.1 and a scripted DNS."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from service.core.config import LimitsSettings, Settings, SourcesSettings
from service.core.errors import ClipsearchError, ErrorType
from service.items import fetch as fetch_module
from service.items.fetch import CAPTION_TYPES, Fetcher, fetch, forbidden_reason, parse_networks

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
LIMIT = 4096


class _Handler(BaseHTTPRequestHandler):
    stop: threading.Event  # set by the fixture on teardown so sleeping handlers end at once

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass  # keep test output clean

    def _send(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if "length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            if key != "length":
                self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = url.path
        try:
            if route == "/img.png":
                self._send(200, PNG, "image/png")
            elif route == "/clip.mp4":
                self._send(200, b"\x00\x00\x00\x18ftypmp42", "video/mp4")
            elif route == "/host":
                self._send(200, self.headers["Host"].encode(), "image/png")
            elif route == "/caption.txt":
                self._send(200, b"a red cube", "text/plain; charset=utf-8")
            elif route == "/page":
                self._send(200, b"<html></html>", "text/html")
            elif route == "/big":
                self._send(200, b"x" * (LIMIT + 1), "image/png")
            elif route == "/big-unsized":
                # HTTP/1.0 without Content-Length: the size is only known by reading.
                self._send(200, b"x" * (LIMIT * 3), "image/png", length="none")
            elif route == "/slow":
                self.stop.wait(5)
                self._send(200, PNG, "image/png")
            elif route == "/drip":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"x" * 10)
                    self.wfile.flush()
                    if self.stop.wait(0.05):
                        return
            elif route == "/missing":
                self._send(404, b"no", "text/plain")
            elif route == "/redirect":
                self._send(int(query.get("code", "302")), b"", "text/plain", Location=query["to"])
            elif route == "/loop":
                self._send(302, b"", "text/plain", Location="/loop")
            else:
                self._send(500, b"unknown route", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first, which is what some tests are about


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    stop = threading.Event()
    handler = type("Handler", (_Handler,), {"stop": stop})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    stop.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield from _serve()


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for images.example only (made by the openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=images.example",
         "-addext", "subjectAltName=DNS:images.example",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tls_cert: tuple[Path, Path]) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_cert)
    yield from _serve(context)


def _settings(networks: list[str] | None = None, timeout: float = 5.0) -> Settings:
    return Settings(
        sources=SourcesSettings(
            allowed_networks=["127.0.0.1/32"] if networks is None else networks,
            fetch_timeout_s=timeout,
        ),
        limits=LimitsSettings(max_upload_bytes=LIMIT),
    )


def _error(call: Callable[[], object]) -> ClipsearchError:
    with pytest.raises(ClipsearchError) as info:
        call()
    return info.value


def _port(server: str) -> int:
    return int(server.rsplit(":", 1)[1])


# -- the local server through the allow-list --------------------------------------------------


def test_fetches_an_image_from_an_allowed_network(server: str) -> None:
    got = fetch(f"{server}/img.png", settings=_settings())
    assert got.data == PNG
    assert got.content_type == "image/png"
    assert got.final_url == f"{server}/img.png"


def test_video_and_caption_types(server: str) -> None:
    assert fetch(f"{server}/clip.mp4", settings=_settings()).content_type == "video/mp4"
    text = fetch(f"{server}/caption.txt", settings=_settings(), accept=CAPTION_TYPES)
    assert (text.data, text.content_type) == (b"a red cube", "text/plain")
    # A caption file is not media, and media is not a caption file.
    assert _error(lambda: fetch(f"{server}/caption.txt", settings=_settings())).type == (
        ErrorType.unsupported_media
    )
    assert _error(
        lambda: fetch(f"{server}/img.png", settings=_settings(), accept=CAPTION_TYPES)
    ).type == (ErrorType.unsupported_media)


def test_loopback_is_refused_without_the_allow_list(server: str) -> None:
    err = _error(lambda: fetch(f"{server}/img.png", settings=_settings(networks=[])))
    assert err.type == ErrorType.forbidden
    assert "127.0.0.1, a loopback address" in err.message


def test_wrong_content_type(server: str) -> None:
    err = _error(lambda: fetch(f"{server}/page", settings=_settings()))
    assert err.type == ErrorType.unsupported_media
    assert "text/html" in err.message


def test_declared_oversize_is_refused_before_reading(server: str) -> None:
    err = _error(lambda: fetch(f"{server}/big", settings=_settings()))
    assert err.type == ErrorType.payload_too_large
    assert f"{LIMIT + 1} bytes" in err.message


def test_undeclared_oversize_is_cut_off_while_streaming(server: str) -> None:
    err = _error(lambda: fetch(f"{server}/big-unsized", settings=_settings()))
    assert err.type == ErrorType.payload_too_large
    assert f"more than {LIMIT} bytes" in err.message


def test_slow_server_times_out(server: str) -> None:
    err = _error(lambda: fetch(f"{server}/slow", settings=_settings(timeout=0.3)))
    assert err.type == ErrorType.timeout


def test_a_trickling_body_hits_the_total_deadline(server: str) -> None:
    # Each read returns within the read timeout; only the total deadline stops it.
    err = _error(lambda: fetch(f"{server}/drip", settings=_settings(timeout=0.3)))
    assert err.type == ErrorType.timeout


def test_http_errors(server: str) -> None:
    assert _error(lambda: fetch(f"{server}/missing", settings=_settings())).type == (
        ErrorType.not_found
    )


def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = _error(lambda: fetch(f"http://127.0.0.1:{port}/x.png", settings=_settings()))
    assert err.type == ErrorType.unavailable


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/a.png", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://user:secret@127.0.0.1/a.png", "credentials"),
        ("http:///a.png", "no host"),
        ("not a url", "only http and https"),
    ],
)
def test_bad_urls_are_refused(url: str, words: str) -> None:
    err = _error(lambda: fetch(url, settings=_settings()))
    assert err.type == ErrorType.invalid_input
    assert words in err.message


# -- redirects ----------------------------------------------------------------------------------


def test_follows_redirects_to_allowed_places(server: str) -> None:
    relative = fetch(f"{server}/redirect?to=/img.png", settings=_settings())
    assert (relative.data, relative.final_url) == (PNG, f"{server}/img.png")
    absolute = fetch(f"{server}/redirect?code=308&to={server}/clip.mp4", settings=_settings())
    assert absolute.content_type == "video/mp4"


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("http://10.0.0.1/", "10.0.0.1, a private address"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://[::1]:{port}/img.png", "::1, a loopback address"),
        ("http://[::ffff:10.1.2.3]/", "a private address (as 10.1.2.3)"),
        ("http://100.64.1.1/", "carrier-grade NAT"),
    ],
)
def test_redirects_into_forbidden_networks_are_refused(
    server: str, target: str, words: str
) -> None:
    target = target.format(port=_port(server))
    err = _error(lambda: fetch(f"{server}/redirect?to={target}", settings=_settings()))
    assert err.type == ErrorType.forbidden
    assert words in err.message


def test_redirect_to_another_scheme_is_refused(server: str) -> None:
    err = _error(lambda: fetch(f"{server}/redirect?to=file:///etc/passwd", settings=_settings()))
    assert err.type == ErrorType.invalid_input


def test_redirect_limit(server: str) -> None:
    err = _error(lambda: fetch(f"{server}/loop", settings=_settings()))
    assert err.type == ErrorType.invalid_input
    assert "more than 5 times" in err.message


# -- DNS: the answers are scripted, the server is real -------------------------------------------


class _Dns:
    """Answers for chosen hostnames (one list per lookup, the last one repeating); every other
    name goes to the real resolver. Patching the socket module also covers any lookup httpx
    might do itself, so ``lookups`` proves the fetcher resolved each name once and pinned it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]):
        self.answers = answers
        self.lookups: list[str] = []
        self._real = socket.getaddrinfo
        monkeypatch.setattr(fetch_module.socket, "getaddrinfo", self)

    def __call__(self, host: str, port: object, *args: object, **kwargs: object) -> list[object]:
        if host not in self.answers:
            return self._real(host, port, *args, **kwargs)
        self.lookups.append(host)
        queue = self.answers[host]
        ips = queue.pop(0) if len(queue) > 1 else queue[0]
        out = []
        for ip in ips:
            if ipaddress.ip_address(ip).version == 6:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return out


def test_a_hostname_keeps_its_host_header_on_the_pinned_ip(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _Dns(monkeypatch, {"images.example": [["127.0.0.1"]]})
    got = fetch(f"http://images.example:{_port(server)}/host", settings=_settings())
    assert got.data == f"images.example:{_port(server)}".encode()


def test_a_hostname_resolving_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _Dns(monkeypatch, {"intranet.example": [["192.168.1.20"]]})
    err = _error(lambda: fetch("http://intranet.example/a.png", settings=_settings()))
    assert err.type == ErrorType.forbidden
    assert "'intranet.example' resolves to 192.168.1.20, a private address" in err.message


def test_any_forbidden_address_refuses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _Dns(monkeypatch, {"mixed.example": [["93.184.216.34", "10.0.0.7"]]})
    err = _error(lambda: fetch("https://mixed.example/a.png", settings=_settings()))
    assert err.type == ErrorType.forbidden
    assert "10.0.0.7, a private address" in err.message


def test_dns_rebinding_never_reaches_the_second_answer(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first answer passes the guard (127.0.0.1 is allowed here, standing in for a public
    # address); a second lookup would answer 10.0.0.1. The fetch must connect to the first.
    dns = _Dns(monkeypatch, {"rebind.example": [["127.0.0.1"], ["10.0.0.1"]]})
    got = fetch(f"http://rebind.example:{_port(server)}/host", settings=_settings())
    assert got.data == f"rebind.example:{_port(server)}".encode()
    assert dns.lookups == ["rebind.example"]


def test_each_redirect_hop_is_resolved_and_vetted(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = _Dns(monkeypatch, {"cdn.example": [["127.0.0.1"]], "evil.example": [["10.9.9.9"]]})
    port = _port(server)
    hop = f"http://cdn.example:{port}/redirect?to=http://evil.example:{port}/img.png"
    err = _error(lambda: fetch(f"{server}/redirect?to={hop}", settings=_settings()))
    assert "'evil.example' resolves to 10.9.9.9" in err.message
    assert dns.lookups == ["cdn.example", "evil.example"]


def test_unresolvable_host_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(fetch_module.socket, "getaddrinfo", fail)
    err = _error(lambda: fetch("http://nowhere.example/a.png", settings=_settings()))
    assert err.type == ErrorType.unavailable


def test_https_on_the_pinned_ip_verifies_the_hostname(
    tls_server: str, tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both names resolve to the server; its certificate names only images.example. So SNI
    # and verification use the hostname, not the pinned IP (which would fail both ways).
    _Dns(monkeypatch, {"images.example": [["127.0.0.1"]], "other.example": [["127.0.0.1"]]})
    trust = ssl.create_default_context(cafile=str(tls_cert[0]))
    port = _port(tls_server)
    with Fetcher(_settings(), verify=trust) as fetcher:
        got = fetcher.fetch(f"https://images.example:{port}/host")
        assert got.data == f"images.example:{port}".encode()
        err = _error(lambda: fetcher.fetch(f"https://other.example:{port}/host"))
        assert err.type == ErrorType.unavailable
        assert "certificate" in err.message.lower()


def test_fetcher_is_reusable(server: str) -> None:
    with Fetcher(_settings()) as fetcher:
        assert fetcher.fetch(f"{server}/img.png").data == PNG
        assert fetcher.fetch(f"{server}/clip.mp4").content_type == "video/mp4"


# -- the address classes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("::ffff:127.0.0.1", "loopback address (as 127.0.0.1)"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:1", "private address (as 10.0.0.1)"),
        ("2002:a00:1::", "private address (as 10.0.0.1)"),
        ("192.0.2.1", "special-purpose"),
        ("198.18.0.1", "special-purpose"),
        ("2001:db8::1", "special-purpose"),
    ],
)
def test_forbidden_address_classes(address: str, words: str) -> None:
    reason = forbidden_reason(ipaddress.ip_address(address))
    assert reason is not None and words in reason


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_allowed_networks_let_private_addresses_through() -> None:
    allowed = parse_networks(["10.0.0.0/8", "127.0.0.1/32"])
    assert forbidden_reason(ipaddress.ip_address("10.20.30.40"), allowed) is None
    assert forbidden_reason(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    assert forbidden_reason(ipaddress.ip_address("127.0.0.2"), allowed) is not None
    assert forbidden_reason(ipaddress.ip_address("192.168.0.1"), allowed) is not None


def test_allowed_networks_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSEARCH_SOURCES__ALLOWED_NETWORKS", "127.0.0.1/32, 10.0.0.0/8")
    monkeypatch.setenv("CLIPSEARCH_SOURCES__FETCH_TIMEOUT_S", "2.5")
    sources = Settings().sources
    assert sources.allowed_networks == ["127.0.0.1/32", "10.0.0.0/8"]
    assert (sources.fetch_timeout_s, sources.max_redirects) == (2.5, 5)


def test_a_bad_cidr_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="not a CIDR"):
        SourcesSettings(allowed_networks=["10.0.0.0/33"])
