"""The agent in-process: the watchdog's notion of progress, and a reload's bookkeeping."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from swm_edge_hil.harness import site_config
from swm_edge_hil.site import DemoSite

from swm_edge import agent as agent_module
from swm_edge.agent import Agent, clock_monitor
from swm_edge.clock import kernel_clock_synchronized
from swm_edge.config import load_config
from swm_edge.notify import Notifier
from swm_edge.testing import Mosquitto

STUCK_DRIVER = Path(__file__).parent / "stuckdrv"


def stuck_config(tmp_path: Path, site: DemoSite, broker: Mosquitto, trigger: Path) -> Path:
    return site_config(
        tmp_path,
        broker,
        site,
        interval=0.2,
        extra_device=f"  - {{id: stuck-1, bus: plant-lan, interval: 0.2, driver: stuck, "
        f"trigger: '{trigger}', retries: 0}}\n",
    )


async def collect(sock: socket.socket, until: float) -> list[tuple[float, str]]:
    out = []
    while time.monotonic() < until:
        try:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), 0.1)
        except TimeoutError:
            continue
        out.append((time.monotonic(), data.decode()))
    return out


def test_a_hung_poller_stops_the_pings_and_says_why(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(STUCK_DRIVER))
    monkeypatch.setattr(agent_module, "STOP_GRACE", 0.5)  # the hung poll is cancelled at stop
    trigger = tmp_path / "trigger"
    loaded = load_config(stuck_config(tmp_path, site, mosquitto, trigger))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "600000"})
    agent = Agent(loaded, notifier=notifier, stall_min=1.0)

    async def scenario() -> tuple[list[tuple[float, str]], list[tuple[float, str]], float]:
        run = asyncio.create_task(agent.run())
        await agent.started.wait()
        healthy = await collect(sock, time.monotonic() + 1.5)
        trigger.write_text("hang")
        hung_at = time.monotonic()
        after = await collect(sock, hung_at + 4)
        # the devices on the other bus went on polling meanwhile (flow-1 waits behind
        # stuck-1 on their shared bus: that is what the watchdog's restart is for)
        polls = {p.device.id: p.stats.good_polls for p in agent.pollers}
        agent.stop()
        await run
        assert polls["pressure-1"] >= 20 and polls["quality-1"] >= 20, polls
        return healthy, after, hung_at

    healthy, after, hung_at = asyncio.run(scenario())
    sock.close()
    assert sum("WATCHDOG=1" in m for _t, m in healthy) >= 5
    # stall limit: max(1 s, 3 x 0.2 s + 1 point x (0.5 s timeout)) = 1.1 s after the last
    # heartbeat, then one 0.2 s tick: no ping later than ~1.5 s after the hang began
    late = [t - hung_at for t, m in after if "WATCHDOG=1" in m]
    assert late and max(late) < 1.5, late
    stalled = [m for _t, m in after if m.startswith("STATUS=stalled: ")]
    prefix = "STATUS=stalled: device stuck-1: no progress for "
    assert stalled and all(m.startswith(prefix) and m.endswith(" s") for m in stalled)


def test_reload_changes_the_buffer_bound_and_warns_about_what_needs_a_restart(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = site_config(tmp_path, mosquitto, site)
    agent = Agent(load_config(path))
    text = path.read_text()
    path.write_text(
        text.replace("max_mb: 16", "max_mb: 8").replace(
            f"path: {tmp_path / 'buffer.sqlite'}", f"path: {tmp_path / 'elsewhere.sqlite'}"
        )
    )

    async def scenario() -> tuple[int, int, int]:
        run = asyncio.create_task(agent.run())
        await agent.started.wait()
        before = agent.spool.buffer.max_bytes
        await agent.apply(load_config(path))
        after = agent.spool.buffer.max_bytes
        agent.stop()
        await run
        return before, after, agent.reloads

    before, after, reloads = asyncio.run(scenario())
    assert (before, after, reloads) == (16 * 1024 * 1024, 8 * 1024 * 1024, 1)
    assert any(
        "buffer.path changed" in r.getMessage() and "applies after a restart" in r.getMessage()
        for r in caplog.records
    )
    assert (tmp_path / "buffer.sqlite").exists() and not (tmp_path / "elsewhere.sqlite").exists()


@pytest.mark.parametrize("require_sync", [True, False])
def test_the_clock_section_decides_what_is_flagged(tmp_path: Path, require_sync: bool) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "gateway: {id: gw-1}\nmqtt: {host: 127.0.0.1}\n"
        f"buffer: {{path: {tmp_path / 'b.sqlite'}}}\n"
        f"clock: {{require_sync: {str(require_sync).lower()}, step_threshold: 5}}\n"
    )
    monitor = clock_monitor(load_config(config))
    assert monitor.step_threshold == 5
    ts, flag = monitor.stamp()
    assert abs(ts - time.time()) < 1
    kernel = kernel_clock_synchronized()
    if require_sync and kernel is False:
        assert flag == "unsynchronized"  # this machine's kernel says: no NTP sync
    else:
        assert flag is None
