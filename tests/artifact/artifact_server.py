"""A real HTTP(S) server on 127.0.0.1 for the download tests, able to misbehave on request:
drop the connection in the middle of a body, ignore Range, change a file between requests,
answer errors. It also serves requests made to it as a forward proxy (absolute URIs)."""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Seen:
    target: str  # the request target as sent (a path, or an absolute URI through a proxy)
    range: str | None
    if_range: str | None


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    drops: list[int] = field(default_factory=list)  # per coming GET: body bytes before a drop
    statuses: list[int] = field(default_factory=list)  # answered before serving normally
    ranges: bool = True
    lengths: list[str] = field(default_factory=list)  # per coming GET: its Content-Length
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location of a 302
    trickle: float = 0.0  # seconds between body bytes: a slow server, one byte at a time
    slow_headers: float = 0.0  # seconds between header bytes, sent for ever
    seen: list[Seen] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None  # keep the test output clean

    def do_GET(self) -> None:
        how: Behaviour = self.server.behaviour  # type: ignore[attr-defined]
        how.seen.append(Seen(self.path, self.headers.get("Range"), self.headers.get("If-Range")))
        if how.statuses:
            self._status_only(how.statuses.pop(0))
            return
        if how.slow_headers:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            self._trickle(b"a" * 100_000, how.slow_headers)
            return
        path = urlsplit(self.path).path
        if path in how.redirects:
            self.send_response(302)
            self.send_header("Location", how.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = how.files.get(path)
        if data is None:
            self._status_only(404)
            return
        etag = how.etags.get(path, '"v1"')
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if_range = self.headers.get("If-Range")
        if wanted and how.ranges and (if_range is None or if_range == etag):
            start = int(wanted.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        if how.lengths:
            self.send_header("Content-Length", how.lengths.pop(0))
            self.close_connection = True  # a client cannot tell where such a body ends
        else:
            self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", etag)
        self.end_headers()
        body = data[start:]
        drop = how.drops.pop(0) if how.drops else None
        if how.trickle:
            self._trickle(body, how.trickle)
            return
        if drop is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:drop])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _trickle(self, body: bytes, pause: float) -> None:
        for index in range(len(body)):
            try:
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
            except OSError:  # the client gave up on us: the point of the slow server
                self.close_connection = True
                return
            time.sleep(pause)

    def _status_only(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class ArtifactServer:
    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.behaviour = Behaviour()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.behaviour = self.behaviour  # type: ignore[attr-defined]
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if context is not None else "http"
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)
