"""``kprobe-emu run``'s command line (issue 11, "The command line").

Rules pinned:
- a program without a slash is looked up in PATH as a shell does; one not found
  is "command not found", status 127;
- a ``#!`` script runs its interpreter as the kernel's binfmt_script does
  (``parse_shebang`` against fs/binfmt_script.c's rules; whole runs against the
  same script run natively, nested interpreters too);
- the environment is the host's, ``--clear-env`` empties it, ``--env`` sets
  variables in order;
- ``--version``; no program: "a program to run is required", status 2;
- diagnostics: silent without ``-v`` but for one summary line at the end (also
  after a stopped run), printed as they happen with ``-v``;
- file view options that contradict each other are one line, status 2;
- probes that never armed are reported when the run ends, one line each;
- tools: ``libc:GLOB`` matches libc's functions, the JSON carries the pid, C++
  names are demangled in stacks.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kprobe_emu._program import BINPRM_BUF_SIZE, parse_shebang, resolve_program
from kprobe_emu.cli import main
from tests.guests import guest_bin as _guest_bin


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def _run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capfd.readouterr()
    return status, out, err


def _native(*argv: str, cwd: Path | None = None) -> tuple[int, str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=cwd)
    return done.returncode, done.stdout


# --- PATH ----------------------------------------------------------------------------------------
def test_a_name_is_looked_up_in_path_like_a_shell(capfd: pytest.CaptureFixture[str]) -> None:
    """``run echo a b`` runs PATH's echo with argv[0] "echo", as ``sh -c 'echo a b'``."""
    path, argv, scripts = resolve_program("echo", ["a", "b"])
    assert path == shutil.which("echo") and argv == ["echo", "a", "b"] and scripts == []
    assert _run(capfd, "run", "echo", "a", "b")[:2] == (0, "a b\n")


def test_a_name_not_in_path_is_command_not_found(capfd: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run(capfd, "run", "no-such-command-kprobe-emu")
    assert (status, out) == (127, "")
    assert err == "kprobe-emu run: no-such-command-kprobe-emu: command not found\n"


def test_a_path_with_a_slash_is_not_looked_up(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    status, _out, err = _run(capfd, "run", "./no-such-file-here")
    assert status == 127 and "command not found" not in err and err.count("\n") == 1


# --- #! scripts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "parsed"), [
    (b"#!/bin/sh\n", (b"/bin/sh", None)),
    (b"#! /bin/sh\n", (b"/bin/sh", None)),                            # blanks before the name
    (b"#!/bin/sh -e\n", (b"/bin/sh", b"-e")),
    (b"#!/usr/bin/env python3 -u -B  \n", (b"/usr/bin/env", b"python3 -u -B")),   # ONE argument
    (b"#!/bin/sh\t-x\t\n", (b"/bin/sh", b"-x")),
    (b"#!/bin/sh", (b"/bin/sh", None)),                               # no newline, short file
    (b"#!/bin/sh\0junk\n", (b"/bin/sh", None)),                       # NUL ends the name
    (b"#!/bin/sh -a\0junk\n", (b"/bin/sh", b"-a")),                   # and the argument
    (b"#!/bin/sh\r\n", (b"/bin/sh\r", None)),                         # CR is part of the name
    (b"\x7fELF", None),
    (b"# !/bin/sh\n", None),
])
def test_shebang_lines_as_binfmt_script_reads_them(line: bytes,
                                                   parsed: tuple[bytes, bytes | None] | None) -> None:
    assert parse_shebang(line) == parsed


@pytest.mark.parametrize("line", [b"#!\n", b"#!   \t\n", b"#!" + b" " * 300,
                                  b"#!/" + b"x" * (BINPRM_BUF_SIZE - 3)])
def test_shebang_lines_the_kernel_refuses(line: bytes) -> None:
    """No interpreter, or a name the 256-byte buffer cuts (ENOEXEC)."""
    with pytest.raises(ValueError, match="bad #! line"):
        parse_shebang(line)


def test_shebang_long_line_is_cut_after_the_name() -> None:
    """No newline in the buffer but a blank after the name: the argument is what fits."""
    line = b"#!/bin/sh " + b"a" * 400 + b"\n"
    assert parse_shebang(line) == (b"/bin/sh", b"a" * (BINPRM_BUF_SIZE - len(b"#!/bin/sh ")))


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_script_runs_as_natively(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The interpreter gets [interp, arg, script path, args]: $0, $* and -e as natively."""
    script = _script(tmp_path / "s.sh", '#!/bin/sh -e\necho "$0 [$*]"\nfalse\necho not reached\n')
    native = _native(str(script), "a", "b c")
    status, out, _err = _run(capfd, "run", "--fs", "none", str(script), "a", "b c")
    assert (status, out) == native == (1, f"{script} [a b c]\n")


def test_nested_interpreter_scripts_run_as_natively(tmp_path: Path,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    """A script whose interpreter is a script (Linux allows it): argv grows at the front."""
    inner = _script(tmp_path / "inner", '#!/bin/sh\nfor a in "$@"; do echo "<$a>"; done\n')
    outer = _script(tmp_path / "outer", f"#!{inner} -x\n")
    native = _native(str(outer), "y")
    assert _run(capfd, "run", "--fs", "none", str(outer), "y")[:2] == native
    assert native[1] == f"<-x>\n<{outer}>\n<y>\n"


def test_script_with_a_missing_interpreter(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    script = _script(tmp_path / "s", "#!/no/such/interp\n")
    status, _out, err = _run(capfd, "run", str(script))
    assert status == 127
    assert err == f"kprobe-emu run: {script}: /no/such/interp: bad interpreter: No such file or directory\n"


def test_script_found_in_path_gets_its_full_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _script(tmp_path / "myscript", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")
    path, argv, scripts = resolve_program("myscript", ["1"])
    assert path == "/bin/sh" and argv == ["/bin/sh", str(tmp_path / "myscript"), "1"]
    assert scripts == [str(tmp_path / "myscript")]


# --- environment ---------------------------------------------------------------------------------
def test_env_options(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPROBE_EMU_TEST", "host")
    _status, out, _err = _run(capfd, "run", "env")
    assert "KPROBE_EMU_TEST=host\n" in out
    status, out, _err = _run(capfd, "run", "--clear-env", "--env", "A=1", "--env", "B=x=y",
                             "--env", "A=2", "/usr/bin/env")
    assert (status, out) == (0, "A=2\nB=x=y\n")


@pytest.mark.parametrize("bad", ["NOEQUALS", "=value"])
def test_a_bad_env_option_is_a_usage_error(bad: str, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--env", bad, "true"])
    assert info.value.code == 2
    assert f"invalid variable {bad!r}: give NAME=VALUE" in capfd.readouterr().err


# --- version, usage ------------------------------------------------------------------------------
def test_version(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capfd.readouterr().out == f"kprobe-emu {importlib.metadata.version('kprobe-emu')}\n"


@pytest.mark.parametrize("command", [["run"], ["funccount", "fib"], ["sweep", "--seeds", "1"]])
def test_no_program_is_a_usage_error(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "kprobe_emu", *command], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("usage: ")
    assert done.stderr.splitlines()[-1] == f"kprobe-emu {command[0]}: error: a program to run is required"


# --- file view options ---------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "words"), [
    (["--cwd", "/", "--fs-root", "/tmp"], "--cwd and --fs-root name different directories: give one"),
    (["--cwd", "/no/such/dir"], "/no/such/dir: not a directory (--cwd/--fs-root)"),
    (["--fs", "none", "--fs-writable"], "--fs-writable needs --fs-root DIR with --fs none"),
])
def test_contradicting_file_view_options(options: list[str], words: str,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    status, _out, err = _run(capfd, "run", *options, "true")
    assert status == 2 and err == f"kprobe-emu run: {words}\n"


def test_fs_root_with_fs_none_is_the_working_directory(tmp_path: Path, guest_bin: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.txt").write_text("mapped\n")
    sysprobe = str(guest_bin / "sysprobe")
    assert _run(capfd, "run", "--fs", "none", "--fs-root", str(tmp_path), sysprobe, "cat", "in.txt")[:2] \
        == (0, "mapped\n")
    status, _out, err = _run(capfd, "run", "--fs", "none", sysprobe, "cat", str(tmp_path / "in.txt"))
    assert status == 1 and err.splitlines()[-1] == "kprobe-emu: 1 file access denied: run with -v"


# --- diagnostics ---------------------------------------------------------------------------------
def test_denials_are_one_summary_line_at_the_end(tmp_path: Path, guest_bin: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    """Without -v the guest's stderr is its own, then one line (a path denied twice
    counts once); with -v each denial as it happens, and the count at the end."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    sysprobe = str(guest_bin / "sysprobe")
    status, out, err = _run(capfd, "run", "--fs", "none", sysprobe, "cat", str(secret))
    assert (status, out) == (1, f"open {secret}: errno 13\n")      # what the guest saw: EACCES
    assert err == "kprobe-emu: 1 file access denied: run with -v\n"
    status, _out, err = _run(capfd, "run", "-v", "--fs", "none", sysprobe, "cat", str(secret))
    assert status == 1
    assert err.splitlines()[-2:] == [
        f"kprobe-emu: denied access to '{secret}': not allowed by the guest's file view",
        "kprobe-emu: 1 file access denied"]


def test_no_diagnostics_no_line(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    status, _out, err = _run(capfd, "run", "--fs", "none", str(guest_bin / "fib.static"), "5")
    assert (status, err) == (5, "")


def test_the_summary_follows_a_stopped_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    secret = Path("/etc/shadow")                    # exists on the host, kept out of the view
    if not secret.exists():
        pytest.skip("no /etc/shadow on this host")
    status, _out, err = _run(capfd, "run", "--cwd", str(tmp_path), "--max-insns", "3000000", "sh", "-c",
                             f"cat {secret} 2>/dev/null; while :; do :; done")
    assert status == 124
    assert "instruction budget" in err.splitlines()[-2]
    assert re.fullmatch(r"kprobe-emu: \d+ file access(es)? denied: run with -v", err.splitlines()[-1])


# --- probes that never armed, tools --------------------------------------------------------------
def test_a_probe_that_never_armed_is_reported_at_the_end(guest_bin: Path,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run(capfd, "trace", "--fs", "none", "-e", "p libcc:malloc",
                            str(guest_bin / "fib.dyn"), "5")
    assert (status, out) == (5, "fib(5) = 5\n")
    assert ("kprobe-emu: probe on libcc:malloc never armed: no mapped object matches 'libcc'; "
            "mapped: fib.dyn, ld-linux-x86-64.so.2, libc.so.6") in err.splitlines()


def test_a_probe_on_a_missing_symbol_stops_in_one_line(guest_bin: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    status, _out, err = _run(capfd, "trace", "--fs", "none", "-e", "p libc:mallocx",
                             str(guest_bin / "fib.dyn"), "5")
    assert status == 2 and "Traceback" not in err
    assert "kprobe-emu trace: ENOENT: probe on libc:mallocx never armed: no symbol 'mallocx' in " \
           "libc.so.6" in err.splitlines()


def test_short_library_names_in_tools(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``libc:*alloc`` counts what ``libc.so.6:*alloc`` counts."""
    prog = str(guest_bin / "strings.dyn")
    short = _run(capfd, "funccount", "--fs", "none", "libc:*alloc", prog)
    full = _run(capfd, "funccount", "--fs", "none", "libc.so.6:*alloc", prog)
    assert short[:2] == full[:2] and "malloc" in short[1]


def test_json_events_carry_tid_and_pid(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    status, out, _err = _run(capfd, "trace", "--fs", "none", "--json", "-e", "p fib",
                             str(guest_bin / "fib.static"), "3")
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert status == 2 and events
    assert all(ev["tid"] == 1 and ev["pid"] == 1 for ev in events)


def test_cxx_stacks_are_demangled(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``thrower`` names ``_Z7throwerl``; every frame is printed demangled."""
    status, out, _err = _run(capfd, "stackcount", "--fs", "none", "-f", "thrower",
                             str(guest_bin / "throw.static"))
    assert status == 0
    stacks = [line.rsplit(" ", 1)[0].split(";") for line in out.splitlines() if ";" in line]
    assert stacks and all(s[-1] == "thrower(long)" and "middle(long)" in s for s in stacks)
