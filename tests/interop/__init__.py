"""Interop: the pool and the standard library client against real servers (nginx, haproxy,
stunnel, openssl s_server) run by ``tests/support/realservers.py``; skipped where they are not
installed, failed when ``CI=true``."""
