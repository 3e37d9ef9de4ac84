"""The wrk load of the benchmarks (bench.harness.run_load with bench/wrk_load.lua) against a
server that, like a gunicorn sync worker, serves one connection at a time and waits for the
request of each connection it accepts.

wrk reconnects after every answer (the server closes the connection). A thread that stopped
right after its last answer left that new connection open and idle until wrk exited; a sync
worker that accepted it waited for a request that never came (gunicorn kills it after its
--timeout, 60 s), and wrk exits only when every thread has stopped: once each sync worker held
such a connection, the requests of the threads still running waited a minute behind them
(bench ecrf: runs of 70-83 s instead of 10). Here the server gives up on an idle connection
after IDLE_TIMEOUT_S instead, so the test cannot hang.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from bench.harness import HttpRequest, run_load
from tests import absent

IDLE_TIMEOUT_S = 3.0
STOP_PATH = "/__wrk_stopped"


@dataclass
class OneWorkerServer:
    """An HTTP/1.1 server on 127.0.0.1 with a single worker thread: accept, read one request
    (waiting up to IDLE_TIMEOUT_S for it), answer with ``Connection: close``, close."""

    served: list[str] = field(default_factory=list)  # paths answered 200, in order
    # connections accepted after the first answer that sent nothing (closed, or given up on);
    # wrk's own probe (it connects and closes at once to pick the address, before its
    # threads start) is counted apart
    idle: int = 0
    probes: int = 0
    stops: int = 0  # stop requests answered 404

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=IDLE_TIMEOUT_S + 5)
        self._listener.close()

    def _serve(self) -> None:
        while self._running:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(IDLE_TIMEOUT_S)
        is_after_an_answer = bool(self.served) or self.stops > 0
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
        if b"\r\n\r\n" not in data:
            if is_after_an_answer:
                self.idle += 1
            else:
                self.probes += 1
            return
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        length = next(
            (int(v) for k, _, v in (x.partition(":") for x in lines[1:])
             if k.strip().lower() == "content-length"),
            0,
        )  # fmt: skip
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        if path == STOP_PATH:
            self.stops += 1
            status = b"404 Not Found"
        else:
            self.served.append(path)
            status = b"200 OK"
        conn.sendall(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )


@pytest.fixture
def server() -> Iterator[OneWorkerServer]:
    if shutil.which("wrk") is None:
        absent("the wrk load needs wrk (apt-get install wrk)")
    one = OneWorkerServer()
    yield one
    one.close()


def _requests(n: int) -> list[HttpRequest]:
    return [HttpRequest("PUT", f"/items/{i}", {"i": i}, {}, f"item-{i}") for i in range(n)]


def test_threads_that_run_out_leave_no_idle_connection(server: OneWorkerServer) -> None:
    # 4 connections, 10 requests: shares of 3, 3, 2 and 2, every thread runs out well before
    # the time limit, the ones with 2 first, while the others still have requests to send
    started = time.monotonic()
    result = run_load(server.port, _requests(10), n_clients=4, time_limit_s=60)
    elapsed = time.monotonic() - started

    assert result.statuses() == {200: 10}
    assert sorted(server.served) == sorted(f"/items/{i}" for i in range(10))
    assert server.idle == 0, f"{server.idle} connection(s) opened by wrk never sent a request"
    assert server.stops == 4  # each thread stops with a request, on its last connection
    assert server.probes <= 1
    assert not result.is_time_capped
    assert elapsed < IDLE_TIMEOUT_S, f"the run waited on an idle connection ({elapsed:.1f} s)"


def test_threads_stopped_by_the_time_limit_leave_no_idle_connection(
    server: OneWorkerServer,
) -> None:
    result = run_load(server.port, _requests(100_000), n_clients=4, time_limit_s=0.5)

    assert result.is_time_capped
    assert set(result.statuses()) == {200}
    assert len(server.served) == len(result.ok(200))  # every request answered, none lost
    assert server.idle == 0
    assert server.stops == 4
