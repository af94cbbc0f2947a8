"""README.md stays true: its tour runs, and the commands it names exist."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_tour_runs_and_prints_what_the_demo_prints(capsys) -> None:
    text = README.read_text()
    tour = re.search(r"## A five-minute tour\n\n```python\n(.*?)```", text, re.S)
    assert tour, "README.md lost its tour"
    exec(compile(tour.group(1), "README.md tour", "exec"), {})
    out = capsys.readouterr().out
    assert "open_file: return val = -2 (duration = " in out
    assert "Missed probing 0 instances of open_file" in out


def test_the_set_up_commands_are_the_makefile_targets() -> None:
    text = README.read_text()
    makefile = (README.parent / "Makefile").read_text()
    for target in ("demo", "test", "bench", "lint"):
        assert f"make {target}" in text
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_the_real_binary_example_runs() -> None:
    """The "Running real binaries" example, with its promised results."""
    import os

    from tests.guests import guest_bin

    guest_bin()                                   # builds guest/bin once
    text = README.read_text()
    example = re.search(r"## Running real binaries\n.*?```python\n(.*?)```", text, re.S)
    assert example, "README.md lost the real-binary example"
    scope: dict = {}
    cwd = os.getcwd()
    os.chdir(README.parent)                       # the example's paths are repository-relative
    try:
        exec(compile(example.group(1), "README.md real binaries", "exec"), scope)
    finally:
        os.chdir(cwd)
    assert scope["status"] == 2
    assert scope["returns"] == [80, -22, -34]


def test_the_concurrency_example_prints_what_it_promises(capsys) -> None:
    text = README.read_text()
    example = re.search(r"## Concurrency\n.*?```python\n(.*?)```", text, re.S)
    assert example, "README.md lost the concurrency example"
    exec(compile(example.group(1), "README.md concurrency", "exec"), {})
    assert capsys.readouterr().out == "[144, 144, 144, 144]\nTrue 0 True\n"



def test_the_tracing_one_liners_run(tmp_path, monkeypatch, capfd) -> None:
    """Every `kprobe-emu` line of the Tracing section runs: no usage error, no
    fault, and each ends with its kprobe_profile summary on stderr."""
    import shlex

    from kprobe_emu.cli import main
    from tests.guests import guest_bin

    bin_dir = guest_bin()
    section = README.read_text().split("## Tracing\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README.md lost the tracing one-liners"
    lines = [ln for ln in block.group(1).splitlines() if ln.startswith("kprobe-emu ")]
    assert len(lines) >= 8
    monkeypatch.chdir(tmp_path)
    for line in lines:
        argv = [a.replace("guest/bin/", f"{bin_dir}/") for a in shlex.split(line)[1:]]
        status = main(argv)
        err = capfd.readouterr().err
        assert status not in (2, 124, 139) and "Traceback" not in err, (line, status, err)
        assert err.strip().splitlines()[-1].split()[-2:][0].isdigit(), (line, err)
    assert (tmp_path / "fib.json").stat().st_size > 0
