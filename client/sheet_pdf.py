"""The printed Lembar Konfirmasi Sinkronisasi with its Pakta Integritas (``confirm --print``).

Dapodik schools file the confirmation sheet on paper, signed by the kepala
sekolah and the operator. One A4 page: the school's identity, the semester,
per tab its data and its unsent changes, the principal's integrity statement
and consent to send (Persetujuan Pengiriman Data), place and date, two
signature lines, and at the foot the sheet's hash and the consent's hash in
full, so the paper can be matched with the consent the centre holds.

Plain data in, a file out: the caller reads the school's row and regions
(``school_identity`` shapes them), the principal's items and consent; nothing
here opens a store. The core Helvetica font reads latin-1 only and every PC
has it (no font file to ship): other characters are written as their closest
latin-1 letter, or "?" (``latin1``), never an error.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from selaras.engine.consent import Consent
from selaras.engine.localtime import Zone, zone_of

from .install import write_atomically
from .principal import SheetItem

TITLE = "Lembar Konfirmasi Sinkronisasi"
FONT, MONO = "Helvetica", "Courier"
MARGIN_MM = 18
LINE_MM = 5.5
# Typography outside latin-1 that names and addresses carry, and what stands for it.
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                        "\u2013": "-", "\u2014": "-", "\u2026": "..."})


@dataclass(frozen=True)
class SchoolIdentity:
    """The school as the sheet names it; regions are their ref.mst_wilayah names."""

    nama: str
    npsn: str
    alamat: str = ""
    kecamatan: str = ""
    kabupaten: str = ""
    provinsi: str = ""
    kode_wilayah: str = ""

    @property
    def zone(self) -> Zone:
        """The school's time zone (engine/localtime.py), from its region."""
        return zone_of(self.kode_wilayah, self.provinsi)

    @property
    def place(self) -> str:
        """Where the sheet is signed: the kabupaten or kota, without its prefix."""
        for prefix in ("Kab. ", "Kabupaten ", "Kota "):
            if self.kabupaten.startswith(prefix):
                return self.kabupaten[len(prefix):]
        return self.kabupaten


def school_identity(npsn: str, sekolah: Mapping[str, object] | None,
                    regions: Mapping[str, Mapping[str, object]]) -> SchoolIdentity:
    """The identity from the sekolah row (None before the school's data has come) and
    the ref.mst_wilayah rows by kode_wilayah: the school's region is walked up to its
    kecamatan (level 3), kabupaten/kota (2) and provinsi (1)."""
    row = sekolah or {}

    def text(name: str) -> str:
        value = row.get(name)
        return "" if value is None else str(value).strip()

    alamat = ", ".join(p for p in (
        text("alamat_jalan"),
        f"RT {text('rt')}/RW {text('rw')}" if text("rt") and text("rw") else "",
        text("nama_dusun"), text("desa_kelurahan"), text("kode_pos")) if p)
    levels: dict[int, str] = {}
    kode, seen = text("kode_wilayah"), set()
    while kode in regions and kode not in seen:  # a loop in the data ends the walk
        seen.add(kode)
        region = regions[kode]
        level = region.get("id_level_wilayah")
        if isinstance(level, int):
            levels.setdefault(level, str(region.get("nama") or ""))
        kode = str(region.get("mst_kode_wilayah") or "")
    return SchoolIdentity(nama=text("nama") or "-", npsn=text("npsn") or npsn, alamat=alamat,
                          kecamatan=levels.get(3, ""), kabupaten=levels.get(2, ""),
                          provinsi=levels.get(1, ""), kode_wilayah=text("kode_wilayah"))


def semester_text(semester_id: str) -> str:
    """``20231`` -> ``2023/2024 Ganjil (20231)``: semester_id is YYYYS (1 ganjil, 2 genap)."""
    if len(semester_id) == 5 and semester_id.isdigit() and semester_id[4] in "12":
        year = int(semester_id[:4])
        term = "Ganjil" if semester_id[4] == "1" else "Genap"
        return f"{year}/{year + 1} {term} ({semester_id})"
    return semester_id or "-"


def latin1(text: str) -> str:
    """``text`` as the core fonts can write it: each character outside latin-1 becomes
    its letter without the accent (``Ş`` -> ``S``) or, failing that, ``?``."""
    out = []
    for ch in text.translate(_PLAIN):
        if ord(ch) < 256:
            out.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch)
                       if ord(c) < 256 and not unicodedata.combining(c))
        out.append(base or "?")
    return "".join(out)


def write_sheet_pdf(path: Path, school: SchoolIdentity, items: list[SheetItem],
                    consent: Consent, local_time: str) -> None:
    """Write the signed sheet to ``path`` (atomically: a reader never sees half a file).
    ``local_time`` is the consent's time as the school reads it (engine/localtime.py's
    ``format_local``). OSError as the file system gives it."""
    write_atomically(path, sheet_pdf_bytes(school, items, consent, local_time))


def sheet_pdf_bytes(school: SchoolIdentity, items: list[SheetItem], consent: Consent,
                    local_time: str) -> bytes:
    """The PDF itself; the same consent gives the same bytes (its time is the PDF's date)."""
    pdf = _SheetPDF()
    pdf.set_title(latin1(f"{TITLE} {school.npsn}"))
    pdf.set_author(latin1(consent.nama))
    pdf.set_creator("selaras")
    pdf.set_creation_date(dt.datetime.fromtimestamp(consent.made_ms / 1000, dt.UTC))
    pdf.add_page()
    _heading(pdf, consent)
    _identity(pdf, school, consent)
    _counts(pdf, items)
    _pakta(pdf, school, consent)
    _signatures(pdf, school, consent, local_time)
    _hashes(pdf, consent)
    return bytes(pdf.output())


class _SheetPDF(FPDF):
    def __init__(self) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
        self.set_auto_page_break(auto=True, margin=MARGIN_MM)

    def line_of(self, text: str, *, size: float = 10, style: str = "",
                align: Align = Align.L, font: str = FONT, height: float = LINE_MM) -> None:
        """One line across the page (wrapped if long), then the next line."""
        self.set_font(font, style, size)
        self.multi_cell(0, height, latin1(text), align=align, new_x=XPos.LMARGIN,
                        new_y=YPos.NEXT)


def _heading(pdf: _SheetPDF, consent: Consent) -> None:
    pdf.line_of(TITLE.upper(), size=14, style="B", align=Align.C, height=7)
    pdf.line_of(f"Semester {semester_text(consent.semester_id)}", align=Align.C)
    pdf.ln(2)
    y = pdf.get_y()
    pdf.line(MARGIN_MM, y, pdf.w - MARGIN_MM, y)
    pdf.ln(3)


def _identity(pdf: _SheetPDF, school: SchoolIdentity, consent: Consent) -> None:
    pdf.line_of("A. Identitas Sekolah", style="B", size=11)
    rows = [("Nama Sekolah", school.nama), ("NPSN", school.npsn),
            ("Alamat", school.alamat or "-"), ("Kecamatan", school.kecamatan or "-"),
            ("Kabupaten/Kota", school.kabupaten or "-"), ("Provinsi", school.provinsi or "-"),
            ("Semester", semester_text(consent.semester_id))]
    pdf.set_font(FONT, "", 10)
    with pdf.table(col_widths=(35, 5, 134), first_row_as_headings=False,
                   borders_layout="NONE", line_height=LINE_MM, padding=(0.5, 1)) as table:
        for label, value in rows:
            row = table.row()
            row.cell(label)
            row.cell(":")
            row.cell(latin1(value))
    pdf.ln(3)


def _counts(pdf: _SheetPDF, items: list[SheetItem]) -> None:
    pdf.line_of("B. Rekapitulasi Data", style="B", size=11)
    pdf.set_font(FONT, "", 9)
    with pdf.table(col_widths=(8, 50, 22, 28, 66), line_height=5, padding=(0.8, 1.5),
                   text_align=("CENTER", "LEFT", "RIGHT", "RIGHT", "LEFT")) as table:
        head = table.row()
        for title in ("No", "Tab", "Jumlah Data", "Perubahan Belum Terkirim",
                      "Rincian Perubahan (per tabel)"):
            head.cell(title)
        for n, item in enumerate(items, 1):
            row = table.row()
            row.cell(str(n))
            row.cell(latin1(item.tab))
            row.cell(str(item.rows))
            row.cell(str(item.changes))
            row.cell(", ".join(f"{t} {c}" for t, c in item.per_table.items()) or "-")
        total = table.row()
        total.cell("")
        total.cell("Jumlah")
        total.cell(str(sum(i.rows for i in items)))
        total.cell(str(sum(i.changes for i in items)))
        total.cell("")
    pdf.ln(4)


def _pakta(pdf: _SheetPDF, school: SchoolIdentity, consent: Consent) -> None:
    pdf.line_of("C. Pakta Integritas dan Persetujuan Pengiriman Data", style="B", size=11)
    nip = consent.nip or "-"
    pdf.set_font(FONT, "", 10)
    pdf.multi_cell(0, LINE_MM, latin1(
        f"Saya yang bertanda tangan di bawah ini, {consent.nama}, NIP {nip}, Kepala "
        f"Sekolah {school.nama} (NPSN {school.npsn}), menyatakan bahwa data yang tercantum "
        "pada Lembar Konfirmasi Sinkronisasi ini telah saya periksa dan adalah benar, "
        "lengkap, dan dapat dipertanggungjawabkan. Dengan ini saya memberikan Persetujuan "
        "Pengiriman Data: saya menyetujui data tersebut dikirim ke server pusat. Apabila "
        "di kemudian hari data ini terbukti tidak benar, saya bersedia "
        "mempertanggungjawabkannya sesuai ketentuan yang berlaku."),
        align=Align.J, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(5)


def _signatures(pdf: _SheetPDF, school: SchoolIdentity, consent: Consent,
                local_time: str) -> None:
    half = (pdf.w - 2 * MARGIN_MM) / 2
    left, right = MARGIN_MM, MARGIN_MM + half
    place = f"{school.place}, {local_time}" if school.place else local_time
    top = pdf.get_y()
    columns = (
        (left, ["", "Operator Sekolah,"], ["(" + "_" * 30 + ")", "Nama:"]),
        (right, [place, "Kepala Sekolah,"], [consent.nama, f"NIP {consent.nip or '-'}"]),
    )
    pdf.set_font(FONT, "", 10)
    for x, above, below in columns:
        pdf.set_xy(x, top)
        for text in above:
            pdf.cell(half, LINE_MM, latin1(text), align=Align.C, new_x=XPos.LEFT,
                     new_y=YPos.NEXT)
        pdf.ln(20)  # room to sign
        pdf.set_x(x)
        for n, text in enumerate(below):
            pdf.set_font(FONT, "BU" if n == 0 and x == right else "", 10)
            pdf.cell(half, LINE_MM, latin1(text), align=Align.C, new_x=XPos.LEFT,
                     new_y=YPos.NEXT)
    pdf.set_x(MARGIN_MM)
    pdf.ln(6)


def _hashes(pdf: _SheetPDF, consent: Consent) -> None:
    foot = pdf.h - MARGIN_MM - 3 * 3.5 - 1  # three small lines at the foot of the page
    if pdf.get_y() < foot:
        pdf.set_y(foot)
    pdf.line_of(f"Disetujui secara elektronik oleh {consent.account} "
                f"(instalasi {consent.install}).", size=7, height=3.5)
    pdf.line_of(f"Kode lembar (SHA-256):      {consent.sheet_hash}", size=7, font=MONO,
                height=3.5)
    pdf.line_of(f"Kode persetujuan (SHA-256): {consent.digest}", size=7, font=MONO,
                height=3.5)
