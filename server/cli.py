"""``selaras server`` and ``selaras admin``: the centre's command line.

Both plug into the ``selaras`` command through the ``selaras.commands`` entry
points (client/ never imports server/). Errors are one line, raised as
``click.ClickException`` so the root group prints ``selaras: error: ...``.

Admin commands reach a running server through an ``AdminRequest`` over its
websocket (URL from ``DATA/server.json``, secret from ``DATA/admin.token``);
with the server stopped they open the centre's store themselves (``DATA/centre.duckdb``,
or the PostgreSQL database of ``--store``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click
import msgspec
import structlog

from selaras.engine import bundle
from selaras.engine.errors import InputError, os_error_text
from selaras.engine.lookup import ROW_HELP
from selaras.engine.protocol import AdminReply, Limits
from selaras.engine.storage import is_postgres, open_centre
from selaras.engine.store import DataInUse, StoreError
from selaras.engine.values import assignments

from . import credentials
from .admin import AdminError, run_admin
from .app import ADMIN_TOKEN, DB_FILE, SERVER_JSON, SelarasServer, ServerOptions, now_ms
from .remote import AdminRefused, admin_request

ENV_DATA = "SELARAS_CENTRE_DATA"
DEFAULT_DATA = "selaras-centre"

ENV_STORE = "SELARAS_CENTRE_STORE"
STORE = "basis data pusat"  # how an error of the centre's store begins

data_option = click.option(
    "--data", type=click.Path(file_okay=False, path_type=Path), envvar=ENV_DATA,
    default=DEFAULT_DATA, show_default=True, help=f"the centre's data folder (or ${ENV_DATA})")
store_option = click.option(
    "--store", envvar=ENV_STORE, metavar="postgresql://...",
    help=f"the centre's PostgreSQL database (or ${ENV_STORE}); without it, DuckDB in "
         f"DATA/{DB_FILE}. Server processes sharing one database share one data folder "
         "too (its secrets and signing key)")


@click.command()
@data_option
@store_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="0: any free port")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--max-sessions", type=click.IntRange(min=1), default=64, show_default=True,
              help="concurrent sync sessions, counted over every server process on the "
                   "store; beyond it: server busy")
@click.option("--window", type=click.IntRange(min=1), default=Limits().window_batches,
              show_default=True, help="unacknowledged batches per direction")
@click.option("--batch-events", type=click.IntRange(min=1),
              default=Limits().max_batch_events, show_default=True,
              help="most events per batch; smaller batches resend less after a dropped link")
@click.option("--no-consent-gate", is_flag=True,
              help="Take pushes without the principal's consent (to measure what the gate "
                   "costs, or for tests; never for schools).")
@click.option("--no-central-validation", is_flag=True,
              help="Skip Validasi Pusat after each push (to measure what it costs).")
def server(data: Path, store: str | None, host: str, port: int, tls_cert: Path | None,
           tls_key: Path | None, max_sessions: int, window: int, batch_events: int,
           no_consent_gate: bool, no_central_validation: bool) -> None:
    """Run the central server until SIGTERM or Ctrl-C (then drain and stop)."""
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    check_store(store)
    options = ServerOptions(host=host, port=port, store=store, tls_cert=tls_cert,
                            tls_key=tls_key, max_sessions=max_sessions,
                            limits=Limits(window_batches=window, max_batch_events=batch_events),
                            consent_gate=not no_consent_gate,
                            central_validation=not no_central_validation)
    try:
        asyncio.run(_serve(data, options))
    except DataInUse as exc:
        raise click.ClickException(f"{data / DB_FILE}: {exc}") from None
    except StoreError as exc:
        raise click.ClickException(f"{STORE}: {exc}") from None
    except OSError as exc:
        if exc.filename:  # a file of the data folder: read-only, a full disk ...
            raise click.ClickException(os_error_text(exc)) from None
        raise click.ClickException(cannot_listen(host, port, exc)) from None


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """Why the server could not open its port, and what to do, in one line."""
    match exc.errno:
        case errno.EADDRINUSE:
            why = "port itu sudah dipakai program lain: pilih --port lain atau hentikan program itu"
        case errno.EACCES | errno.EPERM:
            why = "tidak ada izin membuka port itu (port di bawah 1024?): pilih --port lain"
        case errno.EADDRNOTAVAIL:
            why = "alamat itu bukan milik komputer ini: periksa --host"
        case _:
            why = exc.strerror or type(exc).__name__
    return f"tidak dapat membuka port {host}:{port}: {why}"


async def _serve(data: Path, options: ServerOptions) -> None:
    centre = SelarasServer(data, options)
    await centre.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Windows has no add_signal_handler: Ctrl-C raises KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError, AttributeError):
            loop.add_signal_handler(sig, stop.set)
    click.echo(f"listening on {centre.url}")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await centre.stop()
        structlog.get_logger("selaras.server").info("stopped", **centre.all_stats())


# -- admin -------------------------------------------------------------------------------


def check_store(store: str | None) -> None:
    if store is not None and not is_postgres(store):
        # Not echoed: a URL may hold a password.
        raise click.UsageError("--store: beri URL postgresql://... (tanpa --store, pusat "
                               f"memakai DuckDB di DATA/{DB_FILE})")


@click.group()
@data_option
@store_option
@click.pass_context
def admin(ctx: click.Context, data: Path, store: str | None) -> None:
    """Administer the centre: schools, registration codes, installs, queries."""
    check_store(store)
    ctx.obj = (data, store)


def dispatch(where: tuple[Path, str | None], command: str, **args: str) -> AdminReply:
    """Run one admin command on the running server, or on the stopped store."""
    data, store = where
    info_path = data / SERVER_JSON
    info = _server_info(info_path)
    if info is not None:
        token = (data / ADMIN_TOKEN).read_text(encoding="utf-8").strip()
        try:
            return asyncio.run(admin_request(info["url"], token, command,
                                             cafile=info.get("tls_cert"), **args))
        except AdminRefused as exc:
            raise click.ClickException(str(exc)) from None
        except OSError:
            pass  # a stale server.json (the server was killed): use the store directly
    if store is None and not (data / DB_FILE).exists() and command != "school_add":
        raise click.ClickException(f"{data} tidak berisi pusat ({DB_FILE}): tambahkan sekolah "
                                   "dulu ('selaras admin school add')")
    if command == "stats":
        raise click.ClickException("stats hanya ada di server yang sedang berjalan: jalankan "
                                   "'selaras server' dulu")
    data.mkdir(parents=True, exist_ok=True)
    try:
        centre = open_centre(store or data / DB_FILE, key=credentials.centre_key(data))
    except DataInUse:
        raise click.ClickException(
            f"{data / DB_FILE} sedang dipakai proses lain dan tidak ada server yang menjawab "
            f"di URL dalam {SERVER_JSON}: coba lagi sebentar lagi") from None
    except StoreError as exc:
        raise click.ClickException(f"{STORE}: {exc}") from None
    try:
        return run_admin(centre, centre.registry, command, args, now_ms())
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        centre.close()


def _server_info(path: Path) -> dict[str, Any] | None:
    """What a running server wrote in DATA/server.json; None if no server runs (or the
    file is cut short: a server killed while writing it)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):  # UnicodeDecodeError too
        return None
    return info if isinstance(info, dict) and isinstance(info.get("url"), str) else None


def show(reply: AdminReply, as_json: bool = False) -> None:
    if reply.columns == ["error"]:
        raise click.ClickException(reply.message)
    if as_json:
        click.echo(json.dumps(reply.data or {"columns": reply.columns, "rows": reply.rows,
                                             "message": reply.message}))
        return
    if reply.columns and reply.rows:
        cells = [[("NULL" if v is None else str(v)) for v in r] for r in reply.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(reply.columns)]
        for r in [list(reply.columns), *cells]:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    elif reply.columns:
        click.echo("(no rows)")
    if reply.message:
        click.echo(reply.message)


def run(ctx: click.Context, command: str, as_json: bool = False, **args: Any) -> None:
    show(dispatch(ctx.obj, command, **{k: str(v) for k, v in args.items() if v is not None}),
         as_json)


json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")
npsn_option = click.option("--npsn", required=True, help="the school's NPSN (8 digits)")


@admin.group("school")
def school() -> None:
    """Schools and their registration codes."""


@school.command("add")
@npsn_option
@click.option("--nama", default="", help="the school's name")
@click.option("--bentuk", default="SMA", show_default=True, help="bentuk pendidikan")
@click.pass_context
def school_add(ctx: click.Context, npsn: str, nama: str, bentuk: str) -> None:
    """Add a school; prints its registration code (shown once)."""
    reply = dispatch(ctx.obj, "school_add", npsn=npsn, nama=nama, bentuk=bentuk)
    if reply.columns == ["error"]:
        raise click.ClickException(reply.message)
    click.echo(reply.message)


@school.command("reset-kode")
@npsn_option
@click.pass_context
def reset_kode(ctx: click.Context, npsn: str) -> None:
    """A new registration code; every install of the school must register again."""
    reply = dispatch(ctx.obj, "reset_kode", npsn=npsn)
    if reply.columns == ["error"]:
        raise click.ClickException(reply.message)
    click.echo(reply.message)


@school.command("list")
@json_option
@click.pass_context
def school_list(ctx: click.Context, as_json: bool) -> None:
    """Every registered school: its last sync, last Tarik Data, invalid pending."""
    run(ctx, "schools", as_json)


@admin.command()
@npsn_option
@json_option
@click.pass_context
def installs(ctx: click.Context, npsn: str, as_json: bool) -> None:
    """The school's installs (origin, account, code generation, revoked)."""
    run(ctx, "installs", as_json, npsn=npsn)


@admin.command()
@click.option("--install", required=True, help="the install's origin (a UUID)")
@click.pass_context
def revoke(ctx: click.Context, install: str) -> None:
    """Revoke an install: its next session is refused (install_revoked)."""
    run(ctx, "revoke", install=install)


@admin.command()
@npsn_option
@click.argument("sql")
@json_option
@click.pass_context
def query(ctx: click.Context, npsn: str, sql: str, as_json: bool) -> None:
    """One read-only SELECT over the school's tables.

    It reads the school's entity tables (peserta_didik, ptk, ...), its log
    (event, context, signature) and Referensi (ref.<name>), nothing else.
    """
    run(ctx, "query", as_json, npsn=npsn, sql=sql)


@admin.command()
@npsn_option
@json_option
@click.pass_context
@click.option("--full", is_flag=True, help="Recompute them from the rows.")
def checksum(ctx: click.Context, npsn: str, full: bool, as_json: bool) -> None:
    """Per-entity checksums of the school's state at the centre."""
    run(ctx, "checksum", as_json, npsn=npsn, full=full or None)


@admin.command()
@npsn_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="how many of the latest sessions")
@json_option
@click.pass_context
def history(ctx: click.Context, npsn: str, limit: int, as_json: bool) -> None:
    """The school's latest sessions: time, install, account, principal, consent,
    counts, result."""
    run(ctx, "history", as_json, npsn=npsn, limit=limit)


@admin.command()
@json_option
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """The running server's counters: sessions, busy refusals, events, commits."""
    run(ctx, "stats", as_json)




@admin.group("account")
def account() -> None:
    """The school's accounts: operators and the kepala sekolah (dinas work)."""


user_option = click.option("--user", required=True, help="the account (an e-mail)")
password_option = click.option("--password", help="its password [default: a new one, shown once]")


@account.command("add")
@npsn_option
@user_option
@password_option
@click.option("--role", type=click.Choice(["operator", "kepala_sekolah"]), default="operator",
              show_default=True)
@click.option("--nama", help="the person's name")
@click.option("--ptk-id", help="kepala_sekolah: the PTK who holds the tugas tambahan")
@click.option("--nip", help="kepala_sekolah: the principal's NIP")
@click.pass_context
def account_add(ctx: click.Context, npsn: str, user: str, password: str | None, role: str,
                nama: str | None, ptk_id: str | None, nip: str | None) -> None:
    """Add an account to a school (each PC registers with an account of its own)."""
    run(ctx, "account_add", npsn=npsn, user=user, password=password, role=role, nama=nama,
        ptk_id=ptk_id, nip=nip)


@account.command("reset-password")
@npsn_option
@user_option
@password_option
@click.pass_context
def account_reset_password(ctx: click.Context, npsn: str, user: str,
                           password: str | None) -> None:
    """A new password (a principal's signing key is made anew with it)."""
    run(ctx, "reset_password", npsn=npsn, user=user, password=password)


@account.command("disable")
@npsn_option
@user_option
@click.pass_context
def account_disable(ctx: click.Context, npsn: str, user: str) -> None:
    """Disable an account: its installs' sessions are refused (account_disabled)."""
    run(ctx, "disable_account", npsn=npsn, user=user)


@account.command("list")
@npsn_option
@json_option
@click.pass_context
def account_list(ctx: click.Context, npsn: str, as_json: bool) -> None:
    """The school's accounts."""
    run(ctx, "accounts", as_json, npsn=npsn)


# -- the centre's own changes: Manajemen Dapodik, Verval -------------------------------------

def field_values(ctx: click.Context, param: click.Parameter,
                 values: tuple[str, ...]) -> dict[str, str]:
    try:
        return assignments(values)
    except InputError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


row_argument = click.argument("row", metavar="ROW")
@admin.command(epilog=ROW_HELP)
@npsn_option
@click.argument("entity")
@row_argument
@click.argument("fields", nargs=-1, required=True, metavar="FIELD=VALUE...",
                callback=field_values)
@json_option
@click.pass_context
def edit(ctx: click.Context, npsn: str, entity: str, row: str, fields: dict[str, str],
         as_json: bool) -> None:
    """Manajemen Dapodik: change fields of a school's row with the centre's authority;
    the school receives it on its next sync or Tarik Data."""
    run(ctx, "edit", as_json, npsn=npsn, entity=entity, row=row, fields=json.dumps(fields))


@admin.command(epilog=ROW_HELP)
@click.argument("kind", type=click.Choice(["pd", "ptk", "sp"]))
@npsn_option
@row_argument
@click.argument("fields", nargs=-1, metavar="[FIELD=VALUE...]", callback=field_values)
@json_option
@click.pass_context
def verval(ctx: click.Context, kind: str, npsn: str, row: str, fields: dict[str, str],
           as_json: bool) -> None:
    """Verval PD, PTK or SP: correct the identity fields the centre owns and verify the
    person (the school can no longer change them)."""
    run(ctx, "verval", as_json, npsn=npsn, kind=kind, row=row, fields=json.dumps(fields))


@admin.command(epilog=ROW_HELP)
@npsn_option
@row_argument
@json_option
@click.pass_context
def nisn(ctx: click.Context, npsn: str, row: str, as_json: bool) -> None:
    """Issue a NISN to a new student whose identity is complete and whose NIK no other
    student at any school has."""
    run(ctx, "nisn", as_json, npsn=npsn, row=row)


@admin.group("referensi")
def referensi() -> None:
    """Referensi: add and expire reference codes, for every school."""


table_argument = click.argument("table", metavar="TABLE")  # agama or ref.agama


@referensi.command("add")
@table_argument
@click.argument("code")
@click.argument("fields", nargs=-1, required=True, metavar="FIELD=VALUE...",
                callback=field_values)
@json_option
@click.pass_context
def referensi_add(ctx: click.Context, table: str, code: str, fields: dict[str, str],
                  as_json: bool) -> None:
    """Add CODE to Referensi TABLE (nama=... and the table's other fields)."""
    run(ctx, "referensi_add", as_json, table=table, code=code, fields=json.dumps(fields))


@referensi.command("expire")
@table_argument
@click.argument("code")
@click.option("--date", required=True, help="expired from this day on (YYYY-MM-DD)")
@json_option
@click.pass_context
def referensi_expire(ctx: click.Context, table: str, code: str, date: str,
                     as_json: bool) -> None:
    """Expire CODE of Referensi TABLE: schools still using it see it in Validasi Lokal."""
    run(ctx, "referensi_expire", as_json, table=table, code=code, date=date)


@admin.group("bundle")
def bundle_group() -> None:
    """The offline route: a school's bundle in, the centre's changes for it out."""


@bundle_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def bundle_import(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Apply a school's bundle ('selaras bundle export --for-centre') exactly as its sync
    would be: the same consent, the same gate, the same refusals. Again: no change."""
    data = base64.b64encode(file.read_bytes()).decode()
    run(ctx, "bundle_import", as_json, bundle=data)


@bundle_group.command("export")
@npsn_option
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle file to write (the school imports it: 'selaras bundle import').")
@click.option("--for", "for_", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The school's bundle (or a vector file): only what it lacks goes in. "
                   "Without it, everything does.")
@click.pass_context
def bundle_export(ctx: click.Context, npsn: str, out: Path, for_: Path | None) -> None:
    """The centre's changes for a school, as a bundle for its flash disk."""
    theirs = school_vector(for_, npsn) if for_ else {}
    reply = dispatch(ctx.obj, "bundle_export", npsn=npsn, vector=json.dumps(theirs))
    if reply.columns == ["error"]:
        raise click.ClickException(reply.message)
    temp = out.with_name(out.name + ".tmp")
    temp.write_bytes(base64.b64decode(reply.data["bundle"]))
    temp.replace(out)
    click.echo(f"{reply.message}: {out}")


def school_vector(path: Path, npsn: str) -> dict[str, int]:
    """What the school holds: the vector in its bundle, or in a vector file."""
    data = path.read_bytes()
    try:
        if bundle.is_bundle(data):
            return dict(bundle.decode(data, npsn=npsn).vector)
        return msgspec.json.decode(data, type=dict[str, int])
    except (InputError, msgspec.DecodeError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None


@admin.command("central-validation")
@click.option("--npsn", default=None, help="the school whose current findings to list")
@click.option("--all", "every", is_flag=True,
              help="run every rule at every school now (after a rule changes; it holds the "
                   "writer: run it when few schools sync)")
@json_option
@click.pass_context
def central_validation(ctx: click.Context, npsn: str | None, every: bool, as_json: bool,
                       ) -> None:
    """Validasi Pusat (rules across schools): a school's current findings, or a full run."""
    if (npsn is None) == (not every):
        raise click.UsageError("beri --npsn N atau --all (salah satu)")
    run(ctx, "central_validation", as_json, npsn=npsn, all="1" if every else None)
