"""The core and the configuration import with the I/O libraries and the web frameworks
blocked: each module imported in a fresh interpreter whose meta-path finder refuses them.
``test_layers.py`` reads the imports each file writes; this sees what importing a module
loads through the package's other modules, ``__init__`` included, and names the chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "redis_middleware"
BLOCKED = ("redis", "hiredis", "limits", "asyncio", "ssl", "fakeredis", "starlette", "flask",
           "werkzeug", "django", "litestar", "asgiref")


def _modules(*folders: str) -> list[str]:
    names = []
    for folder in folders:
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


CORE = _modules("sansio", "config")
# Needs redis-py and asyncio by design: the check must report it, or it checks nothing.
CONTROL = "redis_middleware._redis.connections"

# Run in a fresh interpreter. A blocked import is recorded with the modules whose top
# level was running, outermost first, even when the importer catches the ImportError.
# After a module that recorded one, the package, the modules of its chains and the
# other libraries its import loaded are forgotten, so that the next module's import runs
# its whole chain again (package __init__ first). What recorded nothing stays loaded:
# importing it again would record nothing either.
PROBE = r"""
import importlib, json, sys

blocked, targets = json.loads(sys.argv[1])
for name in [n for n in sys.modules if n.split(".")[0] in blocked]:
    del sys.modules[name]
attempts = []


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in blocked:
            return None
        chain, frame = [], sys._getframe(1)
        while frame is not None:
            module = frame.f_globals.get("__name__")
            if frame.f_code.co_name == "<module>" and module != "__main__":
                chain.append(module)
            frame = frame.f_back
        attempts.append(" -> ".join([*reversed(chain), name]))
        raise ModuleNotFoundError(f"{name} is blocked", name=name)


sys.meta_path.insert(0, Refuse())
report = {}
for target in targets:
    attempts.clear()
    before = set(sys.modules)
    try:
        module = importlib.import_module(target)
        error, where = None, module.__file__
    except Exception as exc:
        error, where = f"{type(exc).__name__}: {exc}", None
    report[target] = {"loads": list(dict.fromkeys(attempts)), "error": error, "file": where}
    if attempts or error:
        chains = {name for chain in attempts for name in chain.split(" -> ")[:-1]}
        for name in list(sys.modules):
            top = name.split(".")[0]
            if (top == "redis_middleware" or name in chains
                    or (name not in before and top not in sys.stdlib_module_names)):
                del sys.modules[name]
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def imports() -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([BLOCKED, [*CORE, CONTROL]])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_without_io_or_a_framework(imports: dict[str, Any],
                                                        module: str) -> None:
    found = imports[module]
    loads = "".join(f"\n  {chain}" for chain in found["loads"])
    assert not found["loads"], f"importing {module} loads a blocked library:{loads}"
    assert found["error"] is None, f"importing {module}: {found['error']}"
    assert Path(found["file"]).is_relative_to(PACKAGE)


def test_the_check_sees_what_the_redis_floor_loads(imports: dict[str, Any]) -> None:
    loads = imports[CONTROL]["loads"]
    assert any(CONTROL in chain.split(" -> ")[:-1] for chain in loads), loads
