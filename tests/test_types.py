"""mypy sees across the packages: every selaras.* import resolves to its real types.

DESIGN.md section 2: a ``selaras.*`` import that resolves to ``Any`` is a defect
(the engine's contract with the adapters would go unchecked). The folders are
linked as the installed package, as ``make typecheck`` does, and mypy is asked
what a few imports from each package are, and to check a call that is wrong.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent

PROBE = """\
from selaras.client.install import Install
from selaras.engine.storage import DuckDBCentre
from selaras.engine.store import AppendReport
from selaras.server.app import SelarasServer

reveal_type(Install)
reveal_type(DuckDBCentre.append_group)
reveal_type(AppendReport(applied=1).applied)
reveal_type(SelarasServer.start)
AppendReport(applied="many")
"""


def test_selaras_imports_resolve_to_their_real_types(tmp_path: Path) -> None:
    package = tmp_path / "types" / "selaras"
    package.mkdir(parents=True)
    for name in ("engine", "server", "client", "bench"):
        os.symlink(ROOT / name, package / name, target_is_directory=True)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    os.environ["MYPYPATH"] = str(package.parent)
    try:
        out, err, _ = api.run(["--strict", "--config-file", str(ROOT / "pyproject.toml"),
                               "--cache-dir", str(ROOT / ".mypy_cache"), str(probe)])
    finally:
        del os.environ["MYPYPATH"]
    revealed = re.findall(r'Revealed type is "(.*)"', out)
    assert len(revealed) == 4, out + err
    install, append_group, applied, start = revealed
    assert install.endswith("-> selaras.client.install.Install"), install
    assert "selaras.engine.store.AppendReport" in append_group and "Any" not in append_group
    assert applied == "int"
    assert start.startswith("def (self: selaras.server.app.SelarasServer)"), start
    # The wrong call is caught: the types are checked, not only named.
    assert re.search(r'probe\.py:10: error: Argument "applied" to "AppendReport" has '
                     r'incompatible type "str"', out), out
