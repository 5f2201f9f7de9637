"""Throwaway certificates for the local servers: one CA and one leaf per key type.

The leaf covers the IP address 127.0.0.1 so that every client connects to the literal address:
no name resolution (which would add a thread hop in some clients) and no IPv6 fallback.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

HOST = "127.0.0.1"
KEY_TYPES = {"rsa": trustme.KeyType.RSA, "ecdsa": trustme.KeyType.ECDSA}  # RSA-2048, P-256


@dataclass(frozen=True)
class CertFiles:
    """PEM files for one key type, written where a server process (or nginx) can read them."""

    key_type: str
    ca: Path
    chain: Path  # leaf then CA, as nginx wants it
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this CA (one per client instance)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        return context

    def to_json(self) -> str:
        """The files as one command-line argument for a child process (:meth:`from_json`)."""
        return json.dumps(
            {"key_type": self.key_type, "ca": str(self.ca), "chain": str(self.chain)}
            | {"key": str(self.key)}
        )

    @classmethod
    def from_json(cls, text: str) -> CertFiles:
        fields = json.loads(text)
        return cls(fields["key_type"], *(Path(fields[k]) for k in ("ca", "chain", "key")))


def make_certs(directory: Path, key_type: str) -> CertFiles:
    """Issue a CA and a leaf for 127.0.0.1, both with ``key_type`` keys, into ``directory``."""
    kind = KEY_TYPES[key_type]
    # The CA uses the same key type: the client verifies its signature on every full handshake.
    ca = trustme.CA(key_type=kind)
    leaf = ca.issue_cert(HOST, key_type=kind)
    files = CertFiles(
        key_type=key_type,
        ca=directory / f"{key_type}-ca.pem",
        chain=directory / f"{key_type}-chain.pem",
        key=directory / f"{key_type}-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    files.chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    return files
