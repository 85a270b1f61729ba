"""Fixtures for end-to-end tests: the hil/ demo site, the real agent as a subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from swm_edge_hil.harness import SiteRunner
from swm_edge_hil.site import DemoSite


@pytest.fixture
def site(tmp_path: Path) -> Iterator[DemoSite]:
    """The demo site (flow meter on TCP; pressure + sonde on one pty RS-485 line), frozen:
    served values only change when a test sets them."""
    runner = SiteRunner(tick=0, serial_link=tmp_path / "serial-by-id" / "usb-rs485-if00")
    runner.site.freeze()
    try:
        yield runner.site
    finally:
        runner.close()
