"""Shared benchmark machinery: result rows and tables, throwaway PostgreSQL databases, a
private PostgreSQL cluster to stop and start, gunicorn servers bound to 127.0.0.1, and
closed-loop HTTP load: wrk for the benchmarks, Python threads for the reliability suites."""

from __future__ import annotations

import base64
import collections
import dataclasses
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RatioRow:
    """One summary figure: ours against the baseline measured in the same run.

    ``ratio`` is ours / baseline in the unit of the figure; ``higher_is_better`` says how to
    read it (throughput: yes; time: no). ``baseline`` is None when no baseline could run;
    with ``is_baseline_lower_bound`` it is the cap the baseline exceeded.
    """

    benchmark: str
    figure: str
    unit: str
    ours: float
    baseline: float | None
    baseline_name: str
    higher_is_better: bool
    is_baseline_lower_bound: bool = False  # the baseline was stopped at a cap: it took longer
    # the ratio (or, for an absolute figure, the value) of each repeated run, when repeated
    runs: tuple[float, ...] = ()

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline


class BenchmarkUnavailable(Exception):
    """A benchmark (or part of it) cannot run here (no PostgreSQL, no gunicorn...).

    ``rows`` carries the figures of the parts that did run.
    """

    def __init__(self, message: str, rows: Sequence[RatioRow] = ()) -> None:
        super().__init__(message)
        self.rows = tuple(rows)


def median_row(rows: Sequence[RatioRow]) -> RatioRow:
    """One row for repeated runs of a figure: the run with the median ratio, and every run's
    ratio in ``runs`` (the spread)."""
    ordered = sorted(rows, key=lambda r: r.ratio if r.ratio is not None else r.ours)
    middle = ordered[len(ordered) // 2]
    return dataclasses.replace(
        middle, runs=tuple(r.ratio if r.ratio is not None else r.ours for r in rows)
    )


def format_number(value: float | None) -> str:
    """Format a figure with three significant digits (thousands separated)."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table (so RESULTS.md can quote the output verbatim)."""
    cells = [[str(c) for c in columns]] + [
        [format_number(c) if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n### {title}\n")
    for index, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0..100) by linear interpolation; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---------------------------------------------------------------- PostgreSQL


def admin_database_url() -> str:
    """Return the URL of an existing database to connect to while creating a throwaway one."""
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if not url:
        env_url = os.environ.get("DATABASE_URL", "")
        url = env_url if env_url.startswith("postgres") else DEFAULT_ADMIN_URL
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    return url


@contextmanager
def throwaway_database(label: str) -> Iterator[str]:
    """Create a dedicated PostgreSQL database, yield its URL, drop it afterwards."""
    admin_url = admin_database_url()
    name = f"dtx_bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any driver or network failure means "no PostgreSQL here"
        admin.dispose()
        where = make_url(admin_url).render_as_string(hide_password=True)
        detail = (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]
        raise BenchmarkUnavailable(f"PostgreSQL at {where} unreachable: {detail}") from exc
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def server_version(url: str) -> str:
    """Return PostgreSQL's version string."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


FIELD_KEY = base64.urlsafe_b64encode(b"bench-field-key-bench-field-key!").decode()


def app_environment(database_url: str, instance_path: str) -> dict[str, str]:
    """Return the environment a dtx-trials server process runs the benchmark with."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "DTX_FIELD_KEY": FIELD_KEY,
            "DTX_SECRET_KEY": secrets.token_hex(16),
            "DTX_INSTANCE_PATH": instance_path,
            "BENCH_DATABASE_URL": database_url,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
            ),
        }
    )
    return env


# ---------------------------------------------------------------- private PostgreSQL cluster


def postgres_bindir() -> Path | None:
    """Return the directory holding PostgreSQL's initdb and pg_ctl; None when not installed.

    Looks at ``pg_config --bindir``, then Debian's /usr/lib/postgresql/<version>/bin (newest
    first), then ``initdb`` on PATH.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            done = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(done.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parent.name.split(".") if p.isdigit())

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster of its own, which a test may stop and start at will.

    ``initdb`` into a temporary directory, then ``pg_ctl start`` on a free port of 127.0.0.1
    (the unix socket in the same directory); use as a context manager: leaving it stops the
    server and removes the directory. Running as root, the server binaries run as the
    ``postgres`` OS user (initdb refuses root). fsync is off: the cluster lives for one test,
    and a server crash (unlike an OS crash) loses no acknowledged commit without fsync.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or postgres_bindir()
        self.port = 0
        self.base: Path | None = None
        self.is_running = False
        self._prefix: list[str] = []

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        assert self.base is not None
        return self.base / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> PrivatePostgres:
        if self.bindir is None:
            raise BenchmarkUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
        owner = None
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                owner = None
            if runuser is None or owner is None:
                raise BenchmarkUnavailable(
                    "as root, a private cluster needs runuser and a postgres user"
                )
            self._prefix = [runuser, "-u", "postgres", "--"]
        self.base = Path(tempfile.mkdtemp(prefix="dtx-pg-"))
        try:
            if owner is not None:
                os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self.port = free_port()
            self._run(
                "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
                "-E", "UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
            settings = {
                "port": str(self.port),
                "listen_addresses": "'127.0.0.1'",
                "unix_socket_directories": f"'{self.base}'",
                "fsync": "off",
                "full_page_writes": "off",
                "max_connections": "60",
                "shared_buffers": "32MB",
            }
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write("".join(f"{key} = {value}\n" for key, value in settings.items()))
            self.start()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._remove()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path),
                  "-w", "-t", "60", "start")  # fmt: skip
        self.is_running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast|immediate|smart``) and wait until it is down."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")
        self.is_running = False

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        """Create a database in the cluster and return its URL."""
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def log_tail(self, n_lines: int = 30) -> str:
        if self.base is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n_lines:])

    def _run(self, program: str, *args: str) -> None:
        assert self.bindir is not None and self.base is not None
        done = subprocess.run(
            [*self._prefix, str(self.bindir / program), *args],
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,  # the server outlives a Ctrl-C until we stop it
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args[-1:])} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}{self.log_tail()}"
            )

    def _remove(self) -> None:
        if self.base is None:
            return
        if self.data_dir.joinpath("postmaster.pid").exists():
            try:
                self.stop("immediate")
            except (RuntimeError, OSError, subprocess.SubprocessError):
                self._kill_postmaster()
        self.is_running = False
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def _kill_postmaster(self) -> None:
        try:
            pid = int(self.data_dir.joinpath("postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


# ---------------------------------------------------------------- gunicorn


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GunicornServer:
    """A gunicorn master with sync workers on 127.0.0.1; use as a context manager.

    ``preload`` builds the app once in the master before forking the workers (gunicorn's
    ``--preload``): the workers boot in a fraction of the time on a small machine. Only for
    apps that open no database connection while being built (dtx_trials' create_app opens none).
    """

    app_spec: str
    env: Mapping[str, str]
    workers: int = 4
    preload: bool = False  # import the app in the master: a replaced worker is ready at fork
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def __enter__(self) -> GunicornServer:
        try:
            import gunicorn  # noqa: F401  (only to give a clear message when absent)
        except ImportError as exc:
            raise BenchmarkUnavailable("gunicorn is not installed (pip install gunicorn)") from exc
        self.port = free_port()
        handle, name = tempfile.mkstemp(prefix="dtx-bench-gunicorn-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        command = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(self.workers),
            "--worker-class", "sync",
            "--bind", f"127.0.0.1:{self.port}",
            "--timeout", "60",
            "--graceful-timeout", "5",
            "--log-level", "warning",
            *(["--preload"] if self.preload else []),
            self.app_spec,
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                env=dict(self.env),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_listening(timeout_s=60)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_until_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not listen within {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, n_lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n_lines:])

    def stop(self) -> None:
        """Stop the master and its workers (SIGINT, then SIGKILL to its process group).

        SIGINT is gunicorn's quick shutdown: the load has finished, nothing is in flight.
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None


# ---------------------------------------------------------------- load


@dataclass(frozen=True)
class HttpRequest:
    """One request of a load run; ``tag`` identifies it in the outcomes."""

    method: str
    path: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tag: str = ""


@dataclass(frozen=True)
class Outcome:
    """The last answer to a request (status 0: the connection failed) after ``attempts``."""

    tag: str
    status: int
    latency_s: float
    body: bytes
    attempts: int = 1


@dataclass(frozen=True)
class LoadResult:
    """What a load run measured: every outcome, the wall time, and whether it hit its cap."""

    n_clients: int
    outcomes: tuple[Outcome, ...]
    elapsed_s: float
    is_time_capped: bool
    wrk_summary: Mapping[str, Any] | None = None  # wrk's own counts, when wrk ran the load

    def ok(self, status: int) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    def throughput(self, status: int) -> float:
        return len(self.ok(status)) / self.elapsed_s if self.elapsed_s else 0.0

    def latency_ms(self, q: float) -> float:
        return 1000 * percentile([o.latency_s for o in self.outcomes], q)

    def statuses(self) -> dict[int, int]:
        return dict(collections.Counter(o.status for o in self.outcomes))

    def lost(self) -> list[Outcome]:
        """Requests sent whose connection failed before an answer (status 0): the server may
        have committed them (a write is only known lost or kept by reading the database)."""
        return self.ok(0)


@dataclass(frozen=True)
class Trio:
    """One repetition of an endpoint, its floor (the same statements by a minimal handler)
    and its bare baseline, run back to back; and, where measured, the floor behind the API's
    own stack (``bare_app.create_api_floor_app``), run with them."""

    ours: LoadResult
    floor: LoadResult
    bare: LoadResult
    api_floor: LoadResult | None = None


def rows_account_for_answers(rows: int, answered: int, lost: int) -> bool:
    """Whether a table's new rows match the answers: every acknowledged write is stored, and
    every stored row was acknowledged or sent on a connection that failed before its answer
    (never one answered with an error)."""
    return answered <= rows <= answered + lost


def send_request(port: int, request: HttpRequest) -> Outcome:
    """Send one request on a new connection; status 0 when the connection failed."""
    body = None if request.body is None else json.dumps(request.body).encode()
    headers = {"Content-Type": "application/json", **request.headers}
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(request.method, request.path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        data, status = b"", 0
    finally:
        connection.close()
    return Outcome(request.tag, status, time.perf_counter() - started, data)


WRK_SCRIPT = Path(__file__).resolve().with_name("wrk_load.lua")
WRK_JSON_PREFIX = "DTX-WRK-JSON "


def wrk_path() -> str:
    """Return the wrk executable; BenchmarkUnavailable when it is not installed."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchmarkUnavailable(
            "the load generator wrk is not installed (apt-get install wrk)"
        )
    return path


def raw_request(request: HttpRequest, port: int) -> bytes:
    """Return the HTTP/1.1 bytes of a request as sent on the wire (JSON body)."""
    body = b"" if request.body is None else json.dumps(request.body).encode()
    headers = {
        "Host": f"127.0.0.1:{port}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **request.headers,
    }
    head = f"{request.method} {request.path} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return head.encode() + b"\r\n" + body


def run_load(
    port: int,
    requests: Sequence[HttpRequest],
    n_clients: int,
    time_limit_s: float,
) -> LoadResult:
    """Send the requests from n_clients closed-loop connections of wrk; stop at the time limit.

    wrk (compiled, event-driven: it leaves the cores to the server) runs one thread per
    connection with ``bench/wrk_load.lua``: connection k sends requests k, k + n, k + 2n...
    in order, each as soon as the previous one is answered (gunicorn's sync workers close
    the connection after each answer; wrk reconnects). A connection stops after the answer
    that ends its share or that arrives past the time limit, so no request is left in
    flight: every request sent has its answer (status 0 if the connection failed), and a
    write the server committed was answered. The elapsed time runs from the first request
    sent to the last answer.
    """
    wrk = wrk_path()
    n_connections = max(1, min(n_clients, len(requests)))
    shares = [list(requests[k::n_connections]) for k in range(n_connections)]
    with tempfile.TemporaryDirectory(prefix="dtx-wrk-") as directory:
        for k, share in enumerate(shares, start=1):
            with open(os.path.join(directory, f"requests-{k}"), "wb") as out:
                for request in share:
                    data = raw_request(request, port)
                    out.write(b"%d\n" % len(data) + data)
        # wrk's own duration is only a backstop: the script stops every connection first
        backstop_s = int(time_limit_s) + 120
        deadline = time.monotonic() + time_limit_s
        process = subprocess.Popen(
            [
                wrk, "-t", str(n_connections), "-c", str(n_connections),
                "-d", f"{backstop_s}s", "--timeout", "60s", "-s", str(WRK_SCRIPT),
                f"http://127.0.0.1:{port}/", "--", directory, repr(deadline),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            done = [os.path.join(directory, f"done-{k}") for k in range(1, n_connections + 1)]
            while process.poll() is None and not all(os.path.exists(d) for d in done):
                time.sleep(0.02)
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # wrk's early stop: join, then done()
            stdout, stderr = process.communicate(timeout=60)
        except BaseException:
            process.kill()
            process.wait()
            raise
    line = next((x for x in stdout.splitlines() if x.startswith(WRK_JSON_PREFIX)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result ({process.returncode}):\n{stdout}{stderr}")
    report = json.loads(line[len(WRK_JSON_PREFIX) :])
    outcomes: list[Outcome] = []
    first, last = float("inf"), 0.0
    is_stopped_by_wrk = False
    for thread in report["threads"]:
        share = shares[thread["id"] - 1]
        for request, status, latency in zip(share, thread["statuses"], thread["latencies"]):
            outcomes.append(Outcome(request.tag, max(status, 0), latency, b""))
        is_stopped_by_wrk |= not thread["finished"]
        if thread["statuses"]:
            first = min(first, thread["first"])
            last = max(last, thread["last"])
    elapsed = max(last - first, 0.0) if outcomes else 0.0
    return LoadResult(
        n_connections,
        tuple(outcomes),
        elapsed,
        is_time_capped=len(outcomes) < len(requests) or is_stopped_by_wrk,
        wrk_summary=report,
    )


def run_threaded_load(
    port: int,
    requests: Sequence[HttpRequest],
    n_clients: int,
    time_limit_s: float,
    retry_statuses: frozenset[int] = frozenset(),
    max_attempts: int = 1,
) -> LoadResult:
    """Send every request from n_clients closed-loop clients (Python threads); stop at the
    time limit. For the reliability suites, which need retries and the answers' bodies; the
    benchmarks measure with ``run_load`` (wrk), as Python threads compete with the server
    for the cores.

    Each client takes the next request from a shared queue as soon as its previous one is
    answered, so at most n_clients requests are in flight. A new connection per request, as
    gunicorn's sync workers close it after each response. A request answered with a status in
    ``retry_statuses`` (0 = connection failed) is sent again, unchanged (same idempotency
    key), up to ``max_attempts`` times, after a short pause; the outcome is the last answer.
    """
    queue = collections.deque(requests)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    started = time.perf_counter()
    deadline = started + time_limit_s

    def client() -> None:
        while time.perf_counter() < deadline:
            try:
                request = queue.popleft()
            except IndexError:
                return
            outcome = send_request(port, request)
            attempts = 1
            while outcome.status in retry_statuses and attempts < max_attempts:
                time.sleep(min(0.05 * 2**attempts, 1.0))
                attempts += 1
                outcome = send_request(port, request)
            if attempts > 1:
                outcome = dataclasses.replace(outcome, attempts=attempts)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=time_limit_s + 90)
    elapsed = time.perf_counter() - started
    with lock:
        done = tuple(outcomes)
    return LoadResult(n_clients, done, elapsed, is_time_capped=bool(queue))


def median_seconds(timings: Sequence[float]) -> float:
    return statistics.median(timings) if timings else 0.0
