"""The thin CLI: instant help (no heavy imports), examples in every help, exit codes."""

from __future__ import annotations

import subprocess
import sys

from conftest import run_cli

from diagnose import __version__


def test_help_imports_no_heavy_library():
    code = ("import sys\nfrom diagnose.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'pandas', 'scipy', 'pyarrow', 'yaml') if m in sys.modules)\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"diagnose {__version__}"


def test_every_command_help_shows_an_example():
    for args in ([], ["compare"], ["analyze"]):
        result = run_cli(*args, "--help")
        assert result.returncode == 0
        assert "example" in result.stdout and "diagnose " in result.stdout.split("example")[1]


def test_no_command_prints_help_and_exits_2():
    result = run_cli()
    assert result.returncode == 2 and "compare" in result.stdout


def test_unknown_option_is_a_usage_error():
    result = run_cli("compare", "--old", "v1", "--new", "v2", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
