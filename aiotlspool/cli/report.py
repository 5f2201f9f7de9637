"""The probe's report: one :class:`CheckResult` per mechanism in a :class:`ProbeReport`, its
JSON document (:meth:`ProbeReport.to_json`, documented in docs/cli.md), and its rendering as a
table (rich if installed, else plain text).
"""

from __future__ import annotations

import ssl
import sys
from dataclasses import dataclass
from typing import Any, Literal

from .. import __version__

SCHEMA_VERSION = 1

Mechanism = Literal["tls1.2-session-id", "tls1.2-ticket", "tls1.3-ticket"]
Verdict = Literal["supported", "partly", "not_supported", "not_offered", "error"]


@dataclass(frozen=True)
class CheckResult:
    """What one mechanism showed. See docs/cli.md for the meaning of every field."""

    mechanism: Mechanism
    protocol: str  # "TLSv1.2" or "TLSv1.3"
    verdict: Verdict
    attempts: int  # reconnections made after the first, full handshake
    resumed: int
    rejected: int  # sessions offered and refused by the server (pool.stats())
    ticket_issued: bool | None  # None: not applicable (session IDs) or no connection
    ticket_lifetime_hint: int | None  # seconds, as the server stated it
    full_handshake_ms: float | None  # medians
    resumed_handshake_ms: float | None
    ticket_reuse: bool | None = None  # TLS 1.3: did one ticket resume two connections?
    note: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism,
            "protocol": self.protocol,
            "verdict": self.verdict,
            "attempts": self.attempts,
            "resumed": self.resumed,
            "rejected": self.rejected,
            "ticket_issued": self.ticket_issued,
            "ticket_lifetime_hint": self.ticket_lifetime_hint,
            "ticket_reuse": self.ticket_reuse,
            "handshake_ms": {
                "full_median": self.full_handshake_ms,
                "resumed_median": self.resumed_handshake_ms,
            },
            "note": self.note,
            "error": self.error,
        }


@dataclass(frozen=True)
class ProbeReport:
    """The result of :func:`aiotlspool.cli.probe.probe`: the target, the settings and one
    result per mechanism."""

    host: str
    port: int
    server_name: str
    verified: bool
    attempts: int
    timeout: float
    request_bytes: int
    checks: tuple[CheckResult, ...]

    def to_json(self) -> dict[str, Any]:
        """The documented JSON document (``schema_version`` 1)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": tool_json(),
            "target": {"host": self.host, "port": self.port, "server_name": self.server_name},
            "settings": {
                "attempts": self.attempts,
                "verify": self.verified,
                "timeout": self.timeout,
                "request_bytes": self.request_bytes,
            },
            "checks": [check.to_json() for check in self.checks],
        }


_LABELS = {
    "tls1.2-session-id": "TLS 1.2 session ID",
    "tls1.2-ticket": "TLS 1.2 ticket",
    "tls1.3-ticket": "TLS 1.3 ticket",
}
_VERDICTS = {
    "supported": ("supported", "green"),
    "partly": ("partly", "yellow"),
    "not_supported": ("not supported", "red"),
    "not_offered": ("not offered", "dim"),
    "error": ("error", "red"),
}
_HEADERS = ("mechanism", "resumed", "verdict", "ticket hint", "full hs", "resumed hs")


def tool_json() -> dict[str, str]:
    """The ``tool`` object of the probe's and the bench's JSON: who made the report, on what."""
    return {
        "name": "aiotlspool",
        "version": __version__,
        "python": sys.version.split()[0],
        "openssl": ssl.OPENSSL_VERSION,
    }


def print_report(report: ProbeReport, command: str) -> None:
    """A table (rich if installed, else plain text), then the notes; ``command`` (such as
    ``aiotlspool probe``) starts the title."""
    name = f"[{report.host}]" if ":" in report.host else report.host
    title = f"{command} {name}:{report.port}"
    if not report.server_name:
        title += " (no server name: no SNI sent, name not checked)"
    elif report.server_name != report.host:
        title += f" (server name {report.server_name!r})"
    title += ", certificate " + ("verified" if report.verified else "NOT VERIFIED (--insecure)")
    title += f"\none full handshake, then {report.attempts} reconnection(s), per mechanism"
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for check in report.checks:
        label = _LABELS[check.mechanism]
        rows.append(
            (
                label,
                "-" if check.verdict == "not_offered" else f"{check.resumed}/{check.attempts}",
                check.verdict,
                "-" if check.ticket_lifetime_hint is None else f"{check.ticket_lifetime_hint} s",
                _ms(check.full_handshake_ms),
                _ms(check.resumed_handshake_ms),
            )
        )
        # For "not offered" the note says why; the error would only repeat it.
        texts = (check.note,) if check.verdict == "not_offered" else (check.note, check.error)
        notes += [f"{label}: {text}" for text in texts if text]
        if check.ticket_reuse is not None:
            notes.append(
                "TLS 1.3 ticket reuse: "
                + (
                    "accepted: one ticket resumed two connections (RFC 8446 C.4 advises "
                    "clients not to reuse tickets; the pool does not by default)"
                    if check.ticket_reuse
                    else "refused: the server accepts each ticket once"
                )
            )
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(title, rows, notes)
        return
    console = Console(highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for i, header in enumerate(_HEADERS):
        table.add_column(header, justify="left" if i in (0, 2) else "right", no_wrap=True)
    for row in rows:
        text, style = _VERDICTS[row[2]]
        table.add_row(*row[:2], f"[{style}]{text}[/]", *row[3:])
    console.print(title, markup=False, style=None if report.verified else "bold red")
    console.print(table)
    for note in notes:
        console.print(note, markup=False)


def _print_plain(title: str, rows: list[tuple[str, ...]], notes: list[str]) -> None:
    table = [_HEADERS, *[(r[0], r[1], _VERDICTS[r[2]][0], *r[3:]) for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(_HEADERS))]
    print(title)
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for note in notes:
        print(note)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


__all__ = [
    "SCHEMA_VERSION",
    "CheckResult",
    "Mechanism",
    "ProbeReport",
    "Verdict",
    "print_report",
    "tool_json",
]
