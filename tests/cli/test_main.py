"""main(): every usage error is one line and exit 2; help exits 0; Ctrl-C is one line and 130."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

import normcheck.cli as cli

ROOT = Path(__file__).resolve().parents[2]


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["normcheck", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus"], "No such option '--bogus'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["verify", "--op"], "Option '--op' requires an argument"),
        (["verify", "--seed", "x"], "Invalid value for '--seed': 'x' is not a valid integer"),
        (["bench", "--threads", "many"], "Invalid value for '--threads'"),
        (["conventions", "--no-such-flag"], "No such option"),
    ],
)
def test_parser_errors_are_one_line_and_exit_2(monkeypatch, capsys, args, message):
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    assert out == ""
    assert err.startswith("normcheck: error: ") and message in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("args", [["--help"], [], ["verify", "--help"], ["bench", "--help"]])
def test_help_goes_to_stdout_and_exits_0(monkeypatch, capsys, args):
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0
    assert out.startswith("Usage: normcheck") and err == ""


def fake_app(monkeypatch, body) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(name="go")(body)

    @app.callback()
    def _root() -> None:
        """Two commands, so ``go`` stays a subcommand."""

    monkeypatch.setattr(cli, "app", app)


@pytest.mark.parametrize("raised", [KeyboardInterrupt, click.exceptions.Abort])
def test_an_interrupt_is_one_line_and_exits_130(monkeypatch, capsys, raised):
    def go() -> None:
        raise raised()

    fake_app(monkeypatch, go)
    code, _, err = run_main(monkeypatch, capsys, "go")
    assert code == 130 and err == "normcheck: interrupted\n"


def test_a_commands_exit_code_is_kept(monkeypatch, capsys):
    def go() -> None:
        raise typer.Exit(3)

    fake_app(monkeypatch, go)
    assert run_main(monkeypatch, capsys, "go") == (3, "", "")


def test_a_command_that_returns_exits_0(monkeypatch, capsys):
    fake_app(monkeypatch, lambda: None)
    assert run_main(monkeypatch, capsys, "go")[0] == 0


def test_a_bad_parameter_raised_by_a_command_is_one_line(monkeypatch, capsys):
    def go() -> None:
        raise click.BadParameter("must be even", param_hint="'--n'")

    fake_app(monkeypatch, go)
    code, _, err = run_main(monkeypatch, capsys, "go")
    assert code == 2 and err == "normcheck: error: Invalid value for '--n': must be even\n"


def test_a_bug_is_one_internal_error_line(monkeypatch, capsys):
    def go() -> None:
        raise ValueError("oops")

    fake_app(monkeypatch, go)
    monkeypatch.delenv("NORMCHECK_DEBUG", raising=False)
    code, _, err = run_main(monkeypatch, capsys, "go")
    assert code == 1
    assert err == "normcheck: internal error: ValueError: oops (set NORMCHECK_DEBUG=1 for details)\n"


def test_the_real_command_line_prints_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "normcheck", "verify", "--bogus"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("normcheck: error: ") and "--bogus" in proc.stderr
