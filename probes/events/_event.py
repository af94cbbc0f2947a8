"""One trace record per probe hit, and its ftrace text (kernel/trace/trace_output.c,
``print_kprobe_event``/``print_kretprobe_event`` in trace_kprobe.c).

``Event`` holds exactly the fields the JSON output shows. The text form is
``trace_pipe``'s line without the irq-flags column; its ``TASK-PID`` is the
comm and the thread id, as ftrace prints it (Documentation/trace/ftrace.rst:
"PID" there is the kernel's pid, a thread's id), the process id is in the JSON::

            fib-1       [000]      0.000123: p_fib_0: (fib+0x0/0x2e) n=0xa
            fib-1       [000]      0.000456: r_fib_0: (main+0x35/0x60 <- fib) ret=0x37
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emu._symbols import demangle

__all__ = ["Event", "format_event", "EVENT_FIELDS"]

EVENT_FIELDS = ("ts", "tid", "pid", "comm", "cpu", "group", "name", "kind", "ip", "caller", "args")


class Event:
    """A probe hit.

    Attributes:
        ts: time in ns (the virtual clock unless the host's was asked for).
        tid, comm, cpu: the task that hit (``cpu`` is always 0: one virtual CPU).
        pid: its process (thread group): ``m.current_task.pid``; default ``tid``.
        group, name: the event's group and name (``kprobes/p_fib_0``).
        kind: ``"p"`` or ``"r"``.
        ip: ``sym+0xoff`` of the probe (a return probe: of the probed function).
        caller: return probes: the ``sym+0xoff`` returned to; else None.
        args: fetch argument name -> value (ints as ints, strings as str, arrays as lists).
    """

    __slots__ = ("ts", "tid", "pid", "comm", "cpu", "group", "name", "kind", "ip", "caller", "args",
                 "entry_ts", "stack", "_texts", "_ip_text", "_caller_text", "_func")

    def __init__(self, ts: int, tid: int, comm: str, group: str, name: str, kind: str, ip: str,
                 caller: str | None, args: dict[str, Any], *, entry_ts: int | None = None,
                 texts: Callable[[], list[str]] | None = None, ip_text: str = "",
                 caller_text: str = "", func: str = "", pid: int | None = None) -> None:
        self.ts = ts
        self.tid = tid
        self.pid = tid if pid is None else pid
        self.comm = comm
        self.cpu = 0
        self.group = group
        self.name = name
        self.kind = kind
        self.ip = ip
        self.caller = caller
        self.args = args
        self.entry_ts = entry_ts           # return probes: when the call entered
        self.stack: list[int] | None = None   # return addresses, when asked for
        self._texts = texts                # the args as the kernel prints them
        self._ip_text = ip_text or ip      # with /size, as %pS prints
        self._caller_text = caller_text or (caller or "")
        self._func = func

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the event: exactly :data:`EVENT_FIELDS`."""
        return {name: getattr(self, name) for name in EVENT_FIELDS}

    def __repr__(self) -> str:
        return f"<Event {format_event(self).strip()}>"


def format_event(ev: Event) -> str:
    """The event's ``trace_pipe`` line (with its newline)."""
    sec, usec = divmod((ev.ts + 500) // 1000, 1_000_000)      # ns2usecs rounds
    head = f"{ev.comm:>16}-{ev.tid:<7} [{ev.cpu:03d}]  {sec:5d}.{usec:06d}: {ev.name}: "
    where = f"({ev._caller_text} <- {demangle(ev._func)})" if ev.kind == "r" else f"({ev._ip_text})"
    texts = ev._texts() if ev._texts is not None else [f"{k}={v}" for k, v in ev.args.items()]
    return head + where + "".join(" " + t for t in texts) + "\n"
