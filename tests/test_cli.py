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
    result = run_cli("--version", process=True)  # `python -m diagnose` itself
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


def test_the_readme_install_brings_the_live_clients():
    """`--prometheus URL`, the cluster and NVML must work after the README's first command: their clients are
    core dependencies, not extras, and they are installed."""
    import importlib.metadata
    import re

    required = {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower()
                for r in importlib.metadata.requires("diagnose") or [] if "extra ==" not in r}
    assert {"kubernetes", "prometheus-api-client", "nvidia-ml-py"} <= required
    for module in ("kubernetes", "prometheus_api_client", "pynvml"):
        importlib.import_module(module)
