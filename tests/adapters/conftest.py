"""Fixtures of the adapter tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="package", autouse=True)
def _frameworks_kept_out_of_later_collections() -> Iterator[None]:
    """The frameworks these tests import stay loaded for the rest of the session: some
    270,000 objects, which make every full garbage collection take ~0.4 s (more on a busy
    machine). Frozen once this package is done, they are no longer scanned, so the
    timing-sensitive tests that run later in the same process (a 10,000-agent fan-out under
    the 1 s stall bound) do not pay for this package's imports."""
    yield
    gc.collect()
    gc.freeze()
