"""The long fuzz run of every decoder of outside bytes (docs/security.md).

Run on demand with ``make bench`` (``pytest bench -q --benchmark-only -s``);
tests/hostile/test_hostile_fuzz.py is its short run in ``make test``.

At least a million inputs in all (``SELARAS_FUZZ_INPUTS``, for a quicker try),
an equal share per decoder of bench/fuzz.py: ``protocol.decode``, the sync
protocol receiving a frame (server before and after the Hello, client after the
Welcome), ``Batch.from_bytes`` and ``bundle.decode``. Mutated seeds and random
bytes, in chunks of ``CHUNK`` inputs of their own seed, each chunk a child
process, two at a time (``SELARAS_FUZZ_WORKERS``): a crash costs its chunk
nothing but the input that crashed, which is kept. Printed per decoder: inputs,
accepted, refused, the time, and the children's peak RSS against their RSS once
set up. It fails on any finding: an exception outside the decoder's documented
errors, a crash, or one input that grew the process by ``fuzz.MEMORY_SPIKE``;
each is printed with its shortest input in hex.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from selaras.bench import fuzz

INPUTS = int(os.environ.get("SELARAS_FUZZ_INPUTS", "1000000"))  # in all, over the decoders
WORKERS = int(os.environ.get("SELARAS_FUZZ_WORKERS", "2"))
CHUNK = 25_000  # inputs per child process


def chunks(per_decoder: int) -> list[tuple[str, int, int, int]]:
    """(decoder, first input, end, seed): each decoder's inputs, a seed per chunk."""
    return [(name, 0, min(CHUNK, per_decoder - start), seed)
            for name in fuzz.DECODERS
            for seed, start in enumerate(range(0, per_decoder, CHUNK))]


def test_fuzz_every_decoder(benchmark: Any, folder: Path) -> None:
    per_decoder = -(-INPUTS // len(fuzz.DECODERS))
    tallies = {name: fuzz.Tally(name) for name in fuzz.DECODERS}
    work = folder / "fuzz"
    work.mkdir(exist_ok=True)

    def chunk(c: tuple[str, int, int, int]) -> fuzz.Tally:
        name, start, end, seed = c
        return fuzz.run(name, start, end, seed, work)

    def once() -> None:
        with ThreadPoolExecutor(WORKERS) as pool:
            for tally in pool.map(chunk, chunks(per_decoder)):
                tallies[tally.decoder].add(tally)

    began = time.perf_counter()
    benchmark.pedantic(once, rounds=1, iterations=1)
    elapsed = time.perf_counter() - began

    mib = fuzz.MiB
    total = fuzz.Tally("all decoders")
    print(f"\nfuzz: {WORKERS} child processes at a time, {CHUNK:,} inputs each")
    print(f"{'decoder':<20} {'inputs':>10} {'accepted':>10} {'refused':>10} {'findings':>8} "
          f"{'CPU s':>7} {'RSS start':>10} {'peak':>7}")
    for t in tallies.values():
        total.add(t)
        print(f"{t.decoder:<20} {t.inputs:>10,} {t.accepted:>10,} {t.refused:>10,} "
              f"{len(t.findings):>8} {t.seconds:>7.1f} {t.start_rss / mib:>6,.0f} MiB "
              f"{t.peak_rss / mib:>3,.0f} MiB")
    print(f"{total.decoder:<20} {total.inputs:>10,} {total.accepted:>10,} {total.refused:>10,} "
          f"{len(total.findings):>8} {total.seconds:>7.1f}; {elapsed:.1f} s elapsed, "
          f"{total.inputs / elapsed:,.0f} inputs/s")
    print(f"peak RSS of a child: {total.peak_rss / mib:,.0f} MiB, "
          f"{(total.peak_rss - total.start_rss) / mib:+,.0f} MiB over its start")
    findings = [f for t in tallies.values() for f in t.findings.values()]
    for f in findings:
        print(f"FINDING {f}")
    benchmark.extra_info.update(
        inputs=total.inputs, accepted=total.accepted, refused=total.refused, seconds=elapsed,
        start_rss_bytes=total.start_rss, peak_rss_bytes=total.peak_rss,
        findings=sorted({f"{f.decoder}: {f.key}" for f in findings}),
        per_decoder={t.decoder: {"inputs": t.inputs, "accepted": t.accepted,
                                 "refused": t.refused} for t in tallies.values()})
    assert total.inputs >= INPUTS
    found = [f"{f.decoder}: {f.key}" for f in findings]  # the inputs are printed above
    assert not found
