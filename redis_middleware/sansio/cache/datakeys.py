"""The data cache's keys: a call's arguments, bound to the function's parameters, fill
a ``str.format`` template (or make the default key), each value escaped.

``key="user:{user_id}:profile"`` for ``load_profile(42)`` renders ``user:42:profile``.
The template's own text is the developer's and kept as written (``{{...}}`` makes a
Redis hash tag); each argument's text goes through :func:`keys.escape` unless it is
already short and key-safe, so a ``:``, a brace, a glob character, a newline or a
10 KB string cannot split the key, open a hash tag or grow it: two different argument
values never render the same key.
"""

from __future__ import annotations

import inspect
import re
import string
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ...keys import escape

__all__ = ["Binder", "DefaultKey", "KeyTemplate", "escape_part"]

_FORMATTER = string.Formatter()
_SAFE_TEXT = re.compile(r"[A-Za-z0-9._\-@]{0,96}")  # what escape() leaves as it is
_ROOT = re.compile(r"[^.\[]*")
_P = inspect.Parameter
_PLAIN = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)


def escape_part(text: str) -> str:
    """``keys.escape``, skipped for text it would leave unchanged (the common case)."""
    return text if _SAFE_TEXT.fullmatch(text) else escape(text)


class Binder:
    """Binds a call's arguments to a function's parameter names, defaults applied.

    ``inspect.Signature.bind`` costs microseconds per call; functions of plain
    parameters (no ``*args``/``**kwargs``) take a dictionary-only path, and anything
    unusual (a missing or duplicate argument) falls back to ``bind`` for its error.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self.signature = inspect.signature(function)
        params = list(self.signature.parameters.values())
        self.params = params
        self.names = tuple(p.name for p in params)
        self._positional = tuple(p.name for p in params
                                 if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD))
        self._index = {name: i for i, name in enumerate(self._positional)}
        self._keyword = frozenset(p.name for p in params
                                  if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY))
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}
        self._plain = all(p.kind in _PLAIN for p in params)
        self._all_positional = self._plain and len(self._positional) == len(params)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if not kwargs and self._all_positional and len(args) == len(self.names):
            return dict(zip(self.names, args, strict=True))  # the common call: every argument
        if self._plain and len(args) <= len(self._positional):
            bound = dict(self._defaults)
            bound.update(zip(self._positional, args, strict=False))
            given = len(args)
            for name, value in kwargs.items():
                if name not in self._keyword or self._index.get(name, given) < given:
                    return self._slow(args, kwargs)  # raises the usual TypeError
                bound[name] = value
            if len(bound) == len(self.names):
                return bound
        return self._slow(args, kwargs)

    def _slow(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)


class KeyTemplate:
    """A ``str.format`` template whose fields name parameters (``{user_id}``,
    ``{user.id}``, ``{ids[0]}``, ``{price:.2f}``, ``{name!r}``).

    ``escaped``: argument text is escaped (keys); tags render plain text, which the tag's
    Redis key escapes as a whole, so ``invalidate(tags=[f"user:{uid}"])`` matches
    whatever ``uid`` holds.
    """

    def __init__(self, template: str, names: Collection[str], *, escaped: bool = True) -> None:
        if not isinstance(template, str) or not template:
            raise ValueError("a key template is a non-empty str")
        self.template = template
        self.escaped = escaped
        parts: list[tuple[str, str | None, str, str | None, str]] = []
        try:
            parsed = list(_FORMATTER.parse(template))
        except ValueError as exc:
            raise ValueError(f"key template {template!r}: {exc}") from None
        for literal, field, spec, conversion in parsed:
            if field is None:
                parts.append((literal, None, "", None, ""))
                continue
            root = _ROOT.match(field).group()  # type: ignore[union-attr]
            if not root or root.isdigit():
                raise ValueError(f"key template {template!r}: fields name parameters "
                                 f"({{user_id}}), not positions ({{{field}}})")
            if root not in names:
                raise ValueError(f"key template {template!r}: {{{root}}} is not a parameter "
                                 f"of the function (its parameters: {', '.join(names)})")
            if "{" in (spec or ""):
                raise ValueError(f"key template {template!r}: nested fields are not allowed")
            parts.append((literal, root, field[len(root):], conversion, spec or ""))
        self._parts = tuple(parts)
        self.fields = frozenset(p[1] for p in parts if p[1] is not None)

    def render(self, bound: Mapping[str, Any]) -> str:
        out: list[str] = []
        for literal, root, path, conversion, spec in self._parts:
            if literal:
                out.append(literal)
            if root is None:
                continue
            value = bound[root]
            if path:
                value = _FORMATTER.get_field(root + path, (), {root: value})[0]
            if conversion:
                value = _FORMATTER.convert_field(value, conversion)
            text = value if type(value) is str and not spec else format(value, spec)
            out.append(escape_part(text) if self.escaped else text)
        return "".join(out)


class DefaultKey:
    """``<module>.<qualname>:<param>=<value>:...``, values as ``str()`` (``repr()`` for
    ``*args``, and of the sorted items for ``**kwargs``), escaped.

    A first parameter named ``self`` or ``cls`` (a method) is left out, unless the
    object defines ``__cache_key__()``: then its answer stands for the object.
    """

    def __init__(self, function: Callable[..., Any], binder: Binder) -> None:
        self.prefix = f"{function.__module__}.{function.__qualname__}"
        params: list[tuple[str, int]] = []
        for i, p in enumerate(binder.params):
            if i == 0 and p.name in ("self", "cls"):
                params.append((p.name, 1))
            elif p.kind == _P.VAR_POSITIONAL:
                params.append((p.name, 2))
            elif p.kind == _P.VAR_KEYWORD:
                params.append((p.name, 3))
            else:
                params.append((p.name, 0))
        self._params = tuple(params)

    def render(self, bound: Mapping[str, Any]) -> str:
        out = [self.prefix]
        for name, kind in self._params:
            value = bound[name]
            if kind == 1:
                own = getattr(value, "__cache_key__", None)
                if own is None:
                    continue
                value = own()
            if kind == 2:
                text = repr(value)
            elif kind == 3:
                text = repr(sorted(value.items()))
            else:
                text = value if type(value) is str else str(value)
            out.append(f":{name}={escape_part(text)}")
        return "".join(out)
