"""``kprobe_events`` lines -> :class:`ProbeSpec` (Documentation/trace/kprobetrace.rst).

The order of the checks, and so which error a line with several faults gets,
is the kernel's: kernel/trace/trace_kprobe.c ``trace_kprobe_create_internal``
(maxactive, probe point, event name, then the arguments),
kernel/trace/trace_probe.c ``traceprobe_parse_event_name``,
``argv_has_var_arg`` (the ``$arg`` pre-scan) and the per-argument parser in
:mod:`._fetcharg`. Columns are those of ``__trace_probe_log_err``: the start
of the faulty word plus the kernel's offset into it (for a line whose words are
separated by single spaces, exactly the kernel's caret).

Deviations, each because the kernel's rule does not fit user-space objects or
is a kernel bug:
- in ``OBJECT:SYM+offs`` the offset is looked for after the ``:`` (object names
  such as ``ld-linux-x86-64.so.2`` contain ``-``; module names never do);
- an empty symbol (``p :foo``, ``p libc.so.6:``) is BAD_PROBE_ADDR at once (the
  kernel finds it at registration, ENOENT);
- ``r ADDR`` probes are return probes for the argument parser too (the kernel
  sets ``TPARG_FL_RETURN`` only for symbols, so ``r ADDR $retval`` fails there).
Lines the kernel refuses without an ``error_log`` entry raise ``BAD_COMMAND``.
Unknown symbols, instruction boundaries and registration failures are the
attach step's (``BAD_PROBE_ADDR``, ``BAD_INSN_BNDRY``, ``FAIL_REG_PROBE``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ._errors import ParseError
from ._fetcharg import ArgFlags, parse_fetch_arg
from ._num import kstrtoll, kstrtouint, kstrtoull
from ._tables import (
    KPROBE_EVENT_SYSTEM,
    KRETPROBE_MAXACTIVE_MAX,
    MAX_EVENT_NAME_LEN,
    MAX_TRACE_ARGS,
    is_good_name,
    is_good_system_name,
    sanitize_event_name,
)
from ._types import FetchArg, ProbeSpec

__all__ = ["parse", "check_append"]

_WORD = re.compile(r"[^ \t\n\v\f\r]+")      # argv_split: words between isspace()
_UINT_MAX = 0xFFFF_FFFF


def parse(line: str) -> ProbeSpec:
    """Parse one probe-event command.

    Args:
        line: ``p[:[GRP/][EVENT]] SYM[+offs]|MEMADDR [FETCHARGS]``,
            ``r[MAXACTIVE][:[GRP/][EVENT]] SYM[+0] [FETCHARGS]``,
            ``p[:[GRP/][EVENT]] SYM[+0]%return [FETCHARGS]`` or ``-:[GRP/][EVENT]``.

    Raises:
        ParseError: what the kernel writes to ``error_log``, at the same column.
    """
    text = line.rstrip("\r\n")
    words = [(m.group(), m.start()) for m in _WORD.finditer(text)]
    if not words:
        raise ParseError("BAD_COMMAND", 0, text)
    if words[0][0][0] == "-":
        return _parse_delete(text, words)
    return _Line(text, words).parse()


def check_append(existing: Sequence[ProbeSpec], new: ProbeSpec) -> None:
    """Whether ``new`` may join the event the probes ``existing`` already make up
    (trace_kprobe.c ``register_trace_kprobe``, ``append_trace_kprobe``).

    Raises:
        ParseError: DIFF_PROBE_TYPE, DIFF_ARG_TYPE (at the first differing
            argument) or SAME_PROBE, placed in ``new``'s line.
    """
    if not existing:
        return
    first = existing[0]
    if first.is_return != new.is_return:
        raise ParseError("DIFF_PROBE_TYPE", _col(new, 0), new._line)
    differ = _compare_arg_type(new.args, first.args)
    if differ:
        raise ParseError("DIFF_ARG_TYPE", _col(new, differ + 1), new._line)
    for old in existing:
        if (old.symbol, old.offset, old.addr) == (new.symbol, new.offset, new.addr) and \
                [a._comm for a in old.args] == [a._comm for a in new.args]:
            raise ParseError("SAME_PROBE", _col(new, 0), new._line)


def _compare_arg_type(a: list[FetchArg], b: list[FetchArg]) -> int:
    """``trace_probe_compare_arg_type``: the 1-based index of the first argument whose
    name, stored type or array size differs, or 0."""
    if len(a) != len(b):
        return min(len(a), len(b)) + 1
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        px, py = x._prog, y._prog
        same_type = px is not None and py is not None and \
            (px.ftype, px.count) == (py.ftype, py.count)
        if x.name != y.name or not same_type:
            return i + 1
    return 0


def _col(spec: ProbeSpec, index: int) -> int:
    """The column of word ``index``; past the last word, one after its end plus a
    space (``__trace_probe_log_err`` with ``index >= argc``)."""
    if index < len(spec._cols):
        return spec._cols[index]
    words = _WORD.findall(spec._line)
    return spec._cols[-1] + len(words[-1]) + 1 if words else 0


def _parse_delete(text: str, words: list[tuple[str, int]]) -> ProbeSpec:
    """``-:[GRP/]EVENT [SYM ARGS...]`` (trace_dynevent.c ``dyn_event_release``)."""
    head, col = words[0]
    if head[1:2] != ":":
        raise ParseError("BAD_COMMAND", col + 1, text)
    group, slash, event = head[2:].partition("/")
    if not slash:
        group, event = "", group
    if not slash and not event:
        raise ParseError("NO_EVENT_NAME", col + 2, text)
    return ProbeSpec("-", group if slash else None, event, _line=text,
                     _cols=tuple(c for _, c in words), _match=tuple(w for w, _ in words[1:]))


class _Line:
    """``trace_kprobe_create_internal`` for one line of words (with their columns)."""

    def __init__(self, text: str, words: list[tuple[str, int]]) -> None:
        self.text = text
        self.words = words

    def err(self, code: str, word: int, offset: int = 0) -> ParseError:
        return ParseError(code, self.words[word][1] + offset, self.text)

    def parse(self) -> ProbeSpec:
        head = self.words[0][0]
        if head[0] not in "pr" or len(self.words) < 2:
            raise self.err("BAD_COMMAND", 0)
        is_return = head[0] == "r"
        colon = head.find(":", 1)
        maxactive = self._maxactive(head, colon, is_return)
        target = self.words[1][0]
        addr = kstrtoull(target)
        symbol, offset = None, 0
        if addr is None:
            if "/" in target and ":" in target:      # a uprobe: not ours
                raise self.err("BAD_COMMAND", 1)
            symbol, offset, is_return = self._symbol(target, is_return)
        group, event = KPROBE_EVENT_SYSTEM, None
        if colon >= 0:
            group, event = self._event_name(head[colon + 1:], colon + 1)
        if event is None:
            kind = "r" if is_return else "p"
            where = f"{symbol}_{offset}" if symbol is not None else f"0x{addr:016x}"
            event = sanitize_event_name(f"{kind}_{where}")[:MAX_EVENT_NAME_LEN - 1]
        fentry = symbol is not None and offset == 0 and not is_return
        args = self._args(ArgFlags(self.text, is_return, fentry, self.words[1][1]))
        return ProbeSpec("r" if is_return else "p", group, event, symbol, offset, addr, maxactive,
                         args, _line=self.text, _cols=tuple(c for _, c in self.words))

    def _maxactive(self, head: str, colon: int, is_return: bool) -> int:
        if not head[1:2].isdigit() or not head[1:2].isascii():
            return 0
        if not is_return:
            raise self.err("MAXACT_NO_KPROBE", 0, 1)
        text = head[1:colon] if colon >= 0 else head[1:]
        if len(text) > MAX_EVENT_NAME_LEN - 1:
            raise self.err("BAD_MAXACT", 0, 1)
        value = kstrtouint(text)
        if not value:
            raise self.err("BAD_MAXACT", 0, 1)
        if value > KRETPROBE_MAXACTIVE_MAX:
            raise self.err("MAXACT_TOO_BIG", 0, 1)
        return value

    def _symbol(self, target: str, is_return: bool) -> tuple[str, int, bool]:
        """``[OBJECT:]SYM[+offs][%return]``; the symbol itself is checked at attach."""
        pct = target.find("%")
        if pct >= 0:
            if target[pct:] != "%return":
                raise self.err("BAD_ADDR_SUFFIX", 1, pct)
            target, is_return = target[:pct], True
        start = target.find(":") + 1
        cuts = [i for i in (target.find("+", start), target.find("-", start)) if i >= 0]
        name, offset = target, 0
        if cuts:
            name, parsed = target[:min(cuts)], kstrtoll(target[min(cuts):])
            if parsed is None or not 0 <= parsed <= _UINT_MAX:
                raise self.err("BAD_PROBE_ADDR", 1)
            offset = parsed
        if not name or name.startswith(":") or name.endswith(":"):
            raise self.err("BAD_PROBE_ADDR", 1)
        if is_return and offset:                # kprobe_on_func_entry() == -EINVAL
            raise self.err("BAD_RETPROBE", 1)
        return name, offset, is_return

    def _event_name(self, text: str, offset: int) -> tuple[str, str | None]:
        """``traceprobe_parse_event_name``: ``GRP/EVENT``, ``GRP.EVENT``, ``GRP/``, ``EVENT``."""
        slash = text.find("/")
        if slash < 0:
            slash = text.find(".")
        group, event = KPROBE_EVENT_SYSTEM, text
        if slash >= 0:
            if slash == 0:
                raise self.err("NO_GROUP_NAME", 0, offset)
            if slash + 1 > MAX_EVENT_NAME_LEN:
                raise self.err("GROUP_TOO_LONG", 0, offset)
            group = text[:slash]
            if not is_good_system_name(group):
                raise self.err("BAD_GROUP_NAME", 0, offset)
            event, offset = text[slash + 1:], offset + slash + 1
        if not event:
            if slash >= 0:
                return group, None
            raise self.err("NO_EVENT_NAME", 0, offset)
        if len(event) > MAX_EVENT_NAME_LEN:
            raise self.err("EVENT_TOO_LONG", 0, offset)
        if not is_good_name(event):
            raise self.err("BAD_EVENT_NAME", 0, offset)
        return group, event

    def _args(self, flags: ArgFlags) -> list[FetchArg]:
        words = self.words[2:]
        self._scan_var_args(flags)
        if len(words) > MAX_TRACE_ARGS:
            raise self.err("TOO_MANY_ARGS", 2)
        used: set[str] = set()
        args = [parse_fetch_arg(word, i, col, flags, used) for i, (word, col) in enumerate(words)]
        if flags.deferred:
            raise flags.deferred[0]
        return args

    def _scan_var_args(self, flags: ArgFlags) -> None:
        """``argv_has_var_arg`` then ``traceprobe_expand_meta_args``: every word that
        starts with ``$arg`` is checked before any argument is parsed; ``$arg*``
        needs BTF, which this kernel has not."""
        star, last = False, 0
        for i in range(2, len(self.words)):
            word = self.words[i][0]
            if not word.startswith("$arg"):
                continue
            last = i
            if not (flags.fentry or flags.is_return):
                raise self.err("NOFENTRY_ARGS", i)
            if word[4:5].isdigit() and word[4:5].isascii():
                continue
            if word[4:5] != "*":
                raise self.err("BAD_VAR", i)
            if star:
                raise self.err("DOUBLE_ARGS", i)
            star = True
        if star:
            raise self.err("NOSUP_BTFARG", last)
