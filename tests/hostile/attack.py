"""What the hostile-input suite shares: a centre with a victim school and a bystander.

Every server-side test attacks school ``A`` (or the centre through it) while
school ``B`` minds its own business; ``bystander_syncs`` then proves that B's
sync still completes, with the centre's checksums equal to what it pushed.
"""

from __future__ import annotations

import uuid
from typing import Any

from selaras.engine.clocks import VersionVector
from selaras.engine.events import Batch, Event
from selaras.engine.protocol import Registered
from selaras.server.testing import Outcome, ProtocolClient, RunningServer

A, B = "20100001", "20100002"


def pd_batch(origin: str, first: int, n: int, nik: str = "1", **changes: Any) -> Batch:
    """Events ``first..first+n-1`` of ``origin``, each writing one student's nik."""
    row = str(uuid.uuid5(uuid.NAMESPACE_URL, origin))
    return Batch.from_events([
        Event(origin=origin, seq=s, hlc=1_000 + s, entity="peserta_didik", row_id=row,
              changes={"nik": f"{nik}{s}", **changes}, author="op", role="operator")
        for s in range(first, first + n)])


async def install(server: RunningServer, npsn: str, user: str = "op@sekolah.id",
                  ) -> ProtocolClient:
    """A registered install of a new school ``npsn``."""
    kode = await server.add_school(npsn, f"SMA {npsn}")
    client = ProtocolClient(server.url, npsn)
    answer = await client.register(kode, user, "rahasia-1")
    assert isinstance(answer, Registered), answer
    return client


async def state(server: RunningServer, npsn: str) -> tuple[VersionVector, dict[str, str]]:
    """The centre's vector and checksums of one school."""
    return await server.server.write(
        lambda c, _: (c.school(npsn).vector(), c.school(npsn).checksums()))


async def bystander_syncs(server: RunningServer, client: ProtocolClient, first: int,
                          ) -> Outcome:
    """``client`` pushes two events and finishes its session; its summary must match
    the centre's state of its school."""
    before, _ = await state(server, client.npsn)
    out = await client.session("sync", before, [pd_batch(client.install, first, 2)])
    assert out.refused is None and out.summary is not None, out
    vector, sums = await state(server, client.npsn)
    assert vector[client.install] == first + 1
    assert out.summary == (vector, sums)
    return out
