"""The lock files pin what requirements*.txt pin (what CI checks first: `make check-lock`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dbless

ROOT = Path(__file__).resolve().parent.parent
FILES = ("requirements.txt", "requirements-dev.txt", "requirements-emulator.txt", "requirements.lock",
         "requirements-dev.lock")


def _check(folder: Path) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "scripts" / "check_lock.py", folder / "scripts" / "check_lock.py")
    return subprocess.run([sys.executable, str(folder / "scripts" / "check_lock.py")], capture_output=True,
                          text=True, timeout=60)


def test_the_locks_agree_with_the_requirements():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_lock.py")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_an_edited_requirement_is_caught_with_the_command_to_run(tmp_path):
    (tmp_path / "scripts").mkdir()
    for name in FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    with open(tmp_path / "requirements.txt", "a") as f:
        f.write("srt==3.5.3\n")
    text = (tmp_path / "requirements-emulator.txt").read_text().replace("aiohttp==", "aiohttp==0.0.1 # was ")
    (tmp_path / "requirements-emulator.txt").write_text(text)
    done = _check(tmp_path)
    assert done.returncode == 1
    assert "srt==3.5.3 (requirements.txt) is not in requirements.lock" in done.stderr
    assert "aiohttp==0.0.1 (requirements-dev.txt) but requirements-dev.lock has" in done.stderr
    assert "run `make lock`" in done.stderr


def test_the_emulator_is_an_extra_not_a_runtime_dependency():
    runtime = (ROOT / "requirements.txt").read_text()
    lock = (ROOT / "requirements.lock").read_text()
    for name in ("aiohttp", "pocketsphinx"):
        assert f"{name}==" not in runtime and f"\n{name}==" not in lock
        assert f"{name}==" in (ROOT / "requirements-emulator.txt").read_text()
    assert 'optional-dependencies.emulator = { file = ["requirements-emulator.txt"] }' in (ROOT / "pyproject.toml").read_text()
