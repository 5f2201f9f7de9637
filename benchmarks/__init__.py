"""The aiotlspool benchmark harness: ``python -m benchmarks [--quick]`` (or ``make bench``).

Every figure is measured side by side in one run against the same local server: the pool with
and without resumption, raw ``asyncio.open_connection``, a hand-written loop using the same
session seam as the pool, aiohttp and httpx. See docs/benchmarks.md for the method and caveats.
"""
