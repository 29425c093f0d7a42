"""Generate the configuration reference table from ``Settings`` (docs cannot drift)."""

from __future__ import annotations

from dataclasses import MISSING, fields

from .settings import Settings

BEGIN = "<!-- settings-table:begin (generated: redis-middleware config) -->"
END = "<!-- settings-table:end -->"


def _default(value: object) -> str:
    if value is None:
        return "*(unset)*"
    if value == ():
        return "*(none)*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def settings_table() -> str:
    """The markdown table of every setting: variable, field, default, meaning."""
    rows = [
        BEGIN,
        "| Environment variable | `Settings` field | Default | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for f in fields(Settings):
        default = f.default if f.default is not MISSING else None
        shown = "`auto`" if f.name == "session_cookie_secure" else _default(default)
        if f.metadata["derived"] is not None:
            shown = f"`{f.metadata['derived'][1]}`"
        rows.append(f"| `{f.metadata['env']}` | `{f.name}` | {shown} | {f.metadata['doc']} |")
    rows.append(END)
    return "\n".join(rows)
