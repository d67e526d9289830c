"""Artifacts over HTTP(S): streamed, and resumed with a Range request when the connection
breaks, a bounded number of times with a growing pause in between.

A slow server cannot hold a deployment (and the lock) for ever (``HttpTimeouts``): no read
waits longer than ``StallSeconds`` for a byte; an answer's headers must be complete within
``ConnectSeconds + StallSeconds`` (a timer cuts the connection, however the server trickles
them); and the body must average ``MinBytesPerSecond`` over the time spent waiting for it,
measured per ``StallSeconds`` of waiting (time the reader spends elsewhere does not count).
A server too slow by these rules fails the download at once: a retry would be as slow.

TLS trusts the system's CAs plus ``ServerCertificate``, and presents ``HttpsClient``'s
certificate when one is configured; ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` are honoured
(requests reads them from the environment).
"""

from __future__ import annotations

import io
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from orchestrator_core import __version__
from orchestrator_core.artifact.layers import as_bytes_view
from orchestrator_core.artifact.tarstream import ascii_number
from orchestrator_core.config import Config
from orchestrator_core.errors import ArtifactError, ConfigError
from orchestrator_core.http_limits import HttpLimits

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from requests.adapters import _HostParams, _PoolKwargs

RETRIES = 5  # attempts in a row that bring no new byte, before giving up
BACKOFF = 0.5  # seconds before the first retry; doubled each time, up to BACKOFF_MAX
BACKOFF_MAX = 8.0
MAX_RECONNECTS = 50  # over a whole download, however much progress each one makes

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20}|\*)")
_BROKEN = (
    requests.ConnectionError,
    requests.Timeout,
    urllib3.exceptions.HTTPError,
    OSError,
)


def _validator(response: requests.Response) -> str | None:
    """What identifies this version of the file: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _unfollowable(exc: Exception) -> str:
    """Why a request could not be made or followed, in one line."""
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return f"more than {requests.models.DEFAULT_REDIRECT_LIMIT} redirects (a redirect loop?)"
    if isinstance(exc, requests.exceptions.InvalidSchema):
        # requests names the refused URL only in its message
        target = str(exc).rsplit(" for ", 1)[-1].strip("'")
        return f"redirected to {redact(target)[:200]}; only http:// and https:// are followed"
    where = f" ({redact(url)[:200]})" if url else ""
    return f"invalid URL{where}: {str(exc)[:200]}"


class NotFound(Exception):
    """The server says it has no such file (404 or 410): another source may have it."""


def redact(url: str) -> str:
    """``url`` without a password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # rebuilt from the text, not from .hostname/.port: a malformed port must not raise here
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def tls_context(config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if config.server_certificate is not None:
        try:
            context.load_verify_locations(cafile=str(config.server_certificate))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"ServerCertificate {config.server_certificate}: cannot load it as a PEM "
                f"certificate ({exc})"
            ) from exc
    client = config.https_client
    if client is not None:
        if client.key.startswith("pkcs11:"):
            raise ConfigError(
                f"HttpsClient.Key is a PKCS#11 URI ({client.key.split(';', 1)[0]};...); this "
                f"implementation does not support PKCS#11 keys: give the path of a PEM key file"
            )
        try:
            context.load_cert_chain(str(client.certificate), client.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"HttpsClient: cannot load the certificate {client.certificate} with the key "
                f"{client.key} ({exc})"
            ) from exc
    return context


_watching = threading.local()  # the _Watch of the request this thread is making, if any


class _Watch:
    """Cuts the connections a request opens if it has no complete answer in ``seconds``.

    Socket timeouts bound each wait for a byte, not a whole answer: a server can trickle its
    headers for ever. Used as a context manager around the request.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._connections: list[urllib3.connection.HTTPConnection] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> _Watch:
        _watching.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _watching.current = None

    def add(self, connection: urllib3.connection.HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            if self.fired:
                _shut(connection)

    def _cut(self) -> None:
        with self._lock:
            self.fired = True
            for connection in self._connections:
                _shut(connection)


def _shut(connection: urllib3.connection.HTTPConnection) -> None:
    sock = connection.sock
    if sock is None:
        return  # still connecting: _Watch.add shuts it once connected
    try:
        # the plain socket's shutdown, also for TLS: the reader blocked in it wakes up
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _watched(connection: urllib3.connection.HTTPConnection) -> None:
    watch = getattr(_watching, "current", None)
    if watch is not None:
        watch.add(connection)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _watched(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # a kept-alive connection, reused
            _watched(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _watched(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            _watched(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """Connections (direct or through an HTTP proxy) that a ``_Watch`` can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are urllib3's own
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class _TlsAdapter(_WatchedAdapter):
    """Every HTTPS connection uses our one SSL context, whatever requests would pick."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **kwargs)

    def build_connection_pool_key_attributes(
        self,
        request: requests.PreparedRequest,
        verify: bool | str,
        cert: str | tuple[str, str] | None = None,
    ) -> tuple[_HostParams, _PoolKwargs]:
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        pool.pop("ca_certs", None)
        pool.pop("ca_cert_dir", None)
        pool.pop("cert_file", None)
        pool.pop("key_file", None)
        pool["ssl_context"] = self._context
        pool["cert_reqs"] = "CERT_REQUIRED"
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # trust and client certificate come from our context, not from requests' defaults
        return None


def make_session(config: Config) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = f"mender-orchestrator-py/{__version__}"
    session.mount("http://", _WatchedAdapter())
    session.mount("https://", _TlsAdapter(tls_context(config)))
    return session


class HttpArtifactStream(io.RawIOBase):
    """The body of one URL as a stream that survives broken connections.

    After a break it asks for the rest with ``Range: bytes=<offset>-`` (and ``If-Range``,
    so a file replaced on the server meanwhile is noticed rather than spliced). A server
    that ignores Range gets the whole body again, and the part already delivered is
    skipped. Raises ``NotFound`` from the constructor for a 404/410.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        *,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
        limits: HttpLimits | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self._limits = limits or HttpLimits()
        # the minimum-rate window: seconds spent waiting for the body, and the bytes they got
        self._waited = 0.0
        self._window_bytes = 0
        self._session = session
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._response: requests.Response | None = None
        self._position = 0
        self._skip = 0  # bytes to discard after a server answered a Range with everything
        self._validator: str | None = None  # ETag or Last-Modified of the first answer
        self.content_length: int | None = None
        self._failures = 0  # in a row, without progress
        self.reconnects = 0
        try:
            self._connect(first=True)
        except BaseException:
            self._session.close()
            raise

    def readable(self) -> bool:
        return True

    def _fail(self, problem: str) -> ArtifactError:
        return ArtifactError(f"download of {redact(self.url)} failed: {problem}")

    def _connect(self, *, first: bool = False) -> None:
        while True:
            headers = {"Accept-Encoding": "identity"}
            if self._position:
                headers["Range"] = f"bytes={self._position}-"
                if self._validator:
                    headers["If-Range"] = self._validator
            watch = _Watch(self._limits.connect_seconds + self._limits.stall_seconds)
            try:
                with watch:
                    response = self._session.get(
                        self.url,
                        headers=headers,
                        stream=True,
                        timeout=(self._limits.connect_seconds, self._limits.stall_seconds),
                    )
            except (requests.RequestException, ValueError) as exc:
                self._request_failed(exc, watch)
                continue
            if watch.fired:  # cut while it trickled its headers: they may look complete
                response.close()
                raise self._too_slow(watch)
            try:
                accepted = self._accept(response, first=first)
            except BaseException:
                response.close()
                raise
            if accepted:
                self._response = response
                self._waited, self._window_bytes = 0.0, 0
                return
            response.close()

    def _too_slow(self, watch: _Watch) -> ArtifactError:
        return self._fail(
            f"no complete answer within {watch.seconds:g} s (HttpTimeouts ConnectSeconds "
            f"+ StallSeconds): the server is too slow"
        )

    def _request_failed(self, exc: Exception, watch: _Watch) -> None:
        """After a request that got no answer: pause before the next attempt, or raise."""
        if watch.fired:
            raise self._too_slow(watch) from exc
        if isinstance(exc, requests.exceptions.SSLError):
            raise self._fail(f"TLS error: {exc}") from exc
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            self._retry(str(exc))
            return
        # a redirect to file:// or ftp://, a redirect loop, an unparsable Location
        raise self._fail(_unfollowable(exc)) from exc

    def _accept(self, response: requests.Response, *, first: bool) -> bool:
        status = response.status_code
        if first and status in (404, 410):
            raise NotFound(self.url)
        if status in _RETRY_STATUS:
            self._retry(f"the server answered HTTP {status} {response.reason}")
            return False
        if status == 200:
            length = response.headers.get("Content-Length")
            if first:
                self.content_length = ascii_number(length) if length else None
                self._validator = _validator(response)
                return True
            # the whole body again: either the server ignores Range, or (If-Range) the file
            # is not the one we started with
            if _validator(response) != self._validator or (
                length is not None
                and self.content_length is not None
                and length != str(self.content_length)
            ):
                raise self._fail("the file changed on the server during the download")
            self._skip = self._position
            return True
        if status == 206 and not first:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != self._position:
                raise self._fail(
                    f"asked to resume at byte {self._position}, the server sent the range "
                    f"{response.headers.get('Content-Range')!r}"
                )
            return True
        raise self._fail(f"the server answered HTTP {status} {response.reason}")

    def _retry(self, why: str) -> None:
        self._failures += 1
        self.reconnects += 1
        if self._failures > self._retries or self.reconnects > MAX_RECONNECTS:
            raise self._fail(f"gave up after {self.reconnects - 1} retries; last problem: {why}")
        self._sleep(min(self._backoff * 2 ** (self._failures - 1), BACKOFF_MAX))

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = as_bytes_view(buffer)
        while True:
            if self._response is None:
                self._connect()
            assert self._response is not None
            try:
                count = self._read_some(view)
            except _BROKEN as exc:
                self._drop()
                self._retry(f"the connection broke after {self._position} bytes ({exc})")
                continue
            if not count:
                if self.content_length is not None and self._position < self.content_length:
                    self._drop()
                    self._retry(f"the body ended after {self._position} bytes")
                    continue
                return 0
            if self._skip:
                skipped = min(self._skip, count)
                self._skip -= skipped
                if skipped == count:
                    continue
                view[: count - skipped] = view[skipped:count]
                count -= skipped
            self._position += count
            self._failures = 0
            return count

    def _read_some(self, view: memoryview) -> int:
        """What the connection has now, up to ``len(view)`` bytes: one wait of at most
        StallSeconds, then the minimum-rate rule."""
        assert self._response is not None
        started = time.monotonic()
        # read1: a whole-buffer read would wait until the buffer is full, however slowly
        data = self._response.raw.read1(len(view))
        view[: len(data)] = data
        self._waited += time.monotonic() - started
        self._window_bytes += len(data)
        if self._waited >= self._limits.stall_seconds:
            rate = self._window_bytes / self._waited
            if rate < self._limits.min_bytes_per_second:
                raise self._fail(
                    f"the server sent {self._window_bytes} bytes in {self._waited:.1f} s, "
                    f"slower than HttpTimeouts MinBytesPerSecond "
                    f"({self._limits.min_bytes_per_second})"
                )
            self._waited, self._window_bytes = 0.0, 0
        return len(data)

    def close(self) -> None:
        """Close the connection and the session (which this stream owns)."""
        self._drop()
        self._session.close()
        super().close()
