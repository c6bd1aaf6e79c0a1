"""Helpers shared by the benchmarks: interleaved rounds, and a results table."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Result:
    name: str
    rates: list[float] = field(default_factory=list)  # operations per second, one per round

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


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
    variants: dict[str, Callable[[], None]], *, rounds: int, seconds: float, threads: int
) -> dict[str, Result]:
    """Run the variants in turn, round after round, so drift affects all alike."""
    results = {name: Result(name) for name in variants}
    for name, op in variants.items():  # warm up every pool and cache
        run_for(op, min(0.2, seconds), threads)
    for _ in range(rounds):
        for name, op in variants.items():
            results[name].rates.append(run_for(op, seconds, threads))
    return results


def table(title: str, results: dict[str, Result], baseline: str) -> str:
    base = results[baseline].rate
    lines = [title, f"  {'variant':<28} {'ops/s':>10} {'us/op':>9} {'vs ' + baseline:>16}"]
    for r in results.values():
        lines.append(
            f"  {r.name:<28} {r.rate:>10.0f} {1e6 / r.rate:>9.1f} {r.rate / base:>15.3f}x"
        )
    return "\n".join(lines)
