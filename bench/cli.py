"""``selaras bench ...``: benchmark and test-data commands.

The group plugs into the main ``selaras`` command through the
``selaras.commands`` entry point (client/ never imports bench/), and works on
its own too: ``bench(["generate", ...])``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from . import generate as generator


@click.group()
def bench() -> None:
    """Benchmarks and generated test data."""


@bench.command("generate")
@click.option("--size", type=click.Choice(list(generator.SIZES)), default="small",
              show_default=True, help="School size preset.")
@click.option("--bentuk", type=click.Choice(list(generator.LEVELS)), default="SMA",
              show_default=True,
              help="The school's level (bentuk pendidikan): its grades, ages and subjects. "
                   "Give 'selaras init --offline' the same --bentuk.")
@click.option("--scale", type=click.IntRange(min=1), default=1, show_default=True,
              help="Multiply the school: N times the students, rombels, teachers, rooms.")
@click.option("--npsn", required=True, help="The school's NPSN (8 characters).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same arguments give the same file.")
@click.option("--errors", type=click.IntRange(min=0), default=0, show_default=True,
              help="Number of rows that break validation rules, of several kinds.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              required=True, help="The JSON-lines file to write.")
def generate_command(size: str, bentuk: str, scale: int, npsn: str, seed: int, errors: int,
                     out: Path) -> None:
    """Write what a school enters for itself as JSON lines, one row per line."""
    start = time.perf_counter()
    try:
        rows = generator.generate(size, scale, npsn, seed, errors, bentuk=bentuk)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    counts = generator.write(out, rows)
    elapsed = time.perf_counter() - start
    per_entity = ", ".join(f"{name} {n}" for name, n in counts.items())
    click.echo(f"wrote {sum(counts.values())} rows to {out} in {elapsed:.2f} s "
               f"({per_entity})", err=True)
