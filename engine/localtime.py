"""School-local time: the zone of a school, and times as the school reads them.

Indonesia keeps three time zones, none with daylight saving: WIB (UTC+7), WITA
(UTC+8) and WIT (UTC+9). A school's zone is its province's, and its province
is the first two digits of the sekolah row's ``kode_wilayah`` (the Kemendikbud
codes of ``ref.mst_wilayah``: 010000 Prov. D.K.I. Jakarta ... 340000 Prov.
Kalimantan Utara). A province not in ``PROVINCE_ZONES`` (the Papua provinces
made in 2022, say) is known by its name, when the caller has it; anything else
is WIB, the zone of most schools.

Times shown to people are in the school's zone, never UTC or epoch numbers:
``format_local(ms, zone)`` gives ``05-12-2026 14:05 WIB``. Sans-I/O: the time
comes in as epoch milliseconds; nothing here reads a clock.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store


class Zone(enum.Enum):
    """An Indonesian time zone; its value is the offset from UTC in hours."""

    WIB = 7  # Waktu Indonesia Barat
    WITA = 8  # Waktu Indonesia Tengah
    WIT = 9  # Waktu Indonesia Timur

    @property
    def tzinfo(self) -> dt.timezone:
        return dt.timezone(dt.timedelta(hours=self.value), self.name)


# Province (the first two digits of kode_wilayah) -> its zone.
PROVINCE_ZONES: dict[str, Zone] = {
    "01": Zone.WIB,  # DKI Jakarta
    "02": Zone.WIB,  # Jawa Barat
    "03": Zone.WIB,  # Jawa Tengah
    "04": Zone.WIB,  # DI Yogyakarta
    "05": Zone.WIB,  # Jawa Timur
    "06": Zone.WIB,  # Aceh
    "07": Zone.WIB,  # Sumatera Utara
    "08": Zone.WIB,  # Sumatera Barat
    "09": Zone.WIB,  # Riau
    "10": Zone.WIB,  # Jambi
    "11": Zone.WIB,  # Sumatera Selatan
    "12": Zone.WIB,  # Lampung
    "13": Zone.WIB,  # Kalimantan Barat
    "14": Zone.WIB,  # Kalimantan Tengah
    "15": Zone.WITA,  # Kalimantan Selatan
    "16": Zone.WITA,  # Kalimantan Timur
    "17": Zone.WITA,  # Sulawesi Utara
    "18": Zone.WITA,  # Sulawesi Tengah
    "19": Zone.WITA,  # Sulawesi Selatan
    "20": Zone.WITA,  # Sulawesi Tenggara
    "21": Zone.WIT,  # Maluku
    "22": Zone.WITA,  # Bali
    "23": Zone.WITA,  # Nusa Tenggara Barat
    "24": Zone.WITA,  # Nusa Tenggara Timur
    "25": Zone.WIT,  # Papua
    "26": Zone.WIB,  # Bengkulu
    "27": Zone.WIT,  # Maluku Utara
    "28": Zone.WIB,  # Banten
    "29": Zone.WIB,  # Kepulauan Bangka Belitung
    "30": Zone.WITA,  # Gorontalo
    "31": Zone.WIB,  # Kepulauan Riau
    "32": Zone.WIT,  # Papua Barat
    "33": Zone.WITA,  # Sulawesi Barat
    "34": Zone.WITA,  # Kalimantan Utara
}

# A province known only by its name (ref.mst_wilayah's nama): the first match wins.
NAME_ZONES: tuple[tuple[str, Zone], ...] = (
    ("papua", Zone.WIT),  # Papua, Papua Barat, and those made in 2022
    ("maluku", Zone.WIT),
    ("kalimantan selatan", Zone.WITA),
    ("kalimantan timur", Zone.WITA),
    ("kalimantan utara", Zone.WITA),
    ("sulawesi", Zone.WITA),
    ("gorontalo", Zone.WITA),
    ("bali", Zone.WITA),
    ("nusa tenggara", Zone.WITA),
)

DEFAULT_ZONE = Zone.WIB


def province_of(kode_wilayah: str) -> str:
    """The province code of a region: the first two digits of its kode_wilayah."""
    return kode_wilayah.strip()[:2]


def zone_of(kode_wilayah: str | None, province_name: str | None = None) -> Zone:
    """The zone of a school in region ``kode_wilayah``. ``province_name`` (its
    province's ``nama`` in ref.mst_wilayah) decides for a province code this table
    lacks; with neither known, WIB."""
    zone = PROVINCE_ZONES.get(province_of(kode_wilayah or ""))
    if zone is not None:
        return zone
    name = (province_name or "").lower()
    return next((z for word, z in NAME_ZONES if word in name), DEFAULT_ZONE)


def school_zone(store: Store, sekolah_id: str | None = None) -> Zone:
    """The zone of the school ``store`` holds (its sekolah row ``sekolah_id``, or its one
    sekolah row, as the centre keeps it), from the row's kode_wilayah; WIB until the
    school's data has come."""
    schools = store.rows("sekolah")
    school = (schools.get(sekolah_id) if sekolah_id else next(iter(schools.values()), None))
    kode = str((school or {}).get("kode_wilayah") or "")
    if not kode or province_of(kode) in PROVINCE_ZONES:
        return zone_of(kode)
    # A province this version does not list (a new one): its name decides.
    province = province_of(kode).ljust(6, "0")
    names = [str(r.get("nama") or "") for r in store.rows("ref.mst_wilayah").values()
             if r.get("kode_wilayah") == province]
    return zone_of(kode, names[0] if names else None)


def local_datetime(epoch_ms: int, zone: Zone) -> dt.datetime:
    """The instant ``epoch_ms`` as an aware datetime in ``zone``."""
    return dt.datetime.fromtimestamp(epoch_ms / 1000, zone.tzinfo)


def format_local(epoch_ms: int, zone: Zone) -> str:
    """The instant as the school reads it: ``05-12-2026 14:05 WIB`` (to the minute,
    seconds dropped)."""
    return f"{local_datetime(epoch_ms, zone):%d-%m-%Y %H:%M} {zone.name}"


def minute_after(epoch_ms: int) -> int:
    """``epoch_ms`` rounded up to a whole minute: "not before" as ``format_local`` shows
    it (14:05:20 shown as 14:05 would be too early)."""
    return -(-epoch_ms // 60_000) * 60_000


def iso_local(epoch_ms: int, zone: Zone) -> str:
    """The instant for machines, in the school's offset: ``2026-12-05T14:05:00+07:00``."""
    return local_datetime(epoch_ms, zone).isoformat(timespec="seconds")
