"""A shell pipeline under the tracing tools (issue 11): the probes follow bash's
children through fork and exec, and each event names the process it came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kprobe_emu.cli import main


@pytest.fixture(autouse=True)
def _bash() -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")


def test_trace_follows_a_pipeline_into_every_process(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """seq and cat each write once to fd 1, from their own pids; bash forks them
    (comm bash) then execs (comm seq, cat); the guest's output is untouched."""
    events = tmp_path / "events.json"
    status = main(["trace", "-e", "p:wr libc:write fd=%di:s32", "--json", "-o", str(events),
                   "--cwd", str(tmp_path), "bash", "-c", "seq 2 | cat"])
    assert status == 0
    assert capsys.readouterr().out == "1\n2\n"
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    assert sorted((r["comm"], r["args"]["fd"]) for r in rows) == [("cat", 1), ("seq", 1)]
    pids = {r["comm"]: r["pid"] for r in rows}
    assert pids["seq"] != pids["cat"] and 1 not in pids.values()     # neither is bash (pid 1)
    assert all(r["tid"] == r["pid"] for r in rows)


def test_funccount_counts_calls_in_every_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """funccount libc:write on 'seq 3 | cat': one buffered write in each."""
    status = main(["funccount", "--cwd", str(tmp_path), "libc:write", "bash", "-c", "seq 3 | cat"])
    assert status == 0
    out = capsys.readouterr().out
    assert out.startswith("1\n2\n3\n")
    assert [line.split() for line in out.splitlines() if line.startswith("libc:write")] == \
        [["libc:write", "2"]]
