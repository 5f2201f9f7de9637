"""The command line: ``aiotlspool demo`` and ``aiotlspool probe`` (see docs/cli.md)."""

from .main import main

__all__ = ["main"]
