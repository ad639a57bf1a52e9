"""Calling plugin hooks that may be sync or async, never blocking the event loop."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import anyio

__all__ = ["call_hook", "is_async", "is_default"]

T = TypeVar("T")


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` function or bound method."""
    return inspect.iscoroutinefunction(fn)


def is_default(fn: Callable[..., Any], default: Callable[..., Any]) -> bool:
    """Whether the bound method ``fn`` is the base class's no-op ``default``."""
    return getattr(fn, "__func__", None) is default


async def call_hook(
    fn: Callable[..., Awaitable[T] | T],
    *args: Any,
    default: Callable[..., Any] | None = None,
    limiter: anyio.CapacityLimiter | None = None,
) -> T:
    """Run ``fn(*args)``: awaited on the loop if async, else in a worker thread.

    A hook left as the base class's ``default`` is not called at all (saves a thread hop).
    """
    if default is not None and is_default(fn, default):
        return cast(T, None)
    if is_async(fn):
        return await cast(Awaitable[T], fn(*args))
    result = await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
    if inspect.isawaitable(result):
        return await result
    return result
