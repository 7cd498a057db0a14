"""The networked demo's second act: the centre's own changes flow down (issue 12).

An SD and an SMP join the first act's SMA at the same centre, each with one install
set up as a school does (registered, its data imported, the principal's consent,
synced). Then, told step by step: a grade 6 student of the SD is pulled by the SMP
(Tarik Data PD), refused while the SD still registers the student and taken once the
SD has sent the exit; Verval PD corrects a name and issues a NISN, both coming down marked;
Validasi Pusat finds one NIK at two schools, at both, and clears it at both once
fixed; the SD, with no line, sends a consented bundle through the dinas and gets the
centre's changes back on a flash disk; every install ends equal to the centre.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING

from selaras.engine import passwords, validation

from . import mutasi, output, principal
from .install import ACKED_SEQ, ClientError, Install, import_bundle, import_rows, now_ms
from .sync import register, run_sync

if TYPE_CHECKING:
    from .demo import NetworkDemo

# (npsn, nama, bentuk) of the two schools that join
SD = ("20219877", "SD NEGERI 3 SUKAMAJU", "SD")
SMP = ("20219878", "SMP NEGERI 2 SUKAMAJU", "SMP")
USER, PASSWORD = "operator@sukamaju.sch.id", "rahasia-operator"
PRINCIPAL, PRINCIPAL_PASSWORD = "kepsek@sukamaju.sch.id", "rahasia-kepsek"
SYNC_TIMEOUT_S = 120.0


class CentreAct:
    def __init__(self, demo: NetworkDemo, url: str) -> None:
        self.demo, self.url, self.say, self.centre = demo, url, demo.say, demo.centre
        self.installs: dict[str, Install] = {}
        self.kodes: dict[str, str] = {}

    def play(self) -> bool:
        say = self.say
        say("")
        say("Second act: the centre's own changes flow down, to three schools")
        sd, smp = self.join(*SD), self.join(*SMP)

        row, nama, nisn = grade_six(sd)
        say(f"{nama} (NISN {nisn}) finishes grade 6 at the SD; the SMP pulls the student "
            "(selaras transfer pd --nisn):")
        try:
            with smp.open() as s:
                mutasi.request_transfer(s, "pd", nisn)
            raise ClientError("the centre took a transfer while the SD still registers the student")
        except ClientError as exc:
            say(f"  refused: {exc}")
        with sd.open() as s:
            mutasi.exit_person(s, "pd", nisn, "lulus", "2024-06-20")
        say("The SD records the exit (selaras exit pd --reason lulus) and syncs it:")
        self.push(sd)
        with smp.open() as s:
            got = mutasi.request_transfer(s, "pd", nisn)
        self.pull(smp, f"The SMP asks again: the centre sends {got.nama} from "
                       f"{got.origin_npsn} ({got.events} rows, the same id); the SMP pulls")
        with smp.open() as s:
            s.replica.add("registrasi_peserta_didik", {
                "peserta_didik_id": row, "jenis_pendaftaran_id": "1", "nipd": "2024999",
                "tanggal_masuk_sekolah": "2024-07-15"}, now_ms())
        say("The SMP registers the student (NIPD 2024999, siswa baru) and syncs")
        self.push(smp)

        corrected = nama.title() + " Putri"
        self.admin(f"VervalPD corrects the name to {corrected!r}", "verval", "pd",
                   "--npsn", SMP[0], nisn, f"nama={corrected}")
        other_id, other = next_student(smp, not_row=row)
        self.admin("Dinas finds a NISN recorded wrongly for another SMP student and empties "
                   "it (Manajemen Dapodik)", "edit", "--npsn", SMP[0], "peserta_didik",
                   other_id, "nisn=")
        issued = self.admin("VervalPD issues a new NISN (selaras admin nisn)", "nisn",
                            "--npsn", SMP[0], str(other["nik"]))
        self.pull(smp, "The SMP pulls (Tarik Data)")
        with smp.open(read_only=True) as s:
            rows = s.store.rows("peserta_didik")
        say(f"  at the SMP now: {rows[row]['nama']} (verified: "
            f"{rows[row]['status_verval_pd'] == 1}); {other['nama']}: NISN "
            f"{rows[other_id]['nisn']}"
            + (" (as issued)" if str(rows[other_id]["nisn"]) in issued else " (NOT as issued)"))

        twin_id, twin = next_student(sd, not_row=row)
        say(f"The SD's operator types an SMP student's NIK for {twin['nama']} and syncs:")
        self.edit(sd, twin_id, {"nik": str(other["nik"])})
        self.push(sd)
        self.pull(smp, "The SMP pulls")
        self.show_central(smp, "SMP")
        self.show_central(sd, "SD", pull=True)
        say("The SD puts the NIK back and syncs; each school's next Tarik Data clears it:")
        self.edit(sd, twin_id, {"nik": str(twin["nik"])})
        self.push(sd)
        self.show_central(smp, "SMP", pull=True)
        self.show_central(sd, "SD", pull=True)

        self.dinas_route(sd, twin_id)
        return self.compare()

    # -- the steps ---------------------------------------------------------------------------

    def join(self, npsn: str, nama: str, bentuk: str) -> Install:
        """A school at the centre with one install, set up and synced as a school does."""
        added = self.centre.admin("school", "add", "--npsn", npsn, "--nama", nama,
                                  "--bentuk", bentuk)
        kode = re.search(r"\(shown once\): (\S+)", added)
        if not kode:
            raise ClientError(f"selaras admin school add said: {added.strip()}")
        inst = Install(self.demo.work / f"install-{bentuk.lower()}")
        answer = asyncio.run(register(self.url, npsn, kode.group(1), USER, PASSWORD))
        inst.init_registered(npsn, origin=answer.install, token=answer.token, url=self.url,
                             user=answer.user or USER, role=answer.role,
                             centre_key=answer.centre_key,
                             kode_hash=passwords.slow_hash(passwords.normal_kode(kode.group(1))))
        self.installs[npsn], self.kodes[npsn] = inst, kode.group(1)
        rows_file = self.demo.work / f"{bentuk.lower()}.jsonl"
        assert self.demo.generate is not None
        self.demo.generate(rows_file, npsn, bentuk)
        with inst.open() as s:
            asyncio.run(run_sync(s.store, s.identity, mode="pull", timeout_s=SYNC_TIMEOUT_S))
            counts = import_rows(s, rows_file)
            principal.add_principal(s, kode.group(1), PRINCIPAL, PRINCIPAL_PASSWORD)
            principal.switch_user(s, kode.group(1), PRINCIPAL, PRINCIPAL_PASSWORD)
        self.push(inst)
        self.say(f"{nama} ({bentuk}, NPSN {npsn}) joins: {counts['peserta_didik']} students, "
                 "registered, confirmed by its principal and synced")
        return inst

    def push(self, inst: Install) -> None:
        """The principal (whose session is open) confirms what is unsent, and it syncs."""
        with inst.open() as s:
            if s.store.vector().get(s.identity.origin, 0) > int(
                    s.store.meta().get(ACKED_SEQ, 0)):
                principal.confirm(s, principal.sheet(s))
            principal.consent_for_push(s)
            asyncio.run(run_sync(s.store, s.identity, mode="sync", timeout_s=SYNC_TIMEOUT_S))

    def pull(self, inst: Install, what: str) -> None:
        with inst.open() as s:
            report = asyncio.run(run_sync(s.store, s.identity, mode="pull",
                                          timeout_s=SYNC_TIMEOUT_S))
        sources = ", ".join(f"{k} {v}" for k, v in report.from_centre_sources.items())
        self.say(f"{what}: {report.totals.events_down} received"
                 + (f" (from the centre: {sources})" if sources else ""))

    def admin(self, what: str, *args: str) -> str:
        reply = json.loads(self.centre.admin(*args, "--json"))
        change = reply["change"]
        self.say(f"{what}: {change['source']} writes {change['name']}: "
                 + ", ".join(f"{k} = {v}" for k, v in change["fields"].items()))
        return json.dumps(change["fields"])

    def edit(self, inst: Install, row: str, fields: dict[str, str]) -> None:
        with inst.open() as s:
            s.replica.edit("peserta_didik", row, fields, now_ms())

    def show_central(self, inst: Install, name: str, pull: bool = False) -> None:
        if pull:
            with inst.open() as s:
                asyncio.run(run_sync(s.store, s.identity, mode="pull", timeout_s=SYNC_TIMEOUT_S))
        with inst.open() as s:
            report = validation.validate(s.store)
        central = [f for f in report.findings if f.get("source") == validation.CENTRAL]
        self.say(f"  {name}'s Validasi Lokal: {output.findings_summary(report.findings)}")
        for f in central:
            self.say(f"    {f['nama']}: {f['label']}: {f['message']} ({f['detail']}) "
                     f"[{f['rule_id']}, Validasi Pusat]")

    def dinas_route(self, sd: Install, student: str) -> None:
        say, work = self.say, self.demo.work
        say("The SD's line is down: it edits, its principal confirms, and the operator "
            "takes the bundle to the dinas (selaras bundle export --for-centre):")
        self.edit(sd, student, {"alamat_jalan": "Jl. Kenanga 12"})
        up, down = work / "sd-ke-dinas.bundle", work / "dinas-ke-sd.bundle"
        with sd.open() as s:
            principal.confirm(s, principal.sheet(s))
            data, n = principal.bundle_for_centre(s)
        up.write_bytes(data)
        say(f"  {n} change(s) in {up.name}; at the dinas (selaras admin bundle import): "
            + self.centre.admin("bundle", "import", str(up)).strip().splitlines()[-1])
        self.centre.admin("edit", "--npsn", SD[0], "peserta_didik", student,
                          "nama_wali=Siti Aminah")
        said = self.centre.admin("bundle", "export", "--npsn", SD[0], "--out", str(down),
                                 "--for", str(up)).strip()
        with sd.open() as s:
            _, report, _ = import_bundle(s, down.read_bytes())
            _, again, _ = import_bundle(s, down.read_bytes())
        say(f"  the dinas writes the centre's changes back ({said}); the SD imports them: "
            f"{report.applied} new, and again: {again.applied} new")

    def compare(self) -> bool:
        """Each school's install, after a last Tarik Data, against the centre."""
        sums = []
        for npsn, inst in self.installs.items():
            with inst.open() as s:
                asyncio.run(run_sync(s.store, s.identity, mode="pull", timeout_s=SYNC_TIMEOUT_S))
                sums.append((npsn, s.store.checksums() == self.centre.checksums(npsn)))
        self.say("Each school's install and the centre: " + "; ".join(
            f"{npsn} {'equal' if same else 'DIFFERENT'}" for npsn, same in sums))
        return all(same for _, same in sums)


def grade_six(inst: Install) -> tuple[str, str, str]:
    """A grade 6 student of the SD: id, name, NISN (the first by name)."""
    with inst.open(read_only=True) as s:
        rombels = {r_id for r_id, r in s.store.rows("rombongan_belajar").items()
                   if r.get("tingkat_pendidikan_id") == 6}
        members = {str(m["peserta_didik_id"]) for m in s.store.rows("anggota_rombel").values()
                   if str(m["rombongan_belajar_id"]) in rombels}
        students = s.store.rows("peserta_didik")
    row = min(members, key=lambda r: (str(students[r]["nama"]), r))
    return row, str(students[row]["nama"]), str(students[row]["nisn"])


def next_student(inst: Install, not_row: str) -> tuple[str, dict[str, object]]:
    """Another student of the install with a NISN (the first by name): id and row."""
    with inst.open(read_only=True) as s:
        students = s.store.rows("peserta_didik")
    row = min((r for r in students if r != not_row and students[r].get("nisn")),
              key=lambda r: (str(students[r]["nama"]), r))
    return row, students[row]
