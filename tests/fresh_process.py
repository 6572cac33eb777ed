"""Run a measuring script of tests/ in a fresh process and read the JSON object it prints last."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def measure_in_fresh_process(script, spec, timeout=600):
    """The dict `tests/<script> '<spec as JSON>'` prints on its last line; the test skips where the
    script says it cannot measure ({"error": ...}: no /proc/self/clear_refs, a missing dataset)."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), json.dumps(spec)],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "error" in result:
        pytest.skip(result["error"])
    return result
