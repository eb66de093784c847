"""Pieces of the poison-job and chaos machinery that need no services."""

from __future__ import annotations

import os
import subprocess
import sys

from producers.chaos import _gone
from workers.courier import CRASHES_HEADER, crashes


def test_a_crash_count_is_read_only_from_a_positive_int_header() -> None:
    assert crashes({}) == 0
    assert crashes({CRASHES_HEADER: 2}) == 2
    for junk in ("2", -1, 0, None, 2.0):
        assert crashes({CRASHES_HEADER: junk}) == 0


def test_an_exited_process_is_gone_even_before_its_parent_reaps_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
    assert _gone(child.pid)
    child.wait()
    assert _gone(child.pid)
    assert not _gone(os.getpid())
