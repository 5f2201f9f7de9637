"""The machine the figures come from, CPU pinning, event loop factories and RSS."""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import os
import platform
import resource
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")


def run_on(loop_factory: LoopFactory, main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a loop of our choice (``asyncio.Runner`` needs Python 3.11)."""
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def loop_factories() -> dict[str, LoopFactory]:
    """The loops to measure on: asyncio's default, and uvloop when it is installed."""
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@dataclass(frozen=True)
class Pinning:
    """Which CPU the servers and the client use; None when the machine cannot separate them."""

    server_cpu: int | None
    client_cpu: int | None

    @property
    def note(self) -> str:
        if self.server_cpu is None:
            return "not pinned (fewer than 2 usable CPUs or no sched_setaffinity)"
        return f"servers pinned to CPU {self.server_cpu}, client to CPU {self.client_cpu}"


def choose_pinning() -> Pinning:
    """Server on the first usable CPU, client on the second, so client CPU is measured alone."""
    if not hasattr(os, "sched_getaffinity"):
        return Pinning(None, None)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(None, None)
    return Pinning(cpus[0], cpus[1])


def pin_self(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


async def run_until_orphaned(lifetime: float) -> None:
    """Return after ``lifetime`` seconds, or as soon as the parent process is gone: what lets
    the server and proxy processes stop by themselves."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    parent = os.getppid()
    stop_at = loop.time() + lifetime

    def check() -> None:
        if loop.time() >= stop_at or os.getppid() != parent:
            done.set()
        else:
            loop.call_later(0.5, check)

    check()
    await done.wait()


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of another process (Linux /proc), for the server's busy fraction."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of stat(5); index 11 and 12 after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (nginx master -> workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def nginx_version(binary: str | None) -> str | None:
    if binary is None:
        return None
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (result.stderr or result.stdout).strip().split("/", 1)[-1] or None


def source_revision() -> str | None:
    """The commit of the aiotlspool under test, and whether its package has local changes."""
    import aiotlspool

    repo = os.path.dirname(os.path.dirname(os.path.abspath(aiotlspool.__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", repo, "status", "--porcelain", "--", "aiotlspool"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + (" + uncommitted changes in aiotlspool/" if changes else "")


def machine_info(pinning: Pinning, mode: str) -> dict[str, Any]:
    """Everything needed to judge where a figure comes from."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "machine": platform.node(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "pinning": pinning.note,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "openssl": ssl.OPENSSL_VERSION,
        "loops": list(loop_factories()),
        "versions": {
            name: _version(name)
            for name in (
                "aiotlspool",
                "uvloop",
                "aiohttp",
                "httpx",
                "httpcore",
                "curl_cffi",
                "redis",
                "matplotlib",
            )
        },
        "nginx": nginx_version(shutil.which("nginx")),
        "revision": source_revision(),
    }


def process_cpu() -> float:
    """This process's user + system CPU seconds (every thread, the loop's and libcurl's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
