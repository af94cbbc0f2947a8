"""The fuzzers' harness: the example budget, and a sandbox that runs each case in a child.

A failure is a host crash, a hang past the budget, host memory past a bound, or an
exception other than the documented ones (``emu``: ``LoadError``, ``GuestFault``,
``EmuError`` for misuse; ``probes``: ``ProbeError``/``ParseError``). The first three
would take pytest down or stall it, so every case runs in a child process:

- :class:`Sandbox` is a fork server: one worker process (``python -c``) imports the
  emulator and the test module once, then forks one child per case, under
  ``RLIMIT_AS`` (:data:`AS_LIMIT` over what the worker has mapped), ``RLIMIT_FSIZE``
  and no core dumps, and kills it past its timeout. Forking keeps a case at a few
  milliseconds of overhead, and every case starts from the same clean worker state,
  so a failure replays alone.
- The child calls a module-level function of the test module (the *job*) with
  picklable arguments: it returns a summary, or raises. The parent reports a
  crash (the signal), a timeout, an exception (the child's traceback), or a peak
  RSS over :data:`RSS_LIMIT`, with the emulator's stderr.
- A test module may define ``fuzz_warm_up()``: the worker calls it once, before
  forking, so that per-process caches (the symbols and ``.eh_frame`` of libc and
  ld.so, keyed by path) are filled once and inherited by every child.

Budget: :func:`budget` gives each test its ``make test`` size (derandomized, so CI
is repeatable), or ``KPE_FUZZ_EXAMPLES`` examples each, random and without
deadlines, for ``make fuzz`` (which sets it). ``KPE_FUZZ_INPROCESS=1`` runs the
jobs in pytest's own process instead (for a debugger; a crash then kills pytest).
"""

from __future__ import annotations

import os
import pickle
import re
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

ROOT = Path(__file__).resolve().parents[2]
AS_LIMIT = 4 << 30          # address space a case may add to the worker's (a machine reserves ~1.1 GiB)
RSS_LIMIT = 1 << 30         # peak resident memory of a case's child
FSIZE_LIMIT = 64 << 20      # the largest file a case may write (the guest's fs_root)
GUEST_MEM_LIMIT = 256 << 20  # Machine(mem_limit=...) of fuzzed guests: far below AS_LIMIT
EXAMPLES_ENV = "KPE_FUZZ_EXAMPLES"
INPROCESS_ENV = "KPE_FUZZ_INPROCESS"


def fuzzing() -> bool:
    """``make fuzz``: a long, random run."""
    return bool(os.environ.get(EXAMPLES_ENV))


def budget(examples: int) -> settings:
    """The hypothesis settings of one fuzz test: ``examples`` in ``make test``
    (derandomized: the same cases on every run), ``KPE_FUZZ_EXAMPLES`` under
    ``make fuzz`` (random, no deadline; failures are saved in ``.hypothesis/fuzz``
    and replayed first by the next ``make fuzz``)."""
    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    phases = [p for p in Phase if p is not Phase.explain]   # it re-runs a failure many times
    if fuzzing():
        return settings(max_examples=int(os.environ[EXAMPLES_ENV]), deadline=None,
                        suppress_health_check=quiet, print_blob=True, phases=phases,
                        database=DirectoryBasedExampleDatabase(str(ROOT / ".hypothesis" / "fuzz")))
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=quiet, phases=phases)


# --- the sandbox ------------------------------------------------------------------------------
# The worker: reads length-prefixed pickled jobs (module, function, args, timeout)
# on fd 0, forks a child per job, and answers with a pickled outcome on fd 1. The
# child's stderr goes to a file whose tail comes back with the outcome.
_WORKER = r'''
import gc, importlib, os, pickle, resource, select, signal, struct, sys, tempfile, time, traceback
sys.path.insert(0, os.getcwd())
cmd_in, cmd_out = os.dup(0), os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0); os.dup2(null, 1)
LIMITS = pickle.loads(bytes.fromhex(sys.argv[1]))
HDR = struct.Struct("<Q")

def read_exact(fd, n):
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise SystemExit(0)
        out += chunk
    return bytes(out)

def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

def address_space():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))

def child(module, func, args, result_w, err_fd):
    os.close(cmd_in); os.close(cmd_out)
    os.dup2(err_fd, 2)
    for res, value, on_top in LIMITS:      # on_top: over what the worker has mapped already
        value += address_space() if on_top else 0
        resource.setrlimit(res, (value, value))
    try:
        out = ("ok", getattr(importlib.import_module(module), func)(*args))
    except BaseException as exc:
        out = ("raised", f"{type(exc).__module__}.{type(exc).__qualname__}",
               [c.__name__ for c in type(exc).__mro__], str(exc), traceback.format_exc())
    try:
        data = pickle.dumps(out)
    except Exception as exc:
        data = pickle.dumps(("raised", "pickle", ["Exception"], repr(exc), ""))
    try:
        sys.stderr.flush()
    except Exception:
        pass
    write_all(result_w, data)
    os._exit(0)

warmed = set()
while True:
    module, func, args, timeout = pickle.loads(read_exact(cmd_in, HDR.unpack(read_exact(cmd_in, 8))[0]))
    if module not in warmed:                 # once per worker: the children inherit it
        warmed.add(module)
        try:
            warm = getattr(importlib.import_module(module), "fuzz_warm_up", None)
            if warm is not None:
                warm()
        except BaseException:
            pass
        gc.collect()                         # the warm-up's machines (1 GiB of address space each)
    err = tempfile.TemporaryFile()
    r, w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child(module, func, args, w, err.fileno())
    os.close(w)
    deadline = started + timeout
    data, timed_out = bytearray(), False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if ready:
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            data += chunk
    while not timed_out:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.001)
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status, usage = os.wait4(pid, 0)
    os.close(r)
    err.seek(0, 2)
    size = err.tell()
    err.seek(max(0, size - 8192))
    stderr = err.read().decode(errors="replace")
    err.close()
    reply = {"seconds": time.monotonic() - started, "maxrss": usage.ru_maxrss * 1024,
             "stderr": stderr, "status": status, "timed_out": timed_out, "result": bytes(data)}
    blob = pickle.dumps(reply)
    write_all(cmd_out, HDR.pack(len(blob)) + blob)
'''


@dataclass
class Outcome:
    """How one case ended in its child.

    Attributes:
        kind: ``"ok"`` (the job returned ``value``), ``"raised"`` (``exc_type``,
            ``message``, ``traceback``), ``"crash"`` (killed by ``signal``, or died
            without an answer), ``"timeout"``.
        maxrss: the child's peak resident memory, bytes.
        stderr: the tail of what the child wrote on its stderr (the emulator's reports).
    """

    kind: str
    value: Any = None
    exc_type: str = ""
    exc_mro: list[str] = field(default_factory=list)
    message: str = ""
    traceback: str = ""
    signal: int = 0
    maxrss: int = 0
    stderr: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        where = f" after {self.seconds:.1f} s, peak RSS {self.maxrss >> 20} MiB"
        text = {
            "ok": f"returned {self.value!r}",
            "raised": f"raised {self.exc_type}: {self.message}\n{self.traceback}",
            "crash": f"host crash: the child died of signal {self.signal}" if self.signal
                     else "host crash: the child died without an answer",
            "timeout": "hang: the child ran past its timeout and was killed",
        }[self.kind]
        tail = f"\n--- child stderr (tail) ---\n{self.stderr}" if self.stderr.strip() else ""
        return text + where + tail


@dataclass(frozen=True)
class KnownBug:
    r"""A failure already kept as a strict-xfail regression case.

    While it is open the fuzzers skip the inputs that hit it (``hypothesis.reject``)
    and so go on to find others; the regression case fails once it is fixed, and
    then both the mark and this entry go.

    Attributes:
        exc_types: the exceptions the child may raise (``"builtins.OverflowError"``);
            empty: any.
        where: a regular expression its traceback matches (the frame that let it
            out: ``r'emu/_cfi\.py", line \d+, in _cached_table'``).
    """

    exc_types: tuple[str, ...]
    where: str

    def matches(self, out: Outcome) -> bool:
        return out.kind == "raised" and (not self.exc_types or out.exc_type in self.exc_types) and \
            re.search(self.where, out.traceback) is not None


class KnownBugHit(Exception):
    """Raised by :meth:`Sandbox.check` for an outcome a :class:`KnownBug` matches."""


class Sandbox:
    """Runs module-level functions in forked children of one worker process."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        limits = [(_rlimit("RLIMIT_AS"), AS_LIMIT, True), (_rlimit("RLIMIT_FSIZE"), FSIZE_LIMIT, False),
                  (_rlimit("RLIMIT_CORE"), 0, False)]
        self._limits = pickle.dumps(limits).hex()

    def _worker(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-c", _WORKER, self._limits],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, cwd=ROOT)
        return self._proc

    def run(self, func: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Outcome:
        """Run ``func(*args)`` in a fresh child; ``timeout`` seconds of wall time."""
        if os.environ.get(INPROCESS_ENV):
            return _run_here(func, args)
        job = pickle.dumps((func.__module__, func.__name__, args, timeout))
        proc = self._worker()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(struct.pack("<Q", len(job)) + job)
            proc.stdin.flush()
            reply = pickle.loads(_read_reply(proc.stdout, timeout + 60))
        except (OSError, EOFError, TimeoutError) as exc:
            self.close()
            return Outcome("crash", message=f"the fuzz worker failed: {exc!r}")
        out = _outcome(reply)
        return out

    def check(self, func: Callable[..., Any], *args: Any, timeout: float = 30.0,
              rss_limit: int = RSS_LIMIT, known: tuple[KnownBug, ...] = ()) -> Any:
        """``func(*args)`` in a child; its value, or an ``AssertionError`` that says
        what went wrong (crash, hang, exception, memory) and with which arguments
        (:class:`KnownBugHit` instead when one of ``known`` matches)."""
        out = self.run(func, *args, timeout=timeout)
        if any(bug.matches(out) for bug in known):
            raise KnownBugHit(out.describe())
        if out.kind == "ok" and out.maxrss > rss_limit:
            raise AssertionError(f"host memory past the bound: peak RSS {out.maxrss >> 20} MiB "
                                 f"> {rss_limit >> 20} MiB in {func.__name__}{args!r}")
        if out.kind != "ok":
            raise AssertionError(f"{func.__name__}{_short(args)}: {out.describe()}")
        return out.value

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
            self._proc = None


def _rlimit(name: str) -> int:
    import resource
    return int(getattr(resource, name))


def _read_reply(stream: Any, timeout: float) -> bytes:
    fd = stream.fileno()
    deadline = time.monotonic() + timeout

    def read(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer from the fuzz worker")
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise EOFError("the fuzz worker died")
            out += chunk
        return bytes(out)

    return read(struct.unpack("<Q", read(8))[0])


def _outcome(reply: dict[str, Any]) -> Outcome:
    common = {"maxrss": reply["maxrss"], "stderr": reply["stderr"], "seconds": reply["seconds"]}
    if reply["timed_out"]:
        return Outcome("timeout", **common)
    status = reply["status"]
    if not reply["result"]:
        return Outcome("crash", signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0, **common)
    result = pickle.loads(reply["result"])
    if result[0] == "ok":
        return Outcome("ok", value=result[1], **common)
    _, exc_type, mro, message, tb = result
    return Outcome("raised", exc_type=exc_type, exc_mro=mro, message=message, traceback=tb, **common)


def _run_here(func: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
    import traceback
    started = time.monotonic()
    try:
        value = func(*args)
    except Exception as exc:
        return Outcome("raised", exc_type=type(exc).__qualname__,
                       exc_mro=[c.__name__ for c in type(exc).__mro__], message=str(exc),
                       traceback=traceback.format_exc(), seconds=time.monotonic() - started)
    return Outcome("ok", value=value, seconds=time.monotonic() - started)


def _short(args: tuple[Any, ...], limit: int = 2000) -> str:
    text = repr(args)
    return text if len(text) <= limit else text[:limit] + "...)"


@pytest.fixture(scope="session")
def sandbox() -> Any:
    box = Sandbox()
    yield box
    box.close()
