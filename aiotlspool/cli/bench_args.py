"""The ``aiotlspool bench`` command line: its options (registered by :mod:`.main`, which hands
in its number parsers and the probe's TLS options, so both commands read them alike) and the
:class:`~.bench_options.BenchOptions` made from them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bench_options import BenchOptions

DESCRIPTION = (
    "Open new TLS connections to HOST[:PORT] through the pool as fast as allowed - each: TCP "
    "connect, TLS handshake, optionally one request and its reply, close - with the session "
    "cache off, on, or both taking turns; then report connections/s, handshake and connect "
    "latency percentiles (HDR histograms), the resumed share, the tickets stored, errors by "
    "kind and the client's CPU per connection. Warm-up connections are not counted. Needs the "
    "'bench-cli' extra: pip install 'aiotlspool[bench-cli]'."
)
EPILOG = (
    "Exit codes: 0 the bench ran (whatever failed during it: see errors), 2 bad input or a "
    "missing extra, 3 cannot resolve or connect, 4 TLS handshake or certificate failure, 5 "
    "timeout (3 to 5: in the warm-up, before measuring), 130 interrupted (after the partial "
    "report), 1 unexpected error. The JSON schema is in docs/cli.md."
)


def add_bench_parser(
    commands: Any,
    common: argparse.ArgumentParser,
    *,
    count: Callable[[str], int],
    seconds: Callable[[str], float],
    tls_options: Callable[[argparse.ArgumentParser], None],
) -> argparse.ArgumentParser:
    """Add ``bench`` to the subcommands; ``count`` and ``seconds`` parse numbers, and
    ``tls_options`` adds --servername, --cafile and --insecure as the probe has them."""
    bench: argparse.ArgumentParser = commands.add_parser(
        "bench",
        parents=[common],
        help="open new TLS connections as fast as allowed, with and without resumption",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    bench.add_argument("target", metavar="HOST[:PORT]", help="port 443 by default; [V6]:PORT")
    bench.add_argument(
        "--concurrency",
        type=count,
        default=1,
        metavar="N",
        help="connections open at once, all processes together (1)",
    )
    amount = bench.add_mutually_exclusive_group()
    amount.add_argument("--duration", type=seconds, metavar="S", help="seconds per mode (10)")
    amount.add_argument(
        "--connections", type=count, metavar="N", help="connections per mode, instead of time"
    )
    bench.add_argument(
        "--rate",
        type=seconds,
        metavar="R",
        help="open loop: R new connections per second (all processes together), due on time "
        "whatever the earlier ones are doing; latency counts from the due time",
    )
    bench.add_argument("--tls", choices=("1.2", "1.3"), default="1.3", help="TLS version (1.3)")
    bench.add_argument(
        "--resume",
        choices=("off", "on", "both"),
        default="both",
        help="the session cache: off, on, or both taking turns (both)",
    )
    bench.add_argument(
        "--processes",
        type=count,
        default=1,
        metavar="P",
        help="worker processes, each with its own event loop and pools (1; at most 64)",
    )
    bench.add_argument(
        "--warmup",
        type=count,
        metavar="N",
        help="connections per process and mode before measuring, not counted (default: the "
        "process's concurrency, at most 100)",
    )
    tls_options(bench)
    bench.add_argument(
        "--timeout",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="per connection: TCP connect and handshake (with --rate: and waiting for a free "
        "slot), and the reply (5)",
    )
    bench.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop (asyncio)"
    )
    bench.add_argument("--json", action="store_true", help="print JSON (schema in docs/cli.md)")
    request = bench.add_mutually_exclusive_group()
    request.add_argument(
        "--send",
        metavar="TEXT",
        help="send TEXT (escapes like \\r\\n and \\xHH allowed) after each handshake and read "
        "the reply until the server closes (or --reply-bytes)",
    )
    request.add_argument(
        "--http",
        action="store_true",
        help="send 'GET / HTTP/1.1' with Host and 'Connection: close'; read the answer until "
        "the server closes",
    )
    bench.add_argument(
        "--reply-bytes",
        type=count,
        metavar="N",
        help="read N bytes of reply instead of until EOF (a server that keeps the connection "
        "open, such as an echo server)",
    )
    return bench


def options_from_args(args: argparse.Namespace, host: str, port: int, send: bytes) -> BenchOptions:
    """The parsed command line as :class:`BenchOptions` (not checked yet)."""
    from .bench_options import BenchOptions

    duration = args.duration
    if duration is None and args.connections is None:
        duration = 10.0
    return BenchOptions(
        host=host,
        port=port,
        server_name=args.servername,
        cafile=args.cafile,
        verify=not args.insecure,
        tls=args.tls,
        resume=args.resume,
        concurrency=args.concurrency,
        processes=args.processes,
        duration=duration,
        connections=args.connections,
        rate=args.rate,
        warmup=args.warmup,
        timeout=args.timeout,
        send=send,
        reply_bytes=args.reply_bytes,
        loop=args.loop,
    )


__all__ = ["add_bench_parser", "options_from_args"]
