"""The package's dependency rule, read from the code: no import cycles, imports only point down.

Layers, from the bottom (see the README's Architecture section):

* foundation: ``config``, ``db``, ``models``, ``migrate``, ``logging_setup``, ``metrics``, ``tokens``,
  ``log_redaction``
* protocol: ``gladia`` (Gladia's wire protocol only) and ``audio``
* domain: ``jobs``, ``ingest``, ``reconcile``, ``reports``, ``auth``, ``transcripts``, ``retention``
* surfaces: ``web``, ``worker``, ``cli``, and the entry points ``demo`` ``wsgi`` and ``gunicorn_conf``
* ``emulator``: a separate Gladia-compatible server that only the CLI and the demo start

Every import counts, at module level or inside a function (a lazy import is still a
dependency, and a cycle hidden in a function is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "webhook_service"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

FOUNDATION = {"config", "db", "models", "migrate", "logging_setup", "metrics", "tokens",
              "log_redaction"}
PROTOCOL = {"gladia", "audio"}
DOMAIN = {"jobs", "ingest", "reconcile", "reports", "auth", "transcripts", "retention"}
SURFACES = {"web", "worker", "cli", "demo", "wsgi", "gunicorn_conf"}
LAYERS = [FOUNDATION, PROTOCOL, DOMAIN, SURFACES]
# What the protocol layer's Gladia package may never reach: the store, the tasks, the web.
GLADIA_FORBIDDEN = {"models", "db", "jobs", "ingest", "reconcile", "reports", "worker", "web", "cli"}
# Surfaces that may start the emulator.
EMULATOR_USERS = {"cli", "demo", "emulator"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``from X import ...`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def collect_imports(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports (submodules named by ``from pkg import sub`` included)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                # `from pkg import sub` depends on the submodule; `from pkg.mod import name` on pkg.mod.
                base = resolve(name, is_package, node)
                candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                              for alias in node.names]
            else:
                continue
            for candidate in candidates:
                # The longest prefix that is a module of the package.
                while candidate and candidate not in files:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int | None:
    for index, members in enumerate(LAYERS):
        if top(module) in members:
            return index
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the dependency rule, as 'importer -> imported: why'."""
    problems = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            why = None
            if top(importer) == "gladia" and top(target) in GLADIA_FORBIDDEN:
                why = "gladia/ is Gladia's protocol only: no store, tasks or web"
            elif top(target) == "emulator" and top(importer) not in EMULATOR_USERS:
                why = "only the CLI and the demo start the emulator"
            elif top(importer) == "emulator" and top(target) not in PROTOCOL | {"emulator", ""}:
                why = "the emulator is Gladia's side: it may share the protocol layer, nothing else"
            elif layer(importer) is not None and layer(target) is not None and layer(target) > layer(importer):
                why = "imports point down: surfaces -> domain -> protocol -> foundation"
            elif layer(importer) is None and top(importer) not in ("emulator", ""):
                why = f"{top(importer)!r} belongs to no layer: add it to one in this test"
            if why:
                problems.append(f"{importer} -> {target}: {why}")
    return problems


def test_the_package_has_no_import_cycle():
    assert cycles(collect_imports(ROOT)) == []


def test_imports_follow_the_dependency_rule():
    assert violations(collect_imports(ROOT)) == []


def test_every_top_level_module_belongs_to_a_layer():
    names = {top(m) for m in collect_imports(ROOT)} - {""}
    assert names - set().union(*LAYERS) - {"emulator"} == set()


# ------------------------------------------------------------- the checker catches what it must


def write_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / PACKAGE
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


SOUND_TREE = {
    "__init__.py": "",
    "models.py": "",
    "gladia/__init__.py": "",
    "gladia/client.py": "",
    "gladia/stream.py": "from .client import Client\n",
    "jobs/__init__.py": "",
    "jobs/streaming.py": "from ..gladia.stream import LiveStream\nfrom ..models import Job\n",
    "worker/__init__.py": "",
    "worker/tasks.py": "from ..jobs.streaming import run_job\n",
}


def test_a_sound_tree_passes(tmp_path):
    graph = collect_imports(write_tree(tmp_path, SOUND_TREE))
    assert graph["webhook_service.worker.tasks"] == {"webhook_service.jobs.streaming"}
    assert cycles(graph) == [] and violations(graph) == []


@pytest.mark.parametrize("module, source, expected", [
    ("gladia/stream.py", "from ..models import Job\n", "gladia/ is Gladia's protocol only"),
    ("gladia/stream.py", "def f():\n    from ..jobs import streaming\n", "gladia/ is Gladia's protocol only"),
    ("jobs/streaming.py", "def f():\n    from ..worker.tasks import x\n", "imports point down"),
    ("models.py", "import webhook_service.jobs.streaming\n", "imports point down"),
    ("jobs/streaming.py", "from ..emulator import start\n", "only the CLI and the demo start the emulator"),
])
def test_a_forbidden_import_is_reported(tmp_path, module, source, expected):
    files = dict(SOUND_TREE, **{"emulator/__init__.py": "start = None\n"})
    files[module] = files.get(module, "") + source
    problems = violations(collect_imports(write_tree(tmp_path, files)))
    assert any(expected in problem for problem in problems), problems


def test_a_cycle_through_a_function_level_import_is_reported(tmp_path):
    files = dict(SOUND_TREE)
    files["jobs/slots.py"] = "def lease():\n    from .streaming import x\n"
    files["jobs/streaming.py"] += "from . import slots\n"
    assert cycles(collect_imports(write_tree(tmp_path, files))) == [
        ["webhook_service.jobs.slots", "webhook_service.jobs.streaming"]]
