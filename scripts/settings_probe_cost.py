"""What reading a context's verification settings costs the pool per connect.

``verification_of`` runs once per connect, right before the handshake (a probe; the full
fingerprint only when the probe changed). Usage: ``.venv/bin/python scripts/settings_probe_cost.py``
"""

from __future__ import annotations

import ssl
import statistics
import timeit

from aiotlspool.sessions.verification import verification_of


def main() -> None:
    context = ssl.create_default_context()  # the system CA bundle
    verification_of(context)  # the first read computes the fingerprint
    runs = [
        timeit.timeit(lambda: verification_of(context), number=20_000) / 20_000 for _ in range(9)
    ]
    print(
        f"verification_of, unchanged context ({context.cert_store_stats()['x509']} certificates):"
        f" median {statistics.median(runs) * 1e6:.1f} us, min {min(runs) * 1e6:.1f} us"
    )
    context.load_verify_locations(cadata=_leaf_pem())  # one more certificate: a change
    fingerprint = timeit.timeit(lambda: verification_of(context), number=1)
    print(f"after a change (full fingerprint of the store): {fingerprint * 1e3:.1f} ms")


def _leaf_pem() -> str:
    import trustme

    return trustme.CA().cert_pem.bytes().decode()


if __name__ == "__main__":
    main()
