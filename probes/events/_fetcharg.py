"""Fetch arguments: ``[NAME=]FETCHARG[:TYPE]`` -> :class:`FetchArg` with its :class:`Program`.

A transcription of kernel/trace/trace_probe.c: ``traceprobe_parse_probe_arg``
(name), ``traceprobe_parse_probe_arg_body`` and ``parse_probe_arg_type``
(length, type, array), ``parse_probe_arg`` and ``parse_probe_vars`` (the
expression) and ``finalize_fetch_insn`` (store, bitfield, array), with the
kernel's error names and caret offsets, including its quirks (the offset of
``+u`` dereferences is one short; errors found after parsing a dereference
are placed after its brace). The kernel's instruction budget is kept exactly:
16 slots, the last one the end marker, an ``@SYM`` taking three.

Ours, beyond the kernel: ``$entry(FETCHARG)`` and ``$duration`` on return
probes (``BAD_VAR`` elsewhere). ``$entry`` around a whole argument fetches all
of it, type included, at function entry; inside a dereference it is a load
whose value was taken at entry. Inside ``$entry(...)`` the parser works as on a
function-entry probe (``$argN`` from the registers, no ``$retval``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._errors import ParseError
from ._num import kstrtoll, kstrtouint, kstrtoull, simple_strtoul
from ._tables import (
    DEFAULT_FETCH_TYPE,
    FETCH_INSN_MAX,
    FETCH_TYPES,
    MAX_ARG_NAME_LEN,
    MAX_ARGSTR_LEN,
    MAX_ARRAY_LEN,
    PARAM_MAX_STACK,
    REGISTER_CONSTANTS,
    REGISTERS,
    RESERVED_FIELD_NAMES,
    FetchType,
    is_good_name,
)
from ._types import FetchArg, Insn, Program

__all__ = ["ArgFlags", "parse_fetch_arg"]

_U64 = (1 << 64) - 1
_DIGIT = frozenset("0123456789")
_ALPHA_ = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_STRING_OK = frozenset({"DEREF", "UDEREF", "IMM", "COMM", "DATA"})
_SYMSTR_OK = frozenset({"REG", "STACK", "RETVAL", "ARG", "DEREF"})


@dataclass
class ArgFlags:
    """``ctx->flags`` of one line: a return probe, a function-entry kprobe (``TPARG_FL_FENTRY``),
    and errors the kernel only finds when registering (``deferred``: first one wins)."""

    line: str
    is_return: bool
    fentry: bool
    symbol_col: int
    deferred: list[ParseError] = field(default_factory=list)


def parse_fetch_arg(token: str, index: int, col: int, flags: ArgFlags, used: set[str]) -> FetchArg:
    """``traceprobe_parse_probe_arg``: the ``index``-th argument, written at column ``col``."""
    eq = token.find("=")
    if eq >= 0:
        if eq > MAX_ARG_NAME_LEN:
            raise ParseError("ARG_NAME_TOO_LONG", col, flags.line)
        if eq == 0:
            raise ParseError("NO_ARG_NAME", col, flags.line)
        name, body, start = token[:eq], token[eq + 1:], eq + 1
    else:
        name, body, start = f"arg{index + 1}", token, 0
    if not is_good_name(name):
        raise ParseError("BAD_ARG_NAME", col, flags.line)
    if name in RESERVED_FIELD_NAMES or name in used:
        raise ParseError("USED_ARG_NAME", col, flags.line)
    used.add(name)
    if len(body) > MAX_ARGSTR_LEN:
        raise ParseError("ARG_TOO_LONG", col + start, flags.line)
    if not body:
        raise ParseError("NO_ARG_BODY", col + start, flags.line)
    parser = _Parser(flags, col, start, in_entry=False)
    prog, expr, tname = parser.parse_body(body)
    return FetchArg(name, expr, tname, _prog=prog, _comm=body)


def find_fetch_type(tname: str | None) -> FetchType | None:
    """``find_fetch_type``: a bitfield ``b<W>@<O>/<S>`` stores in ``u<S>``."""
    if tname is None:
        tname = DEFAULT_FETCH_TYPE
    if tname[:1] == "b":
        slash = tname.find("/")
        bits = kstrtoull(tname[slash + 1:]) if slash >= 0 else None
        return FETCH_TYPES.get(f"u{bits}") if bits in (8, 16, 32, 64) else None
    return FETCH_TYPES.get(tname)


class _Parser:
    """``parse_probe_arg`` for one argument; ``offset`` is ``ctx->offset`` (into the
    argument's word), ``slot`` the kernel's code pointer into its 16 instructions."""

    def __init__(self, flags: ArgFlags, col: int, offset: int, in_entry: bool) -> None:
        self.flags = flags
        self.col = col
        self.offset = offset
        self.in_entry = in_entry
        self.slot = 0
        self.insns: list[Insn] = []
        self.at_entry = False

    def err(self, code: str, offset: int) -> ParseError:
        return ParseError(code, self.col + offset, self.flags.line)

    @property
    def on_return(self) -> bool:
        return self.flags.is_return and not self.in_entry

    @property
    def on_entry(self) -> bool:
        return self.flags.fentry or self.in_entry

    # --- the argument body: type, expression, finalization ----------------------
    def parse_body(self, body: str) -> tuple[Program, str, str]:
        start = self.offset
        colon = body.find(":")
        expr = body if colon < 0 else body[:colon]
        tname, count = self._split_array(body, colon, start)
        type_off = colon + 1 if colon >= 0 else 0
        if expr in ("$comm", "$COMM") or expr.startswith('\\"'):
            if count or (tname is not None and tname != "string"):
                raise self.err("NEED_STRING_TYPE", start + type_off)
            ftype: FetchType | None = FETCH_TYPES["string"]
        else:
            ftype = find_fetch_type(tname)
        if ftype is None:
            raise self.err("BAD_TYPE", start + type_off)
        self.parse(expr, top=True)
        prog = self.finalize(ftype, count, tname, type_off)
        shown = body[colon + 1:] if colon >= 0 else ftype.name
        return prog, expr, shown

    def _split_array(self, body: str, colon: int, start: int) -> tuple[str | None, int]:
        if colon < 0:
            return None, 0
        tname = body[colon + 1:]
        bracket = tname.find("[")
        if bracket < 0:
            return tname, 0
        num_at = colon + 1 + bracket + 1
        inside = tname[bracket + 1:]
        close = inside.find("]")
        if close < 0:
            raise self.err("ARRAY_NO_CLOSE", start + num_at + len(inside))
        if close != len(inside) - 1:
            raise self.err("BAD_ARRAY_SUFFIX", start + num_at + close + 1)
        count = kstrtouint(inside[:close])
        if not count:
            raise self.err("BAD_ARRAY_NUM", start + num_at)
        if count > MAX_ARRAY_LEN:
            raise self.err("ARRAY_TOO_BIG", start + num_at)
        return tname[:bracket], count

    def finalize(self, ftype: FetchType, count: int, tname: str | None, type_off: int) -> Program:
        """``finalize_fetch_insn``: pick the store, then the bitfield and the array loop."""
        at_type = self.offset + type_off
        last = self.insns[-1]
        derefs = [insn.param for insn in self.insns[1:]]
        offset = 0
        if ftype.is_string:
            self._check_string_source(ftype, last, at_type)
            if ftype.name == "symstr" or last.op in ("IMM", "COMM", "DATA") or count:
                self._next_slot("TOO_MANY_OPS", self.offset)
            else:
                offset = derefs.pop()
            user = ftype.name == "ustring" or (last.op == "UDEREF" and not count)
            store = "SYMSTR" if ftype.name == "symstr" else "USTRING" if user else "STRING"
        elif last.op in ("DEREF", "UDEREF"):
            offset = derefs.pop()
            store = "MEM" if last.op == "DEREF" else "UMEM"
        else:
            if self.insns[0].op in ("COMM", "DATA"):     # only reachable through $entry(...)
                raise self.err("NEED_STRING_TYPE", at_type)
            self._next_slot("TOO_MANY_OPS", self.offset)
            store = "RAW"
        bitfield = self._bitfield(tname, ftype, at_type) if tname and tname[0] == "b" else None
        if count:
            if store not in ("MEM", "STRING", "USTRING"):
                raise self.err("BAD_STRING", at_type)
            self._next_slot("TOO_MANY_OPS", self.offset)
        return Program(self.insns[0], tuple(derefs), store, offset, ftype, count, bitfield,
                       self.at_entry)

    def _check_string_source(self, ftype: FetchType, last: Insn, at_type: int) -> None:
        if ftype.name == "symstr":
            ok = last.op in _SYMSTR_OK and not (last.op == "ARG" and self.on_return)
            if not ok:
                raise self.err("BAD_SYMSTRING", at_type)
        elif last.op not in _STRING_OK:
            raise self.err("BAD_STRING", at_type)

    def _bitfield(self, tname: str, ftype: FetchType, at_type: int) -> tuple[int, int]:
        """``__parse_bitfield_probe_arg``: ``b<W>@<O>/<S>`` with W + O within S bits."""
        width, end = simple_strtoul(tname[1:])
        rest = tname[1 + end:]
        if width == 0 or rest[:1] != "@":
            raise self.err("BAD_BITFIELD", at_type)
        shift, end = simple_strtoul(rest[1:])
        if end == 0 or rest[1 + end:2 + end] != "/":
            raise self.err("BAD_BITFIELD", at_type)
        self._next_slot("BAD_BITFIELD", at_type)
        bits = ftype.size * 8
        total = (width + shift) & _U64
        if bits < total:
            raise self.err("BAD_BITFIELD", at_type)
        return (bits - total) & 0xFF, (bits - width) & 0xFF

    def _next_slot(self, code: str, offset: int) -> None:
        """``++code == end``: the 16th instruction is reserved for the end marker."""
        self.slot += 1
        if self.slot >= FETCH_INSN_MAX - 1:
            raise self.err(code, offset)

    def emit(self, op: str, param: object = None) -> None:
        self.insns.append(Insn(op, param))

    # --- the expression (parse_probe_arg) -----------------------------------------
    def parse(self, arg: str, top: bool) -> None:
        head = arg[:1]
        if head == "$":
            self._var(arg, top)
        elif head == "%":
            self._register(arg[1:])
        elif head == "@":
            self._memory(arg)
        elif head in ("+", "-"):
            self._deref(arg)
        elif head == "\\":
            self._immediate(arg)
        elif head in _ALPHA_:       # a BTF variable name: this kernel has no BTF
            raise self.err("NOSUP_BTFARG", self.offset)
        else:
            raise self.err("BAD_FETCH_ARG", self.offset)

    def _register(self, name: str) -> None:
        if name in REGISTERS:
            self.emit("REG", REGISTERS[name])
        elif name in REGISTER_CONSTANTS:
            self.emit("REG", REGISTER_CONSTANTS[name])
        else:
            raise self.err("BAD_REG_NAME", self.offset)

    def _memory(self, arg: str) -> None:
        if arg[1:2] in _DIGIT:
            addr = kstrtoull(arg[1:])
            if addr is None:
                raise self.err("BAD_MEM_ADDR", self.offset)
            self.emit("IMM", addr)
        elif arg[1:2] == "+":
            raise self.err("FILE_ON_KPROBE", self.offset)
        else:
            self.emit("SYMBOL", self._symbol(arg[1:]))
            self._next_slot("TOO_MANY_OPS", self.offset)     # FETCH_NOP_SYMBOL + FETCH_OP_IMM
        self._next_slot("TOO_MANY_OPS", self.offset)
        self.emit("DEREF", 0)

    def _symbol(self, text: str) -> tuple[str, int]:
        """``traceprobe_split_symbol_offset``, which the kernel runs at registration
        (``traceprobe_update_arg``): a bad offset fails it with FAIL_REG_PROBE."""
        cut = min((i for i in (text.find("+"), text.find("-")) if i >= 0), default=-1)
        if cut < 0:
            return text, 0
        offset = kstrtoll(text[cut:])
        if offset is None:
            self.flags.deferred.append(ParseError("FAIL_REG_PROBE", self.flags.symbol_col,
                                                  self.flags.line))
            offset = 0
        return text[:cut], offset

    def _deref(self, arg: str) -> None:
        user = arg[1:2] == "u"
        if user:
            arg = arg[0] + arg[2:]
        if arg[0] == "+":
            arg = arg[1:]
        paren = arg.find("(")
        if paren < 0:
            raise self.err("DEREF_NEED_BRACE", self.offset)
        offset = kstrtoll(arg[:paren])
        if offset is None:
            raise self.err("BAD_DEREF_OFFS", self.offset)
        self.offset += paren + 1 + (arg[0] != "-")
        inner = arg[paren + 1:]
        close = inner.rfind(")")
        if close < 0:
            raise self.err("DEREF_OPEN_BRACE", self.offset + len(inner))
        here = self.offset
        self.parse(inner[:close], top=False)    # text after the last ')' is ignored
        self.offset = here
        if self.insns[-1].op in ("COMM", "DATA"):
            raise self.err("COMM_CANT_DEREF", here)
        self._next_slot("TOO_MANY_OPS", here)
        self.emit("UDEREF" if user else "DEREF", offset)

    def _immediate(self, arg: str) -> None:
        if arg[1:2] == '"':
            text = arg[2:]
            # __parse_imm_string checks str[len - 1]: for an empty text, the opening quote
            if text and text[-1] != '"':
                raise self.err("IMMSTR_NO_CLOSE", self.offset + 2 + len(text))
            self.emit("DATA", text[:-1])
            return
        value = _str_to_immediate(arg[1:])
        if value is None:
            raise self.err("BAD_IMM", self.offset + 1)
        self.emit("IMM", value & _U64)

    # --- $-variables (parse_probe_vars) --------------------------------------------
    def _var(self, arg: str, top: bool) -> None:
        name = arg[1:]
        if name.startswith("retval"):
            if not self.on_return:
                raise self.err("RETVAL_ON_PROBE", self.offset)
            self.emit("RETVAL")
        elif name.startswith("stack"):
            self._stack(name[5:])
        elif name in ("comm", "COMM"):
            self.emit("COMM")
        elif name == "duration" and self.on_return:
            self.emit("DURATION")
        elif name.startswith("entry(") and self.on_return:
            self._entry(arg, top)
        elif name.startswith("arg"):
            self._arg(name[3:])
        else:
            raise self.err("BAD_VAR", self.offset)

    def _stack(self, digits: str) -> None:
        if not digits:
            self.emit("STACKP")
            return
        n = kstrtoull(digits, 10) if digits[0] in _DIGIT else None
        if n is None:
            raise self.err("BAD_VAR", self.offset)
        if n > PARAM_MAX_STACK:
            raise self.err("BAD_STACK_NUM", self.offset)
        self.emit("STACK", n)

    def _arg(self, digits: str) -> None:
        n = kstrtoull(digits, 10)
        if n is None:
            raise self.err("BAD_VAR", self.offset)
        if n == 0 or n > PARAM_MAX_STACK:
            raise self.err("BAD_ARG_NUM", self.offset)
        if not (self.on_entry or self.on_return):
            raise self.err("NOFENTRY_ARGS", self.offset)
        self.emit("ARG", n - 1)

    def _entry(self, arg: str, top: bool) -> None:
        close = arg.rfind(")")
        if close < 0:
            raise self.err("DEREF_OPEN_BRACE", self.offset + len(arg))
        if close != len(arg) - 1:
            raise self.err("BAD_FETCH_ARG", self.offset + close + 1)
        inner = _Parser(self.flags, self.col, self.offset + 7, in_entry=True)
        inner.parse(arg[7:close], top=False)
        if top:       # all of the argument runs at entry: it takes the inner program
            self.insns, self.slot = inner.insns, inner.slot
            self.at_entry = self.in_entry = True
            return
        if inner.insns[0].op in ("COMM", "DATA"):
            raise self.err("COMM_CANT_DEREF", self.offset + 7)
        self.emit("ENTRY", inner.finalize(FETCH_TYPES[DEFAULT_FETCH_TYPE], 0, None, 0))


def _str_to_immediate(text: str) -> int | None:
    """``str_to_immediate``: ``\\123``, ``\\0x7b``, ``\\-5``, ``\\+5``."""
    if text[:1] in _DIGIT:
        return kstrtoull(text)
    if text[:1] == "-":
        return kstrtoll(text)
    if text[:1] == "+":
        return kstrtoll(text[1:])
    return None
