"""Host resources follow what the guest is allowed and what it touches, never what it asks.

Rules pinned (the reliability issue): the guest's mappings total at most
``Machine(mem_limit=...)`` (``--mem-limit``): ``mmap``, ``brk`` and ``mremap`` past
it fail in the guest (``ENOMEM``, ``malloc`` returns NULL) and nothing raises in
Python; ``madvise(MADV_DONTNEED)`` and ``mremap`` allocate no host memory for
pages the guest never touched; a read is capped by the guest's buffer; host
descriptors opened for the guest are closed however the program ends and when
the machine is closed; bad arguments get Linux's errno (mm/mmap.c, fs/read_write.c,
fs/file.c), checked against the native run where root's privileges do not differ.
"""

from __future__ import annotations

import errno
import gc
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu import GuestFault, Machine
from kprobe_emu.cli import main
from probes import Kretprobe, ProbeError, list_probes, register_kretprobe, unregister_kretprobe
from tests.guests import guest_bin as _guest_bin
from tests.guests import run_native

GiB = 1 << 30
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def _emulate(safety: Path, *args: str, **options: object) -> tuple[int, str]:
    m = Machine.from_elf(str(safety), ["safety", *args], **options)  # type: ignore[arg-type]
    m.stdout = io.BytesIO()
    with m:
        status = m.run(timeout=60)
    return status, m.stdout.getvalue().decode()


# --- mem_limit ----------------------------------------------------------------------------
def test_malloc_of_a_terabyte_is_null_and_brk_stays(guest_bin: Path) -> None:
    """malloc(1 TiB) is NULL in the guest, mmap(1 TiB) ENOMEM, brk far up (or past the
    top of user space) leaves the break where it was: as the native run."""
    native = run_native([str(guest_bin / "safety"), "limits"])
    emulated = _emulate(guest_bin / "safety", "limits")
    assert emulated == (native[0], native[1].decode())
    assert "malloc 1T: NULL" in emulated[1] and "mmap 1T: errno 12" in emulated[1]


def test_mmap_past_mem_limit_is_enomem(guest_bin: Path) -> None:
    """The default limit is 4 GiB: 4 GiB more cannot be mapped, 8 GiB of limit can."""
    status, out = _emulate(guest_bin / "safety", "dontneed", "4096")
    assert (status, out) == (1, "mmap: errno 12\n")
    status, out = _emulate(guest_bin / "safety", "dontneed", "4096", mem_limit=8 * GiB)
    assert (status, out) == (0, "madvise: 0\nzeroed: yes\n")


def test_mremap_past_mem_limit_is_enomem(guest_bin: Path) -> None:
    """Growing 24 MiB to 48 MiB under a 48 MiB limit (the stacks and image count too)."""
    assert _emulate(guest_bin / "safety", "mremap", "24", mem_limit=48 << 20) == (1, "mremap: errno 12\n")
    assert _emulate(guest_bin / "safety", "mremap", "24", mem_limit=64 << 20) == \
        (0, "moved: yes, kept: yes\n")


def test_brk_past_mem_limit_fails_quietly(guest_bin: Path) -> None:
    """brk is refused by returning the old break; with 16 MiB glibc's malloc of
    1 TiB still ends as NULL."""
    status, out = _emulate(guest_bin / "safety", "limits", mem_limit=16 << 20)
    assert status == 0 and "brk far: unchanged" in out and "malloc 1T: NULL" in out


def test_image_over_mem_limit_is_a_load_error(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A limit too small for the program (8 MiB of stack alone) is a one-line LoadError;
    one too small for the machine itself is one line from the CLI too."""
    from emu import LoadError
    with pytest.raises(LoadError, match="mem_limit") as info:
        Machine.from_elf(str(guest_bin / "safety"), mem_limit=4 << 20)
    assert "\n" not in str(info.value)
    for limit in ("4M", "64K"):
        assert main(["run", "--mem-limit", limit, str(guest_bin / "safety"), "limits"]) == 127
        err = capfd.readouterr().err
        assert err.count("\n") == 1 and "mem_limit" in err and "Traceback" not in err


@pytest.mark.parametrize(("text", "size"), [("512M", 512 << 20), ("4g", 4 * GiB),
                                            ("100000000", 100_000_000), ("65536K", 64 << 20)])
def test_mem_limit_option(guest_bin: Path, capfd: pytest.CaptureFixture[str], text: str, size: int,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--mem-limit SIZE: bytes or K/M/G; it reaches Machine(mem_limit=...)."""
    seen = []
    original = Machine.__init__

    def spy(self: Machine, **kwargs: object) -> None:
        seen.append(kwargs.get("mem_limit"))
        original(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Machine, "__init__", spy)
    main(["run", "--mem-limit", text, str(guest_bin / "safety"), "limits"])
    capfd.readouterr()
    assert seen == [size]


@pytest.mark.parametrize("text", ["0", "-1", "12X", "M", "1.5G", ""])
def test_bad_mem_limit_is_a_usage_error(guest_bin: Path, capfd: pytest.CaptureFixture[str],
                                        text: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--mem-limit", text, str(guest_bin / "safety"), "limits"])
    assert info.value.code == 2
    err = capfd.readouterr().err
    assert "--mem-limit" in err and "invalid size" in err and "Traceback" not in err


# --- host memory follows what the guest touches -----------------------------------------
_MEASURE = """
import io, sys
from emu import Machine
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) << 10
m = Machine.from_elf(sys.argv[1], ["safety", *sys.argv[2:]], mem_limit=8 << 30)
m.stdout = io.BytesIO()
before = status("VmRSS")
code = m.run(timeout=60)
print(code, status("VmHWM") - before, m.stdout.getvalue().decode(), sep="\\n", end="")
"""


@pytest.mark.parametrize(("args", "out"), [
    (["dontneed", "4096"], "madvise: 0\nzeroed: yes\n"),             # was: bytes(4 GiB) written
    (["mremap", "1024"], "moved: yes, kept: yes\n"),                  # was: 1 GiB read and copied
    (["io", "{safety}"], "read zero 1G: 16\n"),                       # was: a 1 GiB host buffer
])
def test_host_memory_follows_what_the_guest_touches(guest_bin: Path, args: list[str], out: str) -> None:
    """Peak RSS of a fresh interpreter grows by megabytes, not by what the guest asked."""
    safety = str(guest_bin / "safety")
    argv = [a.format(safety=safety) for a in args]
    done = subprocess.run([sys.executable, "-c", _MEASURE, safety, *argv], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    status, growth, stdout = done.stdout.split("\n", 2)
    assert status == "0" and out in stdout
    assert int(growth) < 64 << 20, f"peak RSS grew by {int(growth) >> 20} MiB"


# --- bad arguments: Linux's errno -------------------------------------------------------
def test_io_arguments_as_linux(guest_bin: Path) -> None:
    """pread/pwrite at 2^63 and past LLONG_MAX: EINVAL; a file mmap at 2^63: EOVERFLOW;
    an mmap of /dev/urandom: ENODEV; dup2/dup3 to -5: EBADF;
    F_DUPFD from -7 or past RLIMIT_NOFILE: EINVAL; a 1 GiB read into the last 16 bytes
    of a mapping reads 16; a read into a hole, past the top of user space or into
    read-only memory: EFAULT. The same as the native run, line for line."""
    safety = str(guest_bin / "safety")
    native = run_native([safety, "io", safety])
    assert native[0] == 0
    assert _emulate(guest_bin / "safety", "io", safety) == (0, native[1].decode())


def test_map_fixed_where_linux_refuses(guest_bin: Path) -> None:
    """__get_unmapped_area's order: past TASK_SIZE ENOMEM, misaligned EINVAL, then
    below mmap_min_addr EPERM (cap_mmap_addr: the guest is uid 1000, not root)."""
    status, out = _emulate(guest_bin / "safety", "fixed")
    assert status == 0
    assert out.splitlines() == [
        f"fixed top: errno {errno.ENOMEM}", f"fixed task_size: errno {errno.ENOMEM}",
        f"fixed 48 bit: errno {errno.ENOMEM}", f"fixed unaligned: errno {errno.EINVAL}",
        f"fixed low: errno {errno.EPERM}", f"noreplace low: errno {errno.EPERM}",
        f"length 0: errno {errno.EINVAL}"]
    native = run_native([str(guest_bin / "safety"), "fixed"])[1].decode().splitlines()
    assert out.splitlines()[:4] + out.splitlines()[6:] == native[:4] + native[6:]


# --- host descriptors -----------------------------------------------------------------------
def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fault_once(safety: Path) -> None:
    with Machine.from_elf(str(safety), ["safety", "fault", "200"]) as m:
        m.stdout = io.BytesIO()
        with pytest.raises(GuestFault):
            m.run(timeout=60)


def test_faulting_runs_do_not_leak_descriptors(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A program that opens 200 files and faults, 20 times in one process, through the
    CLI and through `with Machine...`: the count of host descriptors stays flat."""
    safety = str(guest_bin / "safety")
    assert main(["run", safety, "fault", "200"]) == 139          # warm-up: the engine's own
    before = _fds()
    for _ in range(20):
        assert main(["run", safety, "fault", "200"]) == 139
    assert _fds() == before
    for _ in range(20):
        _fault_once(guest_bin / "safety")
    assert _fds() == before
    capfd.readouterr()


def test_a_faulting_run_closes_its_descriptors_without_close(guest_bin: Path) -> None:
    """From Python too: the fault ended the process, so its files close with it
    (no `with`, no close(), the machine still referenced)."""
    m = Machine.from_elf(str(guest_bin / "safety"), ["safety", "fault", "200"])
    m.stdout = io.BytesIO()
    before = _fds()
    with pytest.raises(GuestFault):
        m.run(timeout=60)
    assert _fds() <= before


def test_budget_and_timeout_close_descriptors(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The CLI closes them when the budget or the timeout stops the program."""
    safety = str(guest_bin / "safety")
    main(["run", "--max-insns", "2000000", safety, "hold", "100"])
    before = _fds()
    assert main(["run", "--max-insns", "2000000", safety, "hold", "100"]) == 124
    assert main(["run", "--timeout", "0.5", safety, "hold", "100"]) == 124
    assert _fds() == before
    assert "opened 100" in capfd.readouterr().out


def test_close_and_collection_release_descriptors(guest_bin: Path) -> None:
    """m.close() after a stopped run closes them (idempotent); a machine dropped without
    close() releases them when it is collected (each open file owns its descriptor)."""
    before = _fds()
    m = Machine.from_elf(str(guest_bin / "safety"), ["safety", "hold", "50"])
    m.stdout = io.BytesIO()
    with pytest.raises(GuestFault, match="budget"):
        m.run(max_insns=2_000_000)
    assert _fds() == before + 50
    m.close()
    m.close()
    assert _fds() == before
    for _ in range(3):
        m = Machine.from_elf(str(guest_bin / "safety"), ["safety", "fault", "50"])
        m.stdout = io.BytesIO()
        with pytest.raises(GuestFault):
            m.run()
    del m
    gc.collect()
    assert _fds() == before


def test_exit_closes_descriptors(guest_bin: Path) -> None:
    """A process that exits with files open closes them (exit_group -> the fd table)."""
    before = _fds()
    m = Machine.from_elf(str(guest_bin / "sysprobe"), ["sysprobe", "cat", str(guest_bin / "safety")],
                         fs_root=str(guest_bin))
    m.stdout = io.BytesIO()
    assert m.run() == 0
    assert _fds() == before


# --- kretprobe pools ---------------------------------------------------------------------------
def test_maxactive_over_65536_is_e2big() -> None:
    import guest
    m = guest.load("fib")
    rp = Kretprobe("fib", maxactive=65537)
    with pytest.raises(ProbeError) as info:
        register_kretprobe(m, rp)
    assert info.value.errno == errno.E2BIG and not rp.registered and list_probes(m) == ""
    rp = Kretprobe("fib", maxactive=65536)
    register_kretprobe(m, rp)
    assert rp.registered and rp.nfree == 65536
    unregister_kretprobe(m, rp)


def test_failed_pool_allocation_leaves_the_probe_unregistered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory while preallocating: ENOMEM, nothing registered, the probe object
    can be registered later."""
    import guest
    from probes import _kretprobe

    m = guest.load("fib")
    rp = Kretprobe("fib", maxactive=100)

    def no_memory(*_args: object) -> None:
        raise MemoryError

    with monkeypatch.context() as patch:         # the arena of the instances' data
        patch.setattr(_kretprobe, "bytearray", no_memory, raising=False)
        with pytest.raises(ProbeError) as info:
            register_kretprobe(m, rp)
    assert info.value.errno == errno.ENOMEM
    assert not rp.registered and rp._mgr is None and list_probes(m) == ""
    assert m.call("fib", 10) == 55
    register_kretprobe(m, rp)
    assert m.call("fib", 10) == 55 and rp.nfree == 100
