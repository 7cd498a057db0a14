"""What a sync tells the operator, while it runs and when it ends (issue 11, point 9).

Against the real centre on 127.0.0.1: the progress a sync reports knows how many
changes it will send, per table, and how many it will receive; the summary says what
the centre acknowledged, what came down and from whom (the centre, or another PC of
the school), conflicts counted as fields (never negative). No word of the machinery
(event, vector, origin, batch) reaches the screen, and every line starts with a
capital.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from contextlib import ExitStack
from pathlib import Path

from click.testing import CliRunner
from structlog.testing import capture_logs
from test_sync import FAST, NPSN, PASSWORD, USER, centre_state, enrol, run

from selaras.client.cli import cli
from selaras.client.install import Install, Session
from selaras.client.output import number, sync_text
from selaras.client.progress import WAITING_AFTER_S, SyncProgress, progress_text
from selaras.client.sync import (
    ProgressFacts,
    Retrying,
    Stage,
    SyncReport,
    now_ms,
    register,
    run_sync,
)
from selaras.engine.events import REFERENSI_ORIGIN
from selaras.engine.protocol import Code, Limits, Registered
from selaras.engine.refusals import busy
from selaras.server.testing import ProtocolClient, RunningServer, running_server

JARGON = re.compile(r"event|vector|vektor|origin|batch", re.IGNORECASE)
SMALL = Limits(max_batch_events=10, window_batches=2)  # many batches: progress in steps


def clean(lines: list[str]) -> None:
    """Operator text: no jargon, and each line (indent aside) starts with a capital."""
    for line in lines:
        assert not JARGON.search(line), line
        first = line.lstrip()[:1]
        assert not first.isalpha() or first.isupper(), line


def record(session: Session, rows: list[tuple[str, int]], tag: str) -> list[str]:
    """``n`` new rows of each (entity, n), as this install's changes; their ids."""
    ids = []
    changes = []
    for entity, n in rows:
        for k in range(n):
            ids.append(str(uuid.uuid4()))
            changes.append((entity, ids[-1], {"nama": f"{tag} {entity} {k}"}))
    session.replica.record(changes, now_ms())  # type: ignore[arg-type]
    return ids


async def registered(srv: RunningServer, kode: str, folder: Path, stack: ExitStack) -> Session:
    """An install registered with the centre that has pulled nothing yet."""
    answer = await register(srv.url, NPSN, kode, USER, PASSWORD)
    install = Install(folder)
    install.init_registered(NPSN, origin=answer.install, token=answer.token, url=srv.url,
                            user=USER, role=answer.role, centre_key=answer.centre_key)
    return stack.enter_context(install.open())


def summary(report: SyncReport) -> list[str]:
    lines = sync_text(report.as_json()).splitlines()
    clean(lines)
    return lines


def test_progress_counts_what_it_sends_per_table_then_what_it_receives(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre", limits=SMALL) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                a = await enrol(srv, kode, tmp_path / "a", stack)
                b = await enrol(srv, kode, tmp_path / "b", stack)
                record(b, [("tanah", 15)], "b")
                assert (await run_sync(b.store, b.identity, mode="sync", **FAST)).ok
                record(a, [("tanah", 30), ("bangunan", 25)], "a")

                facts: list[ProgressFacts] = []
                printed: list[str] = []
                with SyncProgress(enabled=True, tty=False, echo=printed.append,
                                  tick_s=None) as shown:
                    def hear(f: ProgressFacts) -> None:
                        facts.append(f)
                        shown.update(f)
                    report = await run_sync(a.store, a.identity, mode="sync", progress=hear,
                                            **FAST)
                assert report.ok and report.vectors_equal

                # Before the first change is sent it knows how many, per table; after the
                # centre's welcome, how many it will receive.
                moving = [f for f in facts if f.stage is Stage.TRANSFER]
                assert moving[0].to_send == {"tanah": 30, "bangunan": 25}
                assert moving[0].sent == {} and moving[0].to_receive == 15
                assert all(f.to_send == moving[0].to_send for f in moving)
                texts = [progress_text(f) for f in facts]
                clean(texts + printed)
                first = progress_text(moving[0])
                assert first == ("Mengirim 0 dari 55 perubahan | "
                                 "Menerima 0 dari 15 perubahan"), first
                sending = [t for t in texts if t.startswith("Mengirim")]
                assert any(re.match(r"Mengirim (10|20) dari 55 perubahan \(", t)
                           for t in sending), sending
                for t in sending:  # the tables add up to what was sent
                    x, tables = re.match(r"Mengirim (\S+) dari 55 perubahan(?: \((.*?)\))?",
                                         t).groups()  # type: ignore[union-attr]
                    assert sum(int(n.replace(".", "")) for n in re.findall(
                        r" (\S+)(?:,|$)", tables or "")) == int(x.replace(".", "")), t
                assert moving[-1].sent == {"tanah": 30, "bangunan": 25}
                assert progress_text(moving[-1]) == (
                    "Mengirim 55 dari 55 perubahan (Tanah 30, Bangunan 25) | "
                    "Menerima 15 dari 15 perubahan (Tanah 15)")
                # Sending and receiving as they went, as a log shows them (not a terminal).
                assert printed[0] == "Menghubungkan ke server pusat"
                assert printed[1].startswith("Mengirim 0 dari 55 perubahan")
                assert printed[-1] == "Memeriksa kecocokan data dengan server pusat"

                # The summary: what the centre acknowledged, what came and from whom.
                lines = summary(report)
                assert ("Terkirim dan diterima server pusat: 55 perubahan "
                        "(Tanah 30, Bangunan 25)") in lines, lines
                assert (f"Diterima: 15 perubahan: 15 dari PC lain sekolah ini ({USER})"
                        in lines), lines
                assert "  Tanah: 15 perubahan (15 ditambah)" in lines, lines
                assert lines[-1] == "Data sama dengan server pusat"
                assert report.acknowledged == {"tanah": 30, "bangunan": 25}
                assert report.as_json()["received_from"] == {
                    "centre": 0, "centre_sources": {},
                    "pcs": {b.identity.origin: {"events": 15, "authors": [USER]}}}
                # The history keeps the summary's counts.
                detail = a.store.history()[0]["detail"]
                detail = json.loads(detail) if isinstance(detail, str) else detail
                assert (detail["acknowledged"], detail["from_pcs"]) == (55, 15), detail
    run(main())


def test_what_came_from_the_centre_and_from_another_pc(tmp_path: Path) -> None:
    """A new install's first pull: the school's data from the centre, and the changes of
    the other PC; the same as `selaras init` prints it."""
    async def main() -> None:
        async with running_server(tmp_path / "centre", limits=SMALL) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                b = await enrol(srv, kode, tmp_path / "b", stack)
                record(b, [("tanah", 5)], "b")
                pushed = await run_sync(b.store, b.identity, mode="sync", **FAST)
                assert summary(pushed)[0] == ("Terkirim dan diterima server pusat: "
                                              "5 perubahan (Tanah 5)")
                vector, _ = await centre_state(srv)
                central = sum(s for o, s in vector.items() if o in b.identity.central)
                assert central > 0 and vector[b.identity.origin] == 5

                a = await registered(srv, kode, tmp_path / "a", stack)
                report = await run_sync(a.store, a.identity, mode="pull", **FAST)
                assert report.from_centre == central
                assert report.from_pcs == {b.identity.origin: {USER: 5}}
                # By source: Referensi's events, and the centre's own for the school.
                referensi = vector[REFERENSI_ORIGIN]
                assert report.from_centre_sources == {"Referensi": referensi,
                                                      "pusat": central - referensi}
                sources = f"Referensi {number(referensi)}, pusat {number(central - referensi)}"
                lines = summary(report)
                assert (f"Diterima: {number(central + 5)} perubahan: {number(central)} dari "
                        f"server pusat ({sources}), 5 dari PC lain sekolah ini ({USER})"
                        ) in lines, lines
                assert not any(line.startswith("Terkirim") for line in lines)

                # The command line prints the same, after its progress lines.
                out = await asyncio.to_thread(CliRunner().invoke, cli, [
                    "--data", str(tmp_path / "c"), "init", "--server", srv.url, "--npsn", NPSN,
                    "--kode", kode, "--user", USER, "--password", PASSWORD])
                assert out.exit_code == 0, out.output
                shown = out.stdout.splitlines()[1:]  # after the line on registering
                clean(shown)
                assert shown[0] == "Menghubungkan ke server pusat"
                assert any(line.startswith(f"Menerima 0 dari {number(central + 5)} "
                                           "perubahan") for line in shown), shown
                assert (f"Diterima: {number(central + 5)} perubahan: {number(central)} dari "
                        f"server pusat ({sources}), 5 dari PC lain sekolah ini ({USER})"
                        ) in shown, shown
                assert shown[-2].startswith("Tarik Data selesai dalam 1 percobaan; dikirim ")
                assert shown[-1] == "Data sama dengan server pusat"
                again = await asyncio.to_thread(CliRunner().invoke, cli, [
                    "--data", str(tmp_path / "c"), "pull"])
                assert again.exit_code == 0, again.output
                assert "Tidak ada perubahan untuk dikirim atau diterima" in again.stdout
    with capture_logs():  # the centre's log lines go to the test, not the commands' stdout
        run(main())


def test_a_conflicted_field_counts_one_and_a_resolve_is_never_negative(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre") as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                a = await enrol(srv, kode, tmp_path / "a", stack)
                b = await enrol(srv, kode, tmp_path / "b", stack)
                [row] = record(a, [("tanah", 1)], "a")
                assert (await run_sync(a.store, a.identity, mode="sync", **FAST)).ok
                assert (await run_sync(b.store, b.identity, mode="pull", **FAST)).ok
                # Both PCs change the same field, each unaware of the other.
                a.replica.edit("tanah", row, {"nama": "dari A"}, now_ms())
                b.replica.edit("tanah", row, {"nama": "dari B"}, now_ms())
                assert (await run_sync(b.store, b.identity, mode="sync", **FAST)).ok
                r = await run_sync(a.store, a.identity, mode="sync", **FAST)
                assert len(a.store.conflicts()) == 2  # two values compete in one field
                assert r.conflicts_new == {"tanah": 1} and r.conflicts_resolved == {}
                assert r.received["tanah"]["conflicts"] == 1
                lines = summary(r)
                assert any(line.startswith("Konflik baru: 1 kolom (Tanah 1)")
                           for line in lines), lines
                # B settles it; A hears of it: one field settled, nothing negative.
                assert (await run_sync(b.store, b.identity, mode="sync", **FAST)).ok
                b.replica.resolve("tanah", row, "nama", "sepakat", now_ms())
                resolved = await run_sync(b.store, b.identity, mode="sync", **FAST)
                assert resolved.conflicts_new == {}
                r = await run_sync(a.store, a.identity, mode="sync", **FAST)
                assert a.store.conflicts() == []
                assert r.conflicts_new == {} and r.conflicts_resolved == {"tanah": 1}
                assert all(c.get("conflicts", 0) >= 0 for c in r.received.values())
                for report in (resolved, r):
                    text = sync_text(report.as_json())
                    assert not re.search(r"-\d", text), text
                lines = summary(r)
                assert "Konflik terselesaikan: 1 kolom (Tanah 1)" in lines, lines
                assert not any(line.startswith("Konflik baru") for line in lines)
    run(main())


def test_a_refusal_a_retry_got_past_is_told_with_its_reason(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(tmp_path / "centre", max_sessions=1,
                                  busy_retry_s=0.2) as srv:
            kode = await srv.add_school(NPSN, "SMA Negeri 1")
            with ExitStack() as stack:
                s = await enrol(srv, kode, tmp_path / "a", stack)
                record(s, [("tanah", 3)], "t")
                # Another install holds the only session slot for a while.
                holder = ProtocolClient(srv.url, NPSN)
                assert isinstance(await holder.register(kode, USER, PASSWORD), Registered)
                held = asyncio.create_task(holder.raw_session([], mode="pull", wait_s=1.0))
                while srv.stats()["active"] < 1:
                    await asyncio.sleep(0.01)
                r = await run_sync(s.store, s.identity, mode="sync", **FAST)
                await held
                assert r.ok and r.busy_retries >= 2
                assert {x["code"] for x in r.refusals} == {Code.SERVER_BUSY}
                lines = summary(r)
                said = [line for line in lines if line.startswith("Sempat ditolak")]
                assert said == [f"Sempat ditolak server pusat, lalu dicoba lagi: "
                                f"{r.refusals[-1]['message']} ({r.busy_retries} kali)"], lines
                assert busy("", 0.2)[2:] in said[0]  # the centre's words: until when
                assert lines[-1] == "Data sama dengan server pusat"
    run(main())


def test_a_stuck_sync_says_how_long_it_waits() -> None:
    """Nothing moved for a while: the line says so, and a log gets a line about it."""
    clock = [100.0]
    printed: list[str] = []
    progress = SyncProgress(enabled=True, tty=False, clock=lambda: clock[0],
                            echo=printed.append, tick_s=None)
    with progress:
        facts = ProgressFacts(events_up=1200, bytes_up=4096, stage=Stage.TRANSFER,
                              to_send={"peserta_didik": 1628, "nilai": 1500},
                              sent={"peserta_didik": 600, "nilai": 600}, to_receive=0)
        progress.update(facts)
        assert printed[-1] == ("Mengirim 1.200 dari 3.128 perubahan "
                               "(Nilai 600, Peserta Didik 600)")
        clock[0] += 2
        progress.tick()
        assert "menunggu" not in progress.text()
        clock[0] += 10
        progress.tick()
        assert printed[-1] == ("Mengirim 1.200 dari 3.128 perubahan (Nilai 600, "
                               "Peserta Didik 600); menunggu server pusat (12 detik)")
        # It moves again: the wait is over.
        progress.update(ProgressFacts(**{**vars(facts), "bytes_up": 8192}))
        assert "menunggu" not in progress.text()
        progress.retrying(Retrying(attempt=2, delay_s=3.2, reason="koneksi terputus"))
        assert printed[-1] == "Menunggu 3 detik sebelum mencoba lagi (percobaan 2)"
        clock[0] += 4  # the wait is over: it connects again, and may wait for the centre
        progress.tick()
        assert printed[-1] == "Menghubungkan ke server pusat (percobaan 2)"
        clock[0] += 6.5
        progress.tick()
        assert printed[-1] == ("Menghubungkan ke server pusat (percobaan 2); "
                               "menunggu server pusat (7 detik)")
    clean(printed)
    assert progress_text(None, WAITING_AFTER_S + 1).startswith(
        "Menghubungkan ke server pusat; menunggu server pusat (6 detik)")
