"""Per-call cost and memory of aiotlspool.engines.libssl against the stdlib session API.

Usage:
    python scripts/native_microbench.py            # timings, then the RSS comparison
    python scripts/native_microbench.py --rss-only
    python scripts/native_microbench.py --rss MODE N   # one RSS run (MODE: native|stdlib)
    python scripts/native_microbench.py --watch-only   # Libssl.watch and its callback only

Handshakes run in memory (MemoryBIO pairs), RSA-2048 via trustme; needs trustme.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import platform
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from aiotlspool.engines import session_callback
from aiotlspool.engines.libssl import Libssl
from aiotlspool.engines.libssl_load import load_libssl

CA = trustme.CA()
CERT = CA.issue_cert("localhost")


def contexts(version: ssl.TLSVersion) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    CERT.configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    CA.configure_trust(client)
    for ctx in (server, client):
        ctx.minimum_version = ctx.maximum_version = version
    return server, client


def new_client(client: ssl.SSLContext, **kw: object) -> ssl.SSLObject:
    return client.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost", **kw)  # type: ignore[arg-type]


def connected(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    before_handshake: Callable[[ssl.SSLObject], object] | None = None,
) -> ssl.SSLObject:
    """A client SSLObject after a full handshake and after reading the server's tickets;
    ``before_handshake`` is called with it first."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    if before_handshake is not None:
        before_handshake(client)
    done = [False, False]
    while not all(done):
        for i, (obj, src, dst) in enumerate(((client, c_out, s_in), (server, s_out, c_in))):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            dst.write(src.read())
    with contextlib.suppress(ssl.SSLWantReadError):
        client.read(1)
    return client


def per_call(fn: Callable[[], object], n: int) -> float:
    """Best of 5 runs, microseconds per call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def per_item(
    fn: Callable[[ssl.SSLObject], object], make: Callable[[], ssl.SSLObject], n: int
) -> float:
    """Microseconds per call of fn on fresh objects (creation is not timed); best of 5."""
    best = float("inf")
    for _ in range(5):
        objs = [make() for _ in range(n)]
        start = time.perf_counter()
        for obj in objs:
            fn(obj)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def timings_for(lib: Libssl, version: ssl.TLSVersion) -> None:
    server_ctx, client_ctx = contexts(version)
    conn = connected(server_ctx, client_ctx)
    native = lib.capture(conn)
    stdlib = conn.session
    assert native is not None
    assert stdlib is not None
    der = native.to_der()

    def fresh() -> ssl.SSLObject:
        return new_client(client_ctx)

    def assign_stdlib(obj: ssl.SSLObject) -> None:
        obj.session = stdlib

    def wrap_with_stdlib() -> ssl.SSLObject:
        return new_client(client_ctx, session=stdlib)

    def stdlib_has_ticket() -> bool:
        session = conn.session
        return session is not None and session.has_ticket

    rows = [
        ("native ssl_pointer (validation only)", per_call(lambda: lib.ssl_pointer(conn), 20000)),
        ("native has_ticket", per_call(lambda: lib.has_ticket(conn), 20000)),
        ("native capture (get1+dup+finalize)", per_call(lambda: lib.capture(conn), 20000)),
        ("native apply (fresh SSLObject)", per_item(lambda o: lib.apply(o, native), fresh, 2000)),
        ("native to_der", per_call(native.to_der, 5000)),
        ("native session_from_der", per_call(lambda: lib.session_from_der(der), 2000)),
        ("stdlib SSLObject.session read", per_call(lambda: conn.session, 2000)),
        ("stdlib .session.has_ticket", per_call(stdlib_has_ticket, 2000)),
        ("stdlib obj.session = s (fresh SSLObject)", per_item(assign_stdlib, fresh, 2000)),
        ("stdlib wrap_bio() (baseline)", per_call(fresh, 2000)),
        ("stdlib wrap_bio(session=s)", per_call(wrap_with_stdlib, 2000)),
        ("native wrap_bio() + apply", per_call(lambda: lib.apply(fresh(), native), 2000)),
    ]
    print(f"\n{version.name} (DER {len(der)} bytes)")
    for name, micros in rows:
        print(f"  {name:<42} {micros:9.2f} us/call")


def timings() -> None:
    lib = load_libssl()
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        timings_for(lib, version)


def median_per_call(fn: Callable[[], object], batches: int = 300, size: int = 100) -> float:
    """Median over ``batches`` batches of ``size`` calls, microseconds per call."""
    samples = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(size):
            fn()
        samples.append((time.perf_counter() - start) / size * 1e6)
    return statistics.median(samples)


def median_per_item(
    fn: Callable[[ssl.SSLObject], object],
    make: Callable[[], ssl.SSLObject],
    batches: int = 100,
    size: int = 100,
) -> float:
    """Median over batches of fn on fresh objects (creation is not timed), us per call."""
    samples = []
    for _ in range(batches):
        objs = [make() for _ in range(size)]
        start = time.perf_counter()
        for obj in objs:
            fn(obj)
        samples.append((time.perf_counter() - start) / size * 1e6)
        del objs
    return statistics.median(samples)


def watch_timings(lib: Libssl) -> None:
    """What Libssl.watch costs per connection and per session, against Libssl.capture.

    The callback is driven through its C thunk directly (the path OpenSSL takes, plus
    one ctypes call out of Python, measured separately as "empty thunk") with the SSL*
    and the current SSL_SESSION* of a live, watched TLS 1.3 connection.
    """
    server_ctx, client_ctx = contexts(ssl.TLSVersion.TLSv1_3)
    received: list[object] = []

    def sink(session: object) -> None:
        received.append(session)
        received.clear()  # frees the copy, as a consumer replacing its last session would

    def watch(conn: ssl.SSLObject) -> None:
        assert lib.watch(conn, sink)

    conn = connected(server_ctx, client_ctx, before_handshake=watch)
    ssl_ptr = lib.ssl_pointer(conn)
    session_ptr = lib._fns.get_session(ssl_ptr)
    assert session_ptr
    unwatched = connected(server_ctx, client_ctx)
    unwatched_ptr = lib.ssl_pointer(unwatched)
    thunk = session_callback._CALLBACK
    empty = session_callback._CallbackType(lambda ssl_ptr, session_ptr: 0)

    def fresh() -> ssl.SSLObject:
        return new_client(client_ctx)

    rows = [
        ("watch() (fresh SSLObject)", median_per_item(lambda o: lib.watch(o, sink), fresh)),
        (
            "callback, watched (thunk+dup+NativeSession)",
            median_per_call(lambda: thunk(ssl_ptr, session_ptr)),
        ),
        (
            "callback, unwatched connection",
            median_per_call(lambda: thunk(unwatched_ptr, session_ptr)),
        ),
        (
            "empty thunk (ctypes round trip only)",
            median_per_call(lambda: empty(ssl_ptr, session_ptr)),
        ),
        ("capture() (get1+dup+NativeSession)", median_per_call(lambda: lib.capture(conn))),
        ("has_ticket() (a poll that capture needs)", median_per_call(lambda: lib.has_ticket(conn))),
    ]
    print("\nLibssl.watch vs Libssl.capture, TLS 1.3 (median of 300 batches of 100 calls)")
    for name, micros in rows:
        print(f"  {name:<46} {micros:9.2f} us/call")


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def rss_run(mode: str, n: int) -> None:
    """Print the RSS growth over n captures (native) or n SSLObject.session reads (stdlib)."""
    lib = load_libssl()
    server_ctx, client_ctx = contexts(ssl.TLSVersion.TLSv1_3)
    conn = connected(server_ctx, client_ctx)
    native = mode == "native"
    read: Callable[[], object] = (lambda: lib.capture(conn)) if native else (lambda: conn.session)
    for _ in range(200):  # warm up allocator pools and caches
        read()
    gc.collect()
    before = rss_kib()
    for _ in range(n):
        read()
    gc.collect()
    after = rss_kib()
    grown = after - before
    print(
        f"{mode}: {n} calls, RSS {before} -> {after} KiB, "
        f"+{grown} KiB ({grown * 1024 / n:.0f} B/call)"
    )


def rss_compare(n: int) -> None:
    print(f"\nRSS growth over {n} calls (separate processes, TLS 1.3)")
    for mode in ("native", "stdlib"):
        out = subprocess.run(
            [sys.executable, __file__, "--rss", mode, str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        print("  " + out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rss", nargs=2, metavar=("MODE", "N"))
    parser.add_argument("--rss-only", action="store_true")
    parser.add_argument("--watch-only", action="store_true")
    parser.add_argument("-n", type=int, default=20000, help="calls for the RSS comparison")
    args = parser.parse_args()
    if args.rss:
        rss_run(args.rss[0], int(args.rss[1]))
        return
    print(f"Python {platform.python_version()}, {ssl.OPENSSL_VERSION}")
    if args.watch_only:
        watch_timings(load_libssl())
        return
    if not args.rss_only:
        timings()
        watch_timings(load_libssl())
    rss_compare(args.n)


if __name__ == "__main__":
    main()
