"""Every run can be stopped, and every stop is reported right.

Rules pinned: Ctrl-C (SIGINT) stops a guest within 100 ms even in a pure compute
loop, where no Python code runs (a watchdog thread woken by
``signal.set_wakeup_fd`` calls ``uc_emu_stop``): ``call``, ``run_tasks`` and
``run`` raise ``KeyboardInterrupt`` with the machine usable and the tasks
resumable; pressed twice it also ends a handler stuck in Python code;
``kprobe-emu`` exits 130 with one line. Budgets and timeouts are
positive or ``None``, never 0/negative/NaN/inf meaning "unlimited". A budget or
timeout stop is reported as such even when the last instruction ends in a byte
0xf4 (which the old ``hlt`` test took for a ``hlt``). Each call starts with the
ABI's flags; a non-canonical address is a #GP (SIGSEGV) and ``sysenter`` an
invalid instruction (SIGILL), as on Linux.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emu import GuestFault, Machine
from emu._sweep import fault_status
from kprobe_emu.cli import main
from probes import Kprobe, register_kprobe
from tests.guests import guest_bin as _guest_bin

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 1.0           # generous: measured about 2-10 ms on a 2-CPU VM

# The child: one phase per SIGINT, each reporting when it was interrupted.
CHILD = textwrap.dedent("""
    import sys, time
    from emu import Machine
    SRC = '''
    spin:
        jmp spin
    seven:
        mov rax, 7
        ret
    wait_flag:
        mov rax, [rip + flag]
        test rax, rax
        jz wait_flag
        mov rax, 42
        ret
    flag:
        .quad 0
    '''
    m = Machine.from_asm(SRC, max_insns=None)
    flag = m.resolve("flag")

    def phase(name, run):
        print("ready", name, flush=True)
        try:
            run()
            print("not interrupted", name, flush=True)
        except KeyboardInterrupt:
            print("interrupted", name, time.monotonic(), flush=True)

    phase("call", lambda: m.call("spin"))
    print("after", m.call("seven"), flush=True)
    m.max_insns = 10**12            # counted: Unicorn's per-instruction hook
    phase("counted", lambda: m.call("spin"))
    m.max_insns = None
    tasks = [m.spawn("wait_flag") for _ in range(3)]
    phase("tasks", lambda: m.run_tasks(seed=1, timeslice=50))
    m.write(flag, (1).to_bytes(8, "little"))
    m.run_tasks(seed=1, timeslice=50)
    print("resumed", [t.result for t in tasks], flush=True)
    hook = m.hook_code(m.resolve("seven"), lambda addr: time.sleep(30))
    phase("blocked", lambda: m.call("seven"))      # a handler stuck in Python code
    m.unhook(hook)
    print("after", m.call("seven"), flush=True)
""")


def _interrupt(proc: subprocess.Popen[str], phase: str, presses: int = 1) -> float:
    """Wait for ``phase``, SIGINT after 0.3 s (``presses`` times, 0.1 s apart); the
    latency of its KeyboardInterrupt after the last."""
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["ready", phase]
    time.sleep(0.3)
    sent = 0.0
    for press in range(presses):
        if press:
            time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
    words = proc.stdout.readline().split()
    assert words[:2] == ["interrupted", phase], words
    return float(words[2]) - sent


def test_ctrl_c_stops_calls_and_scheduled_tasks_within_the_bound() -> None:
    with subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            assert _interrupt(proc, "call") < BOUND_S
            assert proc.stdout.readline().split() == ["after", "7"]       # usable at once
            assert _interrupt(proc, "counted") < BOUND_S
            assert _interrupt(proc, "tasks") < BOUND_S
            assert proc.stdout.readline().split() == ["resumed", "[42,", "42,", "42]"]
            assert _interrupt(proc, "blocked", presses=2) < BOUND_S       # pressed again
            assert proc.stdout.readline().split() == ["after", "7"]
            assert proc.wait(10) == 0
        finally:
            proc.kill()


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def _ctrl_c_run(args: list[str], after_s: float) -> tuple[int, str, str]:
    """``kprobe-emu run ARGS`` in a child interpreter, SIGINT after ``after_s``:
    (status, stdout, stderr)."""
    with subprocess.Popen([sys.executable, "-m", "kprobe_emu", "run", *args], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            time.sleep(after_s)                 # the interpreter starts, loads, spins
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
    return proc.returncode, out, err


def test_ctrl_c_ends_kprobe_emu_with_130_and_one_line(guest_bin: Path) -> None:
    assert _ctrl_c_run([str(guest_bin / "hostile"), "spin"], 1.0) == (
        130, "", "kprobe-emu run: interrupted\n")


def test_ctrl_c_stops_a_child_process_spinning_alone(guest_bin: Path) -> None:
    """The parent waits in wait4, its child spins in its own machine: Ctrl-C
    stops that engine too (every process's machine is watched while it runs)."""
    assert _ctrl_c_run(["--fs", "none", str(guest_bin / "procs.static"), "spin"], 1.5) == (
        130, "", "kprobe-emu run: interrupted\n")


def test_an_interrupted_program_resumes_with_run(guest_bin: Path) -> None:
    """m.run after a stop continues the process where it was (here: a budget)."""
    m = Machine.from_elf(str(guest_bin / "hostile"), ["hostile", "spin"])
    for _ in range(3):
        with pytest.raises(GuestFault) as err:
            m.run(max_insns=1000)
        assert err.value.reason == "insn-budget" and m.symbolize(err.value.rip).startswith("start_c")


# --- limits ----------------------------------------------------------------------------
BAD_COUNTS = [0, -1, -(2**70), True, 1.5, "10"]
BAD_SECONDS = [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, "1"]


@pytest.mark.parametrize("value", BAD_COUNTS)
def test_a_budget_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(ValueError, match="max_insns must be a positive number"):
        Machine(max_insns=value)  # type: ignore[arg-type]
    m = Machine.from_asm("f:\n    ret\n")
    with pytest.raises(ValueError):
        m.max_insns = value  # type: ignore[assignment]
    with pytest.raises(ValueError):
        m.run_tasks(max_insns=value)  # type: ignore[arg-type]
    assert m.max_insns is None              # unchanged (the default: no budget)


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_a_timeout_must_be_positive_and_finite(value: object) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive finite number"):
        Machine(timeout=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Machine.from_asm("f:\n    ret\n").run_tasks(timeout=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -3, True])
def test_a_timeslice_must_be_positive(value: object, guest_bin: Path) -> None:
    with pytest.raises(ValueError, match="timeslice must be a positive"):
        Machine.from_asm("f:\n    ret\n").run_tasks(timeslice=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeslice must be a positive"):
        Machine.from_elf(str(guest_bin / "hostile"), timeslice=value)  # type: ignore[arg-type]


def test_none_means_no_limit() -> None:
    m = Machine.from_asm("f:\n    mov rax, 3\n    ret\n", max_insns=None, timeout=None)
    assert m.call("f") == 3
    m.spawn("f")
    assert [t.result for t in m.run_tasks(max_insns=None, timeout=None)] == [3]


@pytest.mark.parametrize("option", ["--timeout", "--max-insns", "--timeslice"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "x"])
def test_the_cli_refuses_limits_that_are_not_positive(option: str, value: str, guest_bin: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["run"], ["sweep", "--seeds", "0-1"], ["trace", "-e", "p start_c"]):
        with pytest.raises(SystemExit) as done:
            main([*command, f"{option}={value}", str(guest_bin / "hostile")])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {option}:" in err and "Traceback" not in err


# --- budget and timeout stops ---------------------------------------------------------------
# An -O0 style loop whose instructions mostly end in 0xf4 ([rbp-0xc]), and a byte
# 0xf4 before the loop: wherever a stop lands, rip - 1 holds 0xf4.
F4_LOOP = """
f4loop:
    push rbp
    mov rbp, rsp
    mov dword ptr [rbp - 0xc], 0x7fffffff
    jmp .l
    .byte 0xf4
.l:
    mov eax, dword ptr [rbp - 0xc]
    mov eax, dword ptr [rbp - 0xc]
    mov eax, dword ptr [rbp - 0xc]
    nop
    jmp .l
halt:
    hlt
    ret
"""


def test_a_budget_stop_is_a_budget_stop_whatever_byte_ends_the_last_instruction() -> None:
    m = Machine.from_asm(F4_LOOP)
    reasons = set()
    for budget in range(1, 40):
        m.max_insns = budget
        with pytest.raises(GuestFault) as err:
            m.call("f4loop")
        reasons.add(err.value.reason)
        assert f"budget of {budget} exhausted" in str(err.value)
    assert reasons == {"insn-budget"}
    with pytest.raises(GuestFault, match="hlt at halt"):         # a real hlt still is one
        m.call("halt")


def test_a_scheduled_budget_stop_is_a_budget_stop() -> None:
    m = Machine.from_asm(F4_LOOP, max_insns=None)
    m.spawn("f4loop")
    for budget in range(1, 30):
        with pytest.raises(GuestFault) as err:
            m.run_tasks(max_insns=budget)
        assert err.value.reason == "insn-budget"


@pytest.mark.parametrize("mode", ["call", "counted call", "lone task", "tasks"])
def test_a_timeout_stop_is_a_timeout_stop(mode: str) -> None:
    m = Machine.from_asm(F4_LOOP, max_insns=10**12 if mode == "counted call" else None)
    with pytest.raises(GuestFault) as err:
        if mode.endswith("call"):
            m.timeout = 0.05
            m.call("f4loop")
        else:
            for _ in range(2 if mode == "tasks" else 1):
                m.spawn("f4loop")
            m.run_tasks(timeout=0.05)
    assert err.value.reason == "timeout", str(err.value)


# --- invisible to the guest ---------------------------------------------------------------
FLAGS = """
std_then_fault:
    std
    mov rax, [0]
    ret
copy4:
    lea rsi, [rip + src]
    lea rdi, [rsp - 64]
    mov rcx, 4
    rep movsb
    mov eax, dword ptr [rsp - 64]
    ret
src:
    .byte 1, 2, 3, 4
set_tf:
    pushfq
    or qword ptr [rsp], 0x100
    popfq
    nop
    ret
flags:
    pushfq
    pop rax
    ret
"""


def test_each_call_starts_with_df_clear() -> None:
    """A fault after ``std`` must not make the next call's ``rep movsb`` copy backwards."""
    m = Machine.from_asm(FLAGS)
    with pytest.raises(GuestFault):
        m.call("std_then_fault")
    assert m.call("copy4") == 0x04030201


def test_each_call_starts_with_tf_clear() -> None:
    """Single-stepping (TF) set by the guest or a handler ends that call, not every later one."""
    m = Machine.from_asm(FLAGS)
    with pytest.raises(GuestFault, match="interrupt 1"):
        m.call("set_tf")
    assert m.call("copy4") == 0x04030201

    def set_tf(kp: Kprobe, regs: object) -> int:
        regs.eflags |= 0x100  # type: ignore[attr-defined]
        return 0

    kp = Kprobe(symbol_name="copy4", pre_handler=set_tf)
    register_kprobe(m, kp)
    with pytest.raises(GuestFault):
        m.call("copy4")
    assert m.call("flags") & 0x100 == 0


def test_spawned_tasks_start_with_the_abi_flags() -> None:
    m = Machine.from_asm(FLAGS)
    with pytest.raises(GuestFault):
        m.call("std_then_fault")
    task = m.spawn("copy4")
    m.run_tasks()
    assert task.result == 0x04030201


NONCANONICAL = """
aliased:
    mov rax, 0x0010000000400000        # bits 52..63 dropped: 0x400000, this code
    mov rax, [rax]
    ret
high_bit:
    mov rax, 0x8000000000001000
    mov rax, [rax]
    ret
store:
    mov rax, 0x0000800000000000
    mov qword ptr [rax], 1
    ret
jump:
    mov rax, 0x1000000000400000
    jmp rax
kernel_half:
    mov rax, 0xffff800000000000
    mov rax, [rax]
    ret
sysenter_here:
    sysenter
    ret
"""


@pytest.mark.parametrize("func", ["aliased", "high_bit", "store", "jump"])
def test_a_non_canonical_address_is_a_general_protection_fault(func: str) -> None:
    m = Machine.from_asm(NONCANONICAL)
    with pytest.raises(GuestFault, match="general protection fault") as err:
        m.call(func)
    assert err.value.reason == "protection" and fault_status(err.value) == 128 + signal.SIGSEGV


def test_a_kernel_half_address_faults_as_unmapped() -> None:
    m = Machine.from_asm(NONCANONICAL)
    with pytest.raises(GuestFault, match="at 0xffff800000000000") as err:
        m.call("kernel_half")
    assert fault_status(err.value) == 128 + signal.SIGSEGV


def test_sysenter_in_64_bit_mode_is_an_invalid_instruction() -> None:
    m = Machine.from_asm(NONCANONICAL)
    with pytest.raises(GuestFault, match="sysenter") as err:
        m.call("sysenter_here")
    assert err.value.reason == "invalid-instruction"
    assert err.value.rip == m.resolve("sysenter_here")
    assert fault_status(err.value) == 128 + signal.SIGILL


def test_the_watchdog_leaves_the_signal_state_as_it_found_it() -> None:
    """Outside a run SIGINT is Python's again, and the wakeup fd is the program's."""
    before = signal.getsignal(signal.SIGINT)
    r, w = os.pipe()
    os.set_blocking(w, False)
    old = signal.set_wakeup_fd(w)
    try:
        Machine.from_asm("f:\n    ret\n").call("f")
        assert signal.getsignal(signal.SIGINT) is before
        assert signal.set_wakeup_fd(old) == w
    finally:
        os.close(r)
        os.close(w)
