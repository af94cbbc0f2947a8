"""``kprobe-emu overhead`` (issue 13): the command line of probes.overhead.

Rules pinned:
- ``--json`` prints one JSON object on one line, the last line of stdout, exactly the
  issue's keys and types (plus ``host``); ``runs`` is ``--repeats``;
- a probe line's hits equal ``funccount``'s count and the -finstrument-functions oracle;
  each ``-e`` is a result of its own;
- the program's output is captured, not printed; the exit status is 0;
- ``--handler MODULE:FUNC --symbol SYM [--kind p|r]`` imports the user's module (a name
  or a .py file);
- a workload of fewer than 1,000 hits prints a ``warning:`` line on stderr; the load
  average is printed with the table;
- errors are one line and status 2: a bad MODULE:FUNC, an unknown symbol, a probe line
  that does not parse (the kernel's error_log entry, as the tools print it);
- ``--chart FILE.png`` writes a PNG;
- the README's "Measuring your handler" commands run.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from kprobe_emu.cli import main
from tests.conftest import fib
from tests.guests import guest_bin as _guest_bin
from tests.guests import instrumented_entries
from tests.probes.test_overhead import SCHEMA, check_schema

README = Path(__file__).resolve().parents[2] / "README.md"
HANDLERS = '''\
import time


def pre(kp, regs):
    end = time.perf_counter_ns() + 5000
    while time.perf_counter_ns() < end:
        pass


def ret(ri, regs):
    return None


def bad(kp, regs):
    return 1 // 0
'''


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


@pytest.fixture
def handlers(tmp_path: Path) -> Path:
    path = tmp_path / "myhandlers.py"
    path.write_text(HANDLERS)
    return path


def cli(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capfd.readouterr()
    return status, out, err


def test_json_is_the_last_line_and_hits_match_funccount(guest_bin: Path,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    prog, args = str(guest_bin / "fib.static"), ["11"]
    calls = 2 * fib(12) - 1
    assert calls == instrumented_entries(guest_bin / "fib.instr", args, "fib")
    status, out, _ = cli(capfd, "funccount", "fib", prog, *args)
    assert re.search(rf"^fib\s+{calls}$", out, re.M)
    status, out, err = cli(capfd, "overhead", "--json", "--repeats", "2", "-e", "p fib n=%di:s64",
                           "-e", "r64 fib", prog, *args)
    assert status == 0, err
    assert "fib(11)" not in out                    # the program's output is captured
    assert out.endswith("\n") and out.count("\n") == 1
    data = json.loads(out.splitlines()[-1])
    check_schema(data, SCHEMA)
    assert data["runs"] == 2
    assert [(p["probe"], p["hits"], p["missed"]) for p in data["probes"]] == [
        ("p fib n=%di:s64", calls, 0), ("r64 fib", calls, 0)]
    assert "Traceback" not in err


def test_handler_from_a_file_and_a_module(guest_bin: Path, handlers: Path, capfd: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """FUNC of a .py file as a pre_handler, and of a module importable from the working
    directory as a kretprobe handler; the plain table carries the load average."""
    prog = str(guest_bin / "fib.static")
    status, out, err = cli(capfd, "overhead", "--repeats", "2", "--json", "--handler", f"{handlers}:pre",
                           "--symbol", "fib", prog, "10")
    assert status == 0, err
    (probe,) = json.loads(out.splitlines()[-1])["probes"]
    assert probe["probe"] == f"p fib ({handlers}:pre)" and probe["hits"] == 2 * fib(11) - 1
    monkeypatch.chdir(handlers.parent)
    monkeypatch.syspath_prepend(str(handlers.parent))
    status, out, err = cli(capfd, "overhead", "--repeats", "2", "--handler", "myhandlers:ret",
                           "--kind", "r", "--symbol", "fib", prog, "10")
    assert status == 0, err
    assert "r fib (myhandlers:ret)" in out and "load average:" in out and "unprobed run" in out
    assert f"{2 * fib(11) - 1:,}" in out


def test_few_hits_warn_on_stderr(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    status, out, err = cli(capfd, "overhead", "--repeats", "2", "-e", "p fib",
                           str(guest_bin / "fib.static"), *["1"] * 10)
    assert status == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any("only 10 hits" in w for w in warnings), err
    assert "sample 2/2" in err                     # progress, a line per sample


@pytest.mark.parametrize(("argv", "message"), [
    (["--handler", "nosuchmodule_xyz:pre", "--symbol", "fib"], "cannot import nosuchmodule_xyz"),
    (["--handler", "justamodule", "--symbol", "fib"], "give MODULE:FUNC"),
    (["--handler", "{handlers}:nope", "--symbol", "fib"], "has no function 'nope'"),
    (["--handler", "{handlers}:pre", "--symbol", "nosuch"], "--symbol nosuch: ENOENT: no symbol 'nosuch'"),
    (["--handler", "{handlers}:pre"], "--handler needs --symbol"),
    (["-e", "p fib n=%none"], "trace_kprobe: error: Invalid register name"),
    (["-e", "p nosuch"], "Invalid probed address or symbol"),
    (["--event=-:kprobes/p_fib_0"], "a delete line has nothing to measure"),
    (["-e", "p fib", "--handler", "{handlers}:pre"], "not both"),
    ([], "give what to measure"),
])
def test_errors_are_one_line(guest_bin: Path, handlers: Path, capfd: pytest.CaptureFixture[str],
                             argv: list[str], message: str) -> None:
    argv = [a.replace("{handlers}", str(handlers)) for a in argv]
    status, out, err = cli(capfd, "overhead", *argv, str(guest_bin / "fib.static"), "5")
    assert status == 2, err
    assert err.startswith("kprobe-emu overhead: ") and message in err, err
    assert "Traceback" not in err and out == ""


def test_a_raising_handler_is_one_line(guest_bin: Path, handlers: Path,
                                       capfd: pytest.CaptureFixture[str]) -> None:
    status, _, err = cli(capfd, "overhead", "--handler", f"{handlers}:bad", "--symbol", "fib",
                         str(guest_bin / "fib.static"), "5")
    assert status == 1
    assert f"the handler raised at {handlers}:" in err and "ZeroDivisionError" in err
    assert "Traceback" not in err


def test_chart_is_a_png(guest_bin: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "overhead.png"
    status, _, err = cli(capfd, "overhead", "--repeats", "2", "--chart", str(chart), "-e", "p fib",
                         "-e", "r64 fib ret=$retval", str(guest_bin / "fib.static"), "8")
    assert status == 0, err
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_commands_run(guest_bin: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `kprobe-emu overhead` line of "Measuring your handler" runs (its handler
    file written from the section's python block), with --repeats 2 to stay fast."""
    section = README.read_text().split("## Measuring your handler\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n# (\S+\.py)\n(.*?)```", section, re.S)
    assert code, "the section lost its handler file"
    (tmp_path / code.group(1)).write_text(code.group(2))
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the section lost its commands"
    lines = [ln for ln in block.group(1).splitlines() if ln.startswith("kprobe-emu overhead ")]
    assert len(lines) >= 3
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for line in lines:
        argv = [a.replace("guest/bin/", f"{guest_bin}/") for a in shlex.split(line)[1:]]
        status, out, err = cli(capfd, *argv[:1], "--repeats", "2", *argv[1:])
        assert status == 0 and "Traceback" not in err, (line, err)
        assert out.strip(), line


def test_the_readme_python_example_runs(guest_bin: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The section's measure() example, from the repository's root, prints fib 16's hits."""
    section = README.read_text().split("## Measuring your handler\n", 1)[1].split("\n## ", 1)[0]
    example = re.findall(r"```python\n(.*?)```", section, re.S)[-1]
    monkeypatch.chdir(README.parent)
    exec(compile(example, "README.md measuring your handler", "exec"), {})
    assert capsys.readouterr().out.startswith(f"{2 * fib(17) - 1} ")
