"""The sans-I/O sync protocol: sessions driven in memory, refusals, a fuzzed decoder."""

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from selaras.engine import protocol as p
from selaras.engine.events import Batch, Event, central_origins, centre_origin
from selaras.engine.store import MemoryStore

NPSN = "20100001"
INSTALL = "a0000000-0000-4000-8000-000000000001"
PD = "d0000000-0000-4000-8000-00000000000d"
LIMITS = p.Limits(window_batches=2, max_batch_events=3)


def hello(mode="sync", vector=None, **kw):
    fields = dict(protocol=p.PROTOCOL_VERSION, app="test", schema=1, npsn=NPSN, install=INSTALL,
                  token="t", mode=mode, vector=vector or {}, sent_ms=0)
    return p.Hello(**{**fields, **kw})


def opened(mode="sync"):
    client, server = p.SyncProtocol(p.Side.CLIENT), p.SyncProtocol(p.Side.SERVER)
    client.send_hello(hello(mode))
    pump(client, server)
    [fact] = server.facts()
    assert isinstance(fact, p.Opened)
    server.accept(p.Welcome("s1", 1_000, {}, LIMITS))
    pump(server, client)
    assert isinstance(client.facts()[0], p.Welcomed)
    return client, server


def pump(a, b):
    for frame in a.data_to_send():
        b.receive_data(frame)


def events(origin, first, n):
    return [Event(origin=origin, seq=s, hlc=s, entity="peserta_didik", row_id=PD,
                  changes={"nik": str(s)}, author="op", role="operator")
            for s in range(first, first + n)]


def stream(sender_proto, sender_store, receiver_proto, receiver_store, their_vector):
    """Move everything ``receiver`` lacks across, within the window, acking after commit."""
    pending = sorted(sender_store.events_after(their_vector).events(), key=lambda e: e.id)
    while pending or not sender_proto.all_acked:
        while pending and sender_proto.can_send_batch:
            chunk, pending = pending[:3], pending[3:]
            payload = Batch.from_events(chunk).to_bytes()
            sender_proto.send_batch(payload, len(chunk))
        pump(sender_proto, receiver_proto)
        for fact in receiver_proto.facts():
            if isinstance(fact, p.BatchReceived):
                receiver_store.append(Batch.from_bytes(fact.payload))
                receiver_proto.ack(fact.batch, receiver_store.vector())
        pump(receiver_proto, sender_proto)
        sender_proto.facts()


def test_a_whole_sync_session_both_ways_converges():
    central = central_origins(NPSN)
    school, centre = MemoryStore(central), MemoryStore(central)
    school.append(Batch.from_events(events(INSTALL, 1, 7)))
    centre.append(Batch.from_events(events(centre_origin(NPSN), 1, 5)))
    client, server = opened()
    stream(client, school, server, centre, {})
    stream(server, centre, client, school, school.vector())
    client.finish_sending()
    server.finish_sending()
    pump(client, server)
    pump(server, client)
    assert [type(f) for f in client.facts()] == [p.PeerSent]
    assert [type(f) for f in server.facts()] == [p.PeerSent]
    assert client.ready_for_done
    client.send_done(school.vector(), school.checksums())
    pump(client, server)
    [done] = server.facts()
    assert isinstance(done, p.DoneReceived)
    assert server.state is p.State.SUMMARISING
    server.send_summary(centre.vector(), centre.checksums())
    pump(server, client)
    [summary] = client.facts()
    assert summary.summary.vector == done.done.vector
    assert summary.summary.checksums == done.done.checksums
    assert client.state is server.state is p.State.COMPARING
    client.close()
    assert client.state is p.State.CLOSED and client.error is None


def test_after_the_summary_the_client_may_compare_then_close():
    client, server = opened()
    client.finish_sending()
    server.finish_sending()
    pump(client, server)
    pump(server, client)
    server.facts(), client.facts()
    client.send_done({}, {})
    pump(client, server)
    server.facts()
    server.send_summary({}, {})
    pump(server, client)
    client.facts()
    client.send_compare(p.Compare("peserta_didik", buckets=[1, 2]))
    with pytest.raises(p.ProtocolError):  # one question at a time
        client.send_compare(p.Compare("peserta_didik"))
    pump(client, server)
    [asked] = server.facts()
    assert asked.compare == p.Compare("peserta_didik", buckets=[1, 2])
    server.send_compared(p.Compared("peserta_didik", rows={"r": 5}))
    pump(server, client)
    [answered] = client.facts()
    assert answered.compared.rows == {"r": 5} and client.state is p.State.COMPARING
    client.close()
    assert client.state is p.State.CLOSED and client.error is None


@pytest.mark.parametrize("compare", [
    p.Compare("peserta_didik", buckets=list(range(p.MAX_COMPARE_BUCKETS + 1))),
    p.Compare("peserta_didik", rows=["r"] * (p.MAX_COMPARE_ROWS + 1)),
    p.Compare("peserta_didik", buckets=[1], rows=["r"]),
])
def test_a_compare_beyond_its_limits_is_refused(compare):
    client, server = opened()
    client.finish_sending()
    server.finish_sending()
    pump(client, server)
    pump(server, client)
    client.send_done({}, {})
    pump(client, server)
    server.send_summary({}, {})
    server.facts()
    server.receive_data(p.encode(compare))
    assert server.state is p.State.CLOSED
    assert server.error.code == p.Code.MALFORMED_MESSAGE


def test_a_compare_before_the_summary_is_unexpected():
    client, server = opened()
    server.receive_data(p.encode(p.Compare("peserta_didik")))
    assert server.error.code == p.Code.UNEXPECTED_MESSAGE


def test_the_window_holds_the_sender_back_until_acks_come():
    client, server = opened()
    assert client.send_batch(b"x", 1) == 1
    assert client.send_batch(b"y", 1) == 2
    assert not client.can_send_batch
    with pytest.raises(p.ProtocolError):
        client.send_batch(b"z", 1)
    pump(client, server)
    server.ack(1, {})
    pump(server, client)
    assert client.can_send_batch


def overrun(client, server):
    # A hostile client that ignores the window: hand-made frames.
    for n in (1, 2, 3):
        server.receive_data(p.encode(p.Events(n, 1, b"x")))


@pytest.mark.parametrize("frames, code", [
    ([p.Events(2, 1, b"x")], p.Code.UNEXPECTED_MESSAGE),  # batch numbers skip
    ([p.Events(1, 1, b"x")] * 2, p.Code.UNEXPECTED_MESSAGE),  # a batch again
    ([p.Events(1, 4, b"x")], p.Code.MESSAGE_TOO_LARGE),  # more events than the limit
    ([p.Events(n, 1, b"x") for n in (1, 2, 3)], p.Code.WINDOW_OVERRUN),
    ([p.Ack(1, {})], p.Code.UNEXPECTED_MESSAGE),  # ack for nothing sent
    ([hello()], p.Code.UNEXPECTED_MESSAGE),  # Hello twice
    ([p.Sent(5)], p.Code.UNEXPECTED_MESSAGE),  # claims batches never received
])
def test_the_server_refuses_protocol_violations(frames, code):
    _, server = opened()
    for frame in frames:
        server.receive_data(p.encode(frame))
    refusals = [f for f in server.facts() if isinstance(f, p.Refused)]
    assert [r.refuse.code for r in refusals] == [code]
    assert server.state is p.State.CLOSED
    assert p.decode(server.data_to_send()[-1]).code == code


def test_pull_mode_refuses_pushed_events_and_never_sends_any():
    client, server = opened("pull")
    assert not client.can_send_batch
    server.receive_data(p.encode(p.Events(1, 1, b"x")))
    assert server.error.code is p.Code.FORBIDDEN


def test_an_incompatible_protocol_version_is_refused():
    server = p.SyncProtocol(p.Side.SERVER)
    server.receive_data(p.encode(hello(protocol=p.PROTOCOL_VERSION + 1)))
    assert server.error.code is p.Code.VERSION_MISMATCH
    assert server.facts()[0].refuse.code is p.Code.VERSION_MISMATCH


def test_a_frame_over_the_limit_is_refused_before_decoding():
    server = p.SyncProtocol(p.Side.SERVER, p.Limits(max_frame_bytes=100))
    server.receive_data(b"\x00" * 101)
    assert server.error.code is p.Code.MESSAGE_TOO_LARGE


def test_a_refusal_from_the_server_reaches_the_client_with_retry_after():
    client = p.SyncProtocol(p.Side.CLIENT)
    client.send_hello(hello())
    server = p.SyncProtocol(p.Side.SERVER)
    pump(client, server)
    server.facts()
    server.refuse(p.Code.SERVER_BUSY, "server sibuk, coba lagi dalam 7 detik", 7.0)
    pump(server, client)
    [fact] = client.facts()
    assert fact.by_peer and fact.refuse.retry_after_s == 7.0
    assert client.state is p.State.CLOSED


def test_local_misuse_is_a_protocol_error():
    client = p.SyncProtocol(p.Side.CLIENT)
    with pytest.raises(p.ProtocolError):
        client.accept(p.Welcome("s", 0, {}, LIMITS))
    with pytest.raises(p.ProtocolError):
        client.send_done({}, {})


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_give_a_documented_error(data):
    try:
        msg = p.decode(data)
    except p.RemoteError as exc:
        assert exc.code is p.Code.MALFORMED_MESSAGE
    else:
        assert isinstance(msg, p.Message)


VALID = [p.encode(m) for m in (
    hello(), p.Welcome("s", 1, {INSTALL: 3}, LIMITS), p.Refuse(p.Code.SERVER_BUSY, "x", 1.5),
    p.Events(1, 1, Batch.from_events(events(INSTALL, 1, 1)).to_bytes()), p.Ack(1, {INSTALL: 1}),
    p.Sent(1), p.Done({}, {"nilai": "ab"}), p.Summary({}, {}),
    p.Register(1, "a", 1, NPSN, "k", "u", "p", 0), p.Registered(INSTALL, "t", 1, "operator"),
    p.AdminRequest("t", "installs", {}), p.AdminReply(["a"], [[1, "x", None]]))]


@given(st.sampled_from(VALID), st.data())
def test_mutated_frames_never_crash_the_server(frame, data):
    mutated = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] = data.draw(st.integers(0, 255))
    _, server = opened()
    server.receive_data(bytes(mutated))
    for fact in server.facts():
        if isinstance(fact, p.Refused):
            assert fact.refuse.code in set(p.Code)
        if isinstance(fact, p.BatchReceived):  # the columnar payload is checked on decode
            try:
                Batch.from_bytes(fact.payload)
            except ValueError as exc:
                assert "malformed event batch" in str(exc)


def test_every_message_round_trips():
    for frame in VALID:
        assert p.encode(p.decode(frame)) == frame
        assert msgspec.msgpack.decode(frame)


def test_registration_is_one_request_and_one_answer():
    client, server = p.SyncProtocol(p.Side.CLIENT), p.SyncProtocol(p.Side.SERVER)
    client.send_request(p.Register(p.PROTOCOL_VERSION, "test", 1, NPSN, "kode", "op@x", "pw", 0))
    pump(client, server)
    [opened] = server.facts()
    assert isinstance(opened.message, p.Register)
    server.answer(p.Registered(INSTALL, "token", 5, "operator"))
    pump(server, client)
    [answered] = client.facts()
    assert answered.answer.token == "token"
    assert client.state is server.state is p.State.CLOSED


def test_an_admin_request_gets_a_table_back():
    client, server = p.SyncProtocol(p.Side.CLIENT), p.SyncProtocol(p.Side.SERVER)
    client.send_request(p.AdminRequest("secret", "installs", {"npsn": NPSN}))
    pump(client, server)
    assert server.facts()[0].message.command == "installs"
    server.answer(p.AdminReply(["install"], [[INSTALL]]))
    pump(server, client)
    assert client.facts()[0].answer.rows == [[INSTALL]]
