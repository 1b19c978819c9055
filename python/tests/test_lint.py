"""ruff (pinned in requirements-ray.txt) finds nothing in python/ and bench/ray_bench.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[1]
TARGETS = [str(PYTHON_DIR), str(PYTHON_DIR.parent / "bench" / "ray_bench.py")]
CONFIG = str(PYTHON_DIR / "pyproject.toml")


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--config", CONFIG, *TARGETS],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ruff_check_is_clean():
    result = ruff("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = ruff("format", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
