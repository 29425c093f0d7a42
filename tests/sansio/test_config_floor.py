"""Configuration is the floor under the core: it imports nothing from the core, and
neither it nor the rate-limit room loads an I/O library or a framework when imported."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "redis_middleware" / "config"
REFUSED = ("redis", "hiredis", "limits", "asyncio", "ssl", "fakeredis", "starlette",
           "flask", "werkzeug", "django", "litestar")


def _modules_imported(path: Path) -> list[tuple[str, int, bool]]:
    """(module as written, relative level, at module level) of every import in ``path``,
    those inside functions too."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, 0, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level, id(node) in top))
    return out


@pytest.mark.parametrize("path", sorted(CONFIG.glob("*.py")), ids=lambda p: p.name)
def test_configuration_imports_nothing_from_the_core(path: Path) -> None:
    for module, level, _ in _modules_imported(path):
        absolute = module if level == 0 else (
            ".".join(["redis_middleware", "config"][: 3 - level] + ([module] if module else [])))
        assert not absolute.startswith("redis_middleware.sansio"), f"{path.name}: {module}"


@pytest.mark.parametrize("path", sorted(CONFIG.glob("*.py")), ids=lambda p: p.name)
def test_configuration_imports_io_libraries_only_where_it_needs_them(path: Path) -> None:
    for module, level, at_top in _modules_imported(path):
        if level == 0 and at_top:
            assert module.split(".")[0] not in REFUSED, f"{path.name} imports {module}"


_PROGRAM = """
import importlib, pkgutil, sys

refused = set(sys.argv[1].split(","))


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in refused:
            raise ImportError("refused: " + name)
        return None


sys.meta_path.insert(0, Refuse())
import redis_middleware.config as config
import redis_middleware.sansio.ratelimit as ratelimit

names = [m.name for package in (config, ratelimit)
         for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
from redis_middleware import Settings
from redis_middleware.sansio.ratelimit.core import RateLimitCore
from redis_middleware.sansio.request import RequestInfo

core = RateLimitCore(Settings(ratelimit_key="user_or_ip"))
request = RequestInfo("GET", "/", b"", (), "192.0.2.1", "http")
assert core.identity(request, lambda: None) == "ip:192.0.2.1"
print(len(names), sorted(m for m in sys.modules if m.split(".")[0] in refused))
"""


def test_configuration_and_the_rate_limit_room_import_with_io_libraries_refused() -> None:
    """Every module of config/ and sansio/ratelimit/ imports, and default settings and a
    rate-limit core are built, in a process that refuses redis-py, hiredis, limits,
    asyncio, ssl, fakeredis and the web frameworks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _PROGRAM, ",".join(REFUSED)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) >= 10 and loaded.strip() == "[]"
