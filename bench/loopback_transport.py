"""A lean httpx transport for the HTTP benchmark: one keep-alive HTTP/1.1 connection, one
request at a time, answers framed by Content-Length.

httpx's own transport (httpcore, anyio, h11) costs about a millisecond of CPU per request on
a 2-core machine that also runs the server under test, which the server would lose; this one
costs what the raw-socket load generator it replaces did, so the benchmark measures the
server (and the Python client's own work), not httpx's transport. Benchmarks only: no TLS,
no proxies, no chunked answers (the write routes send none).
"""

from __future__ import annotations

import asyncio
import re

import httpx

_LENGTH = re.compile(rb"(?im)^content-length: *(\d+)\r$")


class LoopbackTransport(httpx.AsyncBaseTransport):
    """One connection to ``host``:``port``, opened on first use."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read its whole answer."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        body = request.read()
        target = request.url.raw_path.decode("ascii")
        head = [f"{request.method} {target} HTTP/1.1"]
        head.extend(f"{name}: {value}" for name, value in request.headers.items()
                    if name != "content-length")
        head.append(f"content-length: {len(body)}\r\n\r\n")
        writer.write("\r\n".join(head).encode("latin-1") + body)
        raw_head = await reader.readuntil(b"\r\n\r\n")
        lines = raw_head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = [tuple(line.split(b": ", 1)) for line in lines[1:] if line]
        match = _LENGTH.search(raw_head)
        content = await reader.readexactly(int(match.group(1))) if match else b""
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        """Close the connection."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None
