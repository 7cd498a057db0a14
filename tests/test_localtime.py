"""engine/localtime.py: a school's time zone from its province, and times as it reads them.

Sans-I/O: every time is an argument, so nothing here reads a clock.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from selaras.engine import localtime
from selaras.engine.localtime import (
    PROVINCE_ZONES,
    Zone,
    format_local,
    iso_local,
    minute_after,
    zone_of,
)

REFERENSI = Path(localtime.__file__).parent / "data" / "referensi.json"

# 5 December 2026, 07:05:00 UTC
AT = int(dt.datetime(2026, 12, 5, 7, 5, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.mark.parametrize(("kode_wilayah", "zone"), [
    ("016401", Zone.WIB),  # Kec. Kebayoran Baru, DKI Jakarta
    ("026000", Zone.WIB),  # Kota Bandung, Jawa Barat
    ("280000", Zone.WIB),  # Banten
    ("066001", Zone.WIB),  # Banda Aceh
    ("130100", Zone.WIB),  # Kalimantan Barat
    ("140100", Zone.WIB),  # Kalimantan Tengah
    ("220100", Zone.WITA),  # Bali
    ("230100", Zone.WITA),  # Nusa Tenggara Barat
    ("240100", Zone.WITA),  # Nusa Tenggara Timur
    ("150100", Zone.WITA),  # Kalimantan Selatan
    ("160100", Zone.WITA),  # Kalimantan Timur
    ("340100", Zone.WITA),  # Kalimantan Utara
    ("170100", Zone.WITA),  # Sulawesi Utara
    ("330100", Zone.WITA),  # Sulawesi Barat
    ("300100", Zone.WITA),  # Gorontalo
    ("210100", Zone.WIT),  # Maluku
    ("270100", Zone.WIT),  # Maluku Utara
    ("250100", Zone.WIT),  # Papua
    ("320100", Zone.WIT),  # Papua Barat
])
def test_a_schools_zone_is_its_provinces(kode_wilayah: str, zone: Zone) -> None:
    assert zone_of(kode_wilayah) is zone


def test_every_province_of_the_referensi_has_its_zone() -> None:
    regions = json.loads(REFERENSI.read_text(encoding="utf-8"))["ref.mst_wilayah"]
    provinces = [r for r in regions if r["id_level_wilayah"] == 1]
    assert provinces
    for r in provinces:
        assert r["kode_wilayah"][:2] in PROVINCE_ZONES, r
    # Every region of the referensi sits in Java or Sumatra: WIB.
    assert {zone_of(r["kode_wilayah"]) for r in regions if r["id_level_wilayah"]} == {Zone.WIB}


def test_the_table_holds_every_zone_and_34_provinces() -> None:
    assert sorted(PROVINCE_ZONES) == [f"{n:02d}" for n in range(1, 35)]
    assert set(PROVINCE_ZONES.values()) == set(Zone)


@pytest.mark.parametrize(("name", "zone"), [
    ("Prov. Papua Tengah", Zone.WIT),
    ("Prov. Papua Barat Daya", Zone.WIT),
    ("PROV. MALUKU UTARA", Zone.WIT),
    ("Prov. Sulawesi Tenggara", Zone.WITA),
    ("Prov. Kalimantan Utara", Zone.WITA),
    ("Prov. Kalimantan Barat", Zone.WIB),  # a Kalimantan of WIB
    ("Prov. Jawa Barat", Zone.WIB),
    (None, Zone.WIB),
])
def test_a_province_the_table_lacks_is_known_by_its_name(name: str | None, zone: Zone) -> None:
    assert zone_of("990100", name) is zone


def test_the_code_decides_before_the_name() -> None:
    assert zone_of("220100", "Prov. Papua") is Zone.WITA


@pytest.mark.parametrize("kode_wilayah", [None, "", "  ", "x", "000000", "990000"])
def test_an_unknown_region_is_wib(kode_wilayah: str | None) -> None:
    assert zone_of(kode_wilayah) is Zone.WIB


def test_a_time_reads_in_the_schools_zone() -> None:
    assert format_local(AT, Zone.WIB) == "05-12-2026 14:05 WIB"
    assert format_local(AT, Zone.WITA) == "05-12-2026 15:05 WITA"
    assert format_local(AT, Zone.WIT) == "05-12-2026 16:05 WIT"
    # Past midnight: the date is the school's too.
    assert format_local(AT + 9 * 3_600_000, Zone.WIT) == "06-12-2026 01:05 WIT"
    assert format_local(AT + 59_999, Zone.WIB) == "05-12-2026 14:05 WIB"  # to the minute


def test_machines_get_the_schools_offset() -> None:
    assert iso_local(AT, Zone.WIB) == "2026-12-05T14:05:00+07:00"
    assert iso_local(AT, Zone.WIT) == "2026-12-05T16:05:00+09:00"
    assert dt.datetime.fromisoformat(iso_local(AT, Zone.WITA)).timestamp() * 1000 == AT


def test_not_before_rounds_up_to_the_minute() -> None:
    assert minute_after(AT) == AT
    assert minute_after(AT + 1) == AT + 60_000
    assert minute_after(AT + 59_999) == AT + 60_000
    assert format_local(minute_after(AT + 20_000), Zone.WIB) == "05-12-2026 14:06 WIB"


def test_the_zones_offsets() -> None:
    assert [z.tzinfo.utcoffset(None) for z in Zone] == [dt.timedelta(hours=h) for h in (7, 8, 9)]
