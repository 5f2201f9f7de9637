"""The ``aiotlspool demo`` command line: its options (registered by :mod:`.main`, which hands in
its number parser)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

DESCRIPTION = (
    "Start a local TLS echo server (127.0.0.1, throwaway trustme certificates, a child process "
    "that stops by itself), open N connections through each of two pools, one without and one "
    "with the session cache, taking turns in batches of 50, and compare handshakes, median "
    "handshake time and connects/s. With --store the second pool keeps its sessions in a "
    "FileSessionCache or a RedisSessionCache, and a new process then connects once through the "
    "same store. Needs the 'demo' extra: pip install 'aiotlspool[demo]'."
)
STORE_HELP = (
    "keep the sessions in a FileSessionCache in DIR (file:DIR) or a RedisSessionCache "
    "(redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss:// for TLS; needs redis-py); the "
    "secret comes from $AIOTLSPOOL_STORE_SECRET (hex, 32 bytes or more), else a throwaway one "
    "per run"
)


def add_demo_parser(
    commands: Any, common: argparse.ArgumentParser, *, count: Callable[[str], int]
) -> argparse.ArgumentParser:
    """Add ``demo`` to the subcommands; ``count`` parses whole numbers."""
    demo: argparse.ArgumentParser = commands.add_parser(
        "demo",
        parents=[common],
        help="reconnect to a local TLS server with and without the session cache",
        description=DESCRIPTION,
    )
    demo.add_argument("--connections", type=count, default=300, metavar="N", help="per pool (300)")
    demo.add_argument("--tls", choices=("1.2", "1.3"), default="1.3", help="TLS version (1.3)")
    demo.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="client event loop (asyncio)",
    )
    demo.add_argument(
        "--concurrency",
        type=count,
        default=1,
        metavar="N",
        help="connections open at once per pool (1)",
    )
    demo.add_argument(
        "--engine",
        choices=("auto", "native", "stdlib"),
        default="auto",
        help="session engine of the pool (auto: native where its self-check passes)",
    )
    demo.add_argument("--store", metavar="file:DIR|redis://...", help=STORE_HELP)
    return demo


__all__ = ["add_demo_parser"]
