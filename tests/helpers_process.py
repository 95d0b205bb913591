"""A server process a test started: stopped the same way everywhere."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, grace: float = 15) -> None:
    """Terminate `proc`, and kill it if it has not exited within `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
