"""One-shot requests to a running centre (``Register``, ``AdminRequest``), as a client."""

from __future__ import annotations

import ssl

from websockets.asyncio.client import connect

from selaras.engine.protocol import (
    AdminReply,
    AdminRequest,
    Answer,
    Answered,
    Refuse,
    Refused,
    Register,
    Side,
    State,
    SyncProtocol,
)


class AdminRefused(Exception):
    def __init__(self, refuse: Refuse) -> None:
        super().__init__(refuse)
        self.refuse = refuse

    def __str__(self) -> str:
        return f"the server refused: {self.refuse.code}: {self.refuse.message}"


def tls_context(cafile: str | None) -> ssl.SSLContext | None:
    """Trust the server's own certificate (an admin on the server's machine)."""
    if not cafile:
        return None
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    return ctx


async def one_shot(url: str, request: Register | AdminRequest, *, cafile: str | None = None,
                   ) -> Answer | Refuse:
    proto = SyncProtocol(Side.CLIENT)
    proto.send_request(request)
    tls = tls_context(cafile) if url.startswith("wss:") else None
    async with connect(url, compression=None, ssl=tls, open_timeout=10) as ws:
        for d in proto.data_to_send():
            await ws.send(d)
        while proto.state is not State.CLOSED:
            data = await ws.recv()
            proto.receive_data(data if isinstance(data, bytes) else data.encode())
    for f in proto.facts():
        if isinstance(f, Answered):
            return f.answer
        if isinstance(f, Refused):
            return f.refuse
    raise ConnectionError("the server closed without answering")


async def admin_request(url: str, token: str, command: str, *, cafile: str | None = None,
                        **args: str) -> AdminReply:
    answer = await one_shot(url, AdminRequest(token, command, dict(args)), cafile=cafile)
    if isinstance(answer, Refuse):
        raise AdminRefused(answer)
    assert isinstance(answer, AdminReply)
    return answer
