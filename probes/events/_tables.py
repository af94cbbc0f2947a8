"""Data of the probe-event language: limits, fetch types, register names.

Sources: kernel/trace/trace_probe.h (limits, ``probe_fetch_types`` in
trace_probe.c), kernel/trace/trace_kprobe.c, arch/x86/kernel/ptrace.c
(``regoffset_table``), kernel/trace/trace.h (names).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_TRACE_ARGS", "MAX_ARGSTR_LEN", "MAX_ARRAY_LEN", "MAX_ARG_NAME_LEN", "MAX_EVENT_NAME_LEN",
    "MAX_STRING_SIZE", "FETCH_INSN_MAX", "KRETPROBE_MAXACTIVE_MAX", "PARAM_MAX_STACK",
    "KPROBE_EVENT_SYSTEM", "DEFAULT_FETCH_TYPE", "FetchType", "FETCH_TYPES", "REGISTERS",
    "REGISTER_CONSTANTS", "RESERVED_FIELD_NAMES", "is_good_name", "is_good_system_name",
    "sanitize_event_name",
]

MAX_TRACE_ARGS = 128
MAX_ARGSTR_LEN = 63
MAX_ARRAY_LEN = 64
MAX_ARG_NAME_LEN = 32
MAX_EVENT_NAME_LEN = 64          # kernel/trace/trace.h
MAX_STRING_SIZE = 4096           # PATH_MAX
FETCH_INSN_MAX = 16              # fetch + deref*N + store + mod + end
KRETPROBE_MAXACTIVE_MAX = 4096   # trace_kprobe.c
PARAM_MAX_STACK = 16384 // 8     # THREAD_SIZE / sizeof(unsigned long) on x86-64
KPROBE_EVENT_SYSTEM = "kprobes"
DEFAULT_FETCH_TYPE = "x64"       # x##BITS_PER_LONG


@dataclass(frozen=True)
class FetchType:
    """One row of ``probe_fetch_types``: ``kind`` picks the print format
    (``u`` %u, ``s`` %d, ``x`` 0x%x, ``char`` '%c', ``symbol`` %pS, ``string`` "%s")."""

    name: str
    size: int
    kind: str

    @property
    def is_string(self) -> bool:
        return self.kind == "string"

    @property
    def signed(self) -> bool:
        return self.kind == "s"

    @property
    def hex(self) -> bool:
        return self.kind == "x"


FETCH_TYPES: dict[str, FetchType] = {
    t.name: t for t in (
        FetchType("string", 4, "string"),     # stored as a u32 data_loc
        FetchType("ustring", 4, "string"),
        FetchType("symstr", 4, "string"),
        *(FetchType(f"{k}{bits}", bits // 8, k) for k in "usx" for bits in (8, 16, 32, 64)),
        FetchType("char", 1, "char"),
        FetchType("symbol", 8, "symbol"),
    )
}

# regs_query_register_offset (arch/x86/kernel/ptrace.c) -> PtRegs attribute,
# plus the r-prefixed names perf and the psABI use.
REGISTERS: dict[str, str] = {
    **{f"r{n}": f"r{n}" for n in range(8, 16)},
    "bx": "rbx", "cx": "rcx", "dx": "rdx", "si": "rsi", "di": "rdi", "bp": "rbp", "ax": "rax",
    "ip": "rip", "flags": "eflags", "sp": "rsp",
    **{f"r{n}": f"r{n}" for n in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp", "ip")},
    "eflags": "eflags", "rflags": "eflags",
}

# Slots of x86-64 pt_regs that PtRegs lacks: what an int3 in kernel code leaves
# there (orig_ax = -1 for exceptions, __KERNEL_CS, __KERNEL_DS).
REGISTER_CONSTANTS: dict[str, int] = {"orig_ax": (1 << 64) - 1, "cs": 0x10, "ss": 0x18}

# trace_probe.c reserved_field_names
RESERVED_FIELD_NAMES = frozenset({
    "common_type", "common_flags", "common_preempt_count", "common_pid", "common_tgid",
    "__probe_ip", "__probe_ret_ip", "__probe_func",
})

_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM_ = _ALPHA | frozenset("0123456789_")


def _good(name: str, hyphen_ok: bool) -> bool:
    """``__is_good_name`` (kernel/trace/trace.h), ASCII letters only."""
    extra = "-" if hyphen_ok else ""
    if not name or not (name[0] in _ALPHA or name[0] == "_" or name[0] in extra):
        return False
    return all(ch in _ALNUM_ or ch in extra for ch in name[1:])


def is_good_name(name: str) -> bool:
    """Event and argument names: a C identifier."""
    return _good(name, False)


def is_good_system_name(name: str) -> bool:
    """Group names: a C identifier that may also contain ``-``."""
    return _good(name, True)


def sanitize_event_name(name: str) -> str:
    """``sanitize_event_name``: ``:``, ``.`` and ``*`` after the first character become ``_``."""
    return name[:1] + name[1:].replace(":", "_").replace(".", "_").replace("*", "_")
