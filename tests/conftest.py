"""Shared pytest configuration: the swm-edge test kit (brokers, MQTT collector) as fixtures,
and the simulated demo site."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from swm_edge_hil.harness import SiteRunner
from swm_edge_hil.site import DemoSite

pytest_plugins = ["swm_edge.testing"]


@pytest.fixture
def site() -> Iterator[DemoSite]:
    """The demo site (flow meter on TCP; pressure + sonde on one pty RS-485 line), frozen:
    served values only change when a test sets them."""
    runner = SiteRunner(tick=0)
    runner.site.freeze()
    try:
        yield runner.site
    finally:
        runner.close()
