"""Running the `divtune` console entry point inside a test."""

from __future__ import annotations

import sys

import pytest


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`divtune ARGS` through the console entry point: (exit code, stdout + stderr)."""
    from divtune.cli import main

    monkeypatch.setattr(sys, "argv", ["divtune", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err
