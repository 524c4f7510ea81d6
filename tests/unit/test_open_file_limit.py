"""`python -m app` lifts its soft open-file limit to the hard one before serving: every open
stream holds two sockets, and a soft limit of 1,024 would stop a worker near 500 streams."""

from __future__ import annotations

import subprocess
import sys

import pytest

resource = pytest.importorskip("resource")  # Unix

PROBE = """
import resource
from app.__main__ import raise_open_file_limit
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
raise_open_file_limit()
print(*resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    # In a child process: the limit is the process's own, and this one's must stay as it is.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    soft, hard = (int(value) for value in done.stdout.split())
    expected = hard if hard != resource.RLIM_INFINITY else 1_048_576
    assert soft == expected > 256
