"""Shared test setup: single-threaded BLAS (2-core machine), the project root on sys.path and
the collector factory the collector suites share."""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402  (after sys.path: the fixture below imports the project)


@pytest.fixture
def make_collector():
    """Build collectors with fast backoff; stop every one at the end of the test."""
    import collector

    made = []

    def make(settings, **kwargs):
        kwargs.setdefault("backoff_base", 0.05)
        kwargs.setdefault("backoff_cap", 0.5)
        kwargs.setdefault("seed", 7)
        c = collector.Collector(settings, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
