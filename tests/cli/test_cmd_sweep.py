"""``kprobe-emu sweep``: seeds grouped by outcome, deviants replayable with ``run --seed``.

Rules pinned (the seed-sweep issue): exit 0 when every seed agrees, 1 when some differ,
2 for a bad --seeds, a bad option or a program that cannot be loaded (one line, no
traceback); --json prints {"runs", "outcomes": [{"exit", "stdout", "fault", "seeds"}]}
on one line, the most common outcome first; every outcome replays with
``kprobe-emu run --seed N``; --jobs 2 gives what --jobs 1 gives.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kprobe_emu._cmd_sweep import format_seeds, parse_seeds
from kprobe_emu.cli import CliError, main
from tests.guests import guest_bin as _guest_bin


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


@pytest.fixture(scope="module")
def seedy(guest_bin: Path) -> list[str]:
    """A program whose outcome depends on the seed: roll 0 faults, 1 and 2 exit with it."""
    return [str(guest_bin / "seedy"), "3", "crash"]


def _sweep_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    status = main(["sweep", "--json", *argv])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "--json prints one line"
    return status, json.loads(out)


# --- --seeds ----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "seeds"), [
    ("0-9,20,30-31", [*range(10), 20, 30, 31]),
    ("7", [7]),
    ("3-5, 4-8", list(range(3, 9))),        # overlaps merge
    ("9,2,2,0-1", [0, 1, 2, 9]),            # sorted, each once
])
def test_seed_spec(spec: str, seeds: list[int]) -> None:
    assert list(parse_seeds(spec)) == seeds


def test_a_contiguous_spec_stays_a_range() -> None:
    """A million seeds need no million-element list to be swept."""
    assert parse_seeds("0-999999,1000000-1999999") == range(2_000_000)


@pytest.mark.parametrize(("spec", "words"), [
    ("", "names no seeds"),
    (" , ", "names no seeds"),
    ("1,,2", "'' is neither a seed N nor a range A-B"),
    ("x", "'x' is neither"),
    ("-3", "'-3' is neither"),
    ("1-2-3", "'1-2-3' is neither"),
    ("5-3", "the range '5-3' ends before it starts"),
])
def test_bad_seed_specs(spec: str, words: str) -> None:
    with pytest.raises(CliError, match=words):
        parse_seeds(spec)


def test_a_bad_spec_is_a_one_line_usage_error(seedy: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--seeds", "9-1", *seedy]) == 2
    err = capsys.readouterr().err
    assert err == "kprobe-emu sweep: --seeds '9-1': the range '9-1' ends before it starts\n"


def test_seeds_are_shown_as_ranges() -> None:
    assert format_seeds([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert format_seeds([0, 2, 4, 5, 6, 9], limit=2) == "0,2 and 4 more seeds"


# --- outcomes ---------------------------------------------------------------------------
def test_every_seed_agrees_exit_0(guest_bin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--seeds", "0-4", "--jobs", "1", str(guest_bin / "fib.static"), "10"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["5 runs, 1 outcome: every seed agrees",
                                "majority, 5 runs: exit 55",
                                "  stdout: fib(10) = 55",
                                "  seeds: 0-4"]


def test_some_seeds_differ_exit_1_and_each_outcome_replays(
        seedy: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, result = _sweep_json(capsys, "--seeds", "0-11", "--jobs", "1", *seedy)
    assert status == 1
    assert result["runs"] == 12 and len(result["outcomes"]) > 1
    for outcome in result["outcomes"]:
        assert set(outcome) == {"exit", "stdout", "fault", "seeds"}
    order = [(-len(o["seeds"]), min(o["seeds"])) for o in result["outcomes"]]
    assert order == sorted(order), "most common first, then by smallest seed"
    assert sorted(s for o in result["outcomes"] for s in o["seeds"]) == list(range(12))
    for outcome in result["outcomes"]:
        assert main(["run", "--seed", str(outcome["seeds"][0]), *seedy]) == outcome["exit"]
        replayed = capsys.readouterr()
        assert replayed.out == outcome["stdout"]
        if outcome["fault"] is not None:
            assert outcome["exit"] == 139 and outcome["fault"] in replayed.err


def test_the_report_names_deviants_with_a_replay_command(
        seedy: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _, result = _sweep_json(capsys, "--seeds", "0-11", "--jobs", "1", *seedy)
    assert main(["sweep", "--seeds", "0-11", "--jobs", "1", *seedy]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"12 runs, {len(result['outcomes'])} outcomes"
    replays = [line.removeprefix("  replay: ") for line in out if line.startswith("  replay: ")]
    deviants = result["outcomes"][1:]
    assert replays == [shlex.join(["kprobe-emu", "run", "--seed", str(o["seeds"][0]), *seedy])
                       for o in deviants]
    for command, outcome in zip(replays, deviants, strict=True):
        assert main(shlex.split(command)[1:]) == outcome["exit"]
        assert capsys.readouterr().out == outcome["stdout"]


def test_two_jobs_give_what_one_job_gives(seedy: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    one = _sweep_json(capsys, "--seeds", "0-9,15", "--jobs", "1", *seedy)
    two = _sweep_json(capsys, "--seeds", "0-9,15", "--jobs", "2", *seedy)
    assert one == two


# --- trouble ----------------------------------------------------------------------------
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_load_error_is_one_line_without_traceback(tmp_path: Path, jobs: str) -> None:
    """A non-ELF file, swept as a real command: one stderr line, status 2, no output."""
    script = tmp_path / "not-elf"
    script.write_text("echo not a #! script\n")
    done = subprocess.run([sys.executable, "-m", "kprobe_emu", "sweep", "--seeds", "0-3",
                           "--jobs", jobs, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "not an ELF file" in done.stderr and done.stdout == ""


@pytest.mark.parametrize(("options", "words"), [
    (["--jobs", "0"], "--jobs 0: needs at least one job"),
    (["--fs", "none", "--fs-writable"], "--fs-writable needs --fs-root DIR"),
    (["--ray"], "is not a Ray address"),        # --ray took the program for its address
])
def test_bad_options(seedy: list[str], capsys: pytest.CaptureFixture[str], options: list[str],
                     words: str) -> None:
    assert main(["sweep", "--seeds", "0-1", *options, *seedy]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


def test_without_ray_the_error_says_how_to_install_it(
        seedy: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)       # import ray raises ImportError
    assert main(["sweep", "--seeds", "0-1", "--ray=auto", *seedy]) == 2
    assert "pip install 'kprobe-emu[ray]'" in capsys.readouterr().err


def test_seeds_is_required(seedy: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", *seedy])
    assert exit_.value.code == 2 and "--seeds" in capsys.readouterr().err


def test_a_throwaway_ray_gives_what_one_job_gives(seedy: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'kprobe-emu[ray]'")
    on_ray = _sweep_json(capsys, "--seeds", "0-5", "--ray=local", *seedy)
    assert on_ray == _sweep_json(capsys, "--seeds", "0-5", "--jobs", "1", *seedy)
