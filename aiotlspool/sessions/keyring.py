"""The keys of one pool's context, as its verification settings are now.

:func:`~aiotlspool.sessions.key.session_key` is the one place keys are made; a key ring only
remembers its answers per endpoint for the context's current settings, notices when the
settings change (the user mutated the context) or the context is replaced, and says which keys
that made stale.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from ..endpoint import Endpoint
from .key import SessionKey, context_number, session_key
from .verification import Verification, verification_of

# Says whether sessions stored under a key must be dropped.
StaleRule = Callable[[SessionKey], bool]

_MAX_REMEMBERED = 1024


class KeyRing:
    """Keys for ``context`` (see :func:`session_key`), re-read at every :meth:`key_for`."""

    def __init__(self, context: ssl.SSLContext, *, share_across_ports: bool) -> None:
        self.context = context
        self.share_across_ports = share_across_ports
        self._number = context_number(context)
        self._verification: Verification | None = None
        self._keys: dict[Endpoint, SessionKey] = {}

    def key_for(
        self, endpoint: Endpoint, *, reread: bool = True
    ) -> tuple[SessionKey, Verification, StaleRule | None]:
        """The key for ``endpoint`` under the settings the context has now, those settings,
        and - when they changed since the last call - which stored keys they made stale.

        ``reread=False`` trusts the settings read last (a caller that checks them again
        before the session is used, as the connector does in ``wrap_bio``).
        """
        if reread or self._verification is None:
            verification = verification_of(self.context)
        else:
            verification = self._verification
        stale: StaleRule | None = None
        if verification is not self._verification:
            previous, self._verification = self._verification, verification
            self._keys.clear()
            if previous is not None and previous.fingerprint != verification.fingerprint:
                number, fingerprint = self._number, verification.fingerprint

                def stale(key: SessionKey) -> bool:
                    return key.context == number and key.verification != fingerprint

        key = self._keys.get(endpoint)
        if key is None:
            if len(self._keys) >= _MAX_REMEMBERED:
                self._keys.clear()  # many distinct endpoints: start over rather than grow
            key = self._keys[endpoint] = session_key(
                self.context,
                endpoint,
                share_across_ports=self.share_across_ports,
                verification=verification,
            )
        return key, verification, stale

    def replace(self, context: ssl.SSLContext) -> StaleRule | None:
        """Make keys for ``context`` from now on; which stored keys that made stale."""
        old_number = self._number
        self.context = context
        self._number = context_number(context)
        self._verification = None
        self._keys.clear()
        if old_number == self._number:
            return None

        def stale(key: SessionKey) -> bool:
            return key.context == old_number

        return stale

    def is_current(self, key: SessionKey) -> bool:
        """Whether ``key`` was made under the settings the context has now (as last read)."""
        current = self._verification
        return (
            current is not None
            and key.context == self._number
            and key.verification == current.fingerprint
        )
