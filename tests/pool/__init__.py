"""The pool (and the CLI) against Python TLS servers on 127.0.0.1: resumption, behaviour,
errors, cancellation, close, faults, load, hardening, reconfiguration, session keys, transfer,
engines; the TLS fixtures are in this package's ``conftest.py``."""
