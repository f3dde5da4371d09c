"""Check that the lock files pin what requirements*.txt pin, each with hashes.

    python scripts/check_lock.py        # exit 1 with one line per disagreement

``requirements.lock`` must hold every pin of ``requirements.txt``;
``requirements-dev.lock`` every pin of ``requirements-dev.txt`` and of the files
it includes (``-r``). Any disagreement means a requirements file was edited
without regenerating the locks: run ``make lock``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"requirements.lock": "requirements.txt", "requirements-dev.lock": "requirements-dev.txt"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(path: Path) -> dict[str, str]:
    """name -> version of every ``==`` line of a requirements file and the files it includes."""
    pins: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith(("-r ", "--requirement ")):
            pins.update(requirement_pins(path.parent / line.split(None, 1)[1]))
            continue
        match = _PIN.match(line)
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def lock_pins(path: Path) -> dict[str, tuple[str, bool]]:
    """name -> (version, has hashes) of every package of a lock file."""
    pins: dict[str, tuple[str, bool]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        match = _PIN.match(line)
        if match:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            pins[normalize(match.group(1))] = (match.group(2), "--hash=sha256:" in line + following)
    return pins


def problems(root: Path = ROOT) -> list[str]:
    found = []
    for lock_name, requirements_name in LOCKS.items():
        lock_path = root / lock_name
        if not lock_path.exists():
            found.append(f"{lock_name} is missing")
            continue
        locked = lock_pins(lock_path)
        for name, version in sorted(requirement_pins(root / requirements_name).items()):
            if name not in locked:
                found.append(f"{name}=={version} ({requirements_name}) is not in {lock_name}")
            elif locked[name][0] != version:
                found.append(f"{name}=={version} ({requirements_name}) but {lock_name} has {locked[name][0]}")
        found += [f"{name} has no hash in {lock_name}" for name, (_, hashed) in sorted(locked.items()) if not hashed]
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(f"lock out of date: {line}", file=sys.stderr)
    if found:
        print("run `make lock` to regenerate requirements.lock and requirements-dev.lock, and commit them",
              file=sys.stderr)
        return 1
    print("requirements.lock and requirements-dev.lock agree with requirements*.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
