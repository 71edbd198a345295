"""Slow or large requests against a real ``bamsprod serve`` (``app.web.server``, ``EarlyAuth``):

- with a token set, 100 connections that send 990 KB of a 1 MB body without a token and stall
  are refused on their headers (401), closed within seconds, and the API's memory does not
  grow (before: 284 MB for 300, never given back);
- request heads that never end are closed (408) after the header timeout, a body that stops
  coming after the body timeout, even with a valid token; memory returns to its baseline;
- one connection over the cap is answered 503 with Retry-After at once.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from service_fixtures import make_settings

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token"
BODY = 1_000_000
SENT = 990_000


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _head(token: str | None = None) -> bytes:
    lines = ["POST /api/runs HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {BODY}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """What the server sent, and when it closed (seconds from now)."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return got, time.monotonic() - t0


@pytest.fixture
def server(tmp_path: Path, start_api):
    s = make_settings(tmp_path / "home", broker_url="memory://", api_token=TOKEN)
    s.ensure_dirs()
    url = start_api(s, env={"BAMSPROD_HEADER_TIMEOUT_SECONDS": "2",
                            "BAMSPROD_BODY_TIMEOUT_SECONDS": "3",
                            "BAMSPROD_MAX_CONNECTIONS": "150"})
    pid = start_api.procs[-1].pid
    for _ in range(20):  # warm up: the first requests load what every later one uses
        httpx.get(f"{url}/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    return url, pid


def test_unauthenticated_big_bodies_are_refused_on_their_headers(server) -> None:
    url, pid = server
    before = _rss_kb(pid)
    socks = [_connect(url) for _ in range(100)]
    answers: list[bytes] = [b""] * len(socks)
    peak = [before]

    def send(i: int) -> None:
        try:
            socks[i].sendall(_head() + b"x" * SENT)
        except OSError:  # closed by the server while we were still sending: as it should
            pass
        answers[i], _ = _read_until_closed(socks[i], 15)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(socks))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak.append(_rss_kb(pid))
        time.sleep(0.05)
    took = time.monotonic() - t0
    for sock in socks:
        sock.close()
    got_401 = sum(a.startswith(b"HTTP/1.1 401") for a in answers)
    assert got_401 >= 95, [a[:40] for a in answers if not a.startswith(b"HTTP/1.1 401")][:5]
    assert took < 15, took
    grew = max(peak) - before
    print(f"\n100 x 990 KB unauthenticated: RSS {before} kB -> peak +{grew} kB, {took:.1f}s")
    assert grew < 40_000, grew


def test_stalled_heads_and_bodies_time_out_and_memory_returns(server) -> None:
    url, pid = server
    before = _rss_kb(pid)
    heads = [_connect(url) for _ in range(60)]
    for sock in heads:
        sock.sendall(b"POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never more
    bodies = [_connect(url) for _ in range(40)]
    for sock in bodies:  # authenticated, 990 KB of 1 MB, then nothing
        sock.sendall(_head(TOKEN) + b"x" * SENT)
    time.sleep(1.0)
    during = _rss_kb(pid)
    results = [_read_until_closed(s, 15) for s in heads + bodies]
    for sock in heads + bodies:
        sock.close()
    head_answers = [r[0] for r in results[:60]]
    body_answers = [r[0] for r in results[60:]]
    assert all(a.startswith(b"HTTP/1.1 408") for a in head_answers), head_answers[:3]
    assert all(a.startswith(b"HTTP/1.1 408") and b"body did not arrive" in a
               for a in body_answers), body_answers[:3]
    assert max(t for _, t in results) < 8
    time.sleep(1.0)
    after = _rss_kb(pid)
    print(f"\nstalled: RSS {before} kB, {during} kB with 40 x 990 KB bodies held, {after} kB "
          "after they closed")
    assert after - before < 15_000, (before, during, after)
    assert httpx.get(f"{url}/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}
                     ).status_code == 200


def test_one_connection_over_the_cap_is_a_503(server) -> None:
    url, _ = server
    idle = [_connect(url) for _ in range(150)]
    try:
        time.sleep(0.3)
        extra = _connect(url)
        answer, took = _read_until_closed(extra, 5)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:60]
        assert b"retry-after: 5" in answer.lower() and b"too many open connections" in answer
        assert took < 1
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{url}/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}
                     ).status_code == 200
