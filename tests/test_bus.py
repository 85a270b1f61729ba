"""Buses over the real Modbus stacks: the three RTU backends (swm-edge's own framing,
pymodbus, minimalmodbus) against the simulated RS-485 line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.harness import SiteRunner, site_config
from swm_edge_hil.site import DemoSite

from swm_edge.agent import read_once
from swm_edge.broker import free_port
from swm_edge.bus import Bus, PymodbusLine, RtuLine, make_line
from swm_edge.config import load_config
from swm_edge.driver import ConnectionLost, CrcError, DeviceTimeout, ModbusTransport, ReadError
from swm_edge.modbus.rtu import read_request
from swm_edge.model import BusSpec, Reading, Table


class _NoBroker:
    host = "127.0.0.1"
    port = free_port()


def read(tmp_path: Path, site: DemoSite, backend: str) -> dict[str, Reading]:
    config = site_config(tmp_path, _NoBroker(), site, backend=backend, name=f"{backend}.yaml")
    readings = asyncio.run(read_once(load_config(config), ["pressure-1", "quality-1"]))
    return {r.device_id: r for r in readings}


def values(reading: Reading) -> dict[str, Any]:
    return {k: (v.value, v.quality, v.unit, v.error) for k, v in reading.points.items()}


def test_every_rtu_backend_reads_identical_values(tmp_path: Path, site: DemoSite) -> None:
    via_native = read(tmp_path, site, "native")
    via_pymodbus = read(tmp_path, site, "pymodbus")
    via_minimalmodbus = read(tmp_path, site, "minimalmodbus")
    for device, sim in (("pressure-1", site.pressure), ("quality-1", site.sonde)):
        a, b, c = (values(v[device]) for v in (via_native, via_pymodbus, via_minimalmodbus))
        assert a == b == c
        assert {k: v[0] for k, v in a.items()} == sim.values()
        assert all(v[1] == "good" for v in a.values())


@pytest.mark.parametrize("backend", ["native", "pymodbus", "minimalmodbus"])
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("silent", "timeout"),
        ("exception:2", "exception:2"),
        ("exception:6", "exception:6"),
        ("garbage", "crc"),
        ("bad_crc", "crc"),
    ],
)
def test_every_backend_classifies_faults_alike(
    tmp_path: Path, site: DemoSite, backend: str, fault: str, reason: str
) -> None:
    site.null_modem.set_fault(2, fault)
    readings = read(tmp_path, site, backend)
    assert {v.error for v in readings["quality-1"].points.values()} == {reason}
    assert all(v.value is None for v in readings["quality-1"].points.values())
    # the healthy device on the same line is not affected
    assert all(v.quality == "good" for v in readings["pressure-1"].points.values())


def test_missing_serial_port_is_a_connection_error(tmp_path: Path, site: DemoSite) -> None:
    config = site_config(tmp_path, _NoBroker(), site)
    text = config.read_text().replace(site.serial_port, str(tmp_path / "no-such-tty"))
    config.write_text(text)
    readings = asyncio.run(read_once(load_config(config), ["pressure-1", "flow-1"]))
    by_id = {r.device_id: r for r in readings}
    assert {v.error for v in by_id["pressure-1"].points.values()} == {"connection"}
    assert all(v.quality == "good" for v in by_id["flow-1"].points.values())


@pytest.fixture
def socat_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked ptys made by socat, as a USB adapter and the device behind it."""
    import shutil
    import subprocess
    import time

    socat = shutil.which("socat")
    assert socat, "socat is needed (apt-get install socat; .ci/run installs it)"
    a, b = str(tmp_path / "ttyA"), str(tmp_path / "ttyB")
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while not (Path(a).exists() and Path(b).exists()):
        assert time.monotonic() < deadline, "socat did not create its ptys"
        time.sleep(0.02)
    try:
        yield a, b
    finally:
        proc.terminate()
        proc.wait(5)


def test_serial_bus_hands_a_bounded_raw_transport(socat_pair: tuple[str, str]) -> None:
    import serial

    from swm_edge.bus import Bus
    from swm_edge.driver import ConnectionLost, SerialTransport
    from swm_edge.model import BusSpec

    agent_side, device_side = socat_pair
    device = serial.Serial(device_side, baudrate=2400, parity="E", timeout=1)

    async def main() -> None:
        bus = Bus(
            BusSpec(
                id="mbus-1", type="mbus", timeout=0.5, port=agent_side, baudrate=2400, parity="E"
            )
        )
        await bus.start()
        async with bus.turn() as t:
            assert isinstance(t, SerialTransport)
            await t.write(b"\x10\x5b\xfe\x59\x16")  # REQ_UD2 to address 254
            assert device.read(5) == b"\x10\x5b\xfe\x59\x16"
            device.write(b"\xe5")
            assert await t.read(1, timeout=1) == b"\xe5"
            # a short answer: what arrived, after the timeout, never more than asked
            device.write(b"abc")
            t0 = asyncio.get_running_loop().time()
            assert await t.read(10, timeout=0.3) == b"abc"
            assert asyncio.get_running_loop().time() - t0 >= 0.25
            device.write(b"0+3.14\r\nrest")
            assert await t.read_until(b"\r\n", timeout=1) == b"0+3.14\r\n"
            await asyncio.sleep(0.1)
            await t.reset_input()  # "rest" is stale now
            assert await t.read(4, timeout=0.2) == b""
            assert await t.read_until(b"\n", timeout=0.2, max_size=8) == b""
            device.write(b"x" * 50)
            assert len(await t.read_until(b"\n", timeout=1, max_size=8)) == 8
        Path(agent_side).unlink()  # the adapter is unplugged: the port disappears
        bus.line._serial.close()  # type: ignore[attr-defined]
        with pytest.raises(ConnectionLost):
            async with bus.turn() as t:
                await t.write(b"\x10")
        await bus.stop()

    asyncio.run(main())
    device.close()


# --- swm-edge's own RTU framing (backend: native) against the simulated line -------------

TIMEOUT = 0.2


def rtu_bus(site: DemoSite) -> Bus:
    spec = BusSpec(id="rs485-1", type="modbus-rtu", timeout=TIMEOUT, port=site.serial_port)
    return Bus(spec)


def served(site: DemoSite, unit: int, address: int, count: int) -> list[int]:
    device = site.pressure if unit == 1 else site.sonde
    image = device.image(Table.HOLDING)
    return [image.get(a, 0) for a in range(address, address + count)]


def sent_since(site: DemoSite, mark: int) -> list[bytes]:
    """Requests the relay passed to the devices since ``mark`` (a length of its trace)."""
    return [data for side, data in list(site.null_modem.trace)[mark:] if side == "to_device"]


async def read_turn(bus: Bus, *blocks: tuple[int, int, int]) -> list[list[int] | ReadError]:
    """One turn on the bus reading each (unit, address, count) block; errors are returned."""
    results: list[list[int] | ReadError] = []
    async with bus.turn() as transport:
        assert isinstance(transport, ModbusTransport)
        for unit, address, count in blocks:
            try:
                results.append(
                    await transport.read_registers(
                        unit, Table.HOLDING, address, count, timeout=TIMEOUT
                    )
                )
            except ReadError as exc:
                results.append(exc)
    return results


def test_native_is_the_default_rtu_line(site: DemoSite) -> None:
    assert isinstance(rtu_bus(site).line, RtuLine)
    tcp = BusSpec(id="lan", type="modbus-tcp", timeout=1, host="127.0.0.1")
    assert type(make_line(tcp)) is PymodbusLine


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("wrong_unit", CrcError),
        ("truncated", CrcError),
        ("overlong", CrcError),
        ("late_echo", DeviceTimeout),
    ],
)
def test_native_frame_faults(site: DemoSite, fault: str, error: type[ReadError]) -> None:
    async def main() -> None:
        bus = rtu_bus(site)
        await bus.start()
        try:
            site.null_modem.set_fault(2, fault)
            (failed,) = await read_turn(bus, (2, 9729, 2))
            assert isinstance(failed, error), failed
            if fault == "wrong_unit":
                assert "wrong unit" in str(failed)
            # the other device on the line is not disturbed (a held late_echo answer of
            # unit 2 reaches the agent during this request and is skipped)
            assert await read_turn(bus, (1, 2, 4)) == [served(site, 1, 2, 4)]
        finally:
            site.null_modem.set_fault(2, None)
            await bus.stop()

    asyncio.run(main())


def test_a_foreign_frame_read_with_the_answer_is_skipped(site: DemoSite) -> None:
    """Unit 1's late answer and unit 2's answer arrive in one read: unit 2's is found."""

    async def main() -> None:
        bus = rtu_bus(site)
        await bus.start()
        site.null_modem.echo_late([2], with_answer=True)
        try:
            site.null_modem.set_fault(1, "late_echo")
            (failed,) = await read_turn(bus, (1, 2, 4))
            assert isinstance(failed, DeviceTimeout)
            echoed = site.null_modem.stats["echoed"]
            assert await read_turn(bus, (2, 9729, 2)) == [served(site, 2, 9729, 2)]
            assert site.null_modem.stats["echoed"] == echoed + 1
        finally:
            site.null_modem.set_fault(1, None)
            site.null_modem.echo_late()
            await bus.stop()

    asyncio.run(main())


def test_after_a_timeout_the_rest_of_the_turn_is_not_sent(site: DemoSite) -> None:
    async def main() -> None:
        bus = rtu_bus(site)
        await bus.start()
        try:
            site.null_modem.set_fault(1, "silent")
            mark = len(site.null_modem.trace)
            started = time.monotonic()
            first, second, other = await read_turn(bus, (1, 2, 4), (1, 6, 4), (2, 9729, 2))
            assert isinstance(first, DeviceTimeout) and isinstance(second, DeviceTimeout)
            assert "not sent" in str(second)
            assert other == served(site, 2, 9729, 2)  # another unit in the same turn still is
            assert [r[0] for r in sent_since(site, mark)] == [1, 2]
            assert time.monotonic() - started < 2 * TIMEOUT
        finally:
            site.null_modem.set_fault(1, None)
            await bus.stop()

    asyncio.run(main())


def test_a_suspect_unit_gets_a_check_request_first(site: DemoSite) -> None:
    """After a timeout, the unit's next exchange starts with a check request of another
    answer length whose answer is dropped; after a good answer it is trusted again. A
    check that goes unanswered is the exchange's timeout, and the next check is the real
    request sent twice (so a device that ignores the check cannot be locked out)."""
    request = read_request(1, 3, 2, 4)
    check = read_request(1, 3, 2, 3)

    async def main() -> None:
        bus = rtu_bus(site)
        line = bus.line
        assert isinstance(line, RtuLine)
        await bus.start()
        try:
            site.null_modem.set_fault(1, "silent")
            for want in ([request], [check]):
                mark = len(site.null_modem.trace)
                (failed,) = await read_turn(bus, (1, 2, 4))
                assert isinstance(failed, DeviceTimeout)
                assert sent_since(site, mark) == want
                assert line.suspect(1)
            site.null_modem.set_fault(1, None)
            # the check went unanswered: now the real request twice, the second answer used
            mark = len(site.null_modem.trace)
            assert await read_turn(bus, (1, 2, 4)) == [served(site, 1, 2, 4)]
            assert sent_since(site, mark) == [request, request]
            assert not line.suspect(1)
            mark = len(site.null_modem.trace)
            assert await read_turn(bus, (1, 2, 4)) == [served(site, 1, 2, 4)]
            assert sent_since(site, mark) == [request]
            # one timeout, then the device answers again: check request, then the real one
            site.null_modem.set_fault(1, "silent")
            assert isinstance((await read_turn(bus, (1, 2, 4)))[0], DeviceTimeout)
            site.null_modem.set_fault(1, None)
            mark = len(site.null_modem.trace)
            assert await read_turn(bus, (1, 2, 4)) == [served(site, 1, 2, 4)]
            assert sent_since(site, mark) == [check, request]
            assert not line.suspect(1)
        finally:
            site.null_modem.set_fault(1, None)
            await bus.stop()

    asyncio.run(main())


def test_a_late_answer_is_never_taken_for_the_same_units_next_read(site: DemoSite) -> None:
    """Unit 1 answers every request only during its next one (late_echo released before
    unit 1's requests): no read of unit 1 ever returns another request's answer."""

    async def main() -> None:
        bus = rtu_bus(site)
        await bus.start()
        site.null_modem.echo_late([1])
        try:
            site.null_modem.set_fault(1, "late_echo")
            for _ in range(4):
                results = await read_turn(bus, (1, 2, 4), (1, 6, 4), (1, 10, 2))
                assert all(isinstance(r, DeviceTimeout) for r in results), results
            site.null_modem.set_fault(1, None)
            site.null_modem.faults.take_held()
            assert await read_turn(bus, (1, 2, 4), (1, 6, 4), (1, 10, 2)) == [
                served(site, 1, 2, 4),
                served(site, 1, 6, 4),
                served(site, 1, 10, 2),
            ]
        finally:
            site.null_modem.set_fault(1, None)
            site.null_modem.echo_late()
            await bus.stop()

    asyncio.run(main())


def test_native_line_reopens_after_the_adapter_is_replugged(tmp_path: Path) -> None:
    async def main() -> None:
        runner = SiteRunner(tick=0, serial_link=tmp_path / "by-id" / "usb-rs485-if00")
        site = runner.site
        site.freeze()
        spec = BusSpec(id="rs485-1", type="modbus-rtu", timeout=TIMEOUT, port=site.serial_port)
        bus = Bus(spec, backoff_initial=0.05, backoff_max=0.2)
        try:
            await bus.start()
            assert await read_turn(bus, (1, 2, 4)) == [served(site, 1, 2, 4)]
            site.null_modem.unplug()
            (lost,) = await read_turn(bus, (1, 2, 4))
            assert isinstance(lost, ConnectionLost), lost
            with pytest.raises(ConnectionLost):  # fails fast while the line is down
                await read_turn(bus, (1, 2, 4))
            site.null_modem.replug()
            deadline = time.monotonic() + 5
            while not bus.line.is_open or bus.opens < 2:
                assert time.monotonic() < deadline, bus.last_error
                await asyncio.sleep(0.05)
            assert await read_turn(bus, (1, 2, 4)) == [served(site, 1, 2, 4)]
        finally:
            await bus.stop()
            runner.close()

    asyncio.run(main())
