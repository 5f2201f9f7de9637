"""The verification settings of an SSLContext: what a session is bound to.

A resumed handshake skips certificate and host-name verification, so a session may only be
offered under the settings it was obtained with. Python lets a context change at any time
(``verify_mode``, ``check_hostname``, ``load_verify_locations``, ``load_cert_chain``...), so the
settings are read again at every connect: first a cheap *probe* of everything that can change,
and only when the probe differs from the last one a full SHA-256 *fingerprint*. The fingerprint
names contents, not objects, so it is the same in every process for the same settings: it can
travel with an exported session and key a store shared between processes.

Through the Python API a trust store only grows (certificates and CRLs are added, never
removed), so its object counts tell when its contents changed; the client certificate and the
security level are only visible through libssl (:mod:`aiotlspool.engines.libssl`). Without
libssl the fingerprint is marked incomplete: it then misses the client certificate, the
security level and the contents of non-CA certificates and CRLs (their counts still count).
"""

from __future__ import annotations

import _ssl
import hashlib
import json
import os
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from ..engines.libssl import Libssl, NativeUnavailable
from ..engines.libssl_load import load_libssl

__all__ = ["Verification", "set_trust_id", "verification_of"]


@dataclass(frozen=True, slots=True, eq=False)
class Verification:
    """The verification settings of one context at one moment."""

    # Cheap to read again; equal probes mean equal settings.
    probe: tuple[object, ...]
    # SHA-256 (hex) of the settings: verify mode and flags, host-name checks, protocol range,
    # options, security level, every object in the trust store, the client certificate.
    fingerprint: str
    # Whether a client certificate is loaded (``load_cert_chain``): its sessions hold a
    # client authentication, which a persistent store keeps only when asked. (Seen through
    # libssl only; without it False, and the fingerprint is marked incomplete.)
    client_certificate: bool = False
    # id() of the context read (a probe says nothing of another context's trust store).
    context_id: int = 0


# Names users gave to the trust of contexts whose CA certificates cannot be read (set_trust_id).
_trust_ids: weakref.WeakKeyDictionary[ssl.SSLContext, str] = weakref.WeakKeyDictionary()
_trust_ids_named = False  # whether any context ever had one


def set_trust_id(context: ssl.SSLContext, trust_id: str | None) -> None:
    """Name the trust of ``context`` in its sessions' keys (None: remove the name).

    The keys of a context's sessions hold a fingerprint of everything its trust store holds.
    A CA directory (``load_verify_locations(capath=...)``, or the system's default paths when
    they are a directory) is read by OpenSSL lazily, during verification, so two contexts
    trusting different directories can have the same fingerprint until then. Where sessions
    are shared between processes or hosts (:class:`~aiotlspool.FileSessionCache`,
    :class:`~aiotlspool.RedisSessionCache`), give such contexts a name for what they trust
    (e.g. ``"corp-ca-2026"``, changed whenever the directory's contents change): keys then
    match only between contexts with the same name. Changing it is like changing any other
    verification setting: sessions of the old keys are not offered again.
    """
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"context must be an ssl.SSLContext, got {type(context).__name__}")
    if trust_id is None:
        with _lock:
            _trust_ids.pop(context, None)
        return
    if not isinstance(trust_id, str) or not trust_id or not trust_id.isprintable():
        raise ValueError(f"trust_id must be a non-empty printable string, got {trust_id!r}")
    global _trust_ids_named
    with _lock:
        _trust_ids[context] = trust_id
        _trust_ids_named = True


# The last settings seen per context: a probe equal to it needs no new fingerprint.
_last: weakref.WeakKeyDictionary[ssl.SSLContext, Verification] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_libssl: Libssl | None = None
_libssl_looked_up = False


def verification_of(context: ssl.SSLContext, seen: Verification | None = None) -> Verification:
    """The current verification settings of ``context`` (the same object while unchanged).

    ``seen``: settings an earlier call returned for this same ``context`` (those of another
    context are ignored); returned as they are while the probe still equals theirs (the common
    case, without the lock and the lookup)."""
    libssl = _libssl if _libssl_looked_up else _binding()
    probe = _probe(context, libssl)
    if seen is not None and seen.probe == probe and seen.context_id == id(context):
        return seen
    with _lock:
        last = _last.get(context)
    if last is not None and last.probe == probe:
        return last
    current = Verification(
        probe,
        _fingerprint(context, libssl),
        client_certificate=libssl is not None and probe[-1] is not None,
        context_id=id(context),
    )
    with _lock:
        _last[context] = current
    return current


def _binding() -> Libssl | None:
    """libssl when the native binding works here (whatever session engine a pool uses)."""
    global _libssl, _libssl_looked_up
    if not _libssl_looked_up:
        try:
            _libssl = load_libssl()
        except NativeUnavailable:
            _libssl = None
        _libssl_looked_up = True
    return _libssl


# The raw values, through the C base class: ssl.SSLContext's own properties wrap each in an
# enum (or, for hostname_checks_common_name, read _host_flags in Python), which costs more than
# the rest of the probe.
_raw_verify_mode, _raw_verify_flags, _raw_options, _raw_min, _raw_max, _raw_host_flags = (
    cast(Callable[[ssl.SSLContext], int], getattr(_ssl._SSLContext, name).__get__)
    for name in (
        "verify_mode",
        "verify_flags",
        "options",
        "minimum_version",
        "maximum_version",
        "_host_flags",
    )
)


def _probe(context: ssl.SSLContext, libssl: Libssl | None) -> tuple[object, ...]:
    if libssl is not None:
        store: tuple[object, ...] = libssl.context_probe(context)  # level, objects, client cert
    else:
        stats = context.cert_store_stats()
        store = (stats["x509"], stats["x509_ca"], stats["crl"])
    return (
        _raw_verify_mode(context),
        _raw_verify_flags(context),
        _raw_options(context),
        _raw_min(context),
        _raw_max(context),
        context.check_hostname,
        _raw_host_flags(context),  # (hostname_checks_common_name, and the other host flags)
        _trust_ids.get(context) if _trust_ids_named else None,  # (mostly none: no lookup)
        *store,
    )


def _fingerprint(context: ssl.SSLContext, libssl: Libssl | None) -> str:
    settings: dict[str, object] = {
        "verify_mode": int(context.verify_mode),
        "check_hostname": context.check_hostname,
        "hostname_checks_common_name": context.hostname_checks_common_name,
        "verify_flags": int(context.verify_flags),
        "options": int(context.options),
        "minimum_version": int(context.minimum_version),
        "maximum_version": int(context.maximum_version),
    }
    trust_id = _trust_ids.get(context)
    if trust_id is not None:  # (absent otherwise: fingerprints made before it existed hold)
        settings["trust_id"] = trust_id
    if libssl is not None:
        settings["trust_store"] = sorted(
            f"{kind}:{_digest(der)}" for kind, der in libssl.trust_store(context)
        )
        settings["security_level"] = libssl.security_level(context)
        settings["client_certificate"] = _digest(libssl.client_certificate(context))
    else:
        settings["ca_certificates"] = sorted(
            hashlib.sha256(der).hexdigest() for der in context.get_ca_certs(binary_form=True)
        )
        settings["trust_store_counts"] = context.cert_store_stats()
        settings["incomplete"] = True
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _digest(der: bytes | None) -> str | None:
    return hashlib.sha256(der).hexdigest() if der is not None else None


def _reinit_after_fork() -> None:
    # A lock held by another thread at fork time would stay locked forever in the child.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
