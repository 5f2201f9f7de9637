"""``aiotlspool bench``: its counts add up and match the servers' own (a Python server, openssl
s_server's session cache statistics, nginx's access log), open and closed loops, warm-up and
honesty warnings, the JSON schema, the probe's clean errors for bad input and unreachable
servers, and Ctrl-C printing the partial report.

Every run is short (``--connections`` 20 to 50, or ``--duration 0.5``); the CLI runs
in-process (``main(argv)``), except for Ctrl-C, which needs a process to interrupt.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from aiotlspool.cli.bench_options import BenchOptions
from aiotlspool.cli.bench_report import BenchReport
from aiotlspool.cli.bench_stats import ModeTotals
from aiotlspool.cli.main import EXIT_CONNECT, EXIT_OK, EXIT_TIMEOUT, EXIT_TLS, EXIT_USAGE, main

from ..support import realservers as rs
from ..support.helpers import HOST, IN_CI, skip_or_fail
from ..support.servers import (
    ThreadServer,
    echo,
    never_answer,
    plain_http,
    server_context,
    ssh_banner,
    unused_port,
)

try:
    import hdrh  # noqa: F401 - the bench's histograms, from its 'bench-cli' extra
except ImportError:
    if IN_CI:
        raise
    pytest.skip("hdrhistogram is not installed (pip install -e '.[test]')", allow_module_level=True)


@dataclass(frozen=True)
class Pki:
    cert: trustme.LeafCert
    ca_file: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    tmp = tmp_path_factory.mktemp("pki")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    return Pki(ca.issue_cert("localhost", HOST), str(tmp / "ca.pem"))


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[ThreadServer]:
    """A Python TLS 1.2 + 1.3 echo server with tickets and a session cache."""
    with ThreadServer(echo, server_context(pki.cert)) as server:
        yield server


def bench_json(capsys: pytest.CaptureFixture[str], target: str, *args: str) -> dict[str, Any]:
    code = main(["bench", target, "--json", *args])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    report: dict[str, Any] = json.loads(out.out)
    return report


def modes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mode["resume"]: mode for mode in report["modes"]}


def handshakes(report: dict[str, Any]) -> tuple[int, int]:
    """All handshakes the report saw, warm-up included, and how many of them resumed."""
    total = resumed = 0
    for mode in report["modes"]:
        warm = mode["warmup"]
        total += mode["full_handshakes"] + mode["resumed_handshakes"]
        total += warm["full_handshakes"] + warm["resumed_handshakes"]
        resumed += mode["resumed_handshakes"] + warm["resumed_handshakes"]
    return total, resumed


def assert_counts_add_up(mode: dict[str, Any]) -> None:
    assert mode["attempts"] == mode["connections"] + mode["errors"]
    assert mode["errors"] == sum(mode["errors_by_kind"].values())
    hands = mode["full_handshakes"] + mode["resumed_handshakes"]
    assert hands <= mode["attempts"] + mode["cancelled"]
    for name in ("handshake_ms", "connect_ms", "latency_ms"):
        assert mode[name]["count"] == hands, name  # the histograms hold every handshake
    if mode["resume"] == "on" and mode["errors"] == mode["cancelled"] == 0:
        # A full handshake found no session to offer, or the server refused the one offered.
        assert mode["full_handshakes"] == mode["cache_misses"] + mode["sessions_rejected"]


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


# -- the counts, against servers that count for themselves -----------------------------------


@pytest.mark.parametrize(("tls", "processes"), [("1.2", "1"), ("1.3", "1"), ("1.3", "2")])
def test_counts_add_up_and_match_the_python_servers_own(
    capsys: pytest.CaptureFixture[str],
    pki: Pki,
    tls_server: ThreadServer,
    tls: str,
    processes: str,
) -> None:
    args = ["--cafile", pki.ca_file, "--tls", tls, "--connections", "40", "--concurrency", "4"]
    args += ["--processes", processes, "--send", "ping", "--reply-bytes", "4"]
    report = bench_json(capsys, f"{HOST}:{tls_server.port}", *args)
    off, on = modes(report)["off"], modes(report)["on"]
    for mode in (off, on):
        assert_counts_add_up(mode)
        assert (mode["attempts"], mode["connections"], mode["errors"]) == (40, 40, 0)
        assert mode["connections_per_second"] > 0
        assert mode["client_cpu"]["per_connection_ms"] > 0
    assert (off["full_handshakes"], off["resumed_handshakes"]) == (40, 0)
    assert off["sessions_stored"] is off["cache_misses"] is None  # no cache at all
    # Warmed up, 4 at a time (at most 8 TLS 1.3 tickets are kept): every connection resumes.
    assert (on["resumed_handshakes"], on["resumed_share"]) == (40, 1.0)
    assert (on["cache_misses"], on["sessions_rejected"]) == (0, 0)
    assert on["warmup"]["tickets_first_handshake"] == (2 if tls == "1.3" else 1)
    # (The machine's CPU may well be busy: client and server share its cores.)
    assert not [w for w in report["warnings"] if "resumed" in w or "failed" in w]
    total, resumed = handshakes(report)
    wait_until(lambda: tls_server.handshakes >= total)
    assert (tls_server.handshakes, tls_server.resumed) == (total, resumed)


def s_server_counts(server: rs.RealServer, certs: rs.Certs) -> tuple[int, int]:
    """openssl s_server -www's own statistics: handshakes finished and session cache hits
    (this request's handshake included)."""
    page = rs.exchange(server, certs.client_context()).reply.decode()
    finished = re.search(r"(\d+) server accepts that finished", page)
    hits = re.search(r"(\d+) session cache hits", page)
    assert finished and hits, page
    return int(finished.group(1)), int(hits.group(1))


@pytest.fixture(scope="module")
def certs() -> Iterator[rs.Certs]:
    with rs.certificates() as made:
        yield made


@contextlib.contextmanager
def real_server(variant: rs.Variant, certs: rs.Certs) -> Iterator[rs.RealServer]:
    try:
        rs.require(variant)
    except rs.ServerUnavailable as exc:
        skip_or_fail(str(exc))
    with rs.run_server(variant, certs) as server:
        yield server


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_openssl_s_server_counts_the_resumptions_the_report_shows(
    capsys: pytest.CaptureFixture[str], certs: rs.Certs, tls: str
) -> None:
    """s_server -www -no_ticket resumes from its session cache (TLS 1.2 session IDs, TLS 1.3
    stateful tickets) and counts every hit on its status page."""
    with real_server("s_server-no-ticket", certs) as server:
        finished_before, hits_before = s_server_counts(server, certs)
        args = ["--cafile", str(certs.ca_file), "--servername", "localhost", "--tls", tls]
        report = bench_json(capsys, f"{HOST}:{server.port}", *args, "--connections", "20", "--http")
        finished, hits = s_server_counts(server, certs)
    for mode in report["modes"]:
        assert_counts_add_up(mode)
        assert mode["connections"] == 20
    total, resumed = handshakes(report)
    assert modes(report)["on"]["resumed_handshakes"] == 20
    assert hits - hits_before == resumed
    assert finished - finished_before - 1 == total  # (- 1: the status page's own request)


@contextlib.contextmanager
def nginx_logging_reuse(certs: rs.Certs, directory: Path) -> Iterator[tuple[rs.RealServer, Path]]:
    """nginx-fixed-key (2 workers, TLS 1.2 and 1.3, tickets), logging "$ssl_session_reused"
    ("r" or ".") for every request."""
    try:
        binary = rs.require("nginx-fixed-key")
    except rs.ServerUnavailable as exc:
        skip_or_fail(str(exc))
    (directory / "temp").mkdir()
    log = directory / "reuse.log"
    key = rs.write_ticket_key(directory / "ticket.key")

    def argv(port: int) -> list[str]:
        text = rs._nginx_conf("nginx-fixed-key", directory, port, certs, key)
        logging = f"log_format reuse '$ssl_session_reused';\n    access_log {log} reuse;"
        (directory / "nginx.conf").write_text(text.replace("access_log off;", logging))
        return [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", "stderr"]

    server = rs.RealServer("nginx-fixed-key", directory, argv)
    try:
        server.start()
        yield server, log
    finally:
        server.stop()


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_nginx_access_log_matches_the_report_of_two_processes(
    capsys: pytest.CaptureFixture[str], certs: rs.Certs, tmp_path: Path, tls: str
) -> None:
    with nginx_logging_reuse(certs, tmp_path) as (server, log):
        args = ["--cafile", str(certs.ca_file), "--servername", "localhost", "--tls", tls]
        args += ["--connections", "30", "--concurrency", "4", "--processes", "2", "--http"]
        report = bench_json(capsys, f"{HOST}:{server.port}", *args)
        total, resumed = handshakes(report)
        wait_until(lambda: len(log.read_text().splitlines()) >= total)
        seen = Counter(log.read_text().split())
    for mode in report["modes"]:
        assert_counts_add_up(mode)
        assert (mode["connections"], mode["errors"]) == (30, 0)
    assert modes(report)["on"]["resumed_handshakes"] == 30
    assert seen == {"r": resumed, ".": total - resumed}


# -- load shapes ------------------------------------------------------------------------------


def test_duration_runs_a_closed_loop_for_that_long(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer
) -> None:
    args = ["--cafile", pki.ca_file, "--duration", "0.5", "--resume", "on", "--concurrency", "2"]
    report = bench_json(capsys, f"{HOST}:{tls_server.port}", *args)
    (on,) = report["modes"]
    assert_counts_add_up(on)
    assert on["connections"] > 0 and on["errors"] == 0
    assert 0.5 <= on["elapsed_seconds"] < 2.0  # the last connections end after the 0.5 s
    assert on["arrivals"] == 0  # (closed loop)
    assert report["settings"]["duration"] == 0.5 and report["settings"]["rounds"] == 1


def test_rate_starts_connections_on_time_and_counts_latency_from_then(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer
) -> None:
    """Open loop: 50 connections due 0.5 ms apart through one slot. Each handshake takes
    longer than that, so they queue: connect times stay short, latency from the due time
    grows - the waiting a closed loop would hide (coordinated omission)."""
    args = ["--cafile", pki.ca_file, "--resume", "off", "--rate", "2000", "--connections", "50"]
    report = bench_json(capsys, f"{HOST}:{tls_server.port}", *args)
    (off,) = report["modes"]
    assert_counts_add_up(off)
    assert (off["arrivals"], off["connections"]) == (50, 50)
    assert off["latency_ms"]["max"] > 5 * off["connect_ms"]["p50"]
    assert report["settings"]["rate"] == 2000.0
    duration = bench_json(
        capsys, f"{HOST}:{tls_server.port}", *args[:4], "--rate", "100", "--duration", "0.5"
    )
    assert modes(duration)["off"]["arrivals"] == 50  # one every 10 ms for 0.5 s


def test_failures_after_the_warm_up_are_counted_by_kind(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    async def no_reply(reader: Any, writer: Any) -> None:
        await reader.read(65536)  # then close: the client reads EOF, not 4 bytes

    with ThreadServer(no_reply, server_context(pki.cert)) as server:
        args = ["--cafile", pki.ca_file, "--resume", "on", "--connections", "20"]
        report = bench_json(
            capsys, f"{HOST}:{server.port}", *args, "--send", "ping", "--reply-bytes", "4"
        )
    (on,) = report["modes"]
    assert_counts_add_up(on)
    assert (on["connections"], on["errors_by_kind"]) == (0, {"reply_incomplete": 20})
    assert on["full_handshakes"] + on["resumed_handshakes"] == 20  # they did connect
    assert any("20 connection(s) failed: 20 reply_incomplete" in w for w in report["warnings"])


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_event_loops(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer, loop: str
) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    args = ["--cafile", pki.ca_file, "--connections", "20", "--loop", loop, "--tls", "1.2"]
    report = bench_json(capsys, f"{HOST}:{tls_server.port}", *args)
    assert report["settings"]["loop"] == loop
    assert modes(report)["on"]["resumed_handshakes"] == 20


# -- the report -------------------------------------------------------------------------------


def test_table_states_the_warm_up_and_the_tickets(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer
) -> None:
    code = main(
        ["bench", f"{HOST}:{tls_server.port}", "--cafile", pki.ca_file, "--connections", "20"]
    )
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    text = " ".join(out.out.split())  # rich wraps long lines
    assert f"aiotlspool bench {HOST}:{tls_server.port}, certificate verified" in text
    assert "TLS 1.3, 20 connections per mode" in text
    rows = {line.split("  ")[0]: line.split() for line in out.out.splitlines() if "  " in line}
    assert rows["connections"][1:] == ["20", "20"]  # resume off, resume on
    assert rows["resumed"][1:] == ["0", "(0.0%)", "20", "(100.0%)"]
    for row in ("connections/s", "handshake p50", "handshake p99", "connect max", "errors"):
        assert row in rows, row
    assert "latency p50" not in rows  # only with --rate
    assert "warm-up, not counted: 1 connection(s) per process and mode" in text
    assert "the first full handshake gave 2 session(s) to the pool" in text
    assert "of the handshakes resumed" not in text and "failed" not in text  # no such warning


def test_resumed_share_below_what_was_asked_is_a_warning(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    with ThreadServer(echo, server_context(pki.cert, "TLSv1.3", num_tickets=0)) as server:
        args = ["--cafile", pki.ca_file, "--resume", "on", "--connections", "20"]
        report = bench_json(capsys, f"{HOST}:{server.port}", *args)
        code = main(["bench", f"{HOST}:{server.port}", *args])
    on = modes(report)["on"]
    assert (on["resumed_share"], on["full_handshakes"], on["cache_misses"]) == (0.0, 20, 20)
    assert [w for w in report["warnings"] if "resumed" in w] == [
        "resume on: 0.0% of the handshakes resumed (0 of 20), not all: the server resumed no "
        "session (see 'aiotlspool probe')"
    ]  # (others may say that this machine's CPUs were busy)
    assert code == EXIT_OK
    assert "WARNING: resume on: 0.0% of the handshakes resumed" in capsys.readouterr().out


def test_saturated_client_cpu_is_a_warning() -> None:
    options = BenchOptions(HOST, 443, concurrency=16, resume="on", tls="1.3")
    totals = ModeTotals("on")
    totals.full, totals.resumed, totals.connections, totals.elapsed = 50, 950, 1000, 1.0
    totals.misses = 50
    totals.worker_busy = {0: [0.97, 1.0]}
    totals.machine = [99, 100]
    report = BenchReport(options, HOST, {"on": totals}, rounds=1, cpus=2)
    found = report.warnings()
    assert any("event loop was busy 97%" in w and "--processes" in w for w in found)
    assert any("CPUs were 99% busy" in w for w in found)
    assert any(  # 95% resumed
        "50 connect(s) found no session to offer (TLS 1.3 tickets are single-use and the pool "
        "keeps up to 8 per server, for 16 connections at once per process)" in w
        for w in found
    )
    totals.worker_busy, totals.machine, totals.full = {0: [0.5, 1.0]}, [50, 100], 0
    assert report.warnings() == []


def test_json_schema_is_stable(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer
) -> None:
    """The documented schema (docs/cli.md), version 1: keys and types."""
    args = ["--cafile", pki.ca_file, "--connections", "20", "--servername", "localhost"]
    report = bench_json(capsys, f"{HOST}:{tls_server.port}", *args)
    assert set(report) == {
        "schema_version", "command", "tool", "target", "settings", "interrupted",
        "elapsed_seconds", "cpus", "modes", "warnings",
    }  # fmt: skip
    assert (report["schema_version"], report["command"], report["interrupted"]) == (
        1,
        "bench",
        False,
    )
    assert report["target"] == {"host": HOST, "port": tls_server.port, "server_name": "localhost"}
    assert report["settings"] == {
        "tls": "1.3", "resume": "both", "concurrency": 1, "processes": 1, "loop": "asyncio",
        "duration": None, "connections": 20, "rate": None, "warmup": [1], "rounds": 1,
        "verify": True, "timeout": 5.0, "request_bytes": 0, "reply_bytes": None,
        "session_engine": report["settings"]["session_engine"],
    }  # fmt: skip
    assert report["settings"]["session_engine"] in ("native", "stdlib")
    assert [mode["resume"] for mode in report["modes"]] == ["off", "on"]
    for mode in report["modes"]:
        assert set(mode) == {
            "resume", "attempts", "connections", "errors", "errors_by_kind", "cancelled",
            "full_handshakes", "resumed_handshakes", "resumed_share", "sessions_stored",
            "sessions_rejected", "cache_misses",
            "elapsed_seconds", "connections_per_second", "arrivals", "handshake_ms",
            "connect_ms", "latency_ms", "client_cpu", "warmup",
        }  # fmt: skip
        for name in ("handshake_ms", "connect_ms", "latency_ms"):
            assert set(mode[name]) == {"count", "min", "p50", "p90", "p99", "max"}
            assert mode[name]["min"] <= mode[name]["p50"] <= mode[name]["p99"] <= mode[name]["max"]
        assert set(mode["client_cpu"]) == {
            "seconds",
            "per_connection_ms",
            "loop_busy",
            "machine_busy",
        }
        assert set(mode["warmup"]) == {
            "connections", "full_handshakes", "resumed_handshakes", "tickets_first_handshake",
        }  # fmt: skip
        assert isinstance(mode["connections_per_second"], float)


# -- bad input and unreachable servers: the probe's one line and exit codes ------------------


def assert_one_line_error(capsys: pytest.CaptureFixture[str], code: int, expected: int) -> str:
    out = capsys.readouterr()
    assert code == expected, out.err
    assert out.out == "" and "Traceback" not in out.err
    lines = out.err.splitlines()
    assert len(lines) == 1, out.err
    return lines[0]


@pytest.fixture
def no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before any name lookup or connect."""
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no I/O expected for bad input")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.usefixtures("no_io")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([f"{HOST}:99999"], "invalid port '99999'"),
        (["a\x00b"], "invalid host"),
        ([HOST, "--concurrency", "0"], "argument --concurrency: must be from 1 to"),
        ([HOST, "--concurrency", "\u0663"], "argument --concurrency: expected a whole"),
        ([HOST, "--duration", "0"], "argument --duration: must be a number > 0"),
        ([HOST, "--duration", "1", "--connections", "5"], "not allowed with argument"),
        ([HOST, "--rate", "-5"], "argument --rate"),
        ([HOST, "--tls", "1.1"], "argument --tls: invalid choice"),
        ([HOST, "--resume", "maybe"], "argument --resume: invalid choice"),
        ([HOST, "--processes", "65"], "--processes must be from 1 to 64"),
        ([HOST, "--processes", "2"], "--concurrency 1 is below --processes 2"),
        ([HOST, "--reply-bytes", "4"], "--reply-bytes needs a request"),
        ([HOST, "--send", "x", "--http"], "not allowed with argument"),
        ([HOST, "--servername", ""], "--servername '' sends no SNI"),
        ([HOST, "--servername", "a\nb"], "invalid --servername"),
        ([HOST, "--cafile", "/nonexistent/ca.pem"], "cannot load CA file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    line = assert_one_line_error(capsys, main(["bench", *args]), EXIT_USAGE)
    assert line.startswith("aiotlspool bench: ") and message in line


@pytest.mark.usefixtures("no_io")
@pytest.mark.parametrize("module", ["hdrh.histogram", "rich"])
def test_without_its_extra_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    line = assert_one_line_error(capsys, main(["bench", HOST]), EXIT_USAGE)
    assert "from the 'bench-cli' extra: pip install 'aiotlspool[bench-cli]'" in line


def test_refused_port(capsys: pytest.CaptureFixture[str]) -> None:
    port = unused_port()
    line = assert_one_line_error(capsys, main(["bench", f"{HOST}:{port}"]), EXIT_CONNECT)
    assert line == f"aiotlspool bench: connection to {HOST}:{port} refused"


@pytest.mark.parametrize("handler", [plain_http, ssh_banner], ids=["plain-http", "ssh-banner"])
def test_port_that_does_not_speak_tls(capsys: pytest.CaptureFixture[str], handler: Any) -> None:
    with ThreadServer(handler) as server:
        code = main(["bench", f"{HOST}:{server.port}", "--connections", "5"])
    line = assert_one_line_error(capsys, code, EXIT_TLS)
    assert "TLS server?" in line and "only TLS 1.3 was tried" in line


def test_stalling_server_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadServer(never_answer) as server:
        code = main(["bench", f"{HOST}:{server.port}", "--timeout", "0.3"])
    line = assert_one_line_error(capsys, code, EXIT_TIMEOUT)
    assert "timed out after 0.3s" in line


def test_reply_that_never_ends_times_out_with_a_hint(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer
) -> None:
    """An echo server keeps the connection open: reading its reply until EOF never ends."""
    args = ["--cafile", pki.ca_file, "--send", "ping", "--timeout", "0.3"]
    line = assert_one_line_error(
        capsys, main(["bench", f"{HOST}:{tls_server.port}", *args]), EXIT_TIMEOUT
    )
    assert "did not end within 0.3s" in line and "--reply-bytes N" in line


def test_untrusted_certificate_hints_at_cafile(
    capsys: pytest.CaptureFixture[str], tls_server: ThreadServer
) -> None:
    line = assert_one_line_error(capsys, main(["bench", f"{HOST}:{tls_server.port}"]), EXIT_TLS)
    assert "did not verify" in line and "--cafile" in line and "--insecure" in line


def test_insecure_is_said_loudly(
    capsys: pytest.CaptureFixture[str], tls_server: ThreadServer
) -> None:
    args = ["bench", f"localhost:{tls_server.port}", "--insecure", "--connections", "5"]
    assert main(args) == EXIT_OK
    out = capsys.readouterr()
    assert "aiotlspool bench: WARNING: --insecure" in out.err
    assert "certificate NOT VERIFIED (--insecure)" in out.out


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    for option in (
        "--concurrency",
        "--duration",
        "--connections",
        "--rate",
        "--tls",
        "--resume",
        "--processes",
        "--cafile",
        "--servername",
        "--insecure",
        "--loop",
        "--json",
    ):
        assert option in out, option


# -- Ctrl-C -----------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_prints_the_partial_report(
    pki: Pki, tls_server: ThreadServer, processes: str
) -> None:
    """SIGINT to the process group, as a terminal's Ctrl-C: the report of what was measured
    so far (JSON says "interrupted"), then exit code 130."""
    args = ["--cafile", pki.ca_file, "--duration", "60", "--json", "--concurrency", "2"]
    command = [sys.executable, "-m", "aiotlspool", "bench", f"{HOST}:{tls_server.port}", *args]
    process = subprocess.Popen(
        [*command, "--processes", processes],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: the SIGINT below reaches only it
    )
    try:
        wait_until(lambda: tls_server.handshakes >= 30, timeout=20)
        assert tls_server.handshakes >= 30, process.stderr.read() if process.poll() else ""
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == "aiotlspool: interrupted"
    report = json.loads(out)
    assert report["interrupted"] is True
    assert sum(mode["connections"] for mode in report["modes"]) > 0
    for mode in report["modes"]:
        assert_counts_add_up(mode)
    total, _ = handshakes(report)
    wait_until(lambda: tls_server.handshakes >= total)
    assert total <= tls_server.handshakes
