"""The documentation cannot drift: the settings table is generated, every sample runs."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from redis_middleware import Settings
from redis_middleware.config.reference import settings_table

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def test_configuration_page_holds_the_generated_table() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert settings_table() in page, "run: redis-middleware config, and paste into the page"


def test_every_environment_variable_is_documented() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    for f in fields(Settings):
        assert f"`{f.metadata['env']}`" in page


SAMPLES = [
    pytest.param(page, i, code, id=f"{page.name}-{i}")
    for page in PAGES for i, code in enumerate(BLOCK.findall(page.read_text()))
]


@pytest.mark.parametrize(("page", "index", "code"), SAMPLES)
def test_code_samples_run(page: Path, index: int, code: str,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("REDIS")]:
        monkeypatch.delenv(name)
    from redis_middleware.sansio import metrics

    monkeypatch.setattr(metrics, "hook", None)  # a sample that enables metrics: undone after
    import sys
    import types

    # A real module: frameworks resolve a handler's annotations through sys.modules.
    module = types.ModuleType(f"docs_sample_{index}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, f"{page.name}#{index}", "exec"), module.__dict__)


def test_there_are_samples() -> None:
    assert len(SAMPLES) >= 10
