"""Helpers shared by the benchmarks: interleaved rounds, and a results table."""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Result:
    name: str
    rates: list[float] = field(default_factory=list)  # operations per second, one per round

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def mean_rate(self) -> float:
        """Operations per second over all rounds together (rounds are of equal length)."""
        return statistics.fmean(self.rates)


def round_arguments(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """The options every interleaved benchmark takes: round length, rounds, threads."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round (1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (5)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return args


class ThreadSlots:
    """Gives each benchmark thread its own slot (e.g. its own direct connection)."""

    def __init__(self, n: int) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._next = 0
        self._n = n

    def slot(self) -> int:
        s = getattr(self._local, "slot", None)
        if s is None:
            with self._lock:
                s = self._local.slot = self._next % self._n
                self._next += 1
        return int(s)


def run_for(op: Callable[[], None], seconds: float, threads: int) -> float:
    """Operations per second of ``op`` run by ``threads`` threads for ``seconds``."""
    counts = [0] * threads
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        n = 0
        try:
            while not stop.is_set():
                op()
                n += 1
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
        counts[i] = n

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def interleaved(
    variants: dict[str, Callable[[], None]], *, rounds: int, seconds: float, threads: int,
    seed: int | None = None,
) -> dict[str, Result]:
    """Run the variants in turn, round after round, each round starting with the next
    variant, so that drift (a table's dead rows, autovacuum, a busy neighbour) affects
    all alike. With ``seed``, each round runs them in a random order instead: for
    measurements whose noise comes in states that last about a round (where the
    scheduler puts client threads and server processes, unpinned), many short rounds in
    random order, so that no variant is favoured by its place."""
    import random

    rng = random.Random(seed)
    results = {name: Result(name) for name in variants}
    items = list(variants.items())
    for _name, op in items:  # warm up every pool and cache
        run_for(op, min(0.2, seconds), threads)
    for r in range(rounds):
        if seed is None:
            order = items[r % len(items):] + items[: r % len(items)]
        else:
            order = rng.sample(items, len(items))
        for name, op in order:
            results[name].rates.append(run_for(op, seconds, threads))
    return results


def mean_ratios(results: dict[str, Result], baseline: str) -> str:
    """Each variant's mean rate over all rounds against the baseline's, on one line."""
    base = results[baseline].mean_rate
    return "  mean over all rounds: " + ", ".join(
        f"{r.name} {r.mean_rate / base:.3f}x" for r in results.values() if r.name != baseline
    )


def table(title: str, results: dict[str, Result], baseline: str) -> str:
    base = results[baseline].rate
    lines = [title, f"  {'variant':<28} {'ops/s':>10} {'us/op':>9} {'vs ' + baseline:>16}"]
    for r in results.values():
        lines.append(
            f"  {r.name:<28} {r.rate:>10.0f} {1e6 / r.rate:>9.1f} {r.rate / base:>15.3f}x"
        )
    return "\n".join(lines)


def pin_cpus(lab: object) -> str:
    """Put this process on the first CPU and the lab's servers on the others (on a
    machine with two CPUs or more), and say so.

    On a small machine, whether a client thread and the server process it waits for
    share a CPU or wake each other across CPUs changes a loopback round trip by tens of
    microseconds, and the scheduler decides it differently from one round to the next:
    without pinning, the same code measured 210 and 370 us per write. Pinned, client and
    servers always talk across CPUs, like an application and its database on separate
    hosts, and the ratios hold still."""
    import os

    from replpool.testing._process import process_tree

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "one CPU: client and servers share it"
    client, servers = {cpus[0]}, set(cpus[1:])
    os.sched_setaffinity(0, client)
    for member in lab.members:  # type: ignore[attr-defined]
        pid = lab._server_pid(member)  # type: ignore[attr-defined]
        if pid is not None:
            for p in process_tree(pid):
                try:
                    os.sched_setaffinity(p, servers)
                except OSError:
                    pass  # a process that just exited
    return f"client on CPU {cpus[0]}, servers on CPU {', '.join(map(str, sorted(servers)))}"


def move_to_client_cpu(lab: object, member: object) -> str:
    """Put one lab member's server processes on the client's CPU (after
    :func:`pin_cpus`), so that it no longer shares a CPU with the others: on a machine of
    two CPUs, the way to give a replica capacity of its own."""
    import os

    from replpool.testing._process import process_tree

    client = sorted(os.sched_getaffinity(0))
    pid = lab._server_pid(member)  # type: ignore[attr-defined]
    if pid is None:
        return "member not running"
    for p in process_tree(pid):
        try:
            os.sched_setaffinity(p, client)
        except OSError:
            pass
    return f"{member.name} moved to CPU {', '.join(map(str, client))}"  # type: ignore[attr-defined]


async def arun_for(op: Callable[[], Awaitable[None]], seconds: float, tasks: int) -> float:
    """Operations per second of ``op`` run by ``tasks`` asyncio tasks for ``seconds``."""
    import asyncio

    counts = [0] * tasks
    stop = False

    async def worker(i: int) -> None:
        n = 0
        while not stop:
            await op()
            n += 1
        counts[i] = n

    start = time.perf_counter()
    workers = [asyncio.create_task(worker(i)) for i in range(tasks)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*workers)
    return sum(counts) / (time.perf_counter() - start)


async def ainterleaved(
    variants: dict[str, Callable[[], Awaitable[None]]], *, rounds: int, seconds: float, tasks: int
) -> dict[str, Result]:
    """:func:`interleaved` for asyncio variants, run by ``tasks`` tasks on the running loop."""
    results = {name: Result(name) for name in variants}
    items = list(variants.items())
    for _name, op in items:
        await arun_for(op, min(0.2, seconds), tasks)
    for r in range(rounds):
        for name, op in items[r % len(items):] + items[: r % len(items)]:
            results[name].rates.append(await arun_for(op, seconds, tasks))
    return results
