"""System calls per connect on the bare workload: the pool against the hand-written loop
(``benchmarks/bare.py``), counted with ``strace -c``.

    .venv/bin/python -m benchmarks.bare_syscalls [--loops uvloop,asyncio] [--tls 1.2,1.3]
        [--connects 100,400]

``benchmarks.bare_instructions`` counts the client's user-space instructions; the kernel's part
of a connect is left out there on the grounds that it is the same for both. This checks that:
each variant runs twice under ``strace -c`` (the client process only: the server is a child
started with ``multiprocessing``, not followed), with two batch sizes of resumed connects, and
the per-connect count of each system call is the difference of the two totals / the difference
of the batch sizes (start-up and warm-up cancel out). Needs strace (Debian: ``apt install
strace``); a few seconds per cell.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .bare import measure_with_own_server
from .certs import CertFiles, make_certs

# strace -c's table: "% time  seconds  usecs/call  calls  [errors]  syscall"
ROW = re.compile(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$")


def _calls(strace: str, args: list[str]) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".strace") as out:
        command = [strace, "-c", "-o", out.name, sys.executable, "-m", "benchmarks.bare_syscalls"]
        done = subprocess.run([*command, "--child", *args], capture_output=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:4])}: failed: {done.stderr[-500:]!r}")
        table = Path(out.name).read_text()
    calls = {}
    for line in table.splitlines():
        found = ROW.match(line)
        if found and found.group(2) != "total":
            calls[found.group(2)] = int(found.group(1))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default="uvloop,asyncio")
    parser.add_argument("--tls", default="1.2,1.3")
    parser.add_argument("--connects", default="100,400", help="the two batch sizes")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        loop, tls, variant, count, certs_json = args.child
        certs = CertFiles.from_json(certs_json)
        measure_with_own_server(certs, loop, tls, variant, "resumed", int(count))
        return
    strace = shutil.which("strace")
    if strace is None:
        sys.exit("strace is not installed (Debian: apt install strace)")
    small, large = (int(n) for n in args.connects.split(","))
    with tempfile.TemporaryDirectory(prefix="aiotlspool-syscalls-") as tmp:
        certs = make_certs(Path(tmp), "rsa")
        certs_json = certs.to_json()
        for loop in args.loops.split(","):
            for tls in args.tls.split(","):
                for variant in ("bare", "pool"):
                    before, after = (
                        _calls(strace, [loop, tls, variant, str(n), certs_json])
                        for n in (small, large)
                    )
                    per = {
                        name: (after.get(name, 0) - before.get(name, 0)) / (large - small)
                        for name in before.keys() | after.keys()
                    }
                    shown = sorted(((-n, name) for name, n in per.items() if abs(n) >= 0.05))
                    print(
                        f"{loop} TLS {tls} {variant}: {sum(per.values()):.1f} system calls per "
                        "connect; " + ", ".join(f"{name} {-n:.1f}" for n, name in shown),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
