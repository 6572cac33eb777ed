"""A wall-clock limit for tests that would block forever if the bug they check came back."""

import signal
from contextlib import contextmanager


@contextmanager
def alarm(seconds, what="blocked"):
    """Raise TimeoutError(what) in the main thread after `seconds` (SIGALRM), instead of hanging."""
    def fail(*_):
        raise TimeoutError(what)
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
