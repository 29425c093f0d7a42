"""The floors hold: decisions import no I/O, the configuration and what sits beside the
floors import no floor, the Redis floor no adapter, and adapters reach into nobody's
private names. (What a module loads through others at import time: test_imports.py.)"""

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


def _modules_imported(path: Path) -> list[str]:
    """The package's modules ``path`` imports, as dotted names: ``from .. import keys``
    names ``redis_middleware.keys``, a name taken from a module names that module."""
    out = []
    for module, names, level in _imports(path):
        target = _absolute(path, module, level)
        folder = PACKAGE.parent.joinpath(*target.split("."))
        submodules = [f"{target}.{n}" for n in names
                      if folder.joinpath(n).is_dir() or folder.joinpath(f"{n}.py").is_file()]
        out += submodules or [target]
    return [m for m in out if m.split(".")[0] == "redis_middleware"]


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# The configuration stands beside the floors, below the core: it may use these alone.
CONFIG_MAY_IMPORT = ("redis_middleware.config", "redis_middleware.errors",
                     "redis_middleware.keys", "redis_middleware._memo")
BESIDE_THE_FLOORS = ("redis_middleware.errors", "redis_middleware.keys",
                     "redis_middleware._memo")
ADAPTERS = ("redis_middleware.asgi", "redis_middleware.wsgi", "redis_middleware.flask",
            "redis_middleware.django")


@pytest.mark.parametrize("path", sorted((PACKAGE / "config").rglob("*.py")),
                         ids=lambda p: p.name)
def test_the_configuration_imports_nothing_from_the_floors(path: Path) -> None:
    for module in _modules_imported(path):
        assert _within(module, CONFIG_MAY_IMPORT), f"config/{path.name} imports {module}"


@pytest.mark.parametrize("path", [PACKAGE / "errors.py", PACKAGE / "keys.py",
                                  PACKAGE / "_memo.py"], ids=lambda p: p.name)
def test_what_sits_beside_the_floors_imports_no_floor(path: Path) -> None:
    """So that the core, which may import them, reaches no floor above it through them."""
    for module in _modules_imported(path):
        assert _within(module, BESIDE_THE_FLOORS), f"{path.name} imports {module}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "_redis").rglob("*.py")),
                         ids=lambda p: p.name)
def test_the_redis_floor_never_imports_an_adapter(path: Path) -> None:
    for module in _modules_imported(path):
        assert not _within(module, ADAPTERS), f"_redis/{path.name} imports {module}"


@pytest.mark.parametrize("path", [*_files("asgi"), *_files("wsgi"), *_files("django"),
                                  PACKAGE / "flask.py"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_adapters_import_no_private_name(path: Path) -> None:
    for module, names, _ in _imports(path):
        private = [n for n in names if n.startswith("_") and n != "__future__"]
        assert not private, f"{path.name} imports {private} from {module}"


def test_the_two_sides_have_the_same_modules() -> None:
    assert [p.name for p in _files("asgi")] == [p.name for p in _files("wsgi")]
