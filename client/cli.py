"""The ``selaras`` command line: one school install on this PC.

Every command opens the install's store (``Install.open``), does one thing and
closes it. Errors are one line on stderr, ``selaras: error: ...``, with exit
status 1 (2 for usage errors); ``SelarasGroup.main`` is the one place that
turns exceptions into that line. Input and environment faults (a bad value, a
damaged bundle, a full disk, a read-only folder) are said in Indonesian, naming
the field or the cause and what to do (docs/security.md, "Errors"); usage
errors keep click's English, like the commands and their --help. "internal
error" is for bugs only.

Command groups that live outside client/ (``selaras bench``) plug in through
the ``selaras.commands`` entry point group: client/ never imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from functools import update_wrapper
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from selaras.engine import passwords, validation
from selaras.engine.errors import InputError, os_error_text
from selaras.engine.lookup import ROW_HELP, find_row
from selaras.engine.schema import ENTITIES, TABS, UnknownEntity
from selaras.engine.store import AppendReport, StoreError, verify
from selaras.engine.values import assignments as assignments_of
from selaras.engine.values import shown

from . import mutasi, output, principal, semester
from .changes import CHANGE_TABS, DEFAULT_LIMIT, pending_changes
from .install import (
    DEFAULT_DATA,
    ENV_DATA,
    NPSN,
    ClientError,
    Install,
    Session,
    export_bundle,
    import_bundle,
    import_rows,
    now_ms,
    read_bundle_file,
    read_vector,
    vector_json,
    write_atomically,
)

PLUGINS = "selaras.commands"
DEBUG_ENV = "SELARAS_DEBUG"
F = TypeVar("F", bound=Callable[..., Any])

# click >= 8.2 raises it for a group called without a command.
NO_ARGS_IS_HELP: type[click.UsageError] | tuple[()] = getattr(
    click.exceptions, "NoArgsIsHelpError", ())

# Errors an operator can act on: their message is the whole story.
EXPECTED_ERRORS = (ClientError, InputError, StoreError)


class SelarasGroup(click.Group):
    """The root group: plugin command groups, and the one error handler."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in _plugins():
            command = _load_plugin(name)
        return command

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name or "selaras", complete_var, False, **extra)
        except NO_ARGS_IS_HELP as exc:  # a bare 'selaras' or 'selaras bundle': show the help
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            sys.exit(2)
        except click.UsageError as exc:
            hint = f"; see '{exc.ctx.command_path} --help'" if exc.ctx else ""
            fail(exc.format_message().rstrip(".") + hint, 2)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            fail("interrupted", 130)
        except Exception as exc:  # the one handler: no traceback for users
            fail(describe(exc), 1)
        sys.exit(code if isinstance(code, int) else 0)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"selaras: error: {message}", err=True)
    sys.exit(code)


def describe(exc: Exception) -> str:
    """The one line an operator sees for an error."""
    if isinstance(exc, UnknownEntity):  # schema's words are English and echo the name whole
        return (f"entitas {shown(exc.name)} tidak dikenal; yang dikenal: "
                f"{', '.join(e.name for e in ENTITIES)}")
    if isinstance(exc, EXPECTED_ERRORS):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return os_error_text(exc)
    # Anything else is a bug: say what, and how to see where.
    if os.environ.get(DEBUG_ENV):
        traceback.print_exception(exc)
    first = (str(exc).splitlines() or [""])[0][:200]
    return (f"internal error: {type(exc).__name__}: {first} (set {DEBUG_ENV}=1 for the "
            "traceback, and please report it)")


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=PLUGINS)}


def _load_plugin(name: str) -> click.Command:
    try:
        command = _plugins()[name].load()
        if not isinstance(command, click.Command):
            raise TypeError(f"{command!r} is not a click command")
    except Exception as exc:  # a broken plugin must not break selaras
        reason = f"{type(exc).__name__}: {exc}"

        @click.command(name, context_settings={"ignore_unknown_options": True},
                       add_help_option=False)
        @click.argument("args", nargs=-1, type=click.UNPROCESSED)
        def unavailable(args: tuple[str, ...]) -> None:
            raise ClientError(f"the '{name}' commands are not available ({reason})")

        return unavailable
    return command


# -- shared options and arguments -------------------------------------------------------


pass_install = click.make_pass_decorator(Install)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON.")(f)


def with_session(*, read_only: bool = False) -> Callable[[F], F]:
    """Open the install around the command; pass the open Session first."""

    def decorator(f: F) -> F:
        def run(install: Install, /, *args: Any, **kwargs: Any) -> Any:
            with install.open(read_only=read_only) as session:
                return f(session, *args, **kwargs)

        return pass_install(update_wrapper(run, f))  # type: ignore[return-value]

    return decorator


def parse_assignments(ctx: click.Context, param: click.Parameter,
                      values: tuple[str, ...]) -> dict[str, str]:
    try:
        return assignments_of(values)
    except InputError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def check_npsn(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not NPSN.fullmatch(value):
        raise click.BadParameter(f"{shown(value)} is not an NPSN (8 digits)", ctx, param)
    return value


def assignments(required: bool = True) -> Callable[[F], F]:
    return click.argument("fields", nargs=-1, required=required, metavar="FIELD=VALUE...",
                          callback=parse_assignments)


def emit(as_json: bool, data: object, text: str) -> None:
    click.echo(output.to_json(data) if as_json else text)


# -- the commands -----------------------------------------------------------------------


@click.group("selaras", cls=SelarasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), envvar=ENV_DATA,
              default=DEFAULT_DATA, show_default=True, show_envvar=True,
              help="The install's data folder.")
@click.version_option(package_name="selaras")
@click.pass_context
def cli(ctx: click.Context, data: Path) -> None:
    """selaras: offline-first sync of Dapodik school data.

    One data folder holds one install of one school.
    """
    ctx.obj = Install(data)


def main() -> None:
    cli.main(prog_name="selaras")


@cli.command()
@click.option("--offline", is_flag=True, help="Make a replica without a server.")
@click.option("--server", "server_url", metavar="URL",
              help="Register with the centre at URL (ws://HOST:PORT) and pull the school's data.")
@click.option("--npsn", required=True, callback=check_npsn,
              help="The school's NPSN (8 digits).")
@click.option("--kode", help="The school's registration code (with --server).")
@click.option("--password", help="The operator account's password (with --server).")
@click.option("--nama", help="The school's name [default: BENTUK NPSN] (with --offline).")
@click.option("--bentuk", default="SMA", show_default=True,
              help="Bentuk pendidikan: SD, SMP, SMA, SMK, SLB, ... (with --offline)")
@click.option("--user", default="operator", show_default=True,
              help="Who writes from this install (an e-mail).")
@click.option("--timeout", type=float, default=None, help="Give up the first pull after SECONDS.")
@click.option("--reregister", is_flag=True,
              help="Register the install already in the data folder again, as a new install, "
                   "keeping its unsent changes (after its sync was refused as a copied or "
                   "restored folder, or for a reset code; with --server).")
@json_option
@pass_install
def init(install: Install, offline: bool, server_url: str | None, npsn: str, kode: str | None,
         password: str | None, nama: str | None, bentuk: str, user: str, timeout: float | None,
         reregister: bool, as_json: bool) -> None:
    """Create an install of school NPSN in the data folder."""
    if offline == bool(server_url):
        raise click.UsageError("give either --server URL (with --kode, --user, --password) "
                               "or --offline")
    if offline and reregister:
        raise click.UsageError("--reregister registers with a centre: give --server, "
                               "not --offline")
    if offline:
        identity = install.init_offline(npsn, nama=nama, bentuk=bentuk, user=user)
        emit(as_json, {"folder": str(install.folder), "npsn": identity.npsn,
                       "origin": identity.origin, "user": identity.author,
                       "role": identity.role},
             f"Instalasi offline sekolah {npsn} dibuat di {install.folder}")
        return
    if not kode or not password:
        raise click.UsageError("--server needs --kode and --password")
    assert server_url is not None
    if reregister:
        _reregister(install, server_url, npsn, kode, user, password, timeout, as_json)
        return
    if install.exists():
        raise ClientError(f"{install.folder} sudah berisi instalasi: pakai --data lain "
                          "(atau --reregister bila sinkronisasinya ditolak)")
    from .sync import register

    answer = asyncio.run(register(server_url, npsn, kode, user, password))
    identity = install.init_registered(
        npsn, origin=answer.install, token=answer.token, url=server_url,
        user=answer.user or user, role=answer.role, centre_key=answer.centre_key,
        kode_hash=passwords.slow_hash(passwords.normal_kode(kode)))
    if not as_json:
        click.echo(f"Instalasi sekolah {npsn} terdaftar di server pusat; Tarik Data dimulai")
    with install.open() as session:
        report = _run_sync(session, "pull", None, timeout, False, as_json)
    if as_json:
        click.echo(output.to_json({"folder": str(install.folder), "npsn": npsn,
                                   "origin": identity.origin, "role": identity.role,
                                   "pull": report.as_json()}))


def _reregister(install: Install, url: str, npsn: str, kode: str, user: str, password: str,
                timeout: float | None, as_json: bool) -> None:
    """init --reregister: a new install in place of the folder's, losing nothing of it."""
    from .reregister import reregistering
    from .sync import register

    if not install.exists():
        raise ClientError(f"tidak ada instalasi di {install.folder} untuk didaftarkan ulang: "
                          "beri --data, atau jalankan 'selaras init' tanpa --reregister")
    with reregistering(install, npsn) as rereg:
        before = rereg.old.identity.origin
        answer = asyncio.run(register(url, npsn, kode, user, password))
        session = rereg.start(origin=answer.install, token=answer.token, url=url,
                              user=answer.user or user, role=answer.role,
                              centre_key=answer.centre_key,
                              kode_hash=passwords.slow_hash(passwords.normal_kode(kode)))
        if not as_json:
            click.echo(f"Instalasi sekolah {npsn} didaftarkan ulang di server pusat, "
                       "menggantikan yang lama; Tarik Data dimulai")
        report = _run_sync(session, "pull", None, timeout, False, as_json)
        carried = rereg.carry_over()
    emit(as_json, {"folder": str(install.folder), "npsn": npsn, "origin": answer.install,
                   "previous_origin": before, "role": answer.role,
                   "reissued": carried.reissued, "kept": carried.kept,
                   "dropped": carried.dropped, "backup": str(rereg.backup),
                   "pull": report.as_json()},
         output.reregister_text(carried.reissued, carried.kept, carried.dropped,
                                rereg.backup))


def _run_sync(session: Session, mode: str, url: str | None, timeout: float | None,
              compress: bool, as_json: bool, *, check_first: bool = False) -> Any:
    """Sync or pull, its retries on stderr; ``check_first`` (sync, pull: ``checked_sync``)
    checks the connection first and needs a finite ``timeout``."""
    from .connection import checked_sync
    from .progress import SyncProgress
    from .sync import Retrying, run_sync

    with SyncProgress(enabled=not as_json, tty=sys.stdout.isatty()) as progress:

        def retrying(r: Retrying) -> None:
            click.echo(output.retrying_text(r.attempt, r.delay_s, r.reason), err=True)
            progress.retrying(r)

        if check_first:
            assert timeout is not None
            work = checked_sync(session.store, session.identity, mode=mode,  # type: ignore[arg-type]
                                timeout_s=timeout, url=url, compress=compress,
                                progress=progress.update, on_retry=retrying,
                                on_check=lambda status: click.echo(output.check_failed_text(
                                    status.message, timeout), err=True))
        else:
            work = run_sync(session.store, session.identity, mode=mode,  # type: ignore[arg-type]
                            url=url, timeout_s=timeout, compress=compress,
                            progress=progress.update, on_retry=retrying)
        report = asyncio.run(work)
    if not as_json:
        click.echo(output.sync_text(report.as_json()))
    return report


# Sync and pull never wait forever: they give up after this many seconds, retries included.
SYNC_TIMEOUT_S = 120
CHECK_TIMEOUT_S = 10  # check-connection
SECONDS = click.FloatRange(min=0, min_open=True)


timeout_option = click.option(
    "--timeout", type=SECONDS, default=SYNC_TIMEOUT_S, show_default=True, metavar="SECONDS",
    help="Give up after SECONDS, the connection check and retries included.")


def sync_options(f: F) -> F:
    for opt in reversed([
        click.option("--server", "server_url", metavar="URL",
                     help="The centre's URL [default: the one given at init]."),
        timeout_option,
        click.option("--compress", is_flag=True,
                     help="Offer permessage-deflate (for slow links)."),
        json_option,
    ]):
        f = opt(f)
    return f


@cli.command()
@sync_options
@with_session()
def sync(session: Session, server_url: str | None, timeout: float, compress: bool,
         as_json: bool) -> None:
    """Send this install's new events to the centre and receive the centre's.

    What it sends needs the principal's consent covering it ('selaras confirm'), and
    Validasi Lokal without invalid findings; with nothing to send it only receives."""
    principal.consent_for_push(session)
    report = _run_sync(session, "sync", server_url, timeout, compress, as_json,
                       check_first=True)
    if as_json:
        click.echo(output.to_json(report.as_json()))


@cli.command()
@sync_options
@with_session()
def pull(session: Session, server_url: str | None, timeout: float, compress: bool,
         as_json: bool) -> None:
    """Tarik Data: receive the centre's changes only."""
    report = _run_sync(session, "pull", server_url, timeout, compress, as_json,
                       check_first=True)
    if as_json:
        click.echo(output.to_json(report.as_json()))


# -- transfers between schools (mutasi): Tarik Data PD and PTK -----------------------------

PERSON_KEYS = {"pd": ("nisn", "nik"), "ptk": ("nuptk", "nik")}


def person_key(kind: str, given: dict[str, str | None]) -> str:
    keys = {k: v for k, v in given.items() if v}
    if len(keys) != 1:
        raise click.UsageError(f"give one of {', '.join('--' + k for k in PERSON_KEYS[kind])}")
    return next(iter(keys.values()))


@cli.group("exit")
def exit_() -> None:
    """Registrasi keluar: a student or teacher leaves this school (sent by the next sync)."""


def exit_command(kind: str) -> Callable[..., None]:
    @click.option("--reason", required=True,
                  help="jenis keluar: mutasi, lulus, mengundurkan diri, ... (or its code)")
    @click.option("--date", required=True, help="tanggal keluar (YYYY-MM-DD)")
    @json_option
    @with_session()
    def command(session: Session, reason: str, date: str, as_json: bool,
                **given: str | None) -> None:
        name = mutasi.exit_person(session, kind, person_key(kind, given), reason, date)
        emit(as_json, {"kind": kind, "nama": name, "reason": reason, "date": date},
             f"{name} tercatat keluar ({reason}, {date}); terkirim pada sinkronisasi "
             "berikutnya")
    for key in reversed(PERSON_KEYS[kind]):
        command = click.option(f"--{key}", help=f"the person's {key.upper()}")(command)
    return command


exit_.command("pd", help="A student leaves (jenis keluar on the registration).")(
    exit_command("pd"))
exit_.command("ptk", help="A teacher leaves (jenis keluar on the assignment).")(
    exit_command("ptk"))


@cli.group()
def transfer() -> None:
    """Tarik Data PD/PTK: a person who left another school joins this one."""


def transfer_command(kind: str) -> Callable[..., None]:
    @timeout_option
    @json_option
    @with_session()
    def command(session: Session, timeout: float, as_json: bool, non_induk: bool = False,
                **given: str | None) -> None:
        got = mutasi.request_transfer(session, kind, person_key(kind, given), non_induk)
        if not as_json:
            click.echo(f"{got.nama} dari sekolah {got.origin_npsn}: dikirim server pusat; "
                       "Tarik Data dimulai")
        report = _run_sync(session, "pull", None, timeout, False, as_json, check_first=True)
        then = ("Lengkapi registrasinya di sekolah ini (NIPD, tanggal masuk)" if kind == "pd"
                else "Lengkapi penugasannya di sekolah ini")
        if non_induk:
            then = (f"Daftarkan penugasannya di sekolah ini dengan ptk_induk 0; biodatanya "
                    f"diubah di sekolah induk {got.origin_npsn} dan turun dari sana")
        emit(as_json, {"entity": got.entity, "row_id": got.row_id, "nama": got.nama,
                       "origin_npsn": got.origin_npsn, "events": got.events,
                       "non_induk": non_induk, "pull": report.as_json()}, then)
    if kind == "ptk":
        command = click.option(
            "--non-induk", "non_induk", is_flag=True,
            help="the teacher stays at their home school (sekolah induk) and also teaches "
                 "here: registered here with ptk_induk 0, their biodata kept by the home "
                 "school")(command)
    for key in reversed(PERSON_KEYS[kind]):
        command = click.option(f"--{key}", help=f"the person's {key.upper()}")(command)
    return command


transfer.command("pd", help="Tarik Data PD: a student, by NISN or NIK.")(transfer_command("pd"))
transfer.command("ptk", help="Tarik Data PTK: a teacher, by NUPTK or NIK.")(
    transfer_command("ptk"))


@cli.command("check-connection")
@click.option("--server", "server_url", metavar="URL",
              help="The centre's URL [default: the one given at init].")
@click.option("--timeout", type=SECONDS, default=CHECK_TIMEOUT_S, show_default=True,
              metavar="SECONDS", help="Give up after SECONDS.")
@json_option
@with_session(read_only=True)
def check_connection(session: Session, server_url: str | None, timeout: float,
                     as_json: bool) -> None:
    """Is this install connected to its centre? Exit status 0 if so, 1 if not (why)."""
    from .connection import check_install

    status = asyncio.run(check_install(session.store, session.identity, url=server_url,
                                       timeout_s=timeout))
    emit(as_json, status.as_json(), status.message)
    if not status.connected:
        click.get_current_context().exit(1)


@cli.command()
@click.option("--limit", type=int, default=20, show_default=True)
@json_option
@with_session(read_only=True)
def history(session: Session, limit: int, as_json: bool) -> None:
    """The install's sync sessions, newest first."""
    rows = session.store.history(limit)
    if as_json:
        click.echo(output.to_json(rows))
        return
    cols = ["started", "mode", "outcome", "events_up", "events_down", "bytes_up",
            "bytes_down", "clock_offset_ms", "session"]
    click.echo(output.table(cols, [[r.get(c) for c in cols] for r in rows]))


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@with_session()
def import_(session: Session, file: Path, as_json: bool) -> None:
    """Import a JSON-lines rows file (one {"entity": ..., key: ..., field: ...} per line)."""
    counts = import_rows(session, file)
    emit(as_json, counts, output.counts_text(counts))


@cli.command()
@click.argument("entity")
@assignments()
@json_option
@with_session()
def add(session: Session, entity: str, fields: dict[str, str], as_json: bool) -> None:
    """Add a row; prints its new id."""
    row_id = session.replica.add(entity, fields, now_ms())
    emit(as_json, {"entity": entity, "row_id": row_id}, row_id)


@cli.command(epilog=ROW_HELP)
@click.argument("entity")
@click.argument("row")
@assignments()
@with_session()
def edit(session: Session, entity: str, row: str, fields: dict[str, str]) -> None:
    """Change fields of a row."""
    row_id = find_row(session.store, entity, row)
    warn_clock(session.replica.edit(entity, row_id, fields, now_ms()))


@cli.command(epilog=ROW_HELP)
@click.argument("entity")
@click.argument("row")
@with_session()
def delete(session: Session, entity: str, row: str) -> None:
    """Delete a row (rows are kept, with soft_delete = 1)."""
    warn_clock(session.replica.delete(entity, find_row(session.store, entity, row), now_ms()))


def warn_clock(report: AppendReport) -> None:
    """Tell the operator when this PC's clock was behind what it had seen of the row."""
    if report.clock_behind_ms:
        click.echo(f"selaras: peringatan: {output.clock_behind(report.clock_behind_ms)}",
                   err=True)


@cli.command()
@click.argument("sql")
@json_option
@with_session(read_only=True)
def query(session: Session, sql: str, as_json: bool) -> None:
    """Run read-only SQL on the install's data (tables are named like the entities)."""
    columns, rows = session.store.query(sql)
    if as_json:
        click.echo(output.to_json([dict(zip(columns, r, strict=True)) for r in rows]))
    else:
        click.echo(output.table(columns, rows))
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


@cli.command()
@click.option("--tab", type=click.Choice(TABS, case_sensitive=False),
              help="Show one Validasi Lokal tab only.")
@json_option
@with_session()
def validate(session: Session, tab: str | None, as_json: bool) -> None:
    """Run Validasi Lokal: every tab with its counts, each finding named for people;
    exit status 1 when anything is invalid."""
    echo_semester(session, as_json)
    report = validation.validate(session.store, tab)
    emit(as_json, report.as_dict(), output.findings_text(report))
    if report.blocked:
        raise click.exceptions.Exit(1)


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def conflicts(ctx: click.Context, as_json: bool) -> None:
    """List concurrent writes that differ (or settle one: conflicts resolve)."""
    if ctx.invoked_subcommand is None:
        install: Install = ctx.obj
        with install.open(read_only=True) as session:
            siblings = session.store.conflicts()
            label = session.origin_label
            emit(as_json, output.conflicts_json(siblings, label),
                 output.conflicts_text(siblings, label))


@conflicts.command("resolve")
@click.argument("entity")
@click.argument("row_id")
@click.argument("field")
@click.argument("value")
@with_session()
def resolve(session: Session, entity: str, row_id: str, field: str, value: str) -> None:
    """Settle a conflict: write VALUE after every concurrent write."""
    warn_clock(session.replica.resolve(entity, row_id, field, value, now_ms()))


@cli.command()
@click.option("--full", is_flag=True,
              help="Recompute the digests from the rows, and compare with the kept ones.")
@json_option
@with_session(read_only=True)
def checksum(session: Session, full: bool, as_json: bool) -> None:
    """Per-entity digests of the data and the version vector (equal data, equal digests)."""
    sums, vector = session.store.checksums(full=full), session.store.vector()
    differ = differing_checksums(session.store.checksums(), sums) if full else []
    emit(as_json, {"checksums": sums, "vector": vector} | ({"differences": differ} if full else {}),
         output.table(["entity", "checksum"], sorted(sums.items())) + "\n\n"
         + output.vector_table(vector, session.origin_label)
         + "".join(f"\n{d}" for d in differ))
    if differ:
        raise click.exceptions.Exit(1)


def differing_checksums(kept: dict[str, str], recomputed: dict[str, str]) -> list[str]:
    return [f"{name}: kept checksum {kept[name]} != recomputed {digest}"
            for name, digest in recomputed.items() if kept[name] != digest]


@cli.command()
@click.option("--verify", "check", is_flag=True,
              help="Then replay the log with the reference fold and compare (rows, conflicts, "
                   "checksums; and the checksums kept before with those recomputed).")
@json_option
@with_session()
def rebuild(session: Session, check: bool, as_json: bool) -> None:
    """Recompute the data from the event log."""
    kept = session.store.checksums()
    session.store.rebuild()
    problems = ([*differing_checksums(kept, session.store.checksums(full=True)),
                 *verify(session.store)] if check else [])
    text = "rebuilt from the log"
    if check:
        text += ("; verified: equal to a replay of the log" if not problems else
                 f"; {len(problems)} differences from a replay of the log:\n"
                 + "\n".join(f"  {p}" for p in problems))
    emit(as_json, {"rebuilt": True, "verified": check, "differences": problems}, text)
    if problems:
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write it to this file instead of printing it.")
@with_session(read_only=True)
def vector(session: Session, out: Path | None) -> None:
    """This install's version vector as JSON (give it to 'bundle export --for')."""
    text = vector_json(session.store.vector())
    if out is None:
        click.echo(text)
    else:
        write_atomically(out, (text + "\n").encode())


@cli.group("bundle")
def bundle_group() -> None:
    """Swap events with another install of the school on a file (USB stick)."""


@bundle_group.command("export")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle file to write.")
@click.option("--for", "for_", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The other install's vector file (or a bundle it made): only what it "
                   "lacks goes in. Without it, everything does.")
@click.option("--for-centre", is_flag=True,
              help="For the centre, through the dinas (no line): this install's unsent "
                   "changes with the principal's consent, checked as 'selaras sync' checks.")
@json_option
@with_session()
def bundle_export(session: Session, out: Path, for_: Path | None, for_centre: bool,
                  as_json: bool) -> None:
    """Write a bundle of this install's events."""
    if for_ and for_centre:
        raise click.UsageError("give --for or --for-centre, not both")
    if for_centre:
        data, n = principal.bundle_for_centre(session)
    else:
        data, n = export_bundle(session, read_vector(for_, session.identity.npsn)
                                if for_ else {})
    write_atomically(out, data)
    emit(as_json, {"file": str(out), "events": n, "bytes": len(data)},
         f"wrote {n} events to {out} ({len(data)} bytes)")


@bundle_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@with_session()
def bundle_import(session: Session, file: Path, as_json: bool) -> None:
    """Import a bundle from another install (importing it again changes nothing)."""
    b, report, warnings = import_bundle(session, read_bundle_file(file))
    for line in output.bundle_warnings(warnings):
        click.echo(f"selaras: peringatan: {line}", err=True)
    emit(as_json, {"from": b.origin, **output.report_json(report),
                   "unchecked_centre_events": warnings.unchecked_centre_events,
                   "clock_ahead_ms": warnings.clock_ahead_ms},
         f"from install {output.short(b.origin)}: {output.append_text(report)}")


@cli.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the demo's installs in this folder [default: a temporary one].")
@click.option("--offline", is_flag=True,
              help="Without a centre: the two installs swap bundles (USB stick).")
def demo(folder: Path | None, offline: bool) -> None:
    """A centre and two installs of one school: edit, go offline, conflict, resolve, converge."""
    from .demo import run

    if not run(folder, click.echo, generate_with_bench, offline=offline):
        raise click.exceptions.Exit(1)


def generate_with_bench(out: Path, npsn: str, bentuk: str = "SMA") -> str | None:
    """Write a small school of level ``bentuk`` with 'selaras bench generate' (a plugin);
    None if it is absent."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    bench = root.command.get_command(root, "bench") if isinstance(root.command,
                                                                  click.Group) else None
    if not isinstance(bench, click.Group) or bench.get_command(ctx, "generate") is None:
        return None
    # A seed per school: schools generated from one seed would share their rows' ids.
    args = ["generate", "--size", "small", "--npsn", npsn, "--out", str(out), "--bentuk", bentuk,
            "--seed", npsn]
    with contextlib.redirect_stderr(io.StringIO()):  # its progress line: the demo narrates
        bench.main(args, prog_name="selaras bench", standalone_mode=False)
    return "'selaras bench " + " ".join(args[:3]) + "'"


# -- the principal's sync ---------------------------------------------------------------


@cli.group("account")
def account_group() -> None:
    """The school's accounts on this install."""


@account_group.command("add")
@click.option("--role", type=click.Choice([principal.PRINCIPAL]), required=True,
              help="The account's role (the operator's account is made at registration).")
@click.option("--user", required=True, help="The account (an e-mail).")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--kode", prompt="Kode registrasi", help="The school's registration code.")
@json_option
@with_session()
def account_add(session: Session, role: str, user: str, password: str, kode: str,
                as_json: bool) -> None:
    """Add the principal's account, linked to the active kepala sekolah in the data."""
    reply = principal.add_principal(session, kode, user, password)
    emit(as_json, {"user": reply.user, "role": reply.role, "nama": reply.nama,
                   "nip": reply.nip, "ptk_id": reply.ptk_id},
         f"Akun kepala sekolah {reply.user} ditambahkan untuk {reply.nama}"
         + (f" (NIP {reply.nip})" if reply.nip else ""))


@cli.command("switch-user")
@click.option("--user", prompt="Akun kepala sekolah", help="The principal's account.")
@click.option("--password", prompt=True, hide_input=True)
@click.option("--kode", prompt="Kode registrasi", help="The school's registration code.")
@json_option
@with_session()
def switch_user(session: Session, user: str, password: str, kode: str, as_json: bool) -> None:
    """Tukar Pengguna: the principal takes over this install for the sync."""
    opened = principal.switch_user(session, kode, user, password)
    emit(as_json, opened, f"Tukar Pengguna: {opened['nama']} ({opened['user']}) masuk sebagai "
                          "kepala sekolah")


@cli.command()
@click.option("--all", "confirm_all", is_flag=True,
              help="Confirm every item of the sheet at once (each is printed).")
@click.option("--print", "print_to", metavar="FILE.pdf",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the signed sheet with the Pakta Integritas to this PDF.")
@json_option
@with_session()
def confirm(session: Session, confirm_all: bool, print_to: Path | None, as_json: bool) -> None:
    """Lembar Konfirmasi Sinkronisasi and Persetujuan Pengiriman Data (the principal)."""
    principal.require_principal(session)
    if print_to is not None and not print_to.absolute().parent.is_dir():
        # Said before the principal goes through the sheet, not after.
        raise ClientError(f"Folder {print_to.absolute().parent} tidak ada: lembar konfirmasi "
                          "tidak dapat ditulis ke sana")
    items = principal.sheet(session)
    if not as_json:
        click.echo("Lembar Konfirmasi Sinkronisasi")
    for item in items:
        if as_json:
            continue
        if confirm_all:
            click.echo(f"  [x] {item.text()}")
        elif not click.confirm(f"  {item.text()}: benar?", default=False):
            raise ClientError(f"Tab {item.tab} tidak dikonfirmasi: perbaiki datanya dulu")
    if not confirm_all and not click.confirm(
            "Persetujuan Pengiriman Data: saya menyatakan data ini benar dan menyetujui "
            "pengirimannya", default=False):
        raise ClientError("Persetujuan tidak diberikan: tidak ada yang dikirim")
    made = principal.confirm(session, items)
    if print_to is not None:
        from selaras.engine.localtime import format_local

        from .sheet_pdf import school_identity, write_sheet_pdf  # fpdf2: only to print

        me, store = session.identity, session.store
        school = school_identity(me.npsn, store.rows("sekolah").get(me.sekolah_id), {
            str(r["kode_wilayah"]): r for r in store.rows("ref.mst_wilayah").values()})
        try:
            write_sheet_pdf(print_to, school, items, made,
                            format_local(made.made_ms, school.zone))
        except OSError as exc:
            raise ClientError(f"Persetujuan Pengiriman Data tersimpan, tetapi lembar "
                              f"konfirmasi tidak dapat ditulis ke {print_to}: "
                              f"{os_error_text(exc)}; jalankan 'selaras confirm --print' "
                              "lagi") from None
    emit(as_json, {"account": made.account, "nama": made.nama, "semester_id": made.semester_id,
                   "made_ms": made.made_ms, "sheet_hash": made.sheet_hash,
                   "consent": made.digest, "vector": made.vector,
                   "items": [item.__dict__ for item in items],
                   "file": None if print_to is None else str(print_to)},
         f"Persetujuan Pengiriman Data oleh {made.nama}: saya menyatakan data yang dikirim "
         f"benar dan dapat dipertanggungjawabkan (pakta integritas). Kode lembar "
         f"{made.sheet_hash[:16]}"
         + ("" if print_to is None else f"\nLembar konfirmasi ditulis ke {print_to}"))


@cli.command()
@with_session()
def logout(session: Session) -> None:
    """End the operator's session and the principal's on this install."""
    principal.end_session(session)
    semester.logout(session)
    click.echo("Sesi pengguna dan sesi kepala sekolah diakhiri")


# -- pending changes ------------------------------------------------------------------------


@cli.command()
@click.option("--tab", type=click.Choice(CHANGE_TABS, case_sensitive=False),
              help="Show one Dapodik tab only.")
@click.option("--limit", type=click.IntRange(min=0), default=DEFAULT_LIMIT, show_default=True,
              help="Rows listed per table (the counts are always whole).")
@json_option
@with_session(read_only=True)
def changes(session: Session, tab: str | None, limit: int, as_json: bool) -> None:
    """What changed since the last acknowledged sync: per tab and table, the rows added,
    updated (which fields) and deleted, and which PC made each change."""
    echo_semester(session, as_json)
    found = pending_changes(session, limit, tab)
    emit(as_json, found.as_json(), output.changes_text(found))


# -- the operator's session, the working semester, the Beranda -------------------------------


def echo_semester(session: Session, as_json: bool) -> None:
    """The working semester, as the first line of a screen (not with --json)."""
    if not as_json:
        click.echo(semester.semester_line(session))


@cli.command()
@click.option("--semester", "semester_id", metavar="SEMESTER",
              help="The working semester, e.g. 20231 [default: the current semester].")
@click.option("--user", help="Who works [default: the install's registered user]; another "
                             "pengguna of the school's data.")
@json_option
@with_session()
def login(session: Session, semester_id: str | None, user: str | None, as_json: bool) -> None:
    """Open the operator's session: who works on this install, in which semester.

    No password: the install is the operator's own PC; the principal's acts ask for the
    principal's (switch-user)."""
    opened = semester.login(session, semester_id, user)
    emit(as_json, {"user": opened.user, "nama": opened.nama, "peran": opened.peran,
                   "semester": opened.semester.as_json(), "since_ms": opened.since_ms},
         output.login_text(opened))


@cli.group("semester")
def semester_group() -> None:
    """The working semester, and periodic data carried into the next one."""


@semester_group.command("show")
@json_option
@with_session(read_only=True)
def semester_show(session: Session, as_json: bool) -> None:
    """The working semester, and every semester of Referensi with the data it holds."""
    found = semester.overview(session)
    emit(as_json, found.as_json(), output.semesters_text(found))


@semester_group.command("copy-forward")
@click.option("--to", "to", metavar="SEMESTER",
              help="The semester to copy into [default: the one after the working semester].")
@click.option("--rombel", is_flag=True,
              help="Also copy the rombel structure (names, grades, homeroom teachers; no "
                   "members).")
@json_option
@with_session()
def semester_copy_forward(session: Session, to: str | None, rombel: bool,
                          as_json: bool) -> None:
    """Copy the working semester's periodic data into the next semester; what is there
    already is left alone (running it again adds nothing)."""
    done = semester.copy_forward(session, to, rombel=rombel)
    warn_clock(done.report)
    emit(as_json, done.as_json(), output.copy_forward_text(done))


@cli.command()
@json_option
@with_session()
def status(session: Session, as_json: bool) -> None:
    """Beranda: the school, semester, who is logged in, last sync and Tarik Data, pending
    changes, Validasi Lokal and conflicts."""
    from .beranda import beranda

    found = beranda(session)
    emit(as_json, found.as_json(), output.beranda_text(found))
