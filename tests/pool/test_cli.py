"""The command line: probe verdicts against servers whose behaviour is known, the JSON schema,
the demo, and one clear line with a documented exit code for every kind of bad input.

The CLI runs in-process (``main(argv)`` returns the exit code); its servers run in a thread or
as ``openssl s_server``, see ``tests/support/servers.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from aiotlspool.cli.main import (
    EXIT_CONNECT,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_TLS,
    EXIT_USAGE,
    main,
)
from aiotlspool.cli.probe import _SPECS, _verdict, probe
from aiotlspool.cli.target import ProbeInputError, parse_target

from ..support.helpers import HOST, skip_or_fail
from ..support.servers import (
    ThreadServer,
    echo,
    never_answer,
    openssl_available,
    openssl_server,
    plain_http,
    server_context,
    ssh_banner,
    unused_port,
)

ATTEMPTS = 3


@dataclass(frozen=True)
class Pki:
    cert: trustme.LeafCert
    ca_file: str
    pem_file: str  # key and chain, for openssl s_server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", HOST, "::1")
    tmp = tmp_path_factory.mktemp("pki")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    return Pki(cert, str(tmp / "ca.pem"), str(tmp / "server.pem"))


@pytest.fixture
def openssl() -> None:
    if not openssl_available():
        skip_or_fail("the openssl binary is not installed: s_server tests need it")


def probe_json(capsys: pytest.CaptureFixture[str], target: str, *args: str) -> dict[str, Any]:
    code = main(["probe", target, "--json", "--attempts", str(ATTEMPTS), *args])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    report: dict[str, Any] = json.loads(out.out)
    return report


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["mechanism"]: check for check in report["checks"]}


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {name: check["verdict"] for name, check in checks(report).items()}


def probe_trusted(
    capsys: pytest.CaptureFixture[str], pki: Pki, port: int, *args: str
) -> dict[str, Any]:
    """Probe 127.0.0.1:``port`` trusting the test CA."""
    return probe_json(capsys, f"{HOST}:{port}", "--cafile", pki.ca_file, *args)


def probe_echo_server(
    capsys: pytest.CaptureFixture[str], pki: Pki, context: ssl.SSLContext, *args: str
) -> dict[str, Any]:
    """Probe a Python TLS echo server with ``context``, trusting the test CA."""
    with ThreadServer(echo, context) as server:
        return probe_trusted(capsys, pki, server.port, *args)


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[ThreadServer]:
    """A Python TLS 1.2 + 1.3 echo server with tickets and a session cache."""
    with ThreadServer(echo, server_context(pki.cert)) as server:
        yield server


# -- verdicts -------------------------------------------------------------------------------


def test_python_server_with_tickets_resumes_by_every_mechanism(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer
) -> None:
    report = probe_trusted(capsys, pki, tls_server.port)
    assert verdicts(report) == {
        "tls1.2-session-id": "supported",
        "tls1.2-ticket": "supported",
        "tls1.3-ticket": "supported",
    }
    by_name = checks(report)
    for check in by_name.values():
        assert (check["attempts"], check["resumed"], check["rejected"]) == (ATTEMPTS, ATTEMPTS, 0)
        assert check["handshake_ms"]["full_median"] > 0
        assert check["handshake_ms"]["resumed_median"] > 0
    assert by_name["tls1.2-session-id"]["ticket_issued"] is None  # the client refused tickets
    assert by_name["tls1.2-ticket"]["ticket_issued"] is True
    assert by_name["tls1.3-ticket"]["ticket_lifetime_hint"] == 7200  # OpenSSL's default
    assert by_name["tls1.3-ticket"]["ticket_reuse"] is True  # OpenSSL servers accept it
    # The server saw the resumptions the client reported (+2: the ticket reuse check), once its
    # thread has caught up with the last connection.
    deadline = time.monotonic() + 5
    while tls_server.resumed < 3 * ATTEMPTS + 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tls_server.resumed == 3 * ATTEMPTS + 2


def test_python_server_without_tls12_tickets_resumes_by_session_id_only(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    report = probe_echo_server(capsys, pki, server_context(pki.cert, "TLSv1.2", tickets=False))
    assert verdicts(report) == {
        "tls1.2-session-id": "supported",
        "tls1.2-ticket": "not_supported",
        "tls1.3-ticket": "not_offered",
    }
    ticket = checks(report)["tls1.2-ticket"]
    assert ticket["ticket_issued"] is False
    assert "session ID" in ticket["note"]


def test_tls12_only_server_does_not_offer_tls13(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    report = probe_echo_server(capsys, pki, server_context(pki.cert, "TLSv1.2"))
    assert verdicts(report) == {
        "tls1.2-session-id": "supported",
        "tls1.2-ticket": "supported",
        "tls1.3-ticket": "not_offered",
    }
    tls13 = checks(report)["tls1.3-ticket"]
    assert tls13["attempts"] == 0
    assert tls13["error"]


def test_tls13_only_server_does_not_offer_tls12(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    report = probe_echo_server(capsys, pki, server_context(pki.cert, "TLSv1.3"))
    assert verdicts(report) == {
        "tls1.2-session-id": "not_offered",
        "tls1.2-ticket": "not_offered",
        "tls1.3-ticket": "supported",
    }


def test_python_server_without_tls13_tickets_cannot_resume_tls13(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    report = probe_echo_server(
        capsys, pki, server_context(pki.cert, "TLSv1.3", num_tickets=0), "--tls1.3"
    )
    tls13 = checks(report)["tls1.3-ticket"]
    assert (tls13["verdict"], tls13["resumed"], tls13["ticket_issued"]) == (
        "not_supported",
        0,
        False,
    )
    assert tls13["ticket_reuse"] is None  # nothing to reuse
    assert tls13["handshake_ms"]["resumed_median"] is None


@pytest.mark.usefixtures("openssl")
def test_openssl_stateful_session_ids_resume_without_tickets(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    """``s_server -no_ticket``: TLS 1.2 resumes from its session cache only; TLS 1.3 gets
    stateful tickets."""
    with openssl_server(pki.pem_file, "-no_ticket") as port:
        report = probe_trusted(capsys, pki, port)
    assert verdicts(report) == {
        "tls1.2-session-id": "supported",
        "tls1.2-ticket": "not_supported",
        "tls1.3-ticket": "supported",
    }
    assert checks(report)["tls1.2-ticket"]["ticket_issued"] is False
    # s_server serves one connection at a time: the reuse check must not hold two at once.
    assert checks(report)["tls1.3-ticket"]["ticket_reuse"] is True


@pytest.mark.usefixtures("openssl")
def test_openssl_without_tls13_tickets_resumes_only_tls12(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    """``s_server -num_tickets 0``: no TLS 1.3 ticket, so no TLS 1.3 resumption."""
    with openssl_server(pki.pem_file, "-num_tickets", "0") as port:
        report = probe_trusted(capsys, pki, port)
    assert verdicts(report) == {
        "tls1.2-session-id": "supported",
        "tls1.2-ticket": "supported",
        "tls1.3-ticket": "not_supported",
    }
    assert checks(report)["tls1.3-ticket"]["ticket_issued"] is False


def test_tls_version_options_select_the_mechanisms(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer
) -> None:
    only12 = probe_trusted(capsys, pki, tls_server.port, "--tls1.2")
    only13 = probe_trusted(capsys, pki, tls_server.port, "--tls1.3")
    assert list(checks(only12)) == ["tls1.2-session-id", "tls1.2-ticket"]
    assert list(checks(only13)) == ["tls1.3-ticket"]


@pytest.mark.parametrize(
    ("option", "sent"),
    [
        (["--send", "ping\\r\\n"], b"ping\r\n"),
        (["--http"], b"HEAD / HTTP/1.1\r\nHost: localhost:PORT\r\nConnection: close\r\n\r\n"),
    ],
)
def test_request_is_sent_and_the_reply_read(
    capsys: pytest.CaptureFixture[str], pki: Pki, option: list[str], sent: bytes
) -> None:
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.write(b"reply")  # then the probe waits briefly for more, and closes

    with ThreadServer(record, server_context(pki.cert)) as server:
        args = ["--cafile", pki.ca_file, "--tls1.3", "--attempts", "1", *option]
        report = probe_json(capsys, f"localhost:{server.port}", *args)
    sent = sent.replace(b"PORT", str(server.port).encode())
    assert report["settings"]["request_bytes"] == len(sent)
    # The first connection, 1 attempt, the reuse check's first; its two reusing connections
    # only handshake and close.
    assert received == [sent] * 3 + [b""] * 2
    assert verdicts(report) == {"tls1.3-ticket": "supported"}


def test_ipv6_target_in_brackets(capsys: pytest.CaptureFixture[str], pki: Pki) -> None:
    try:
        server = ThreadServer(echo, server_context(pki.cert), host="::1").__enter__()
    except (OSError, RuntimeError):
        pytest.skip("no IPv6 loopback here")
    try:
        report = probe_json(capsys, f"[::1]:{server.port}", "--cafile", pki.ca_file, "--tls1.3")
    finally:
        server.__exit__(None, None, None)
    assert report["target"] == {"host": "::1", "port": server.port, "server_name": "::1"}
    assert verdicts(report) == {"tls1.3-ticket": "supported"}


# -- output ---------------------------------------------------------------------------------


def test_json_schema_is_stable(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer
) -> None:
    """The documented schema (docs/cli.md), version 1: keys and types."""
    report = probe_json(
        capsys, f"{HOST}:{tls_server.port}", "--cafile", pki.ca_file, "--servername", "localhost"
    )
    assert set(report) == {"schema_version", "tool", "target", "settings", "checks"}
    assert report["schema_version"] == 1
    assert set(report["tool"]) == {"name", "version", "python", "openssl"}
    assert report["target"] == {"host": HOST, "port": tls_server.port, "server_name": "localhost"}
    assert report["settings"] == {
        "attempts": ATTEMPTS,
        "verify": True,
        "timeout": 5.0,
        "request_bytes": 0,
    }
    optional_int = (int, type(None))
    optional_float = (float, type(None))
    for check in report["checks"]:
        assert set(check) == {
            "mechanism", "protocol", "verdict", "attempts", "resumed", "rejected",
            "ticket_issued", "ticket_lifetime_hint", "ticket_reuse", "handshake_ms", "note",
            "error",
        }  # fmt: skip
        assert check["protocol"] in ("TLSv1.2", "TLSv1.3")
        assert check["verdict"] in ("supported", "partly", "not_supported", "not_offered", "error")
        assert isinstance(check["attempts"], int)
        assert isinstance(check["resumed"], int)
        assert isinstance(check["ticket_lifetime_hint"], optional_int)
        assert isinstance(check["ticket_issued"], (bool, type(None)))
        assert isinstance(check["ticket_reuse"], (bool, type(None)))
        assert set(check["handshake_ms"]) == {"full_median", "resumed_median"}
        assert isinstance(check["handshake_ms"]["full_median"], optional_float)
        assert isinstance(check["handshake_ms"]["resumed_median"], optional_float)
    assert [check["mechanism"] for check in report["checks"]] == [
        "tls1.2-session-id",
        "tls1.2-ticket",
        "tls1.3-ticket",
    ]


def test_table_output_and_insecure_warning(
    capsys: pytest.CaptureFixture[str], tls_server: ThreadServer
) -> None:
    code = main(["probe", f"{HOST}:{tls_server.port}", "--insecure", "--attempts", "2"])
    out = capsys.readouterr()
    assert code == EXIT_OK
    assert "WARNING" in out.err and "NOT verified" in out.err
    assert "NOT VERIFIED (--insecure)" in out.out
    for text in ("TLS 1.2 session ID", "TLS 1.2 ticket", "TLS 1.3 ticket", "2/2", "supported"):
        assert text in out.out
    assert "TLS 1.3 ticket reuse: accepted" in out.out


def test_table_output_without_rich(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    pki: Pki,
    tls_server: ThreadServer,
) -> None:
    """rich comes from the 'demo' extra; without it the probe prints plain text."""
    for module in ("rich", "rich.box", "rich.console", "rich.table"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    code = main(["probe", f"{HOST}:{tls_server.port}", "--cafile", pki.ca_file, "--tls1.2"])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    lines = out.out.splitlines()
    headers = ["mechanism", "resumed", "verdict", "ticket", "hint", "full", "hs", "resumed", "hs"]
    assert lines[2].split() == headers
    assert lines[3].startswith("TLS 1.2 session ID") and "supported" in lines[3]


# -- bad input: one line on stderr, a documented exit code ----------------------------------


def assert_one_line_error(capsys: pytest.CaptureFixture[str], code: int, expected: int) -> str:
    out = capsys.readouterr()
    assert code == expected, out.err
    assert out.out == ""
    assert "Traceback" not in out.err
    lines = out.err.splitlines()
    assert len(lines) == 1, out.err
    return lines[0]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (f"{HOST}:99999", "invalid port '99999'"),
        (f"{HOST}:0", "invalid port '0'"),
        (f"{HOST}:https", "invalid port 'https'"),
        (f"{HOST}:", "invalid port ''"),
        ("[::1", "invalid target"),
        ("[::1]443", "invalid target"),
        ("", "no host"),
    ],
)
def test_invalid_target_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    line = assert_one_line_error(capsys, main(["probe", target]), EXIT_USAGE)
    assert message in line


@pytest.mark.parametrize(
    "args",
    [
        ["probe"],
        ["probe", HOST, "--attempts", "0"],
        ["probe", HOST, "--timeout", "-1"],
        ["probe", HOST, "--send", "x", "--http"],
        ["probe", HOST, "--no-such-option"],
        ["probe", HOST, "--send", "caf\u00e9\u20ac"],
        ["probe", HOST, "--cafile", "/nonexistent/ca.pem"],
        ["probe", "a..b"],  # not encodable as IDNA (the stdlib would raise UnicodeError)
        ["probe", HOST, "--servername", ".bad"],
        ["no-such-command"],
        [],
    ],
)
def test_bad_command_line_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert_one_line_error(capsys, main(args), EXIT_USAGE)


@pytest.fixture
def no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before any name lookup or connect."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no I/O expected for bad input")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def other_name_server(tmp_path: Any) -> Iterator[tuple[ThreadServer, str]]:
    """A TLS server whose certificate (from a CA in the returned file) is for other.example
    only, not for 127.0.0.1."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    with ThreadServer(echo, server_context(ca.issue_cert("other.example"))) as server:
        yield server, str(tmp_path / "other-ca.pem")


def test_empty_servername_is_refused_without_insecure(
    capsys: pytest.CaptureFixture[str], other_name_server: tuple[ThreadServer, str]
) -> None:
    """``--servername ''`` would send no SNI and skip the name check (asyncio passes None to
    wrap_bio): a certificate for another name would pass as "verified"."""
    server, ca_file = other_name_server
    args = ["probe", f"{HOST}:{server.port}", "--cafile", ca_file, "--servername", ""]
    line = assert_one_line_error(capsys, main([*args, "--attempts", "1"]), EXIT_USAGE)
    assert "--servername ''" in line and "--insecure" in line


def test_empty_servername_with_insecure_says_the_name_was_not_checked(
    capsys: pytest.CaptureFixture[str], other_name_server: tuple[ThreadServer, str]
) -> None:
    server, _ = other_name_server
    args = ["probe", f"{HOST}:{server.port}", "--servername", "", "--insecure", "--tls1.3"]
    assert main([*args, "--attempts", "1"]) == EXIT_OK
    out = capsys.readouterr()
    assert "no SNI" in out.err
    title = " ".join(out.out.split())  # rich may wrap the title
    assert "name not checked" in title and "NOT VERIFIED" in title
    assert "certificate verified" not in title
    report = probe_json(capsys, f"{HOST}:{server.port}", "--servername", "", "--insecure")
    assert report["target"]["server_name"] == ""
    assert report["settings"]["verify"] is False


@pytest.mark.usefixtures("no_io")
def test_probe_function_refuses_empty_server_hostname_when_verifying() -> None:
    with pytest.raises(ProbeInputError, match="empty server_hostname"):
        asyncio.run(probe(HOST, unused_port(), server_hostname=""))


@pytest.mark.usefixtures("no_io")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a\x00b:443"], "invalid host 'a\\x00b': character U+0000"),
        (["a\x00b"], "invalid host"),
        (["[::1\x00]:443"], "not an IPv6 address"),
        (["a\tb"], "invalid host"),
        (["a b"], "invalid host"),
        (["a\x7fb"], "invalid host"),
        (["a\u200bb"], "invalid host"),  # invisible; IDNA would map it away
        ([HOST, "--servername", "a\x00b"], "invalid --servername 'a\\x00b': character U+0000"),
        ([HOST, "--servername", "a\nb"], "invalid --servername"),
        ([HOST, "--servername", " "], "invalid --servername"),
        ([HOST, "--http", "--servername", "a\x00"], "invalid --servername"),
    ],
)
def test_control_characters_in_host_or_servername_are_usage_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    line = assert_one_line_error(capsys, main(["probe", *args]), EXIT_USAGE)
    assert message in line


@pytest.mark.usefixtures("no_io")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe", "host:\u0668\u0660"], "invalid port"),  # Arabic-Indic 80
        (["probe", "[::1]:\u0668\u0660"], "invalid port"),
        (["probe", "host:\uff18\uff10"], "invalid port"),  # fullwidth 80
        (["probe", "host:\u00b9"], "invalid port"),  # superscript 1: isdigit() but not int()
        (["probe", "host:1_0"], "invalid port"),
        (["probe", HOST, "--attempts", "\u0663"], "argument --attempts: expected a whole"),
        (["probe", HOST, "--attempts", "1_0"], "argument --attempts: expected a whole"),
        (["probe", HOST, "--timeout", "\u0663"], "argument --timeout: expected a number"),
        (["probe", HOST, "--timeout", "1_0"], "argument --timeout: expected a number"),
        (["demo", "--connections", "\u0663"], "argument --connections: expected a whole"),
        (["demo", "--concurrency", "\u0661"], "argument --concurrency: expected a whole"),
    ],
)
def test_numbers_must_be_ascii_digits(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    line = assert_one_line_error(capsys, main(args), EXIT_USAGE)
    assert message in line


@pytest.mark.usefixtures("no_io")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe", ":443"], "no host"),
        (["probe", "[]:443"], "no host"),
        (["probe", f"{HOST}:65536"], "invalid port '65536'"),
        (["probe", f"{HOST}:-1"], "invalid port '-1'"),
        (["probe", "x:" + "9" * 5000], "invalid port"),  # int() refuses > 4300 digits
        (["probe", f"[{HOST}]:443"], "is not an IPv6 address"),  # brackets are for IPv6
        (["probe", "[localhost]:443"], "is not an IPv6 address"),
        (["probe", "a:b:c"], "not an IPv6 address"),
        (["probe", "."], "invalid host"),
        (["probe", "a" * 64 + ".example"], "invalid host"),  # IDNA: label too long
        (["probe", "\ud800"], "invalid host"),
        (["probe", HOST, "--servername", "a:b"], "invalid --servername"),
        (["probe", HOST, "--attempts", "10000000000000000000"], "must be from 1 to"),
        (["probe", HOST, "--attempts", "9" * 5000], "--attempts"),
        (["probe", HOST, "--timeout", "1e999"], "--timeout"),
        (["demo", "--connections", "9" * 400], "must be from 1 to"),  # was an OverflowError
        (["demo", "--connections", "1", "--concurrency", "10000001"], "must be from 1 to"),
    ],
)
def test_other_bad_input_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    line = assert_one_line_error(capsys, main(args), EXIT_USAGE)
    assert message in line


def test_unresolvable_host(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The answer a resolver gives for .invalid (RFC 6761), without asking one: no DNS traffic,
    # and no dependence on how this machine's resolver behaves offline.
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "no-such-host.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    line = assert_one_line_error(capsys, main(["probe", "no-such-host.invalid"]), EXIT_CONNECT)
    assert line == (
        "aiotlspool probe: cannot resolve host 'no-such-host.invalid': Name or service not known"
    )


def test_refused_port(capsys: pytest.CaptureFixture[str]) -> None:
    port = unused_port()
    line = assert_one_line_error(capsys, main(["probe", f"{HOST}:{port}"]), EXIT_CONNECT)
    assert f"connection to {HOST}:{port} refused" in line


@pytest.mark.parametrize("handler", [plain_http, ssh_banner], ids=["plain-http", "ssh-banner"])
def test_port_that_does_not_speak_tls(capsys: pytest.CaptureFixture[str], handler: Any) -> None:
    with ThreadServer(handler) as server:
        code = main(["probe", f"{HOST}:{server.port}"])
    line = assert_one_line_error(capsys, code, EXIT_TLS)
    assert "TLS server?" in line


def test_stalling_server_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadServer(never_answer) as server:
        code = main(["probe", f"{HOST}:{server.port}", "--timeout", "0.3"])
    line = assert_one_line_error(capsys, code, EXIT_TIMEOUT)
    assert "timed out after 0.3s" in line


def test_untrusted_certificate_hints_at_cafile(
    capsys: pytest.CaptureFixture[str], tls_server: ThreadServer
) -> None:
    line = assert_one_line_error(capsys, main(["probe", f"{HOST}:{tls_server.port}"]), EXIT_TLS)
    assert "did not verify" in line and "--cafile" in line and "--insecure" in line


def test_certificate_for_another_name(
    capsys: pytest.CaptureFixture[str], pki: Pki, tls_server: ThreadServer
) -> None:
    args = ["--cafile", pki.ca_file, "--servername", "other.example"]
    code = main(["probe", f"{HOST}:{tls_server.port}", *args])
    line = assert_one_line_error(capsys, code, EXIT_TLS)
    assert "'other.example'" in line and "--cafile" in line


def test_verdicts_from_counts() -> None:
    """Whatever servers we have at hand, the rules: all resumed, some, none, or no ticket."""
    session_ids, tickets = _SPECS["tls1.2-session-id"], _SPECS["tls1.2-ticket"]
    assert _verdict(session_ids, 5, 5, False, None) == ("supported", None)
    assert _verdict(session_ids, 5, 2, False, None) == ("partly", None)
    assert _verdict(session_ids, 5, 0, False, None) == ("not_supported", None)
    assert _verdict(tickets, 5, 0, True, None)[0] == "not_supported"  # issued, never accepted
    assert _verdict(tickets, 5, 5, False, None)[0] == "not_supported"  # resumed by session ID
    assert _verdict(tickets, 2, 2, True, "timed out")[0] == "error"


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", ("example.com", 443)),
        ("example.com:8443", ("example.com", 8443)),
        ("192.0.2.1:1", ("192.0.2.1", 1)),
        ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
        ("[::1]", ("::1", 443)),
        ("::1", ("::1", 443)),
        (" example.com:08443 ", ("example.com", 8443)),
        ("b\u00fccher.example", ("b\u00fccher.example", 443)),  # IDNA names are fine
    ],
)
def test_parse_target(text: str, expected: tuple[str, int]) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text", ["host:\u0668\u0660", "a\x00b", "[1.2.3.4]:1", "a:b:c", "x:" + "9" * 5000]
)
def test_parse_target_rejects(text: str) -> None:
    with pytest.raises(ProbeInputError):
        parse_target(text)


@given(
    # Host names: dot-separated non-empty labels ("0..0" is rightly refused).
    host=st.from_regex(
        r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}",
        fullmatch=True,
    ),
    port=st.integers(-5, 70000),
)
def test_parse_target_accepts_exactly_the_valid_ports(host: str, port: int) -> None:
    if 1 <= port <= 65535:
        assert parse_target(f"{host}:{port}") == (host, port)
    else:
        with pytest.raises(ProbeInputError):
            parse_target(f"{host}:{port}")


# -- demo and entry points ------------------------------------------------------------------


def table_rows(output: str) -> dict[str, list[str]]:
    """The cells of a rich table's rows, by their first cell."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells:
            rows[cells[0]] = cells[1:]
    return rows


def test_demo_compares_with_and_without_cache(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--connections", "12"]) == EXIT_OK
    rows = table_rows(capsys.readouterr().out)
    assert rows["connections"][:2] == ["12", "12"]
    assert rows["full handshakes"][:2] == ["12", "1"]  # without cache, with cache
    assert rows["resumed handshakes"][:2] == ["0", "11"]
    assert rows["median handshake"][2].endswith("x")  # the speedup column
    assert rows["connects/s"][2].endswith("x")


def test_demo_options(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvloop")
    args = ["demo", "--connections", "8", "--tls", "1.2", "--loop", "uvloop", "--concurrency", "2"]
    assert main([*args, "--engine", "stdlib"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "TLS 1.2, uvloop loop, concurrency 2" in out
    assert "Session engine: stdlib." in out
    assert table_rows(out)["connections"][:2] == ["8", "8"]


def test_demo_without_its_extra_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)
    line = assert_one_line_error(capsys, main(["demo"]), EXIT_USAGE)
    assert "pip install 'aiotlspool[demo]'" in line


def test_python_m_aiotlspool_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiotlspool", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: aiotlspool")
    assert "demo" in result.stdout and "probe" in result.stdout


@pytest.mark.parametrize("command", ["demo", "probe"])
def test_subcommand_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    assert main([command, "--help"]) == EXIT_OK
    assert f"usage: aiotlspool {command}" in capsys.readouterr().out


def test_core_imports_without_rich() -> None:
    """rich is for the CLI only: the package and the probe logic import without it."""
    code = (
        "import sys; sys.modules['rich'] = None; sys.modules['trustme'] = None\n"
        "import aiotlspool, aiotlspool.cli.main, aiotlspool.cli.probe\n"
        "import aiotlspool.cli.report, aiotlspool.cli.target\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
