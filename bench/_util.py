"""Shared helpers for the benchmarks in bench/: timing, medians, a table, the JSON line.

Every benchmark prints a readable table first and, as its very last line, exactly one
JSON object with its figures, so scripts can read ``tail -n 1``.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Call `fn` once; return (seconds, result), measured with time.perf_counter."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass
class Runs:
    """Wall-clock seconds (perf_counter) and this process's CPU seconds, one per run."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.wall)


def measure(fn: Callable[[], Any], runs: int, *, setup: Callable[[], Any] | None = None,
            collect: bool = True) -> Runs:
    """Time `runs` calls of `fn` (after an untimed `setup` each); garbage is collected between.

    CPU time is recorded beside wall time: on a busy machine the wall figure grows with
    the load while the CPU figure stays close to the code's own cost.
    """
    result = Runs()
    for _ in range(runs):
        if setup is not None:
            setup()
        if collect:
            gc.collect()
        cpu = time.process_time()
        start = time.perf_counter()
        fn()
        result.wall.append(time.perf_counter() - start)
        result.cpu.append(time.process_time() - cpu)
    return result


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """min-max of the runs, as a short string, to show how stable a median is."""
    return f"{fmt_seconds(min(values))} .. {fmt_seconds(max(values))}"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def machine() -> str:
    """One line describing where the figures were taken, with the current load average."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.system()} {platform.machine()}, {cores} cores, "
            f"Python {platform.python_version()} ({platform.python_implementation()}){load}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                file: Any = None) -> None:
    """A plain-text table with columns sized to their contents."""
    out = file or sys.stdout
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)), file=out)
    print(line, file=out)
    for row in cells[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), file=out)


def print_json_line(figures: dict[str, Any]) -> None:
    """The benchmark's last line: one JSON object (floats rounded to 6 digits)."""
    clean = {k: round(v, 6) if isinstance(v, float) else v for k, v in figures.items()}
    sys.stdout.flush()
    print(json.dumps(clean, ensure_ascii=False), flush=True)


class GcTimer:
    """Time spent in the cyclic garbage collector while the block runs (via gc.callbacks).

    A profiler charges a collection to whichever function happened to allocate when the
    threshold tripped, so GC cost is easy to misread as the cost of unrelated code.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = self.clock()
        else:
            self.seconds += self.clock() - self._start
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


# -- pass timing --------------------------------------------------------------------------

@dataclass
class PassTimer:
    """Wraps functions with perf_counter timers; reports exclusive time per named pass.

    Nested passes are subtracted from their parents, so the exclusive times add up to the
    wall time of the outermost pass. Only wrap functions called at most a few thousand
    times per run: each call costs about a microsecond of overhead. ``clock`` may be
    ``time.process_time`` to count CPU time only (steadier on a busy machine).
    """

    clock: Callable[[], float] = time.perf_counter
    inclusive: dict[str, float] = field(default_factory=dict)
    exclusive: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _stack: list[list[float]] = field(default_factory=list)
    _patched: list[tuple[Any, str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.inclusive.clear()
        self.exclusive.clear()
        self.calls.clear()

    def wrap_if_present(self, owner: Any, attr: str, name: str) -> bool:
        """Like `wrap`, but skip (and return False) when the code under test no longer has
        ``owner.attr``: a benchmark outlives the functions it once timed."""
        present = attr in owner.__dict__ if isinstance(owner, type) else hasattr(owner, attr)
        if present:
            self.wrap(owner, attr, name)
        return present

    def wrap(self, owner: Any, attr: str, name: str, *, consume: bool = False) -> None:
        """Replace ``owner.attr`` by a timed version (``consume``: drain a returned iterator)."""
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        func = original.__func__ if isinstance(original, staticmethod | classmethod) else original
        timed_func = self.timed(func, name, consume=consume)
        if isinstance(original, staticmethod):
            timed_func = staticmethod(timed_func)
        elif isinstance(original, classmethod):
            timed_func = classmethod(timed_func)
        setattr(owner, attr, timed_func)
        self._patched.append((owner, attr, original))

    def replace(self, owner: Any, attr: str, value: Any) -> None:
        """Set ``owner.attr`` to `value` until :meth:`restore` (e.g. a tuple of timed hooks)."""
        self._patched.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    def timed(self, func: Callable[..., Any], name: str, *,
              consume: bool = False) -> Callable[..., Any]:
        stack, clock = self._stack, self.clock

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = [0.0]
            stack.append(frame)
            start = clock()
            try:
                result = func(*args, **kwargs)
                if consume:
                    result = list(result)
                return result
            finally:
                elapsed = clock() - start
                stack.pop()
                if stack:
                    stack[-1][0] += elapsed
                self.inclusive[name] = self.inclusive.get(name, 0.0) + elapsed
                self.exclusive[name] = self.exclusive.get(name, 0.0) + elapsed - frame[0]
                self.calls[name] = self.calls.get(name, 0) + 1

        wrapper.__wrapped__ = func  # type: ignore[attr-defined]
        return wrapper

    @contextmanager
    def region(self, name: str) -> Iterator[None]:
        """Time a block as a pass of its own."""
        frame = [0.0]
        self._stack.append(frame)
        start = self.clock()
        try:
            yield
        finally:
            elapsed = self.clock() - start
            self._stack.pop()
            if self._stack:
                self._stack[-1][0] += elapsed
            self.inclusive[name] = self.inclusive.get(name, 0.0) + elapsed
            self.exclusive[name] = self.exclusive.get(name, 0.0) + elapsed - frame[0]
            self.calls[name] = self.calls.get(name, 0) + 1

    def restore(self) -> None:
        """Put every wrapped function back, newest first."""
        while self._patched:
            owner, attr, original = self._patched.pop()
            setattr(owner, attr, original)


@dataclass
class ScratchPostgres:
    """A benchmark's own PostgreSQL database (dropped and made anew), or why there is none."""

    admin_url: str
    name: str
    url: str | None = None
    note: str | None = None

    @staticmethod
    def psycopg_dsn(url: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def _recreate(self, create: bool) -> None:
        import psycopg

        with psycopg.connect(self.psycopg_dsn(self.admin_url), autocommit=True,
                             connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            if create:
                conn.execute(f'CREATE DATABASE "{self.name}"')

    def create(self) -> bool:
        from sqlalchemy.engine import make_url

        try:
            self._recreate(True)
        except Exception as exc:  # unreachable, no driver, no rights: skip the PG figures
            self.note = f"PostgreSQL skipped: {type(exc).__name__}: {exc}".strip()
            return False
        self.url = make_url(self.admin_url).set(database=self.name).render_as_string(
            hide_password=False)
        return True

    def connect(self) -> Any:
        import psycopg

        assert self.url is not None
        return psycopg.connect(self.psycopg_dsn(self.url))

    def drop(self) -> None:
        if self.url is None:
            return
        try:
            self._recreate(False)
        except Exception as exc:
            print(f"warning: could not drop database {self.name}: {exc}", file=sys.stderr)
        self.url = None
