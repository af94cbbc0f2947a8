"""Guest C programs for the tests: built once per session, run natively or emulated.

CI runs on a clean clone, so tests that need ``guest/bin/*`` build it
themselves through the ``guest_bin`` fixture (defined where it is used).
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
BIN_DIR = GUEST_DIR / "bin"
HAVE_MUSL = shutil.which("musl-gcc") is not None
MUSL_NOTE = "musl-gcc is not installed (Debian: apt-get install musl-tools)"


@functools.lru_cache(maxsize=1)
def _build() -> str | None:
    """Run make once; the error text, or None on success."""
    if shutil.which("gcc") is None or shutil.which("make") is None:
        return "gcc and make are needed to build the guest C programs"
    done = subprocess.run(["make", "-s", "-j2", "-C", str(GUEST_DIR), "all"],
                          capture_output=True, text=True)
    if done.returncode:
        return f"make -C guest failed:\n{done.stdout}{done.stderr}"
    return None


def guest_bin() -> Path:
    """The directory of built guest programs; skip the test when they cannot be built."""
    error = _build()
    if error is not None:
        if "needed" in error:
            pytest.skip(error)
        pytest.fail(error)
    return BIN_DIR


def run_native(argv: list[str], env: dict[str, str] | None = None,
               stdin: bytes = b"") -> tuple[int, bytes]:
    """Exit status (128 + signal for a signal, as a shell says) and stdout of a host run."""
    done = subprocess.run(argv, input=stdin, capture_output=True, env=env or {}, timeout=60)
    status = done.returncode if done.returncode >= 0 else 128 - done.returncode
    return status, done.stdout


def run_emulated(argv: list[str], env: dict[str, str] | None = None, stdin: bytes = b"",
                 **options: object) -> tuple[int, bytes]:
    """The same, under the emulator (``Machine.from_elf`` + ``run``)."""
    import io

    from emu import Machine

    m = Machine.from_elf(argv[0], argv, env=env or {}, stdin=stdin, **options)  # type: ignore[arg-type]
    m.stdout = io.BytesIO()
    m.stderr = io.BytesIO()
    status = m.run(timeout=60)
    return status, m.stdout.getvalue()


def instrumented_entries(binary: Path, args: list[str], func: str) -> int:
    """Entries of ``func`` in a native run of a -finstrument-functions build
    (``guest/bin/*.instr``: one ``ADDR ENTRIES EXITS`` line a function on stderr)."""
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, env={}, timeout=60)
    with open(binary, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        addr = next(s["st_value"] for s in symtab.iter_symbols()
                    if s.name == func and s["st_info"]["type"] == "STT_FUNC")
    counts = {int(a, 16): int(n) for a, n, _ in (line.split() for line in done.stderr.splitlines())}
    return counts[addr]


def assert_as_linux(binary: Path, cwd: Path, cases: dict[str, list[str]]) -> None:
    """Each case's arguments, run natively and emulated in ``cwd``: the same words
    on standard output (the syscall results ``hostile`` prints), and status 0."""
    from emu import Machine

    for name, args in cases.items():
        native = subprocess.run([str(binary), *args], cwd=cwd, capture_output=True, timeout=10)
        m = Machine.from_elf(str(binary), [binary.name, *args])
        m.stdout = io.BytesIO()
        assert m.run(max_insns=10**7) == 0
        assert m.stdout.getvalue().split() == native.stdout.split(), name
