"""`watch` on a finished run in a real pseudo-terminal: the dashboard opens, q quits, the summary follows."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
from scripted_run import ScriptedRun

WATCH = ("import typer\nfrom rwkv_tune.cli.watch import watch\napp = typer.Typer()\napp.command()(watch)\n"
         "app()\n")


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_watch_in_a_terminal_opens_the_dashboard_and_quits_on_q(tmp_path):
    run = ScriptedRun(tmp_path / "run")
    run.start()
    run.steps(400)
    run.done()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("RWKV_TUNE_NO_TUI", None)
    proc = subprocess.Popen([sys.executable, "-c", WATCH, str(run.root), "--no-follow"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    try:
        screen = read_until(master, b"DONE", timeout=30)
        assert b"DONE" in screen, screen[-2000:]
        os.write(master, b"q")
        rest = read_until(master, b"status   done", timeout=15)
        assert proc.wait(timeout=15) == 0
        assert b"status   done" in rest and b"step 400/400" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
