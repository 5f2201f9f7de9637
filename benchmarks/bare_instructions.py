"""Instructions per connect on the bare workload, under valgrind: the pool against the
hand-written loop (``benchmarks/bare.py``), counted rather than timed.

    .venv/bin/python -m benchmarks.bare_instructions [--loops uvloop,asyncio] [--tls 1.2,1.3]
        [--variants pool,bare] [--modes resumed,full] [--connects 100,300] [--out FILE.json]

CPU time on this shared 2-core machine moves by +-5 % from run to run, more than a change of a
few Python calls per connect; the number of instructions the client executes does not (repeated
runs agree within ~0.5 %). Each cell runs twice in a fresh child process under
``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``), with two batch sizes of connects (resumed,
or full handshakes with ``--modes full``); instructions per connect = the difference of the
two totals / the difference of the batch sizes, so that start-up, imports, the server's start
and the warm-up connects cancel out. The server is a child of the child, not under valgrind
(valgrind does not follow ``exec``); the certificates are made once, by the parent. Only the
client's user-space instructions are counted: the kernel's share (TCP, epoll, the loopback),
the same for both variants, is not, so the pool's share of the count is larger than its share
of CPU time. Needs valgrind (Debian: ``apt install valgrind``); ~1 minute per cell.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .bare import measure_with_own_server
from .certs import CertFiles, make_certs

COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _instructions(valgrind: str, args: list[str]) -> int:
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "benchmarks.bare_instructions", "--child", *args]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{' '.join(args)}: valgrind failed: {done.stderr[-500:]}")
    return int(found.group(1))


def _cell(
    valgrind: str,
    cell: tuple[str, str, str],
    variants: list[str],
    sizes: tuple[int, int],
    certs_json: str,
) -> list[dict[str, object]]:
    """Instructions per connect of each variant in one cell (printed as they come)."""
    loop, tls, mode = cell
    small, large = sizes
    rows: list[dict[str, object]] = []
    per_connect: dict[str, float] = {}
    for variant in variants:
        totals = [
            _instructions(valgrind, [loop, tls, variant, mode, str(n), certs_json]) for n in sizes
        ]
        per_connect[variant] = (totals[1] - totals[0]) / (large - small)
        rows.append(
            {
                "loop": loop,
                "tls": tls,
                "mode": mode,
                "variant": variant,
                "totals": totals,
                "connects": [small, large],
                "per_connect": per_connect[variant],
            }
        )
        print(
            f"{loop} TLS {tls} {mode} {variant}: {per_connect[variant]:,.0f} instructions/connect",
            flush=True,
        )
    if "pool" in per_connect and "bare" in per_connect:
        extra = per_connect["pool"] / per_connect["bare"] - 1
        print(
            f"{loop} TLS {tls} {mode}: pool {extra:+.1%} instructions over the bare loop",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default="uvloop,asyncio")
    parser.add_argument("--tls", default="1.2,1.3")
    parser.add_argument("--variants", default="pool,bare")
    parser.add_argument("--modes", default="resumed", help="resumed, full or both")
    parser.add_argument("--connects", default="100,300", help="the two batch sizes")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        loop, tls, variant, mode, count, certs_json = args.child
        certs = CertFiles.from_json(certs_json)
        measure_with_own_server(certs, loop, tls, variant, mode, int(count))
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("valgrind is not installed (Debian: apt install valgrind)")
    small, large = (int(n) for n in args.connects.split(","))
    certs = make_certs(Path(tempfile.mkdtemp(prefix="aiotlspool-instr-")), "rsa")
    certs_json = certs.to_json()
    rows: list[dict[str, object]] = []
    for loop in args.loops.split(","):
        for tls in args.tls.split(","):
            for mode in args.modes.split(","):
                cell = (loop, tls, mode)
                rows += _cell(valgrind, cell, args.variants.split(","), (small, large), certs_json)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
