"""Run the documentation's examples against local servers, and check that they resume.

    .venv/bin/python scripts/docs_examples.py            # every example
    .venv/bin/python scripts/docs_examples.py aiohttp    # the ones whose title contains "aiohttp"
    .venv/bin/python scripts/docs_examples.py --list
    .venv/bin/python scripts/docs_examples.py --runner uvloop asyncio  # asyncio.run -> uvloop.run

An example is a fenced block opened with ```` ```python title="NAME.py" ```` in docs/. Each runs
in a child process of this Python with its placeholder server replaced by a local one on
127.0.0.1 (certificates from trustme; the child trusts the CA through ``SSL_CERT_FILE``, as
``ssl.create_default_context()`` reads it):

- ``URL = "https://example.org/"`` and ``HOST, PORT = "example.org", 443``: a Python HTTPS
  server (TLS 1.3, 2 tickets per full handshake) answering any ``GET`` with ``ok`` and closing;
- ``URI = "wss://ws.example.org/"``: a websockets echo server;
- ``HOST, PORT = "redis.example.org", 6380``: ``redis-server`` with TLS;
- ``HOST, PORT = "db.example.org", 5432``: PostgreSQL with ``ssl=on`` (run as the ``postgres``
  user when this runs as root); ``"db-proxy.example.org", 5433``: stunnel in front of it.

An example passes when it exits 0 within its time limit, the last ``ResumptionStats`` it
prints has ``resumed >= 1`` (``resumed=0`` for the PostgreSQL one, which never resumes), and the
sessions it stored were keyed by port in the examples whose title has ``per_port`` and without
one in the others (a preamble records the keys). An example whose library or server is missing
is skipped, with the reason. Every server listens on
127.0.0.1 only and is stopped at the end; nothing else is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "127.0.0.1"
NAME = "localhost"  # what the examples connect to and verify (the certificate covers it)
TIMEOUT = 60.0

_BLOCK = re.compile(r'^```python title="([\w.-]+\.py)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)
_STATS = re.compile(r"ResumptionStats\((?:[^)]*?\b)?resumed=(\d+)")
_KEY_PORTS = re.compile(r"^docs-examples: stored under port (\w+)$", re.MULTILINE)
# Prepended to each example: report the port of every key a session is stored under (stderr).
_PREAMBLE = """\
import sys as _sys
from aiotlspool.sessions.memory import MemorySessionCache as _Cache
_put = _Cache.put_nowait
def _recording_put(self, key, session):
    print(f"docs-examples: stored under port {key.port}", file=_sys.stderr, flush=True)
    return _put(self, key, session)
_Cache.put_nowait = _recording_put
"""


@dataclass
class Example:
    page: str
    title: str
    code: str

    @property
    def needs(self) -> str:
        for marker, service in (
            ('"redis.example.org"', "redis"),
            ('"db-proxy.example.org"', "stunnel"),
            ('"db.example.org"', "postgres"),
            ("wss://ws.example.org/", "websockets"),
        ):
            if marker in self.code:
                return service
        return "https"


def examples() -> list[Example]:
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for match in _BLOCK.finditer(page.read_text(encoding="utf-8")):
            relative = str(page.relative_to(ROOT))
            found.append(Example(relative, match.group(1), match.group(2)))
    return found


# -- servers ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


class LoopThread:
    """An event loop in a daemon thread, for the Python servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)


class Counts:
    def __init__(self) -> None:
        self.handshakes = 0
        self.resumed = 0


async def _https(server_ctx: ssl.SSLContext, counts: Counts) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts.handshakes += 1
        counts.resumed += bool(writer.get_extra_info("ssl_object").session_reused)
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                b"Connection: close\r\n\r\nok"
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, LOCAL, 0, ssl=server_ctx)


async def _websockets(server_ctx: ssl.SSLContext, counts: Counts) -> object:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(websocket: ServerConnection) -> None:
        counts.handshakes += 1
        counts.resumed += bool(websocket.transport.get_extra_info("ssl_object").session_reused)
        async for message in websocket:
            await websocket.send(message)

    return await serve(handler, LOCAL, 0, ssl=server_ctx)


@contextlib.contextmanager
def _process(argv: list[str], port: int, cwd: Path, user: str | None = None) -> Iterator[None]:
    """A server process, ready once ``port`` accepts; stopped (its group) on exit."""
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    log = open(cwd / "server.log", "w+b")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"{argv[0]} exited: {log.read()[-2000:].decode(errors='replace')}"
                )
            with socket.socket() as sock:
                if sock.connect_ex((LOCAL, port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not listen on {port}")
            time.sleep(0.05)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


@contextlib.contextmanager
def redis_server(tmp: Path, certs: dict[str, Path]) -> Iterator[int]:
    port = _free_port()
    argv = [
        "redis-server", "--bind", LOCAL, "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(certs["cert"]), "--tls-key-file", str(certs["key"]),
        "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--unixsocket", "",
    ]  # fmt: skip
    with _process(argv, port, tmp):
        yield port


@contextlib.contextmanager
def postgres_server(tmp: Path, certs: dict[str, Path]) -> Iterator[int]:
    """A throwaway cluster: ssl=on, trust authentication on 127.0.0.1 (SSL or not)."""
    bindir = Path(shutil.which("initdb") or "initdb").resolve().parent
    user = "postgres" if os.geteuid() == 0 else None
    data = tmp / "pgdata"
    data.mkdir(mode=0o700)
    for name in ("cert", "key"):
        shutil.copy(certs[name], tmp / f"pg-{name}.pem")
        os.chmod(tmp / f"pg-{name}.pem", 0o600)
    if user is not None:
        os.chmod(tmp.parent, 0o755)  # the postgres user must reach its directory
        shutil.chown(tmp, user)
        for path in (data, tmp / "pg-cert.pem", tmp / "pg-key.pem"):
            shutil.chown(path, user)
    init = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    if user is not None:
        init = ["runuser", "-u", user, "--", *init]
    done = subprocess.run(init, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
    port = _free_port()
    argv = [
        str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", LOCAL,
        "-k", str(tmp), "-c", "ssl=on", "-c", f"ssl_cert_file={tmp / 'pg-cert.pem'}",
        "-c", f"ssl_key_file={tmp / 'pg-key.pem'}", "-c", "fsync=off",
    ]  # fmt: skip
    with _process(argv, port, tmp, user):
        yield port


@contextlib.contextmanager
def stunnel_in_front(tmp: Path, certs: dict[str, Path], backend: int) -> Iterator[int]:
    port = _free_port()
    conf = tmp / "stunnel.conf"
    conf.write_text(
        f"foreground = yes\npid =\n\n[pg]\naccept = {LOCAL}:{port}\nconnect = {LOCAL}:{backend}\n"
        f"cert = {certs['cert']}\nkey = {certs['key']}\n"
    )
    binary = shutil.which("stunnel4") or shutil.which("stunnel") or "stunnel"
    with _process([binary, str(conf)], port, tmp):
        yield port


# -- running ------------------------------------------------------------------------------------


def _substitute(code: str, placeholders: dict[str, str]) -> str:
    for old, new in placeholders.items():
        code = code.replace(old, new)
    return code


def run_example(example: Example, placeholders: dict[str, str], env: dict[str, str]) -> str:
    code = _PREAMBLE + _substitute(example.code, placeholders)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    took = time.monotonic() - started
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode} after {took:.1f} s:\n{output}")
    found = _STATS.findall(output)
    if not found:
        raise AssertionError(f"no ResumptionStats printed:\n{output}")
    resumed = int(found[-1])
    expect_none = example.needs == "postgres"
    if (resumed == 0) != expect_none:
        raise AssertionError(
            f"resumed={resumed}, expected {'0' if expect_none else '>= 1'}:\n{output}"
        )
    ports = set(_KEY_PORTS.findall(output))
    per_port = "per_port" in example.title
    if ports and (("None" in ports) if per_port else (ports != {"None"})):
        raise AssertionError(f"keys by port {sorted(ports)}, per_port={per_port}:\n{output}")
    shown = _KEY_PORTS.sub("", output).strip()
    return f"{took:.1f} s, keys by port: {', '.join(sorted(ports)) or '-'}\n{shown}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("patterns", nargs="*", help="run only titles containing one of these")
    parser.add_argument("--list", action="store_true", help="list the examples and exit")
    parser.add_argument(
        "--runner",
        choices=("asyncio", "uvloop", "trio"),
        default="asyncio",
        help="run asyncio.run(main()) as uvloop.run(main()) or trio.run(main) (and anyio on trio)",
    )
    args = parser.parse_args()
    selected = [
        example
        for example in examples()
        if not args.patterns or any(pattern in example.title for pattern in args.patterns)
    ]
    if args.list:
        for example in selected:
            print(f"{example.page}: {example.title} ({example.needs})")
        return 0

    import trustme

    failed = skips = 0
    with (
        tempfile.TemporaryDirectory(prefix="aiotlspool-docs-") as tmpdir,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmpdir)
        ca = trustme.CA()
        leaf = ca.issue_cert(NAME, LOCAL)
        certs = {"ca": tmp / "ca.pem", "cert": tmp / "cert.pem", "key": tmp / "key.pem"}
        ca.cert_pem.write_to_path(str(certs["ca"]))
        leaf.cert_chain_pems[0].write_to_path(str(certs["cert"]))
        leaf.private_key_pem.write_to_path(str(certs["key"]))
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(server_ctx)

        loop = LoopThread()
        stack.callback(loop.stop)
        https_counts, ws_counts = Counts(), Counts()
        https = loop.run(_https(server_ctx, https_counts))
        https_port = https.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        placeholders = {
            'URL = "https://example.org/"': f'URL = "https://{NAME}:{https_port}/"',
            'HOST, PORT = "example.org", 443': f'HOST, PORT = "{NAME}", {https_port}',
        }
        if args.runner == "trio":
            placeholders["anyio.run(main)"] = 'anyio.run(main, backend="trio")'
        if args.runner != "asyncio":
            placeholders["asyncio.run(main())"] = {
                "uvloop": "import uvloop; uvloop.run(main())",
                "trio": "import trio; trio.run(main)",
            }[args.runner]
        skipped: dict[str, str] = {}
        if "websockets" in {example.needs for example in selected}:
            try:
                ws = loop.run(_websockets(server_ctx, ws_counts))
                ws_port = ws.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
                placeholders['URI = "wss://ws.example.org/"'] = f'URI = "wss://{NAME}:{ws_port}/"'
            except ImportError as exc:
                skipped["websockets"] = str(exc)
        servers: dict[str, Callable[[], int]] = {
            "redis": lambda: stack.enter_context(redis_server(_dir(tmp, "redis"), certs)),
            "postgres": lambda: stack.enter_context(postgres_server(_dir(tmp, "pg"), certs)),
        }
        wanted = {example.needs for example in selected}
        for service, binary in (("redis", "redis-server"), ("postgres", "initdb")):
            if service in wanted or (service == "postgres" and "stunnel" in wanted):
                if shutil.which(binary) is None:
                    skipped[service] = f"{binary} not installed (scripts/install-servers.sh)"
                    continue
                port = servers[service]()
                key = "redis.example.org" if service == "redis" else "db.example.org"
                number = 6380 if service == "redis" else 5432
                placeholders[f'HOST, PORT = "{key}", {number}'] = f'HOST, PORT = "{NAME}", {port}'
                if service == "postgres" and "stunnel" in wanted:
                    if not (shutil.which("stunnel4") or shutil.which("stunnel")):
                        skipped["stunnel"] = "stunnel not installed (scripts/install-servers.sh)"
                        continue
                    proxy = stack.enter_context(stunnel_in_front(_dir(tmp, "stunnel"), certs, port))
                    placeholders['HOST, PORT = "db-proxy.example.org", 5433'] = (
                        f'HOST, PORT = "{NAME}", {proxy}'
                    )
        if "postgres" in skipped:
            skipped["stunnel"] = skipped["postgres"]

        env = {
            **os.environ,
            "SSL_CERT_FILE": str(certs["ca"]),
            "PYTHONPATH": str(ROOT),
            "no_proxy": "*",
            "NO_PROXY": "*",
        }
        for example in selected:
            label = f"{example.page}: {example.title}"
            if example.needs in skipped:
                skips += 1
                print(f"SKIP {label}: {skipped[example.needs]}")
                continue
            before = (https_counts.resumed, ws_counts.resumed)
            try:
                result = run_example(example, placeholders, env)
            except (AssertionError, subprocess.TimeoutExpired) as exc:
                failed += 1
                print(f"FAIL {label}: {exc}")
                continue
            server_side = ""
            if example.needs == "https":
                server_side = f" (the server saw {https_counts.resumed - before[0]} resumed)"
            elif example.needs == "websockets":
                server_side = f" (the server saw {ws_counts.resumed - before[1]} resumed)"
            print(f"PASS {label}{server_side}: {result}")
    print(f"{len(selected) - failed - skips} passed, {failed} failed, {skips} skipped")
    # In CI every server is installed: a skip there means a broken install step.
    return 1 if failed or (skips and os.environ.get("CI") == "true") else 0


def _dir(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir()
    return path


if __name__ == "__main__":
    sys.exit(main())
