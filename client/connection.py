"""Is this install connected to its centre? The check, and sync and pull made on it.

``check_connection`` is the application service behind ``selaras check-connection``
(the command line and, later, a local web app call it): one ``Check`` (docs/protocol.md
R17), which the centre answers as it would this install's ``Hello`` but without a
session, so nothing is recorded as a sync. ``check_install`` does it for an open
install: its centre, its credential, its school's time zone. The answer is a
``ConnectionStatus``: connected, or not and why (``Reason``, stable codes for --json)::

    no_network    this PC has no network: the centre's name does not resolve, no route
    unreachable   the network works, the centre does not: connection refused, no answer
                  to the opening, something other than a selaras centre at that address
    timeout       the centre took the connection but did not answer within timeout_s
    refused       the centre refused this install: ``code`` and its text
                  (engine/refusals.py); for server_busy, until when in the school's time
    offline       an install without a centre (``selaras init --offline``)
    bad_url       the centre's address is not a ws:// or wss:// URL

``checked_sync`` is ``selaras sync`` and ``selaras pull`` as a service: the check
first (one quick attempt), stopping at once on a refusal retrying cannot mend (the
same ``SyncRefused`` the sync would end with), then ``run_sync`` within what is
left of a finite timeout, its retries reported as they come.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from selaras.engine.localtime import (
    DEFAULT_ZONE,
    Zone,
    format_local,
    iso_local,
    minute_after,
    school_zone,
)
from selaras.engine.protocol import (
    PROTOCOL_VERSION,
    Answered,
    Check,
    Checked,
    Code,
    Limits,
    Refuse,
    Refused,
    Side,
    State,
    SyncProtocol,
)
from selaras.engine.refusals import text_of
from selaras.engine.replica import Identity
from selaras.engine.schema import SCHEMA_VERSION
from selaras.engine.store import InstallStore

from .install import ClientError
from .sync import (
    CLOCK_WARN_MS,
    OPEN_TIMEOUT_S,
    Mode,
    OnRetry,
    Progress,
    SyncRefused,
    SyncReport,
    SyncTimedOut,
    app_version,
    clock_warning,
    now_ms,
    reregister_command,
    run_sync,
)

# The check before a sync is one quick attempt: no longer than opening a connection may take.
PRECHECK_TIMEOUT_S = OPEN_TIMEOUT_S
CLOSE_TIMEOUT_S = 2.0  # the closing handshake after the answer: a check stays quick


class Reason(enum.StrEnum):
    """Why an install is not connected (stable: --json prints them)."""

    NO_NETWORK = "no_network"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    OFFLINE = "offline"
    BAD_URL = "bad_url"


class Verdict(enum.Enum):
    """What a refusal of the Check means for a sync."""

    FINAL = "final"  # retrying cannot mend it: sync and pull stop at once
    RETRY = "retry"  # the centre failed: the sync retries with back-off
    RETRY_AT = "retry_at"  # the centre is busy for retry_after_s: say until when


# Per refusal code (docs/protocol.md section 7), what it means; the school reads the
# code's own text (engine/refusals.py). A code not here (a newer centre's, or one
# added since) is final, with its text or the centre's message.
VERDICTS: dict[str, Verdict] = {
    Code.VERSION_MISMATCH: Verdict.FINAL,
    Code.BAD_CREDENTIAL: Verdict.FINAL,
    Code.CODE_RESET: Verdict.FINAL,
    Code.INSTALL_REVOKED: Verdict.FINAL,
    Code.SERVER_BUSY: Verdict.RETRY_AT,
    Code.INTERNAL_ERROR: Verdict.RETRY,
    Code.IDLE_TIMEOUT: Verdict.RETRY,
}

# OSError numbers for "this PC has no way to that network" (POSIX, then Windows).
NO_ROUTE = {getattr(errno, name) for name in (
    "ENETUNREACH", "EHOSTUNREACH", "ENETDOWN",
    "WSAENETUNREACH", "WSAEHOSTUNREACH", "WSAENETDOWN") if hasattr(errno, name)}


@dataclass(frozen=True)
class ConnectionStatus:
    """The answer of one check. ``message`` is the line the operator reads."""

    url: str
    reason: Reason | None = None  # None: connected
    detail: str = ""  # why not, for the operator (what follows "Tidak terhubung: ")
    code: str | None = None  # the centre's refusal code (reason refused)
    centre_message: str = ""  # ... and its message (R15: for the school)
    retry_after_s: float | None = None  # server_busy: how long the centre asks to wait
    retry_at_ms: int | None = None  # ... and so from when, on this PC's clock
    zone: Zone = DEFAULT_ZONE  # the school's, for the times shown
    clock_offset_ms: int | None = None  # the centre's clock minus this PC's (R14)

    @property
    def connected(self) -> bool:
        return self.reason is None

    @property
    def final(self) -> bool:
        """Refused for a reason retrying cannot mend: a sync stops at once."""
        return (self.reason is Reason.REFUSED
                and VERDICTS.get(self.code or "", Verdict.FINAL) is Verdict.FINAL)

    @property
    def message(self) -> str:
        if not self.connected:
            return f"Tidak terhubung: {self.detail}"
        text = f"Terhubung ke server pusat {self.url}"
        if self.clock_offset_ms is not None and abs(self.clock_offset_ms) > CLOCK_WARN_MS:
            text += "\n" + clock_warning(self.clock_offset_ms)
        return text

    def as_json(self) -> dict[str, Any]:
        return {"connected": self.connected, "reason": self.reason, "code": self.code,
                "message": self.message, "url": self.url,
                "retry_at": (None if self.retry_at_ms is None
                             else iso_local(self.retry_at_ms, self.zone)),
                "retry_after_s": self.retry_after_s, "zone": self.zone.name,
                "clock_offset_ms": self.clock_offset_ms}


# -- the check ------------------------------------------------------------------------------


async def check_connection(url: str, identity: Identity, token: str, *,
                           timeout_s: float, zone: Zone = DEFAULT_ZONE) -> ConnectionStatus:
    """Ask the centre at ``url`` whether it lets this install in (one ``Check``, R17),
    within ``timeout_s``. Never raises for what the network or the centre did: that is
    the status. ``zone``: the school's, for "busy until" (``localtime.school_zone``)."""
    proto = SyncProtocol(Side.CLIENT)
    sent_ms = now_ms()
    proto.send_request(Check(PROTOCOL_VERSION, app_version(), SCHEMA_VERSION, identity.npsn,
                             identity.origin, token, sent_ms))
    failed: ConnectionStatus | None = None
    opened, open_timeout_s = False, min(OPEN_TIMEOUT_S, timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            # The settings of every connection to the centre (client/sync.py).
            async with connect(url, compression=None, max_size=Limits().max_frame_bytes,
                               open_timeout=open_timeout_s, close_timeout=CLOSE_TIMEOUT_S,
                               proxy=None) as ws:
                opened = True
                while True:
                    for frame in proto.data_to_send():
                        await ws.send(frame)
                    if proto.state is State.CLOSED:
                        break
                    proto.receive_data(await ws.recv(decode=False))
    except TimeoutError:
        failed = (ConnectionStatus(url, Reason.TIMEOUT, f"server pusat {url} tidak menjawab "
                                   f"pemeriksaan dalam {timeout_s:g} detik", zone=zone)
                  if opened else _unreachable(
                      url, f"tidak menjawab dalam {open_timeout_s:g} detik", zone))
    except InvalidURI:
        failed = ConnectionStatus(url, Reason.BAD_URL, f"alamat server pusat {url!r} tidak "
                                  "valid: tulis ws://HOST:PORT atau wss://HOST:PORT", zone=zone)
    except (OSError, InvalidHandshake, ConnectionClosed) as exc:
        failed = failure(url, exc, zone)
    received_ms = now_ms()
    for fact in proto.facts():  # an answer that came before a failure still counts
        match fact:
            case Answered(answer=Checked(server_ms=server_ms)):
                # R14: the centre's clock at the midpoint of our send and receive.
                return ConnectionStatus(url, zone=zone,
                                        clock_offset_ms=server_ms - (sent_ms + received_ms) // 2)
            case Refused(refuse=refuse, by_peer=True):
                return refused(url, refuse, identity, zone, received_ms)
            case Refused(by_peer=False):  # we refused what came: not a selaras centre
                return _unreachable(url, "jawabannya tidak dapat dibaca (bukan server pusat "
                                    "selaras, atau versinya jauh berbeda)", zone)
    return failed or _unreachable(url, "koneksi ditutup tanpa jawaban", zone)


def failure(url: str, exc: BaseException, zone: Zone = DEFAULT_ZONE) -> ConnectionStatus:
    """Why a connection to ``url`` failed, from what the network stack raised."""
    host = urlsplit(url).hostname or url
    if isinstance(exc, socket.gaierror):
        return ConnectionStatus(url, Reason.NO_NETWORK, (
            f"tidak ada jaringan, atau alamat server pusat salah: nama {host} tidak dapat "
            "ditemukan; periksa koneksi internet komputer ini dan alamat servernya"), zone=zone)
    if isinstance(exc, OSError) and exc.errno in NO_ROUTE:
        return ConnectionStatus(url, Reason.NO_NETWORK, (
            f"tidak ada jaringan: komputer ini tidak punya jalur ke {host}; periksa kabel, "
            "Wi-Fi atau modem"), zone=zone)
    if isinstance(exc, ConnectionRefusedError):
        return _unreachable(url, "tidak ada yang melayani di alamat itu (server mati, atau "
                            "alamat atau port salah)", zone)
    if isinstance(exc, InvalidHandshake):
        return _unreachable(url, "alamat itu menjawab, tetapi bukan sebagai server pusat "
                            "selaras (periksa alamat dan port)", zone)
    if isinstance(exc, ConnectionClosed):
        return _unreachable(url, "koneksi ditutup tanpa jawaban", zone)
    return _unreachable(url, f"{type(exc).__name__}: {exc}"[:200], zone)


def _unreachable(url: str, why: str, zone: Zone) -> ConnectionStatus:
    return ConnectionStatus(url, Reason.UNREACHABLE,
                            f"server pusat {url} tidak dapat dihubungi: {why}", zone=zone)


def refused(url: str, refuse: Refuse, identity: Identity, zone: Zone,
            received_ms: int) -> ConnectionStatus:
    """The centre's refusal as the school reads it (``VERDICTS``)."""
    code = str(refuse.code)
    verdict = VERDICTS.get(code, Verdict.FINAL)
    if verdict is Verdict.RETRY_AT:
        wait = refuse.retry_after_s or 0.0
        at = received_ms + round(wait * 1000)
        # The centre's reason (busy, or too many attempts) without its "in N seconds".
        why = refuse.message.partition(": coba lagi")[0] or text_of(code, refuse.message)
        detail = (f"ditolak server pusat ({code}): {why}: coba lagi setelah "
                  f"{format_local(minute_after(at), zone)}")
        return ConnectionStatus(url, Reason.REFUSED, detail, code, refuse.message, wait, at,
                                zone)
    # The words a refused sync ends with (client/sync.py), so both read the same.
    error = SyncRefused(code, refuse.message,
                        reregister_command(url, identity.npsn, identity.author))
    return ConnectionStatus(url, Reason.REFUSED, str(error), code, refuse.message, zone=zone)


# -- for an open install ------------------------------------------------------------------------


async def check_install(store: InstallStore, identity: Identity, *, url: str | None = None,
                        timeout_s: float) -> ConnectionStatus:
    """``check_connection`` for an open install: its centre (or ``url``), its credential,
    its school's zone. An install without a centre is ``offline``, not an error."""
    meta, zone = await asyncio.to_thread(
        lambda: (store.meta(), school_zone(store, identity.sekolah_id)))
    url = url or meta.get("url")
    if not url:
        return ConnectionStatus("", Reason.OFFLINE, (
            "instalasi ini offline (dibuat dengan 'selaras init --offline'): tidak punya "
            "server pusat; beri --server URL untuk memeriksa server tertentu"), zone=zone)
    return await check_connection(url, identity, meta.get("token", ""), timeout_s=timeout_s,
                                  zone=zone)


async def checked_sync(store: InstallStore, identity: Identity, *, mode: Mode,
                       timeout_s: float, url: str | None = None,
                       compress: bool = False, progress: Progress | None = None,
                       on_retry: OnRetry | None = None,
                       on_check: Callable[[ConnectionStatus], None] | None = None,
                       ) -> SyncReport:
    """Sync (or pull) as ``selaras sync`` does: check first, then ``run_sync``; all in
    ``timeout_s`` (finite: a sync never waits forever).

    A refusal retrying cannot mend stops it at once (``SyncRefused``, as the sync would
    end); an install without a centre is a ``ClientError``. Any other failed check is
    handed to ``on_check`` and the sync's retries take over (``on_retry``). Past the
    timeout: ``SyncTimedOut`` with ``timeout_s`` and the last reason.
    """
    started = time.monotonic()
    status = await check_install(store, identity, url=url,
                                 timeout_s=min(PRECHECK_TIMEOUT_S, timeout_s))
    if status.reason is Reason.OFFLINE:
        raise ClientError(status.detail)
    if status.final:
        assert status.code is not None
        raise SyncRefused(status.code, status.centre_message,
                          reregister_command(status.url, identity.npsn, identity.author))
    if not status.connected and on_check is not None:
        on_check(status)
    left = timeout_s - (time.monotonic() - started)
    if left <= 0:
        raise SyncTimedOut(timeout_s, status.detail)
    try:
        return await run_sync(store, identity, mode=mode, url=url, timeout_s=left,
                              compress=compress, progress=progress, on_retry=on_retry)
    except SyncTimedOut as exc:  # say the whole timeout, not what was left of it
        raise SyncTimedOut(timeout_s, exc.last) from None
