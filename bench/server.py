"""What every bench script shares: a fresh database, the server process, and its memory.

async with fresh_database(sqlite=False) as database_url:
    server = Server.start({"DATABASE_URL": database_url, ...})
    try:
        await server.wait_healthy()
        ...  server.rss_bytes(), server.peak_rss_bytes()
    finally:
        server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
ADMIN_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit (children inherit it) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.asynccontextmanager
async def fresh_database(*, sqlite: bool = False) -> AsyncIterator[str]:
    """A new, empty database for one run (SQLAlchemy URL), dropped afterwards."""
    if sqlite:
        yield f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
        return
    name = f"chat_api_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _children(pid: int) -> list[int]:
    """Every descendant of pid (uvicorn's workers and their spawn helpers)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            direct = (task / "children").read_text().split()
        except OSError:
            continue
        for child in direct:
            found.append(int(child))
            found.extend(_children(int(child)))
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    """User and system CPU the process has used (utime + stime in /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """`python -m app` in a subprocess, on loopback at `base_url`."""

    process: subprocess.Popen[bytes]
    base_url: str
    port: int

    @classmethod
    def start(
        cls,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        command: Sequence[str] = (sys.executable, "-m", "app"),
    ) -> Server:
        """Start `command` (the service, or bench/skeleton_app.py) on `port` (HOST, PORT)."""
        port = port or free_port()
        full_env = {
            **os.environ,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        # An empty value unsets: the bench decides, not whatever the caller's shell exported.
        full_env = {name: value for name, value in full_env.items() if value != ""}
        # BENCH_SERVER_LOG=<file> keeps the server's log lines (errors, with LOG_LEVEL=ERROR).
        log_path = os.environ.get("BENCH_SERVER_LOG")
        stdout = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        process = subprocess.Popen(list(command), cwd=ROOT, env=full_env, stdout=stdout)
        return cls(process, f"http://127.0.0.1:{port}", port)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_healthy(self, workers: int = 1) -> None:
        """Until /health answers; with several workers, until each has answered once.

        Workers are told apart by pid only through /proc: wait until that many children
        exist and the port answers, then a few more probes so each has warmed up.
        """
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                if self.process.poll() is not None:
                    raise SystemExit("server exited during start-up")
                try:
                    response = await http.get(f"{self.base_url}/health")
                    if response.status_code == 200 and (
                        workers <= 1 or len(self.worker_pids()) >= workers
                    ):
                        for _ in range(20 * workers):
                            await http.get(f"{self.base_url}/health")
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise SystemExit("server did not start")

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the children, or the process itself."""
        children = [p for p in _children(self.pid) if _status_kib(p, "VmRSS") > 20_000]
        return children or [self.pid]

    def cpu_seconds(self) -> float:
        """CPU used so far by the processes that serve requests: the stable measure of cost
        on a machine whose throughput and latency drift from run to run."""
        return sum(_cpu_seconds(pid) for pid in self.worker_pids())

    def all_pids(self) -> list[int]:
        return [self.pid, *_children(self.pid)]

    def rss_bytes(self) -> int:
        """Resident memory now, summed over the server and all its children."""
        return sum(_status_kib(p, "VmRSS") for p in self.all_pids()) * 1024

    def peak_rss_bytes(self) -> int:
        """High-water resident memory (VmHWM), summed over the server and its children."""
        return sum(_status_kib(p, "VmHWM") for p in self.all_pids()) * 1024

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_for_port(port: int, timeout: float = 10) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")
