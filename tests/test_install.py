"""meshlog installs and works without its extras: the SQLite store needs no database driver."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = """
import importlib.util, meshlog
assert importlib.util.find_spec("psycopg") is None, "psycopg must not be needed"
log = meshlog.connect("sqlite:///smoke.db")
first = log.emit("smoke.test", {"ok": True}, agent_id="ci")
assert log.query(agent_id="ci", order="desc", limit=1)[0].id == first.id
try:
    meshlog.connect("postgresql://127.0.0.1/none")
except meshlog.ConfigurationError as exc:
    assert "meshlog[postgres]" in str(exc)
else:
    raise AssertionError("expected ConfigurationError")
print("smoke ok")
"""


@pytest.mark.slow
def test_installs_without_extras(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True,
        timeout=600,
    )
    result = subprocess.run(
        [str(python), "-c", SMOKE], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "smoke ok" in result.stdout
    cli = subprocess.run(
        [str(env_dir / "bin" / "meshlog"), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert cli.returncode == 0, cli.stderr
