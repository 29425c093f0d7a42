"""The floors hold: decisions import no I/O, adapters reach into nobody's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "redis_middleware"
FORBIDDEN_IN_CORE = {"redis", "hiredis", "asyncio", "socket", "ssl", "fakeredis", "starlette",
                     "flask", "werkzeug", "django", "litestar", "asgiref", "threading"}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module as written, names imported, relative level) of every import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [a.name for a in node.names], node.level))
    return out


def _files(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


def _absolute(path: Path, module: str, level: int) -> str:
    """The dotted name, inside the package, that a (relative) import in ``path`` names."""
    if level == 0:
        return module
    here = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)[:-1]
    base = here[: len(here) - (level - 1)]
    return ".".join([*base, module] if module else base)


# What the core may import from the package: itself, configuration, keys, errors, memos.
CORE_MAY_IMPORT = ("redis_middleware.sansio", "redis_middleware.config",
                   "redis_middleware.errors", "redis_middleware.keys", "redis_middleware._memo")


@pytest.mark.parametrize("path", sorted((PACKAGE / "sansio").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE / "sansio")))
def test_the_core_imports_no_io_and_no_framework(path: Path) -> None:
    for module, _, level in _imports(path):
        target = _absolute(path, module, level)
        if not target.startswith("redis_middleware"):
            assert target.split(".")[0] not in FORBIDDEN_IN_CORE, f"{path.name}: {module}"
        else:
            assert target == "redis_middleware" or target.startswith(CORE_MAY_IMPORT), (
                f"{path.name} imports {target} from above the core")


@pytest.mark.parametrize("path", _files("_redis"), ids=lambda p: p.name)
def test_the_redis_floor_never_imports_an_adapter(path: Path) -> None:
    for module, _, level in _imports(path):
        assert not (level == 2 and module.split(".")[0] in {"asgi", "wsgi", "flask", "django"}), (
            path.name)


@pytest.mark.parametrize("path", [*_files("asgi"), *_files("wsgi"), *_files("django"),
                                  PACKAGE / "flask.py"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_adapters_import_no_private_name(path: Path) -> None:
    for module, names, _ in _imports(path):
        private = [n for n in names if n.startswith("_") and n != "__future__"]
        assert not private, f"{path.name} imports {private} from {module}"


def test_the_two_sides_have_the_same_modules() -> None:
    assert [p.name for p in _files("asgi")] == [p.name for p in _files("wsgi")]
