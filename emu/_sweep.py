"""Seed sweeps: run one guest under many seeds and group the seeds by outcome.

A seed fixes everything random in a run (``AT_RANDOM``, ``getrandom``, the thread
scheduler), so a run is a function of its seed, and a seed whose outcome differs from
the majority's is a bug report that replays (rr's chaos mode and trio's seeded
scheduler work the same way).

The seeds run in one of three places, chosen by :func:`sweep`'s arguments:
in this process one after the other, in a local process pool, or as tasks of a Ray
cluster. The two parallel backends run seeds in chunks (a million seeds must not
become a million futures) and keep a bounded number of chunks in flight; a chunk
returns its seeds already grouped by outcome, so only distinct outcomes travel back.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from ._errors import EmuError, GuestFault

if TYPE_CHECKING:
    from ._machine import Machine

__all__ = ["sweep", "SweepResult", "Outcome", "FAULT_STATUS", "fault_status"]

# The exit status a shell shows for a guest that did not exit by itself: 128 + the
# signal a real process would have died of, and timeout(1)'s 124 for a runaway.
FAULT_STATUS = {
    "unmapped": 128 + 11, "protection": 128 + 11, "exception": 128 + 11,
    "invalid-instruction": 128 + 4, "trap": 128 + 5,
    "insn-budget": 124, "timeout": 124,
    "deadlock": 124,        # a real deadlocked process hangs until timeout(1) kills it
}
_DEFAULT_FAULT_STATUS = 128 + 11

# Seeds per chunk at most, and chunks in flight per worker: a chunk of fast programs
# takes about a second, and a worker always has the next chunk queued.
_MAX_CHUNK = 64
_CHUNKS_PER_WORKER = 4
_IN_FLIGHT_PER_WORKER = 2

RAY_MISSING = "sweeping on a Ray cluster needs Ray: pip install 'kprobe-emu[ray]'"

MakeMachine = Callable[[int], "Machine"]
RunMachine = Callable[["Machine"], int]
_Groups = list[tuple["Outcome", list[int]]]


def fault_status(fault: GuestFault) -> int:
    """The exit status a shell would show for a process that died of ``fault``."""
    return FAULT_STATUS.get(fault.reason, _DEFAULT_FAULT_STATUS)


@dataclass(frozen=True)
class Outcome:
    """What one run did, as far as a sweep compares runs.

    Attributes:
        exit: the exit status, or :func:`fault_status` of the fault.
        stdout: everything the guest wrote to its standard output.
        fault: the :class:`GuestFault` message, or ``None`` when the guest exited.
    """

    exit: int
    stdout: bytes
    fault: str | None = None


@dataclass
class SweepResult:
    """The outcomes of a sweep and the seeds that gave each.

    Attributes:
        runs: how many seeds ran.
        outcomes: each distinct outcome with its seeds (ascending), the most common
            first; of equally common ones, the one whose smallest seed is smaller.
    """

    runs: int
    outcomes: list[tuple[Outcome, list[int]]]

    @classmethod
    def from_groups(cls, groups: dict[Outcome, list[int]]) -> SweepResult:
        """Order ``outcome -> seeds`` groups as :attr:`outcomes` promises."""
        for seeds in groups.values():
            seeds.sort()
        ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[1][0]))
        return cls(sum(len(seeds) for seeds in groups.values()), ordered)

    @property
    def majority(self) -> Outcome:
        """The most common outcome."""
        return self.outcomes[0][0]

    def deviants(self) -> list[tuple[Outcome, list[int]]]:
        """The outcomes other than the majority's, with their seeds."""
        return self.outcomes[1:]

    def to_json(self) -> dict[str, Any]:
        """``{"runs": N, "outcomes": [{"exit", "stdout", "fault", "seeds"}, ...]}``.

        ``stdout`` is decoded as UTF-8 with replacement characters.
        """
        return {"runs": self.runs, "outcomes": [
            {"exit": o.exit, "stdout": o.stdout.decode("utf-8", "replace"), "fault": o.fault,
             "seeds": seeds} for o, seeds in self.outcomes]}


def sweep(make_machine: MakeMachine, seeds: Iterable[int], *, run: RunMachine | None = None,
          jobs: int | None = None, ray: str | None = None,
          progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run a fresh machine for each seed and group the seeds by :class:`Outcome`.

    The sweep gives each machine new ``stdout`` and ``stderr`` buffers before it runs;
    stdout is part of the outcome, stderr is dropped.

    Args:
        make_machine: builds the machine of one seed, e.g. ``Machine.from_elf(...,
            seed=seed)``.
        seeds: the seeds, at least one.
        run: runs the machine and returns its exit status (default ``m.run()``).
        jobs: worker processes; ``None`` or 1 runs every seed in this process. More
            than one needs ``make_machine`` and ``run`` to pickle (module-level
            functions or ``functools.partial`` of them).
        ray: run on a Ray cluster instead: its address, or ``"auto"`` (the cluster this
            host belongs to, or the Ray this process already initialized).
        progress: called with (seeds done, seeds in all) as the sweep advances.

    Returns:
        The outcomes, each with its seeds.

    Raises:
        EmuError: no seeds, a bad ``jobs``, or Ray is missing or unreachable.
        LoadError: a seed's program could not be loaded; it ends the sweep.
    """
    seeds = seeds if isinstance(seeds, Sequence) else list(seeds)
    if not seeds:
        raise EmuError("a sweep needs at least one seed")
    if jobs is not None and jobs < 1:
        raise EmuError(f"a sweep needs at least one job, got jobs={jobs}")
    job = (make_machine, run)
    if ray is not None:
        chunks = _chunks_on_ray(job, seeds, ray)
    elif jobs is not None and jobs > 1 and len(seeds) > 1:
        chunks = _chunks_in_pool(job, seeds, jobs)
    else:
        chunks = (_run_chunk(job, [seed]) for seed in seeds)
    return _collect(chunks, len(seeds), progress)


# --- one seed, one chunk ---------------------------------------------------------------
def _run_seed(make_machine: MakeMachine, run: RunMachine | None, seed: int) -> Outcome:
    """The outcome of one seed: a guest fault is an outcome, any other error propagates."""
    with make_machine(seed) as m:          # the seed's host files close with it
        stdout = m.stdout = io.BytesIO()
        m.stderr = io.BytesIO()
        try:
            status = m.run() if run is None else run(m)
        except GuestFault as exc:
            return Outcome(fault_status(exc), stdout.getvalue(), str(exc))
        return Outcome(status, stdout.getvalue())


def _run_chunk(job: tuple[MakeMachine, RunMachine | None], seeds: Sequence[int]) -> _Groups:
    groups: dict[Outcome, list[int]] = {}
    for seed in seeds:
        groups.setdefault(_run_seed(*job, seed), []).append(seed)
    return list(groups.items())


def _collect(chunks: Iterable[_Groups], total: int,
             progress: Callable[[int, int], None] | None) -> SweepResult:
    groups: dict[Outcome, list[int]] = {}
    done = 0
    for chunk in chunks:
        for outcome, seeds in chunk:
            groups.setdefault(outcome, []).extend(seeds)
            done += len(seeds)
        if progress is not None:
            progress(done, total)
    return SweepResult.from_groups(groups)


def _chunked(seeds: Sequence[int], workers: int) -> Iterator[list[int]]:
    size = max(1, min(_MAX_CHUNK, len(seeds) // (workers * _CHUNKS_PER_WORKER)))
    it = iter(seeds)
    while chunk := list(islice(it, size)):
        yield chunk


# --- a local process pool -----------------------------------------------------------
# The job of a pool worker, set once by its initializer so that chunks carry only seeds
# (the job may hold the program's whole stdin).
_worker_job: tuple[MakeMachine, RunMachine | None] | None = None


def _init_worker(job: tuple[MakeMachine, RunMachine | None]) -> None:
    global _worker_job
    _worker_job = job


def _run_worker_chunk(seeds: list[int]) -> _Groups:
    assert _worker_job is not None, "_init_worker sets the job first"
    return _run_chunk(_worker_job, seeds)


def _chunks_in_pool(job: tuple[MakeMachine, RunMachine | None], seeds: Sequence[int],
                    jobs: int) -> Iterator[_Groups]:
    workers = min(jobs, len(seeds))
    # forkserver, not fork: the caller may have threads (a progress bar), and a
    # forked copy of their locks can deadlock.
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(job,))
    try:
        yield from _window(lambda chunk: pool.submit(_run_worker_chunk, chunk),
                           _chunked(seeds, workers), workers * _IN_FLIGHT_PER_WORKER)
    finally:
        # An error (a LoadError, ^C) drops the chunks not started yet.
        pool.shutdown(wait=True, cancel_futures=True)


def _window(submit: Callable[[list[int]], Future[_Groups]], chunks: Iterator[list[int]],
            limit: int) -> Iterator[_Groups]:
    """Keep at most ``limit`` chunks in flight; yield each chunk's result as it ends."""
    pending = {submit(chunk) for chunk in islice(chunks, limit)}
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            yield future.result()
        pending |= {submit(chunk) for chunk in islice(chunks, len(finished))}


# --- a Ray cluster ----------------------------------------------------------------------
def _chunks_on_ray(job: tuple[MakeMachine, RunMachine | None], seeds: Sequence[int],
                   address: str) -> Iterator[_Groups]:
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        _join_ray(ray, address)
    pending: list[Any] = []
    try:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(_run_chunk)
        job_ref = ray.put(job)         # shipped once, not with every chunk
        chunks = _chunked(seeds, workers)
        pending = [remote.remote(job_ref, chunk) for chunk in islice(chunks, workers * 2)]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            yield _ray_result(ray, finished[0])
            pending += [remote.remote(job_ref, chunk) for chunk in islice(chunks, 1)]
    finally:
        for ref in pending:            # an error ends the sweep: drop the rest
            ray.cancel(ref)
        if started:
            ray.shutdown()


def _join_ray(ray: Any, address: str) -> None:
    try:
        ray.init(address=address, logging_level=logging.WARNING)   # no INFO lines
    except Exception as exc:           # Ray raises several kinds; the user needs one line
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise EmuError(f"cannot join the Ray cluster at {address}: {lines[0]}") from exc


def _ray_result(ray: Any, ref: Any) -> _Groups:
    """A chunk's groups; a LoadError in a task is raised as itself, without Ray's wrapper."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, EmuError):
            raise exc.cause from None
        raise


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise EmuError(RAY_MISSING) from None
    return ray
