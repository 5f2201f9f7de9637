"""Unit tests: no network and no server, one part of the library at a time (the session cache).

The native binding's tests (``tests/test_native.py``) are unit tests too; they stay at the top
level of ``tests/`` for now.
"""
