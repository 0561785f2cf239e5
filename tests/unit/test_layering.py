"""The layers stay apart: faces reach the store only through ``podium.service``, and the service
imports no face. Read from the source with ``ast``, so an import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PODIUM = Path(__file__).resolve().parents[2] / "podium"
#: The faces and process management: they import the service and models, never the store.
FACES = sorted([*(PODIUM / "cli").rglob("*.py"), PODIUM / "tmux.py", PODIUM / "supervisor.py",
                PODIUM / "demo.py", PODIUM / "render.py",
                *(PODIUM / "mcp").rglob("*.py"), *(PODIUM / "tui").rglob("*.py"),
                *(PODIUM / "web").rglob("*.py")])
#: What the service must not import: the faces that sit on top of it.
SERVICE_MUST_NOT_IMPORT = ("podium.tmux", "podium.cli", "podium.mcp", "podium.tui",
                           "podium.web")


def _module_name(path: Path, root: Path = PODIUM.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = PODIUM.parent) -> set[str]:
    """Every module ``path`` (under ``root``) imports, by its full name: ``from a import b``
    counts as ``a`` and as ``a.b`` (``b`` may be a submodule); relative imports are resolved."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_faces_are_found():
    names = {_module_name(p) for p in FACES}
    assert {"podium.cli", "podium.tmux", "podium.supervisor", "podium.demo", "podium.render",
            "podium.mcp.server", "podium.mcp.config", "podium.tui.app", "podium.web.app",
            "podium.web.api"} <= names


@pytest.mark.parametrize("path", FACES, ids=_module_name)
def test_face_does_not_import_the_store(path):
    reached = sorted(m for m in imported_modules(path) if _within(m, "podium.store"))
    assert not reached, f"{_module_name(path)} imports {reached}: go through podium.service"


@pytest.mark.parametrize("path", sorted((PODIUM / "service").glob("*.py")), ids=_module_name)
def test_service_imports_no_face(path):
    reached = sorted(m for m in imported_modules(path)
                     if any(_within(m, face) for face in SERVICE_MUST_NOT_IMPORT))
    assert not reached, f"{_module_name(path)} imports {reached}: a face must be given to it"


def test_the_check_sees_every_kind_of_import(tmp_path):
    """The parser itself: plain, from, relative and function-level imports all count."""
    pkg = tmp_path / "podium" / "tui"
    pkg.mkdir(parents=True)
    probe = pkg / "probe.py"
    probe.write_text("import podium.store.sqlite\n"
                     "from podium import store\n"
                     "def f():\n"
                     "    from ..store.copy import copy_store\n"
                     "    from . import app\n")
    found = imported_modules(probe, tmp_path)
    assert {"podium.store.sqlite", "podium.store", "podium.store.copy",
            "podium.tui.app"} <= found


@pytest.mark.parametrize("path", FACES, ids=_module_name)
def test_face_does_not_reach_through_the_service_to_its_store(path):
    """``podium.store`` stays behind the service: a face asks the service, not its store."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reached = [node.lineno for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr == "store"]
    assert not reached, f"{_module_name(path)} uses .store at lines {reached}"
