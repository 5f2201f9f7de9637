"""The ``aiotlspool`` command line: ``demo``, ``probe`` and ``bench``.

:func:`main` takes the arguments and returns the exit code, so tests call it in-process. Every
failure the user can cause ends in one line on stderr and a documented exit code (see
docs/cli.md), never a traceback; ``--debug`` shows tracebacks and the pool's debug log instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from .bench_args import add_bench_parser
from .demo_args import add_demo_parser

EXIT_OK = 0
EXIT_ERROR = 1  # an unexpected error (a bug: please report it) or the demo failed
EXIT_USAGE = 2  # bad command line or input; a missing optional dependency
EXIT_CONNECT = 3  # cannot resolve the host or connect to it
EXIT_TLS = 4  # the peer answered but the TLS handshake failed (not TLS, certificate, ...)
EXIT_TIMEOUT = 5  # connecting or the handshake took longer than --timeout
EXIT_INTERRUPTED = 130  # Ctrl-C

MAX_COUNT = 1_000_000  # the largest N for --attempts, --connections, --concurrency

PROG = "aiotlspool"


class _UsageError(Exception):
    """Bad input found after parsing: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not the usage block, then the error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before and after the command; SUPPRESS keeps a subcommand's default
    # from overwriting the value given before it.
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and the pool's debug log",
    )
    parser = _Parser(
        prog=PROG,
        parents=[common],
        description="An asyncio TLS connection pool that resumes TLS sessions: command line.",
        epilog="Exit codes: 0 ok, 1 unexpected error, 2 usage/bad input, 3 cannot connect, "
        "4 TLS or certificate failure, 5 timeout, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    demo = add_demo_parser(commands, common, count=_positive_int)
    demo.set_defaults(handler=_demo)

    probe = commands.add_parser(
        "probe",
        parents=[common],
        help="report how a TLS server resumes sessions (IDs, tickets, TLS 1.3)",
        description="For each of TLS 1.2 session IDs (tickets refused), TLS 1.2 tickets and "
        "TLS 1.3 tickets: one full handshake, then ATTEMPTS reconnections through the pool; "
        "report how many resumed, a verdict, the ticket lifetime hint, whether a TLS 1.3 ticket "
        "can be used twice, and median handshake times. Each connection is closed with "
        "close_notify; nothing is sent unless --send or --http says so.",
        epilog="Exit codes: 0 the probe ran (whatever the verdicts), 2 bad input, 3 cannot "
        "resolve or connect, 4 TLS handshake or certificate failure, 5 timeout, 1 unexpected "
        "error. The JSON schema is in docs/cli.md.",
    )
    probe.add_argument("target", metavar="HOST[:PORT]", help="port 443 by default; [V6]:PORT")
    probe.add_argument(
        "--attempts",
        type=_positive_int,
        default=5,
        metavar="N",
        help="reconnections per mechanism (5)",
    )
    _add_tls_options(probe)
    probe.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="per connection: TCP connect and handshake, and reading a reply (5)",
    )
    probe.add_argument("--json", action="store_true", help="print JSON (schema in docs/cli.md)")
    request = probe.add_mutually_exclusive_group()
    request.add_argument(
        "--send",
        metavar="TEXT",
        help="send TEXT (escapes like \\r\\n and \\xHH allowed) after each handshake and "
        "read the reply until EOF or a pause (2 s before the first byte, 0.2 s after)",
    )
    request.add_argument(
        "--http",
        action="store_true",
        help="send 'HEAD / HTTP/1.1' with Host and 'Connection: close' (an HTTPS server)",
    )
    probe.add_argument("--tls1.2", dest="tls12", action="store_true", help="TLS 1.2 only")
    probe.add_argument("--tls1.3", dest="tls13", action="store_true", help="TLS 1.3 only")
    probe.set_defaults(handler=_probe)

    bench = add_bench_parser(
        commands, common, count=_positive_int, seconds=_positive_float, tls_options=_add_tls_options
    )
    bench.set_defaults(handler=_bench)
    return parser


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    """--servername, --cafile and --insecure: the probe's, and the bench's alike."""
    parser.add_argument(
        "--servername",
        metavar="NAME",
        help="SNI and certificate name (HOST); '' (no SNI, no name check) needs --insecure",
    )
    parser.add_argument("--cafile", metavar="FILE", help="trust only the CA certificates in FILE")
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify the certificate (said loudly)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = getattr(args, "debug", False)
    if debug:
        logging.basicConfig(format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("aiotlspool").setLevel(logging.DEBUG)
    try:
        code: int = args.handler(args)
        return code
    except _UsageError as exc:
        return _fail(f"{PROG} {args.command}: {exc}", EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail(f"{PROG}: interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        if debug:
            raise
        return _fail(
            f"{PROG}: unexpected error: {type(exc).__name__}: {exc} "
            "(run with --debug for a traceback, and please report it)",
            EXIT_ERROR,
        )


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


def _positive_float(text: str) -> float:
    # ASCII only: float() and int() also take other scripts' digits ("٣" is 3) and "1_0".
    value = None
    if text.isascii() and "_" not in text:
        with contextlib.suppress(ValueError):
            value = float(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a number in ASCII digits, got {text!r}")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    if not re.fullmatch("[0-9]+", text):
        message = f"expected a whole number in ASCII digits, got {text!r}"
        raise argparse.ArgumentTypeError(message)
    # Compared as text first: int() refuses more than 4300 digits.
    if len(text.lstrip("0")) > len(str(MAX_COUNT)) or not 1 <= int(text) <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_COUNT}, got {text}")
    return int(text)


# -- demo -----------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from ..pool import Pool
    from .demo import DemoOptions, demo_dependencies_missing, run_demo
    from .demo_server import DemoError
    from .demo_store import StoreError
    from .loops import loop_factory

    missing = demo_dependencies_missing()
    if missing is not None:
        return _fail(
            f"{PROG} demo needs {missing}, from the 'demo' extra: pip install 'aiotlspool[demo]'",
            EXIT_USAGE,
        )
    if args.loop == "uvloop":
        try:
            loop_factory("uvloop")
        except ImportError:
            return _fail(
                f"{PROG} demo --loop uvloop needs uvloop: pip install 'aiotlspool[uvloop]'",
                EXIT_USAGE,
            )
    try:
        Pool(session_engine=args.engine)  # fails now if the engine is unavailable here
    except RuntimeError as exc:
        return _fail(f"{PROG} demo --engine {args.engine}: {exc}", EXIT_USAGE)
    options = DemoOptions(
        connections=args.connections,
        tls=args.tls,
        loop=args.loop,
        concurrency=args.concurrency,
        engine=args.engine,
        store=args.store,
    )
    try:
        run_demo(options)
    except StoreError as exc:  # --store: unusable (2), or Redis unreachable (3)
        return _fail(f"{PROG} demo: {exc}", EXIT_CONNECT if exc.unreachable else EXIT_USAGE)
    except DemoError as exc:
        return _fail(f"{PROG} demo: {exc}", EXIT_ERROR)
    return EXIT_OK


# -- probe ----------------------------------------------------------------------------------


def _probe(args: argparse.Namespace) -> int:
    import asyncio

    from ..exceptions import ConnectError
    from .probe import MECHANISMS, probe
    from .report import print_report
    from .target import ProbeInputError

    try:
        host, port = _probe_target(args)
        send = _request_bytes(args, args.servername or host, port)
    except ProbeInputError as exc:
        raise _UsageError(str(exc)) from None
    mechanisms = MECHANISMS
    if args.tls12 != args.tls13:
        mechanisms = tuple(m for m in MECHANISMS if m.startswith("tls1.2") == args.tls12)
    _warn_insecure(args)
    command = f"{PROG} probe"
    try:
        report = asyncio.run(
            probe(
                host,
                port,
                server_hostname=args.servername,
                attempts=args.attempts,
                cafile=args.cafile,
                verify=not args.insecure,
                timeout=args.timeout,
                send=send,
                mechanisms=mechanisms,
            )
        )
    except ProbeInputError as exc:
        raise _UsageError(str(exc)) from None
    except ConnectError as exc:
        only = ("1.2" if args.tls12 else "1.3") if len(mechanisms) < len(MECHANISMS) else None
        return _connect_failure(command, exc, only)
    if args.json:
        import json

        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, command)
    return EXIT_OK


def _warn_insecure(args: argparse.Namespace) -> None:
    if args.insecure:
        print(
            f"{PROG} {args.command}: WARNING: --insecure: the certificate is NOT verified; "
            "anyone on the path could be answering"
            + ("; --servername '': no SNI is sent" if args.servername == "" else ""),
            file=sys.stderr,
        )


def _connect_failure(command: str, exc: Exception, only_tls: str | None = None) -> int:
    """One line and the exit code for a ConnectError; ``only_tls``: the one version tried."""
    from ..exceptions import CertificateError, ConnectTimeout, TLSHandshakeError

    if isinstance(exc, ConnectTimeout):
        return _fail(f"{command}: {exc}", EXIT_TIMEOUT)
    if isinstance(exc, CertificateError):
        hint = "use --cafile FILE to trust its CA, or --insecure to skip verification"
        return _fail(f"{command}: {exc} ({hint})", EXIT_TLS)
    if isinstance(exc, TLSHandshakeError):
        message = str(exc)
        if "TLS server?" not in message:
            message += " (is it a TLS server?)"
        if only_tls is not None:
            message += f"; only TLS {only_tls} was tried"
        return _fail(f"{command}: {message}", EXIT_TLS)
    return _fail(f"{command}: {exc}", EXIT_CONNECT)


# -- bench ----------------------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    from ..exceptions import ConnectError
    from .bench import run_bench_command
    from .target import ProbeInputError

    try:
        host, port = _probe_target(args)
        send = _request_bytes(args, args.servername or host, port, method="GET")
        _warn_insecure(args)
        run_bench_command(args, host, port, send)
    except ProbeInputError as exc:
        raise _UsageError(str(exc)) from None
    except ConnectError as exc:
        return _connect_failure(f"{PROG} bench", exc, args.tls)
    return EXIT_OK


def _probe_target(args: argparse.Namespace) -> tuple[str, int]:
    """HOST[:PORT] and --servername, validated before any I/O (ProbeInputError)."""
    from .target import ProbeInputError, check_name, parse_target

    host, port = parse_target(args.target)
    if args.servername == "":
        # asyncio would pass None to wrap_bio: no SNI, and no host name check at all.
        if not args.insecure:
            raise ProbeInputError(
                "--servername '' sends no SNI and would skip the certificate's name check; "
                "give a name, or add --insecure"
            )
    elif args.servername is not None:
        check_name(args.servername, "--servername")
    return host, port


def _request_bytes(args: argparse.Namespace, host: str, port: int, method: str = "HEAD") -> bytes:
    from .target import ProbeInputError

    if args.http:
        try:
            name = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ProbeInputError(f"invalid host name {host!r}") from None
        if port != 443:
            name += f":{port}"
        return f"{method} / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
    if args.send is None:
        return b""
    try:
        # Backslash escapes (\r, \n, \xHH) are decoded; every character must fit in a byte.
        text = args.send.encode("latin-1").decode("unicode_escape")
        return str(text).encode("latin-1")
    except (UnicodeError, ValueError) as exc:
        message = f"invalid --send text ({exc}); use \\xHH for non-ASCII bytes"
        raise ProbeInputError(message) from None
