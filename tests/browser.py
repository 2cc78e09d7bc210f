"""Open a local HTML file in headless Chromium: the DOM after load and the console messages.

Chromium is a Debian package (`apt-get install chromium`, done by .ci/run). Without it the test skips with
the reason, except in CI (CI or HEDGENET_CI set), where it fails. The flags keep Chromium off the network
(closed machines) and away from any user profile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]


def chromium_or_skip() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        reason = "chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI") or os.environ.get("HEDGENET_CI"):
            pytest.fail(reason + ": CI must run the browser test")
        pytest.skip(reason)
    return exe


def render(html_file: Path, profile_dir: Path, timeout: int = 120) -> tuple[str, list[str]]:
    """(DOM after load and scripts, console lines Chromium logged) of ``html_file``."""
    exe = chromium_or_skip()
    proc = subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile_dir}", "--dump-dom", Path(html_file).resolve().as_uri()],
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console
