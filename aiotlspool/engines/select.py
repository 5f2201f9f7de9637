"""Choosing a session engine: ``Pool(session_engine="auto" | "native" | "stdlib")``."""

from __future__ import annotations

import logging
import os

from .base import SessionEngine
from .libssl import NativeUnavailable
from .libssl_load import load_libssl
from .native import NativeSessionEngine
from .stdlib import StdlibSessionEngine

logger = logging.getLogger("aiotlspool")

ENGINE_ENV = "AIOTLSPOOL_SESSION_ENGINE"

_fallback_logged = False


def select_engine(name: str) -> SessionEngine:
    """The engine for ``Pool(session_engine=name)``.

    ``"auto"`` takes the native engine when its self-check passes and otherwise the standard
    library engine, saying why once at INFO level; the environment variable
    ``AIOTLSPOOL_SESSION_ENGINE=native|stdlib`` overrides it (to rule the native engine out
    while debugging, or to test both). ``"native"`` raises RuntimeError where it is unavailable.
    """
    global _fallback_logged
    if name not in ("auto", "native", "stdlib"):
        raise ValueError(f"session_engine must be 'auto', 'native' or 'stdlib', got {name!r}")
    if name == "auto":
        name = os.environ.get(ENGINE_ENV, "").strip() or "auto"
        if name not in ("auto", "native", "stdlib"):
            raise ValueError(
                f"the environment variable {ENGINE_ENV} must be 'auto', 'native' or 'stdlib', "
                f"got {name!r}"
            )
    if name == "stdlib":
        return StdlibSessionEngine()
    try:
        return NativeSessionEngine(load_libssl())
    except NativeUnavailable as exc:
        if name == "native":
            raise RuntimeError(f"the native session engine is unavailable: {exc}") from None
        if not _fallback_logged:
            _fallback_logged = True
            logger.info("native session engine unavailable (%s); using the stdlib engine", exc)
        return StdlibSessionEngine()
