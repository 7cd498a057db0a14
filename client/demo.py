"""``selaras demo``: one school, the centre and two installs, over the network.

The networked demo (``selaras demo``) starts an embedded centre (``selaras
server`` as a subprocess of the installed entry point, on 127.0.0.1 port 0,
with a temporary data folder), adds the school with ``selaras admin``,
registers two installs that pull the centre's data, and edits on both while
one is offline; after syncing, resolving and pulling, both installs and the
centre show equal checksums. The centre is stopped with SIGTERM (it drains and
exits 0) at the end, also on errors. client/ never imports the server: it only
runs its command.

The centre's gate is on, as schools get it (docs/protocol.md, R20): every sync
that sends changes goes through the principal's procedure first, and the demo
shows it. The operator's first sync is refused (by the client's own check, and
by the centre when sent past it); the operator adds the principal's account,
the principal takes over the install (Tukar Pengguna), confirms the Lembar
Konfirmasi Sinkronisasi and signs the Persetujuan Pengiriman Data; then the
sync sends. A NIK typed with a digit missing blocks the sync until it is fixed
(Validasi Lokal), a change made after the confirmation needs the principal to
confirm again, and on the second install the principal signs in (the centre
hands it the account) and confirms too. A sync with nothing of its own to send,
and a pull, need no consent.

``selaras demo --offline``: two offline installs of one school meet on a USB
stick (bundle export --for / import), with no centre at all (and no consent:
bundles go to no centre).

Everything goes through the same functions the commands use (client/install.py,
client/principal.py, client/sync.py) on real data folders.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from selaras.engine import passwords, validation
from selaras.engine.events import school_row_id
from selaras.engine.refusals import Code
from selaras.engine.store import verify

from . import output, principal
from .install import (
    ClientError,
    Install,
    export_bundle,
    import_bundle,
    import_rows,
    now_ms,
    read_bundle_file,
    read_vector,
    vector_json,
    write_atomically,
)
from .sync import Mode, SyncRefused, SyncReport, register, run_sync

NPSN = "20219876"
NAMA = "SMA NEGERI 1 SUKAMAJU"
Say = Callable[[str], None]
# Writes a school's rows file for an NPSN; returns what made it, or None if it cannot.
Generate = Callable[[Path, str, str], "str | None"]  # (file, npsn, bentuk): who made it


def run(folder: Path | None, say: Say, generate: Generate | None = None,
        offline: bool = False) -> bool:
    """Play the demo in ``folder`` (a temporary one if None); True if everything converges.

    ``generate`` makes the school A imports (the command line passes 'selaras
    bench generate'); without it, or if it cannot, the demo writes a smaller one.
    ``offline``: the bundle demo, without a centre.
    """
    with _workdir(folder) as work:
        if offline:
            return Demo(work, say, generate).play()
        return NetworkDemo(work, say, generate).play()


@contextmanager
def _workdir(folder: Path | None) -> Iterator[Path]:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="selaras-demo-", ignore_cleanup_errors=True) as tmp:
        yield Path(tmp)


class Demo:
    """The offline demo: two installs swap bundles on a USB stick."""

    def __init__(self, work: Path, say: Say, generate: Generate | None) -> None:
        self.say = say
        self.generate = generate
        self.usb = work / "usb"
        self.a, self.b = Install(work / "install-a"), Install(work / "install-b")
        self.names = {self.a: "A", self.b: "B"}
        self.swaps = 0

    def play(self) -> bool:
        say = self.say
        say(f"Two installs of {NAMA} (NPSN {NPSN}), offline, in {self.usb.parent}")
        for inst, user in ((self.a, "operator@sman1sukamaju.sch.id"),
                           (self.b, "wakasek@sman1sukamaju.sch.id")):
            identity = inst.init_offline(NPSN, nama=NAMA, bentuk="SMA", user=user)
            say(f"  init {self.names[inst]}: origin {identity.origin[:8]}, user {user}")
        self.usb.mkdir(exist_ok=True)

        rows_file = self.usb / "sekolah.jsonl"
        made_by = self.generate(rows_file, NPSN, "SMA") if self.generate else None
        if made_by is None:
            write_small_school(rows_file, school_row_id(NPSN))
            made_by = "the demo"
        with self.a.open() as s:
            counts = import_rows(s, rows_file)
        say(f"A imports a school generated by {made_by}: {sum(counts.values())} rows "
            f"({counts['peserta_didik']} peserta_didik, {counts['ptk']} ptk, "
            f"{counts['rombongan_belajar']} rombel)")
        with self.a.open() as s:
            s.store.validate()
            say(f"A runs Validasi Lokal: {output.findings_summary(s.store.findings())}")
        self.swap()

        student, nama = first_student(self.a)
        say(f"Both edit student {nama} offline at the same time:")
        say(edit_student(self.a, "A", student, {"alamat_jalan": "Jl. Melati No. 7",
                                                "nama_ayah": "Ahmad Suryadi"}))
        say(edit_student(self.b, "B", student, {"nomor_telepon_seluler": "081234567890",
                                                "nama_ayah": "Achmad Suryadi"}))
        self.swap()
        with self.a.open(read_only=True) as s:
            siblings = s.store.conflicts()
            say("A lists the conflict (the other fields merged without one):")
            say(_indent(output.conflicts_text(siblings, s.origin_label)))
        with self.a.open() as s:
            s.replica.resolve("peserta_didik", student, "nama_ayah", "Achmad Suryadi", now_ms())
        say("A resolves nama_ayah = \"Achmad Suryadi\" (a new event that follows both writes)")
        self.swap()
        return self.compare()

    def swap(self) -> None:
        """A -> B, then B -> A, each bundle holding only what the other lacks."""
        self.swaps += 1
        parts = []
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            name = f"{self.names[src]}-to-{self.names[dst]}-{self.swaps}".lower()
            vector_file = self.usb / f"{self.names[dst].lower()}.vector.json"
            bundle_file = self.usb / f"{name}.selaras"
            with dst.open(read_only=True) as s:
                write_atomically(vector_file, vector_json(s.store.vector()).encode())
            with src.open(read_only=True) as s:
                data, n = export_bundle(s, read_vector(vector_file, NPSN))
            write_atomically(bundle_file, data)
            with dst.open() as s:
                _, report, _ = import_bundle(s, read_bundle_file(bundle_file))
            parts.append(f"{self.names[src]} -> {self.names[dst]} {n} events "
                         f"({len(data) // 1024} KiB), {report.applied} applied")
        self.say(f"Swap bundles #{self.swaps}: " + "; ".join(parts))

    def compare(self) -> bool:
        sums, vectors, conflicts = [], [], []
        for inst in (self.a, self.b):
            with inst.open(read_only=True) as s:
                problems = verify(s.store)
                if problems:
                    self.say(f"{self.names[inst]}: the data differs from a replay of the log:")
                    self.say(_indent("\n".join(problems)))
                    return False
                sums.append(s.store.checksums())
                vectors.append(s.store.vector())
                conflicts.append(len(s.store.conflicts()))
        self.say("Both verified: each one's data equals a replay of its log by the reference fold")
        self.say(f"Conflicts left: A {conflicts[0]}, B {conflicts[1]}")
        self.say("Checksums, side by side:")
        self.say(_indent(output.checksums_side_by_side(("A", "B"), sums[0], sums[1])))
        same = bool(sums[0] == sums[1] and vectors[0] == vectors[1])
        self.say("A and B hold the same data and the same vector." if same
                 else "A and B DIFFER.")
        return same


# -- the networked demo -------------------------------------------------------------------------

USER = "operator@sman1sukamaju.sch.id"
PASSWORD = "demo-rahasia-123"
# The kepala sekolah's account: the centre writes it onto the school's own pengguna row of
# that username (server/accounts.py).
PRINCIPAL_USER = "kepsek@sman1sukamaju.sch.id"
PRINCIPAL_PASSWORD = "kepsek-rahasia-456"
CENTRE_START_S = 60.0
CENTRE_STOP_S = 60.0
SYNC_TIMEOUT_S = 120.0


def selaras_command() -> list[str]:
    """The installed ``selaras`` entry point that runs this Python."""
    script = Path(sys.executable).with_name("selaras.exe" if os.name == "nt" else "selaras")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from selaras.client.cli import main; main()"]


class Centre:
    """``selaras server`` in a subprocess on 127.0.0.1, and ``selaras admin`` on its folder."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.log_path = data.parent / "centre.log"
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        self.data.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*selaras_command(), "server", "--data", str(self.data), "--host", "127.0.0.1",
             "--port", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log, text=True)
        lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=_drain, args=(self.proc.stdout, lines),
                                        daemon=True)
        self._reader.start()
        while True:
            try:
                line = lines.get(timeout=CENTRE_START_S)
            except queue.Empty:
                raise ClientError(f"the centre did not start in {CENTRE_START_S:.0f} s "
                                  f"({self._log_tail()})") from None
            if not line:
                raise ClientError(f"the centre stopped at start ({self._log_tail()})")
            found = re.search(r"listening on (ws://\S+)", line)
            if found:
                self.url = found.group(1)
                return self.url

    def admin(self, *args: str) -> str:
        """Run ``selaras admin --data DATA ARGS``; its stdout, or ClientError."""
        done = subprocess.run([*selaras_command(), "admin", "--data", str(self.data), *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=CENTRE_START_S)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            raise ClientError(f"selaras admin {' '.join(args[:2])}: {lines[-1]}")
        return done.stdout

    def checksums(self, npsn: str) -> dict[str, str]:
        reply = json.loads(self.admin("checksum", "--npsn", npsn, "--json"))
        return {str(e): str(c) for e, c in reply["checksums"].items()}

    def stop(self) -> int | None:
        """SIGTERM: the centre drains its sessions and exits; its exit status."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=CENTRE_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=CENTRE_STOP_S)  # it reads stdout to its end
                self._reader = None
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def _log_tail(self) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"see {self.log_path}"


def _drain(stream: IO[str] | None, lines: queue.Queue[str]) -> None:
    """Pass the server's stdout on line by line; '' at its end."""
    if stream is not None:
        for line in stream:
            lines.put(line)
    lines.put("")


class NetworkDemo:
    """The centre and two registered installs A and B of one school."""

    def __init__(self, work: Path, say: Say, generate: Generate | None) -> None:
        self.work = work
        self.say = say
        self.generate = generate
        self.centre = Centre(work / "centre")
        self.a, self.b = Install(work / "install-a"), Install(work / "install-b")
        self.names = {self.a: "A", self.b: "B"}
        self.kode = ""  # the school's registration code ('selaras admin school add')

    def play(self) -> bool:
        say = self.say
        say(f"Networked demo of {NAMA} (NPSN {NPSN}) in {self.work}")
        try:
            url = self.centre.start()
            say(f"The centre is up (selaras server): {url}")
            return self.scenario(url)
        finally:
            code = self.centre.stop()
            if code is not None:
                say(f"The centre drained and stopped (exit status {code})")

    def scenario(self, url: str) -> bool:
        say = self.say
        self.add_school_and_installs(url)
        self.import_school()
        self.refused(self.a, "A's operator syncs (selaras sync)")
        self.refused_by_centre(self.a)
        self.add_principal()
        self.switch_user(self.a, "")
        self.confirm(self.a, whole_sheet=True)
        self.sync(self.a, "sync", "A syncs")
        self.sync(self.b, "pull", "B pulls (Tarik Data)")

        student, nama = first_student(self.a)
        say(f"B goes offline (it does not sync); A and B both edit student {nama}:")
        say(edit_student(self.a, "A", student, {"alamat_jalan": "Jl. Melati No. 7",
                                                "nama_ayah": "Ahmad Suryadi"}))
        say(edit_student(self.b, "B", student, {"nomor_telepon_seluler": "081234567890",
                                                "nama_ayah": "Achmad Suryadi"}))
        self.mistyped_nik(student, nama)
        self.refused(self.a, "A syncs its edits")
        self.confirm(self.a)
        self.sync(self.a, "sync", "A syncs its edits")
        say("B is back online; the principal comes to B too:")
        self.switch_user(self.b, "; the centre hands B the principal's account")
        self.confirm(self.b)
        self.sync(self.b, "sync", "B syncs")
        with self.b.open(read_only=True) as s:
            say("B sees the conflict on nama_ayah (the other fields merged without one):")
            say(_indent(output.conflicts_text(s.store.conflicts(), s.origin_label)))
        self.sync(self.a, "sync", "A syncs and receives B's edit")
        with self.a.open() as s:
            s.replica.resolve("peserta_didik", student, "nama_ayah", "Achmad Suryadi", now_ms())
        say("A resolves nama_ayah = \"Achmad Suryadi\" (a new event after both writes)")
        self.confirm(self.a)
        self.sync(self.a, "sync", "A syncs the resolution")
        self.sync(self.b, "pull", "B pulls (Tarik Data)")
        if not self.compare():
            return False
        if self.generate is None:
            say("(The second act, three schools, needs 'selaras bench generate'.)")
            return True
        from .demo_pusat import CentreAct

        return CentreAct(self, url).play()

    def add_school_and_installs(self, url: str) -> None:
        """The school at the centre, and installs A and B registered with its code."""
        added = self.centre.admin("school", "add", "--npsn", NPSN, "--nama", NAMA)
        found = re.search(r"registration code \(shown once\): (\S+)", added)
        if not found:
            raise ClientError(f"selaras admin school add said: {added.strip()}")
        self.kode = found.group(1)
        self.say(f"Admin adds the school (selaras admin school add): registration code "
                 f"{self.kode}")
        for inst in (self.a, self.b):
            answer = asyncio.run(register(url, NPSN, self.kode, USER, PASSWORD))
            # As 'selaras init' keeps it: Tukar Pengguna can check the code with no line.
            inst.init_registered(NPSN, origin=answer.install, token=answer.token, url=url,
                                 user=answer.user or USER, role=answer.role,
                                 centre_key=answer.centre_key,
                                 kode_hash=passwords.slow_hash(passwords.normal_kode(self.kode)))
            self.sync(inst, "pull", f"Register install {self.names[inst]} "
                                    f"(origin {answer.install[:8]}, {USER}) and pull")

    def import_school(self) -> None:
        """A imports the school's rows and runs Validasi Lokal."""
        rows_file = self.work / "sekolah.jsonl"
        made_by = self.generate(rows_file, NPSN, "SMA") if self.generate else None
        if made_by is None:
            write_small_school(rows_file, school_row_id(NPSN))
            made_by = "the demo"
        with self.a.open() as s:
            counts = import_rows(s, rows_file)
            s.store.validate()
            findings = output.findings_summary(s.store.findings())
        self.say(f"A imports a school generated by {made_by}: {sum(counts.values())} rows "
                 f"({counts['peserta_didik']} peserta_didik); Validasi Lokal: {findings}")

    def sync(self, inst: Install, mode: Mode, what: str) -> SyncReport:
        """Sync or pull ``inst``; a sync first passes the check 'selaras sync' makes (the
        principal's consent covering what it sends), which raises ClientError if it fails."""
        with inst.open() as s:
            given = principal.consent_for_push(s) if mode == "sync" else None
            report = asyncio.run(run_sync(s.store, s.identity, mode=mode,
                                          timeout_s=SYNC_TIMEOUT_S))
            conflicts = len({output.conflict_key(c) for c in s.store.conflicts()})
        if given is not None:
            what += f" under the principal's consent {given.digest[:12]}"
        elif mode == "sync":
            what += " (nothing of its own to send: no consent needed)"
        check = ("centre and install equal" if report.vectors_equal and report.checksums_equal
                 else report.note or "not equal to the centre yet")
        self.say(f"{what}: {report.totals.events_up} events sent, "
                 f"{report.totals.events_down} received"
                 + (f", {conflicts} conflicted field(s)" if conflicts else "") + f"; {check}")
        return report

    def refused(self, inst: Install, what: str) -> None:
        """The check 'selaras sync' makes before it sends must refuse ``inst``'s sync now;
        its line. ClientError if it does not."""
        with inst.open() as s:
            try:
                principal.consent_for_push(s)
            except ClientError as exc:
                self.say(f"{what}: {exc}")
                return
        raise ClientError(f"{what}: the sync should have been refused, but was not")

    def refused_by_centre(self, inst: Install) -> None:
        """A push sent past that check, without consent: the centre's gate refuses it."""
        with inst.open() as s:
            try:
                asyncio.run(run_sync(s.store, s.identity, mode="sync",
                                     timeout_s=SYNC_TIMEOUT_S))
            except SyncRefused as exc:
                if exc.code != Code.NOT_PRINCIPAL:
                    raise
                self.say(f"  Sent anyway, past that check, the centre refuses it too: {exc}")
                return
        raise ClientError("the centre took a push without the principal's consent: "
                          "is its gate off (--no-consent-gate)?")

    def add_principal(self) -> None:
        """The principal's account, made once for the school on a registered install."""
        with self.a.open() as s:
            reply = principal.add_principal(s, self.kode, PRINCIPAL_USER, PRINCIPAL_PASSWORD)
        self.say("A's operator adds the principal's account (selaras account add --role "
                 f"kepala_sekolah): {reply.user}, linked to {reply.nama}"
                 + (f" (NIP {reply.nip})" if reply.nip else "") + ", the active kepala sekolah")

    def switch_user(self, inst: Install, how: str) -> None:
        """Tukar Pengguna: the principal's session on ``inst``."""
        with inst.open() as s:
            opened = principal.switch_user(s, self.kode, PRINCIPAL_USER, PRINCIPAL_PASSWORD)
        self.say(f"Tukar Pengguna on {self.names[inst]} (selaras switch-user{how}): "
                 f"{opened['nama']} ({opened['user']}) signs in as kepala sekolah")

    def confirm(self, inst: Install, whole_sheet: bool = False) -> None:
        """The principal confirms the sheet on ``inst`` and signs the consent; the sheet is
        shown whole, or only its tabs with unsent changes."""
        say, name = self.say, self.names[inst]
        with inst.open() as s:
            items = principal.sheet(s)
            given = principal.confirm(s, items)
            top = given.vector.get(s.identity.origin, 0)
        shown = items if whole_sheet else [i for i in items if i.changes]
        say(f"The principal reads the Lembar Konfirmasi Sinkronisasi on {name} and confirms "
            "it (selaras confirm --all):")
        say(_indent("\n".join(f"[x] {item.text()}" for item in shown)))
        if len(shown) < len(items):
            say(f"  [x] {len(items) - len(shown)} other tabs: no unsent changes")
        say(f"{given.nama} signs the Persetujuan Pengiriman Data: consent "
            f"{given.digest[:12]}, covering {name}'s changes up to #{top}, none made after")

    def mistyped_nik(self, student: str, nama: str) -> None:
        """A NIK with a digit missing: Validasi Lokal finds it and blocks the sync until it
        is fixed."""
        say = self.say
        with self.a.open(read_only=True) as s:
            nik = str(s.store.rows("peserta_didik")[student]["nik"])
        say(f"A's operator also types {nama}'s NIK with a digit missing:")
        say(edit_student(self.a, "A", student, {"nik": nik[:-1]}))
        with self.a.open() as s:
            report = validation.validate(s.store)
        say(f"A runs Validasi Lokal: {output.findings_summary(report.findings)}")
        for f in report.findings:
            if f["severity"] == validation.INVALID:
                say(f"  {output.SEVERITY[f['severity']]}: {f['nama']}: {f['label']}: "
                    f"{f['message']} ({f['detail']}) [{f['rule_id']}]")
        self.refused(self.a, "A syncs")
        say("A's operator fixes the NIK:")
        say(edit_student(self.a, "A", student, {"nik": nik}))
        with self.a.open() as s:
            report = validation.validate(s.store)
        say(f"A runs Validasi Lokal: {output.findings_summary(report.findings)}")

    def compare(self) -> bool:
        say = self.say
        sums: list[dict[str, str]] = []
        vectors, conflicts, histories = [], [], []
        for inst in (self.a, self.b):
            with inst.open(read_only=True) as s:
                problems = verify(s.store)
                if problems:
                    say(f"{self.names[inst]}: the data differs from a replay of the log:")
                    say(_indent("\n".join(problems)))
                    return False
                sums.append(s.store.checksums())
                vectors.append(s.store.vector())
                conflicts.append(len(s.store.conflicts()))
                histories.append(s.store.history(100))
        sums.append(self.centre.checksums(NPSN))
        say("A and B verified: each one's data equals a replay of its log")
        say(f"Conflicts left: A {conflicts[0]}, B {conflicts[1]}")
        say("Checksums, side by side:")
        say(_indent(checksums_table(("A", "B", "centre"), sums)))
        for inst, history in zip((self.a, self.b), histories, strict=True):
            say(f"{self.names[inst]} sync history: {history_line(history)}")
        same = (all(s == sums[0] for s in sums) and bool(sums[0])
                and vectors[0] == vectors[1] and conflicts == [0, 0])
        say("A, B and the centre hold the same data." if same
            else "A, B and the centre DIFFER.")
        return same


def first_student(inst: Install) -> tuple[str, str]:
    """The id and name of the install's first student by name."""
    with inst.open(read_only=True) as s:
        rows = s.store.rows("peserta_didik")
    row_id, row = min(rows.items(), key=lambda item: (str(item[1]["nama"]), item[0]))
    return row_id, str(row["nama"])


def edit_student(inst: Install, name: str, row_id: str, fields: dict[str, str]) -> str:
    """Edit a student on ``inst``; the line that tells what was changed."""
    with inst.open() as s:
        s.replica.edit("peserta_didik", row_id, fields, now_ms())
    shown = ", ".join(f"{k} = {json.dumps(v)}" for k, v in fields.items())
    return f"  {name}: {shown}"


def checksums_table(names: tuple[str, ...], sums: list[dict[str, str]]) -> str:
    """Per-entity digests in one column per holder, and whether the row is all equal."""
    entities = sorted(set().union(*(s.keys() for s in sums)))
    rows = []
    for e in entities:
        cells = [s.get(e, "NULL") for s in sums]
        rows.append([e, *cells, "equal" if len(set(cells)) == 1 else "DIFFERENT"])
    return output.table(["entity", *names, ""], rows)


def history_line(history: Sequence[Mapping[str, Any]]) -> str:
    """Oldest first: mode, outcome, events up and down of each session."""
    return "; ".join(f"{r['mode']} {r['outcome']} ({r['events_up']} up, {r['events_down']} down)"
                     for r in reversed(history))


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else "" for line in text.splitlines())


# -- a small generated school ----------------------------------------------------------------

GIVEN = ["Adi", "Budi", "Citra", "Dewi", "Eka", "Fajar", "Gita", "Hadi", "Indah", "Joko",
         "Kartika", "Lestari", "Made", "Nur", "Oki", "Putri", "Rizki", "Sari", "Tono", "Wulan"]
FAMILY = ["Pratama", "Saputra", "Wijaya", "Lestari", "Hidayat", "Nugroho", "Kusuma",
          "Santoso", "Rahmawati", "Siregar", "Situmorang", "Setiawan"]
SUBJECTS = [401000300, 300110300, 300210300]  # Matematika, Bahasa Indonesia, Bahasa Inggris


def write_small_school(path: Path, sekolah_id: str, students: int = 24, teachers: int = 6,
                       seed: int = 7) -> None:
    """A JSON-lines rows file of a small SMA: facilities, GTK, rombel, students."""
    rng = random.Random(seed)
    ids = _ids(rng)
    rows: list[dict[str, object]] = []

    def add(entity: str, key: str, **fields: object) -> str:
        row_id = ids()
        rows.append({"entity": entity, key: row_id, **fields})
        return row_id

    tanah = add("tanah", "tanah_id", sekolah_id=sekolah_id, nama="Tanah Sekolah",
                luas=4200, kepemilikan_sarpras_id=1)
    gedung = add("bangunan", "bangunan_id", sekolah_id=sekolah_id, tanah_id=tanah,
                 nama="Gedung A", luas_tapak=600, jumlah_lantai=2, kepemilikan_sarpras_id=1)
    kelas = [add("ruang", "id_ruang", sekolah_id=sekolah_id, bangunan_id=gedung,
                 kode_ruang=f"A-{i}", nama=f"Ruang Kelas X-{i}", jenis_prasarana_id=1,
                 lantai=1, kapasitas=36) for i in (1, 2)]

    gtk = []
    for i in range(teachers):
        born = dt.date(rng.randint(1970, 1995), rng.randint(1, 12), rng.randint(1, 28))
        ptk = add("ptk", "ptk_id", nama=_name(rng), nik=_digits(rng, 16), nuptk=_digits(rng, 16),
                  nip=f"{born:%Y%m%d}{2010 + i:04d}0{i % 2 + 1}1{i:03d}"[:18],
                  jenis_kelamin=rng.choice("LP"), tempat_lahir="Bandung",
                  tanggal_lahir=born.isoformat(),
                  agama_id=1, status_kepegawaian_id=1, jenis_ptk_id=4,
                  nama_ibu_kandung=_name(rng))
        terdaftar = add("ptk_terdaftar", "ptk_terdaftar_id", ptk_id=ptk, sekolah_id=sekolah_id,
                        tahun_ajaran_id=2024, jenis_ptk_id=4, nomor_surat_tugas=f"800/{i + 1}/2024",
                        tanggal_surat_tugas="2024-07-01", tmt_tugas="2024-07-01", ptk_induk=1)
        gtk.append((ptk, terdaftar))
    add("tugas_tambahan", "ptk_tugas_tambahan_id", ptk_id=gtk[0][0], sekolah_id=sekolah_id,
        jabatan_ptk_id=2, nomor_sk="821/001/2022", tmt_tambahan="2022-01-03")
    add("pengguna", "pengguna_id", sekolah_id=sekolah_id, username="operator@sman1sukamaju.sch.id",
        nama="Operator Sekolah", peran="operator", aktif=1)
    add("pengguna", "pengguna_id", sekolah_id=sekolah_id, username="kepsek@sman1sukamaju.sch.id",
        nama="Kepala Sekolah", peran="kepala_sekolah", ptk_id=gtk[0][0], aktif=1)
    add("sekolah_longitudinal", "sekolah_longitudinal_id", sekolah_id=sekolah_id,
        semester_id="20241", daya_listrik=5500, akses_internet=1, partisipasi_bos=1)

    rombels = []
    for i, ruang in enumerate(kelas):
        wali = gtk[(i + 1) % teachers][0]
        rombel = add("rombongan_belajar", "rombongan_belajar_id", semester_id="20241",
                     sekolah_id=sekolah_id, tingkat_pendidikan_id=10, kurikulum_id=203,
                     nama=f"X-{i + 1}", ptk_id=wali, id_ruang=ruang, jenis_rombel=1)
        for j, mapel in enumerate(SUBJECTS):
            add("pembelajaran", "pembelajaran_id", rombongan_belajar_id=rombel,
                semester_id="20241", mata_pelajaran_id=mapel,
                ptk_terdaftar_id=gtk[(i * len(SUBJECTS) + j) % teachers][1],
                sk_mengajar=f"421/{i}{j}/2024",
                tanggal_sk_mengajar="2024-07-10", jam_mengajar_per_minggu=4,
                status_di_kurikulum=1)
        rombels.append(rombel)

    for n in range(students):
        pd = add("peserta_didik", "peserta_didik_id", nama=_name(rng),
                 jenis_kelamin=rng.choice("LP"), nisn=_digits(rng, 10), nik=_digits(rng, 16),
                 tempat_lahir="Bandung",
                 tanggal_lahir=f"2008-{rng.randint(8, 12):02d}-{rng.randint(1, 28):02d}",
                 no_kk=_digits(rng, 16), agama_id=1, nama_ibu_kandung=_name(rng),
                 alamat_jalan="Jl. Sukamaju",
                 kewarganegaraan="ID")
        add("registrasi_peserta_didik", "registrasi_id", peserta_didik_id=pd,
            sekolah_id=sekolah_id, jenis_pendaftaran_id=1, nipd=f"2024{n + 1:03d}",
            tanggal_masuk_sekolah="2024-07-15")
        add("anggota_rombel", "anggota_rombel_id", rombongan_belajar_id=rombels[n % 2],
            peserta_didik_id=pd, jenis_pendaftaran_id=1)

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _ids(rng: random.Random) -> Callable[[], str]:
    return lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _name(rng: random.Random) -> str:
    return f"{rng.choice(GIVEN)} {rng.choice(FAMILY)}"


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))
