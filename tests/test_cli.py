import subprocess
import sys

import pytest

from app.cli.main import COMMANDS, Command, main
from models.errors import NotBuiltError

EXPECTED = {
    "serve",
    "worker",
    "generate",
    "dualview",
    "super-resolve",
    "anomaly-map",
    "train",
    "phantoms",
    "evaluate",
    "bench",
}


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out
    assert set(COMMANDS) >= EXPECTED


def test_console_script_runs_without_importing_torch():
    code = "import sys; from app.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unbuilt_command_says_so_and_exits_nonzero(monkeypatch, capsys):
    monkeypatch.setitem(COMMANDS, "future", Command("a command announced for a later release", None, 99))
    rc = main(["future", "--anything"])
    assert rc == NotBuiltError.exit_code != 0
    assert "not built yet" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_registered_command_has_working_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert f"mammogen {name}" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
