"""The wheel: built without a packaging warning, and the CLI runs from it alone.

A package or data folder that pyproject does not declare is left out of the
wheel (setuptools only warns): this installs the wheel in a fresh virtual
environment, away from the source tree, and runs commands that need every
package and the Referensi data.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.slow
def test_the_wheel_builds_without_warnings_and_its_cli_runs(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    built = run(*pip, "wheel", "--verbose", "--no-deps", "--wheel-dir", tmp_path / "dist",
                ROOT, cwd=tmp_path)
    warnings = re.findall(r"^.*Warning: .*$", built, re.MULTILINE)
    assert warnings == [], warnings
    (wheel,) = (tmp_path / "dist").glob("selaras-*.whl")

    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel,
                    cwd=tmp_path)
    assert "warning" not in installed.lower(), installed
    # The dependencies come from this environment's site-packages; selaras from the wheel.
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                    cwd=tmp_path).strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")

    where = run(python, "-c", "import selaras.engine.storage as s; print(s.__file__)",
                cwd=tmp_path)
    assert where.startswith(str(env)), where
    selaras = env / "bin" / "selaras"
    data = tmp_path / "school"
    run(selaras, "--data", data, "init", "--offline", "--npsn", "20219876", cwd=tmp_path)
    assert "ref.agama" in run(selaras, "--data", data, "checksum", "--json", cwd=tmp_path)
    assert "--port" in run(selaras, "server", "--help", cwd=tmp_path)  # an entry point
