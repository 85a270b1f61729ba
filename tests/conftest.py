"""Shared pytest configuration: the swm-edge test kit (brokers, MQTT collector) as fixtures,
the simulated demo site and the agent as a subprocess."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.harness import AgentProcess, SiteRunner
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


@pytest.fixture
def run_agent() -> Iterator[Callable[..., AgentProcess]]:
    """``start(config, **options) -> AgentProcess``: the real agent as a subprocess;
    anything still running at teardown is killed."""
    started: list[AgentProcess] = []

    def start(config: Path, **options: Any) -> AgentProcess:
        agent = AgentProcess(config, **options)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.kill()
