"""A throwaway PostgreSQL cluster for the tests and benchmarks: made, started, stopped and
removed here.

Debian's PostgreSQL (``/usr/lib/postgresql/<version>/bin``, or ``pg_config
--bindir``) is used as it is: ``initdb`` into a temporary folder, a server on a
Unix socket in that folder and a free port on 127.0.0.1. For the tests ``fsync``
is off (they do not survive power cuts of the test machine, the suite's data is
thrown away); benchmarks keep it on (``durable=True``), as a ministry would, so
that they compare with DuckDB's durable commits. PostgreSQL refuses to run as
root: as root, the cluster runs as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class Unavailable(Exception):
    """No PostgreSQL server programs on this machine, or the cluster would not start."""


def bindir() -> Path:
    """Where initdb and pg_ctl are; Unavailable if nowhere."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    raise Unavailable("no PostgreSQL server programs (initdb) found")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayCluster:
    """``start()`` gives a database URL; ``stop()`` removes everything."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.bin = bindir()
        self.as_root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="selaras-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise Unavailable(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def start(self) -> str:
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user,
                  "-E", "UTF8", "--locale=C")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
                   "-c max_connections=200")
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.folder / "log"), "-w", "start")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _sql(self, sql: str) -> str:
        """Run one statement through ``psql`` on the maintenance database; its output."""
        command = [str(self.bin / "psql"), "-h", str(self.folder), "-p", str(self.port),
                   "-U", self.user, "-d", "postgres", "-At", "-c", sql]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise Unavailable(f"psql failed: {done.stderr.strip()[-500:]}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self._sql(f"CREATE DATABASE {name}")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def database_size(self, name: str) -> int:
        """Bytes on disk of database ``name`` (tables, indexes, TOAST; not the WAL)."""
        return int(self._sql(f"SELECT pg_database_size('{name}')"))

    def stop(self) -> None:
        try:
            if self.data.exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except Unavailable:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
