"""`gpudc up` without the Pulumi CLI: one clean line, exit 2 (the CLI cannot be installed here)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from gpudc.infra import command


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpudc")
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture
def no_pulumi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `pulumi` anywhere
    assert shutil.which("pulumi") is None


def test_up_without_cli_says_so(no_pulumi: None, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["up", "--stack", "lab"])
    assert args.handler(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "pulumi CLI is not on PATH" in lines[0] and "https://www.pulumi.com/docs/install/" in lines[0]


def test_up_through_the_gpudc_command(no_pulumi: None, capsys: pytest.CaptureFixture[str]) -> None:
    from gpudc.cli import main

    assert main(["up", "--stack", "lab"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "install it (https://www.pulumi.com/docs/install/)" in err[0]


def test_default_backend_is_under_the_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert command.default_backend() == f"file://{tmp_path}/gpudc/pulumi"


def test_local_backend_needs_a_passphrase(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gpudc.errors import InputError

    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    with pytest.raises(InputError, match="PULUMI_CONFIG_PASSPHRASE"):
        command._env(f"file://{tmp_path}/state")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "x")
    assert command._env(f"file://{tmp_path}/state") == {"PULUMI_BACKEND_URL": f"file://{tmp_path}/state"}


def test_unknown_stack_is_bad_input() -> None:
    from gpudc.errors import InputError

    with pytest.raises(InputError, match="unknown stack"):
        command._stack_name("no-such-site")
