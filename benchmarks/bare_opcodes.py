"""Python bytecodes per connect on the bare workload, per function: the pool against the
hand-written loop (``benchmarks/bare.py``), counted with the interpreter's opcode trace.

    .venv/bin/python -m benchmarks.bare_opcodes [--loops uvloop,asyncio] [--tls 1.2,1.3]
        [--connects 200] [--top 40] [--out FILE]

``benchmarks.bare_instructions`` counts the client's machine instructions per resumed connect
under valgrind (~1 minute per cell) and says how much the pool adds; this says where, in
seconds: every bytecode a Python frame executes (``sys.settrace`` with ``f_trace_opcodes``;
C code - OpenSSL, uvloop's Cython, the interpreter's own calls and allocations - is not
counted), per function, per connect. The counts are exact and repeat from run to run
(only how many times a read finds no data yet can move them slightly). On this machine one
extra bytecode on the pool's path costs about 85 instructions all told (its share of the
eval loop, calls, frames, allocation: docs/benchmarks.md), so the difference of the two
totals times that is close to what ``bare_instructions`` measures.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from .bare import CLIENTS, ByteServer
from .certs import CertFiles, make_certs
from .env import loop_factories, run_on

Counts = collections.Counter[str]


def count_opcodes(certs: CertFiles, loop: str, tls: str, port: int, variant: str, n: int) -> Counts:
    """Bytecodes per function over ``n`` resumed connects (after warm-up connects)."""
    counts: Counts = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[
                f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}({code.co_name})"
            ] += 1
        return trace

    async def main() -> None:
        client = CLIENTS[variant](certs, tls, port, True)
        try:
            for _ in range(5):
                await client.connect()
            # Only this task's frames are traced: settrace applies to the running thread, and
            # the loop runs nothing else.
            sys.settrace(trace)
            try:
                for _ in range(n):
                    await client.connect()
            finally:
                sys.settrace(None)
        finally:
            await client.aclose()

    run_on(loop_factories()[loop], main())
    # This module's own loop (one frame, a few bytecodes per connect) is not the workload.
    return collections.Counter(
        {name: count for name, count in counts.items() if not name.startswith("bare_opcodes.py")}
    )


def report(bare: Counts, pool: Counts, n: int, top: int) -> list[str]:
    total_bare, total_pool = sum(bare.values()) / n, sum(pool.values()) / n
    lines = [
        f"bytecodes per connect: bare {total_bare:,.0f}, pool {total_pool:,.0f} "
        f"(+{total_pool - total_bare:,.0f})",
        "",
        "where the pool executes more (bytecodes per connect: pool, bare, difference):",
    ]
    names = set(bare) | set(pool)
    rows = sorted(((pool[k] - bare[k]) / n, k) for k in names)
    rows.reverse()
    for extra, name in rows[:top]:
        lines.append(f"  {pool[name] / n:7.1f} {bare[name] / n:7.1f} {extra:+7.1f}  {name}")
    by_file: collections.Counter[str] = collections.Counter()
    for name in names:
        by_file[name.split(":")[0]] += pool[name] - bare[name]
    lines += [
        "",
        "by module (difference per connect): "
        + ", ".join(f"{file} {count / n:+,.0f}" for file, count in by_file.most_common() if count),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default="uvloop,asyncio")
    parser.add_argument("--tls", default="1.2,1.3")
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lines = [f"# bare workload: Python bytecodes per resumed connect ({args.connects} connects)"]
    with tempfile.TemporaryDirectory(prefix="aiotlspool-opcodes-") as tmp:
        certs = make_certs(Path(tmp), "rsa")
        server = ByteServer(certs, None, 600)
        try:
            for loop in args.loops.split(","):
                if loop not in loop_factories():
                    continue
                for tls in args.tls.split(","):
                    port = server.ports[tls]
                    bare = count_opcodes(certs, loop, tls, port, "bare", args.connects)
                    pool = count_opcodes(certs, loop, tls, port, "pool", args.connects)
                    cell = [
                        "",
                        f"## {loop}, TLS {tls}",
                        "",
                        *report(bare, pool, args.connects, args.top),
                    ]
                    print("\n".join(cell), flush=True)
                    lines += cell
        finally:
            server.stop()
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
