"""``DataCache.cached``: a function's calls cached by their arguments.

The wrapper renders the call's key (``sansio/cache/datakeys.py``) and fetches it as
``get_or_set`` does (``DataCache._fetch``: a plain fresh hit from the near cache or one
``GET``; anything else through the get_or_set flow, ``sansio/cache/datafill.py``), with
the call as its loader. It keeps the function's
signature and adds ``invalidate`` and ``key_for``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, cast

from .._memo import Memo
from ..sansio.cache.data import DataCore, Seconds, tag_list
from ..sansio.cache.datafill import Policy
from ..sansio.cache.datakeys import Binder, DefaultKey, KeyTemplate
from ..sansio.flow import Delegate

__all__ = ["Owner", "cached", "is_async"]

F = TypeVar("F", bound=Callable[..., Any])


def is_async(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None))  # noqa: B004 (an object with async __call__)


def no_tags() -> Sequence[str]:
    return ()


class Owner(Protocol):
    """What a cached function needs of its ``DataCache`` (``cache.py``): the core, a
    call's validated options, the fetch of a key (memory or Redis, else the get_or_set
    flow), and the delete of one."""

    core: DataCore

    def _policy(self, ttl: Seconds | None, stale: Seconds, early: float | bool, label: str
               ) -> Policy: ...

    def _fetch(self, key: str, policy: Policy, loader: Callable[[], Any],
               tags: Callable[[], Sequence[str]]) -> Any: ...

    async def _afetch(self, key: str, policy: Policy, loader: Callable[[], Delegate],
                      tags: Callable[[], Sequence[str]]) -> Any: ...

    def delete(self, key: str) -> bool: ...

    async def adelete(self, key: str) -> bool: ...


def cached(cache: Owner, ttl: Seconds | None, key: str | None,
           tags: Iterable[str] | str | None, stale: Seconds, early: float | bool,
           name: str | None) -> Callable[[F], F]:
    """The decorator of ``cache.cached(...)`` (its docstring says what it does)."""
    tag_texts = tag_list(tags)
    core = cache.core
    if tag_texts and core.raw:
        raise ValueError("raw values carry no tags")

    def decorate(function: F) -> F:
        if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
            raise TypeError("cached() wraps functions that return a value, not generators")
        binder = Binder(function)
        keyer = KeyTemplate(key, binder.names) if key is not None else DefaultKey(
            function, binder)
        templates = [KeyTemplate(t, binder.names, escaped=False) for t in tag_texts]
        label = name or f"{function.__module__}.{function.__qualname__}"
        policy = cache._policy(ttl, stale, early, label)
        memo: Memo[tuple[Any, ...], str] = Memo(4096)

        def render(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            if not kwargs:
                for arg in args:
                    if type(arg) is not int and type(arg) is not str:
                        break
                else:  # ints and strs alone: equal arguments render equal keys
                    found = memo.get(args)
                    if found is None:
                        found = memo.put(args, keyer.render(binder.bind(args, kwargs)))
                    return found
            return keyer.render(binder.bind(args, kwargs))

        def tags_of(args: tuple[Any, ...], kwargs: dict[str, Any]
                    ) -> Callable[[], Sequence[str]]:
            if not templates:
                return no_tags
            return lambda: [core.tag_key(t.render(binder.bind(args, kwargs)))
                            for t in templates]

        def key_for(*args: Any, **kwargs: Any) -> str:
            """The rendered key of a call with these arguments."""
            return render(args, kwargs)

        wrapper: Any
        invalidate: Callable[..., Any]
        if is_async(function):
            @functools.wraps(function)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                # The loader's delegate and the tags are made on a miss only.
                return await cache._afetch(render(args, kwargs), policy,
                                           lambda: _delegate(function, args, kwargs),
                                           tags_of(args, kwargs) if templates else no_tags)

            async def ainvalidate(*args: Any, **kwargs: Any) -> bool:
                return await cache.adelete(render(args, kwargs))

            wrapper, invalidate = awrapper, ainvalidate
        else:
            @functools.wraps(function)
            def swrapper(*args: Any, **kwargs: Any) -> Any:
                return cache._fetch(render(args, kwargs), policy,
                                    lambda: function(*args, **kwargs),
                                    tags_of(args, kwargs) if templates else no_tags)

            def sinvalidate(*args: Any, **kwargs: Any) -> bool:
                return cache.delete(render(args, kwargs))

            wrapper, invalidate = swrapper, sinvalidate
        invalidate.__doc__ = "Remove the cached result of a call with these arguments."
        wrapper.invalidate = invalidate
        wrapper.key_for = key_for
        wrapper.cache = cache
        return cast(F, wrapper)

    return decorate


def _delegate(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
              ) -> Delegate:
    """A call of an async ``function`` as the flow runs it (awaited by the asyncio driver)."""
    load = functools.partial(function, *args, **kwargs)
    return Delegate(load, load)
