"""Each store method written once: how one definition becomes a method of every store.

As redis-py writes each command once and lets the client decide how to send it, a store method is
written once, in one of the operation mixins (``accounts.py``, ``team_ops.py``, ``refund_ops.py``,
``plans.py``, ``operations.py``), with its public name, signature and docstring. Its body does no I/O:

- :func:`command`: the body validates the arguments and returns the one
  :class:`~ducto_redis.core.Call` to make (script, KEYS, ARGV, reply parser);
- :func:`flow`: the body is a generator of several steps (a refund: find the debit in its stream,
  else in the ledger database, then credit it back). It yields each step and receives its result
  (``x = yield from one(call)``: typed as the call's result); what it returns is the method's result.
  A step is a ``Call``; a list of calls (:func:`many`: one round trip, results in order; or a
  :class:`~ducto_redis.core.Deferred` of them, validated and built as they are sent);
  :func:`blocking` (a blocking function, e.g. a PostgreSQL query); :func:`client_io` (other I/O on
  the store's Redis client: loading the function library). An error of a step is thrown into the
  flow at its ``yield``, so a flow may catch it.

A definition's ``self`` is the store: it reads ``self.core`` (keys, scripts, the configuration
argument, the call builders several methods share) and ``self.settings``, never the client, so every
rule (validation, defaults) stays in the definition or a builder it shares.

The stores differ only in how they run a step: a :class:`SyncRunner` (RedisStore, MemoryStore)
through its ``_run`` / ``_run_many`` seams and plain calls, an :class:`AsyncRunner`
(AsyncRedisStore, AsyncMemoryStore) through its ``async`` seams, blocking functions in a worker
thread. When a runner class is created, every operation it inherits becomes a plain method of the
class (``def``, or ``async def``) with the definition's name, signature and docstring, so calling a
store method costs what a hand-written one did.

Typing (mypy strict): ``command``/``flow`` return an :class:`Operation` descriptor generic in the
definition's parameters ``P`` and result ``T``. Its ``__get__`` is overloaded on the instance's type:
on a :class:`SyncRunner` it is ``Callable[P, T]`` (``RedisStore().charge(...)`` is a
``DeductionResult``), on an :class:`AsyncRunner` ``Callable[P, Coroutine[Any, Any, T]]`` (awaited:
a ``DeductionResult``; not awaited: mypy's unused-coroutine error), on the class the descriptor.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from .core import Call, Deferred, StoreCore
from .settings import Settings

if TYPE_CHECKING:
    from .ledger.database import LedgerReader
    from .models import SetupResult

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Blocking(Generic[T]):
    """A step calling a blocking function: in place on a sync store, in a worker thread on an async one."""

    fn: Callable[..., T]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ClientIo(Generic[T]):
    """A step of I/O on the store's Redis client other than a script call: ``sync(client)`` on a sync
    store, ``await aio(client)`` on an async one."""

    sync: Callable[[Any], T]
    aio: Callable[[Any], Awaitable[T]]


Step = Call[Any] | list[Call[Any]] | Deferred[Any] | Blocking[Any] | ClientIo[Any]
Flow = Generator[Step, Any, T]
"""A multi-step operation: yields :data:`Step` s, receives their results, returns the method's result."""


def one(call: Call[T]) -> Flow[T]:
    """In a flow, ``x = yield from one(call)``: run one script call; ``x`` is its parsed result."""
    return (yield call)  # type: ignore[no-any-return]  # the runner sends back call.parse(reply): a T


def many(calls: list[Call[T]] | Deferred[T]) -> Flow[list[T]]:
    """In a flow, run these calls in one round trip; their results come back in order."""
    return (yield calls)  # type: ignore[no-any-return]


def blocking(fn: Callable[..., T], *args: Any) -> Flow[T]:
    """In a flow, call a blocking function (a database query) without blocking an event loop."""
    return (yield Blocking(fn, args))  # type: ignore[no-any-return]


def client_io(sync: Callable[[Any], T], aio: Callable[[Any], Awaitable[T]]) -> Flow[T]:
    """In a flow, I/O on the store's Redis client that is not a script call (see :class:`ClientIo`)."""
    return (yield ClientIo(sync, aio))  # type: ignore[no-any-return]


class Operation(Generic[P, T]):
    """A store method written once (see the module docstring); made by :func:`command` or :func:`flow`."""

    def __init__(self, build: Callable[..., Any], is_flow: bool) -> None:
        self.build = build
        self.is_flow = is_flow
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Operation[P, T]: ...
    @overload
    def __get__(self, obj: SyncRunner, owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: AsyncRunner, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        # a runner class has its own plain method (see Runner.__init_subclass__): nothing else runs one
        raise AttributeError(f"{self.build.__qualname__} runs on a store, not on {type(obj).__name__}")


def command(build: Callable[Concatenate[Any, P], Call[T]]) -> Operation[P, T]:
    """A store method whose body returns the one :class:`Call` to make."""
    return Operation(build, is_flow=False)


def flow(build: Callable[Concatenate[Any, P], Flow[T]]) -> Operation[P, T]:
    """A store method whose body is a generator of steps (see the module docstring)."""
    return Operation(build, is_flow=True)


_RESULT_OF = re.compile(r"(?:Call|Flow)\[(.*)\]")


def _dress(method: Callable[..., Any], build: Callable[..., Any]) -> Callable[..., Any]:
    """The method as its definition: name, docstring, module, signature (result: the ``T`` of
    ``Call[T]`` / ``Flow[T]``), and ``__wrapped__`` (``inspect.getsource`` shows the definition)."""
    annotations = dict(build.__annotations__)
    returns = annotations.get("return")
    if isinstance(returns, str) and (m := _RESULT_OF.fullmatch(returns)):
        annotations["return"] = m.group(1)
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(method, attr, getattr(build, attr))
    method.__annotations__ = annotations
    method.__wrapped__ = build  # type: ignore[attr-defined]
    signature = inspect.signature(build)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=annotations.get("return", signature.return_annotation))
    return method


class StoreBase:
    """What every operation may use on a store: its core (keys, scripts, configuration, shared call
    builders) and settings. A store reads its ledger database through :meth:`_ledger_reader`."""

    core: StoreCore
    settings: Settings
    client: Any

    def _attach(self, client: Any, settings: Settings | None, overrides: dict[str, Any]) -> None:
        """The store's client, settings (``settings``, else the environment's, with ``overrides``
        validated) and core."""
        base = settings or Settings()
        self.settings = Settings.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self.client = client
        self.core = StoreCore(self.settings)

    def _ledger_reader(self) -> LedgerReader | None:
        """Finds one ledger entry by id once it has left the Redis stream: the PostgreSQL ledger,
        or None without a database URL (the embedded stores: their SQLite ledger)."""
        if not self.settings.database_url:
            return None
        from .ledger.database import PostgresLedger

        return PostgresLedger(self.settings.database_url, self.settings.ledger_schema)

    def _describe_setup(self, result: SetupResult) -> None:
        """What a store adds to its ``setup()`` report (the embedded stores: their SQLite ledger)."""


class Runner(StoreBase):
    """A store class: each operation it inherits becomes a plain method of it (:meth:`_method`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in dir(cls):
            op = inspect.getattr_static(cls, name)
            if isinstance(op, Operation):
                setattr(cls, name, _dress(cls._method(op.build, op.is_flow), op.build))

    @staticmethod
    def _method(build: Callable[..., Any], is_flow: bool) -> Callable[..., Any]:
        raise NotImplementedError


class SyncRunner(Runner):
    """Runs operations synchronously: a call through ``_run``, a list through ``_run_many``."""

    def _run(self, call: Call[T]) -> T:
        raise NotImplementedError

    def _run_many(self, calls: Sequence[Call[T]]) -> list[T]:
        raise NotImplementedError

    @staticmethod
    def _method(build: Callable[..., Any], is_flow: bool) -> Callable[..., Any]:
        if is_flow:
            def run_flow(self: SyncRunner, *args: Any, **kwargs: Any) -> Any:
                return self._drive(build(self, *args, **kwargs))

            return run_flow

        def run_call(self: SyncRunner, *args: Any, **kwargs: Any) -> Any:
            return self._run(build(self, *args, **kwargs))

        return run_call

    def _drive(self, steps: Flow[R]) -> R:
        """Run a flow: each step in turn, its result sent back (its error thrown in)."""
        try:
            step = next(steps)
            while True:
                try:
                    if isinstance(step, Call):
                        result: Any = self._run(step)
                    elif isinstance(step, (list, Deferred)):
                        result = self._run_many(step)
                    elif isinstance(step, Blocking):
                        result = step.fn(*step.args)
                    else:
                        result = step.sync(self.client)
                except Exception as exc:  # the flow may handle it; if not, it comes back out
                    step = steps.throw(exc)
                else:
                    step = steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class AsyncRunner(Runner):
    """Runs operations on an event loop: ``await _run``/``_run_many``; blocking steps in a thread."""

    async def _run(self, call: Call[T]) -> T:
        raise NotImplementedError

    async def _run_many(self, calls: Sequence[Call[T]]) -> list[T]:
        raise NotImplementedError

    @staticmethod
    def _method(build: Callable[..., Any], is_flow: bool) -> Callable[..., Any]:
        if is_flow:
            async def run_flow(self: AsyncRunner, *args: Any, **kwargs: Any) -> Any:
                return await self._drive(build(self, *args, **kwargs))

            return run_flow

        async def run_call(self: AsyncRunner, *args: Any, **kwargs: Any) -> Any:
            return await self._run(build(self, *args, **kwargs))

        return run_call

    async def _drive(self, steps: Flow[R]) -> R:
        """:meth:`SyncRunner._drive` with every step awaited."""
        try:
            step = next(steps)
            while True:
                try:
                    if isinstance(step, Call):
                        result: Any = await self._run(step)
                    elif isinstance(step, (list, Deferred)):
                        result = await self._run_many(step)
                    elif isinstance(step, Blocking):
                        result = await asyncio.to_thread(step.fn, *step.args)
                    else:
                        result = await step.aio(self.client)
                except Exception as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
