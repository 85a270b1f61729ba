"""``swm-edge init`` as a technician runs it: the real CLI in a subprocess, from flags or
answering its prompts on a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from swm_edge_drivers.modbus import ModbusDriver
from swm_edge_hil.site import DemoSite

from swm_edge.cli import init as init_module
from swm_edge.config import load_config
from swm_edge.config.writer import (
    DeviceEntry,
    GatewaySetup,
    parse_bus,
    render_config,
    write_config,
)

BY_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K5XYZ-if00-port0"


def swm_edge(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    # stdin is not a terminal here, as in a provisioning script.
    return subprocess.run(
        [sys.executable, "-m", "swm_edge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


FLAGS = (
    "--gateway-id", "gw-lima-0001",
    "--site", "lima-d3",
    "--broker", "mqtt.example.net",
    "--ca-file", "ca.pem",
    "--username", "gw-lima-0001",
    "--password-file", "mqtt.password",
    "--bus", f"rs485-1:modbus-rtu:{BY_ID}:19200:E",
    "--bus", "lan:modbus-tcp:192.0.2.10",
    "--bus", "mbus-1:mbus:/dev/ttyUSB1",
    "--bus", "sdi-1:sdi12:/dev/ttyUSB2",
    "--device", "inlet-flow:lan:1:siemens-mag6000",
    "--device", "inlet-pressure:rs485-1:1:keller-series30:30",
    "--device", "inlet-quality:rs485-1:2:yosemitech-y4000:60",
    "--device", "meter-17:mbus-1:17",
    "--device", "troll-1:sdi-1:0:insitu-aquatroll400:120",
    "--buffer-mb", "64",
)  # fmt: skip


def test_flags_write_a_commented_config_that_validates(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    result = swm_edge("init", "--output", "config.yaml", *FLAGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"wrote {config} (4 buses, 5 devices, 28 points); it validates"
    )
    # Files that are not there yet are pointed out, not refused: a gateway is often
    # configured before its secrets and adapters arrive.
    assert f"note: password file {tmp_path / 'mqtt.password'} does not exist yet" in result.stdout
    assert "note: bus mbus-1: serial port /dev/ttyUSB1 is not there now" in result.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]

    validate = swm_edge("validate", "--config", str(config))
    assert validate.returncode == 0, validate.stderr
    assert validate.stdout == f"{config}: OK (4 buses, 5 devices, 28 points)\n"

    loaded = load_config(config)
    c = loaded.config
    assert (c.gateway.id, c.gateway.site, c.mqtt[0].host, c.mqtt[0].port) == (
        "gw-lima-0001",
        "lima-d3",
        "mqtt.example.net",
        8883,  # --ca-file means TLS
    )
    # Paths typed relative to the shell's folder are written absolute.
    assert c.mqtt[0].tls is not None and c.mqtt[0].tls.ca_file == tmp_path / "ca.pem"
    assert c.mqtt[0].password_file == tmp_path / "mqtt.password"
    assert c.buffer.max_mb == 64
    assert [(b.id, b.type) for b in loaded.buses] == [
        ("rs485-1", "modbus-rtu"),
        ("lan", "modbus-tcp"),
        ("mbus-1", "mbus"),
        ("sdi-1", "sdi12"),
    ]
    rtu = loaded.buses[0]
    assert (rtu.port, rtu.baudrate, rtu.parity, rtu.stopbits) == (BY_ID, 19200, "E", 1)
    assert (loaded.buses[1].host, loaded.buses[1].tcp_port) == ("192.0.2.10", 502)
    devices = {d.id: d for d in c.devices}
    assert [(d.id, d.bus, d.interval, d.profile) for d in c.devices] == [
        ("inlet-flow", "lan", 10, "siemens-mag6000"),
        ("inlet-pressure", "rs485-1", 30, "keller-series30"),
        ("inlet-quality", "rs485-1", 60, "yosemitech-y4000"),
        ("meter-17", "mbus-1", 900, None),
        ("troll-1", "sdi-1", 120, "insitu-aquatroll400"),
    ]
    assert [devices[i].model_extra for i in devices] == [
        {"unit": 1},
        {"unit": 1},
        {"unit": 2},
        {"address": 17},
        {"address": "0"},
    ]
    text = config.read_text()
    assert "swm-edge profiles keller-series30" in text
    assert "swm-edge profiles NAME" in text and "README" in text


def test_an_existing_file_is_replaced_only_with_force(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    first = swm_edge("init", "-o", str(config), "--gateway-id", "gw-1", "--broker", "b1")
    assert first.returncode == 0, first.stderr
    before = config.read_text()

    again = swm_edge("init", "-o", str(config), "--gateway-id", "gw-2", "--broker", "b2")
    assert again.returncode == 1
    assert again.stderr == (
        f"swm-edge init: {config} exists; nothing written "
        "(--force replaces it; the old file is not kept)\n"
    )
    assert config.read_text() == before

    forced = swm_edge(
        "init", "-o", str(config), "--force", "--gateway-id", "gw-2", "--broker", "b2"
    )
    assert forced.returncode == 0, forced.stderr
    assert load_config(config).config.gateway.id == "gw-2"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize(
    ("flags", "messages"),
    [
        (
            ["--bus", "lan:modbus-tcp:192.0.2.10", "--device", "flow:lan:1:siemens-mag600"],
            [
                "device 'flow': no profile 'siemens-mag600' for the modbus driver (did you mean "
                "'siemens-mag6000'?)"
            ],
        ),
        (
            ["--bus", "rs485-1:modbus_rtu:/dev/ttyUSB0"],
            ["--bus: bus 'rs485-1:modbus_rtu:/dev/ttyUSB0': unknown bus type 'modbus_rtu' "
             "(did you mean 'modbus-rtu'?); one of modbus-rtu, modbus-tcp, mbus, sdi12"],
        ),
        (
            ["--bus", "rs485-1:modbus-rtu:/dev/ttyUSB0:96000"],
            ["baud rate '96000' is not one of"],
        ),
        (
            [
                "--bus", "lan:modbus-tcp:192.0.2.10",
                "--device", "flow:lan:1:siemens-mag6000",
                "--device", "flow:lan:2:keller-series30",
            ],
            ["device id 'flow' is given 2 times; ids must be unique"],
        ),
        (
            ["--bus", "lan:modbus-tcp:192.0.2.10", "--bus", "lan:modbus-tcp:192.0.2.11"],
            ["bus id 'lan' is given 2 times; ids must be unique"],
        ),
        (
            ["--bus", "lan:modbus-tcp:192.0.2.10", "--device", "flow:lam:1:siemens-mag6000"],
            ["--device: device 'flow:lam:1:siemens-mag6000': no bus 'lam' (did you mean 'lan'?)"],
        ),
        (
            ["--bus", "rs485-1:modbus-rtu:/dev/ttyUSB0", "--device", "p:rs485-1:0:keller-series30"],
            ["address '0' is not a valid Modbus unit id 1..247"],
        ),
        (["--broker", "mqtt://example.net"], ["--broker: broker 'mqtt://example.net': give the"]),
        (["--gateway-id", "gw 1"], ["--gateway-id: gateway id 'gw 1' must be 1-64 characters"]),
        (["--no-tls", "--ca-file", "ca.pem"], ["--ca-file: needs TLS, but --no-tls was given"]),
        # Every mistake at once, not one per run.
        (
            [
                "--bus", "rs485-1:modbus-rtu:/dev/ttyUSB0:9600:X",
                "--bus", "lan:modbus-tcp:192.0.2.10",
                "--device", "a:lan:1:nope",
                "--device", "b:lan:1",
            ],
            ["parity 'X' is not N, E or O", "device 'a': no profile 'nope'",
             "device 'b': a device on modbus-tcp bus 'lan' needs a profile"],
        ),
    ],
)  # fmt: skip
def test_bad_flags_are_explained_and_nothing_is_written(
    tmp_path: Path, flags: list[str], messages: list[str]
) -> None:
    base = {"--gateway-id": "gw-1", "--broker": "mqtt.example.net"}
    for flag in flags:
        base.pop(flag, None)
    args = [item for pair in base.items() for item in pair]
    result = swm_edge("init", "-o", str(tmp_path / "config.yaml"), *args, *flags)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    for message in messages:
        assert message in result.stderr
    assert result.stderr.endswith("swm-edge init: nothing written\n")
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_without_a_terminal_missing_flags_are_an_error(tmp_path: Path) -> None:
    result = swm_edge("init", "-o", str(tmp_path / "config.yaml"), "--broker", "b")
    assert result.returncode == 2
    assert result.stderr == (
        "swm-edge init: missing --gateway-id (or run swm-edge init on a terminal to be asked "
        "for everything); nothing written\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_and_unwritable_output(tmp_path: Path) -> None:
    result = swm_edge("init", "-o", str(tmp_path / "etc" / "c.yaml"), "--gateway-id", "g",
                      "--broker", "b")  # fmt: skip
    assert result.returncode == 1
    assert f"folder {tmp_path / 'etc'} does not exist" in result.stderr
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        result = swm_edge("init", "-o", str(folder / "c.yaml"), "--gateway-id", "g",
                          "--broker", "b")  # fmt: skip
    else:
        # Root writes anywhere: run the CLI as nobody (setpriv, util-linux) on a folder it
        # can reach but not write, outside pytest's root-only tmp folder.
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to test as non-root"
        top = Path(tempfile.mkdtemp(prefix="swm-init-"))
        try:
            top.chmod(0o755)
            result = subprocess.run(
                ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 sys.executable, "-m", "swm_edge", "init", "-o", str(top / "c.yaml"),
                 "--gateway-id", "g", "--broker", "b"],
                capture_output=True, text=True, timeout=60, cwd="/",
            )  # fmt: skip
        finally:
            shutil.rmtree(top)
    assert result.returncode == 1, result.stderr
    assert "permission denied" in result.stderr
    assert "Traceback" not in result.stderr


def test_site_profiles_next_to_the_config_can_be_used(tmp_path: Path) -> None:
    # A profile of the site's own (profiles/ next to the config) is offered like a
    # built-in one: the loader looks there first.
    (tmp_path / "profiles").mkdir()
    source = next(Path(d) / "keller-series30.yaml" for d in ModbusDriver.profile_dirs)
    shutil.copy(source, tmp_path / "profiles" / "keller-reflashed.yaml")
    result = swm_edge(
        "init", "-o", str(tmp_path / "config.yaml"), "--gateway-id", "gw-1", "--broker", "b",
        "--bus", "rs485-1:modbus-rtu:/dev/ttyUSB0",
        "--device", "p:rs485-1:1:keller-reflashed",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = load_config(tmp_path / "config.yaml")
    assert len(loaded.devices[0].points) == 6
    assert "KELLER AG Series 30" in (tmp_path / "config.yaml").read_text()


def test_a_config_from_init_reads_the_simulated_site(tmp_path: Path, site: DemoSite) -> None:
    # The whole point of init: the file it writes drives real polls.
    config = tmp_path / "config.yaml"
    result = swm_edge(
        "init", "-o", str(config), "--gateway-id", "gw-1", "--broker", "127.0.0.1",
        "--bus", f"rs485-1:modbus-rtu:{site.serial_port}:9600:N",
        "--bus", f"lan:modbus-tcp:{site.host}:{site.tcp_port}",
        "--device", "flow-1:lan:1:siemens-mag6000",
        "--device", "pressure-1:rs485-1:1:keller-series30",
        "--device", "quality-1:rs485-1:2:yosemitech-y4000",
        "--buffer-path", str(tmp_path / "buffer.sqlite"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    read = swm_edge("read", "--config", str(config), "--json")
    assert read.returncode == 0, read.stderr
    docs = {d["device"]: d for d in json.loads(read.stdout)}
    for device, sim in (
        ("flow-1", site.flow_meter),
        ("pressure-1", site.pressure),
        ("quality-1", site.sonde),
    ):
        assert {k: v["value"] for k, v in docs[device]["readings"].items()} == sim.values()


# --- on a terminal -----------------------------------------------------------------------


class Terminal:
    """The CLI on a real pseudo-terminal: what a technician's SSH session gives it."""

    def __init__(self, args: Sequence[str], cwd: Path) -> None:
        master, slave = os.openpty()

        def controlling_terminal() -> None:
            # The pty becomes the child's controlling terminal, so Ctrl-C is a SIGINT.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        env = {**os.environ, "TERM": "dumb", "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swm_edge", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        self.fd = master
        self.transcript = ""
        self._unread = ""

    def _read(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            data = os.read(self.fd, 4096).decode(errors="replace")
        except OSError:  # EIO: the child closed the terminal
            return False
        self.transcript += data
        self._unread += data
        return bool(data)

    def expect(self, text: str, timeout: float = 30) -> str:
        """Wait for ``text``; returns the output up to and including it."""
        deadline = time.monotonic() + timeout
        while text not in self._unread:
            if not self._read(deadline):
                raise AssertionError(f"no {text!r} on the terminal; it shows:\n{self.transcript}")
        before, _, after = self._unread.partition(text)
        self._unread = after
        return before + text

    def answer(self, prompt: str, reply: str) -> str:
        """Wait for ``prompt`` and type ``reply`` and Enter."""
        shown = self.expect(prompt)
        os.write(self.fd, reply.encode() + b"\r")
        return shown

    def interrupt(self) -> None:
        """Ctrl-C, as a technician would press it: again if the first one was lost.

        A SIGINT landing after Python printed the prompt but before input() blocks in
        read() is only noticed at the next signal (CPython checks for signals before the
        read, not during a read that is not interrupted): a person presses it again.
        """
        for _ in range(10):
            os.write(self.fd, b"\x03")
            try:
                self.proc.wait(1)
            except subprocess.TimeoutExpired:
                continue
            return

    def finish(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            pass
        code = self.proc.wait(max(0.1, deadline - time.monotonic()))
        os.close(self.fd)
        return code


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait(10)


def test_interactive_init_asks_checks_on_the_spot_and_writes(
    tmp_path: Path, terminal: list[Terminal]
) -> None:
    config = tmp_path / "config.yaml"
    term = Terminal(["init", "--output", str(config)], tmp_path)
    terminal.append(term)
    gateway_prompt = "Gateway id (unique in the fleet, part of every MQTT topic): "
    term.answer(gateway_prompt, "gw 1")
    # A wrong answer is explained and asked again, not carried to the end.
    term.expect("Error: gateway id 'gw 1' must be 1-64 characters")
    term.answer(gateway_prompt, "gw-lima-0001")
    term.answer("Site, e.g. the DMA (empty: none): ", "lima-d3")
    term.answer("MQTT broker HOST[:PORT]: ", "mqtt.example.net")
    term.answer("Use TLS to the broker (its certificate is verified)? [Y/n]: ", "")
    term.answer("CA file to verify the broker with (empty: the system's CAs): ", "")
    term.answer("MQTT user name (empty: none) [gw-lima-0001]: ", "")
    term.answer(f"File holding the MQTT password (empty: none) [{tmp_path}/mqtt.password]: ", "")

    term.expect("Bus 1 (a serial line or a TCP connection)")
    term.answer("Type (modbus-rtu, modbus-tcp, mbus, sdi12) [modbus-rtu]: ", "modbus_rtu")
    term.expect("Error: bus type 'modbus_rtu' is not one of modbus-rtu, modbus-tcp, mbus, sdi12")
    term.answer("Type (modbus-rtu, modbus-tcp, mbus, sdi12) [modbus-rtu]: ", "")
    term.answer("Bus id [rs485-1]: ", "")
    term.answer("Serial port", BY_ID)
    term.answer("Baud rate [9600]: ", "19200")
    term.answer("Parity (N, E, O) [N]: ", "e")
    term.answer("Add another bus? [y/N]: ", "y")
    term.expect("Bus 2")
    term.answer("Type (modbus-rtu, modbus-tcp, mbus, sdi12) [modbus-rtu]: ", "sdi12")
    term.answer("Bus id [sdi-1]: ", "")
    term.answer("Serial port", "/dev/ttyUSB2")
    term.answer("Add another bus? [y/N]: ", "")

    term.expect("Devices on rs485-1 (modbus-rtu)")
    term.answer("Device id, e.g. inlet-flow: ", "inlet-pressure")
    term.answer("Address (Modbus unit id 1..247) [1]: ", "300")
    term.expect("Error: address '300' is not a valid Modbus unit id 1..247")
    term.answer("Address (Modbus unit id 1..247) [1]: ", "")
    listing = term.answer("Profile (number or name): ", "keller")
    # The Modbus driver's profiles, numbered, with what each device is.
    assert "keller-series30      KELLER AG" in listing
    assert "siemens-mag6000" in listing and "yosemitech-y4000" in listing
    term.expect("Error: no profile 'keller' for modbus-rtu devices; pick one from the list")
    term.answer("Profile (number or name): ", "keller-series30")
    term.answer("Poll interval, seconds [10]: ", "30")
    term.answer("Add another device on rs485-1? [y/N]: ", "y")
    term.answer("Device id, e.g. inlet-flow: ", "inlet-pressure")
    term.expect("Error: device id 'inlet-pressure' is taken; ids must be unique")
    term.answer("Device id, e.g. inlet-flow: ", "inlet-quality")
    # The next free unit id is offered.
    term.answer("Address (Modbus unit id 1..247) [2]: ", "")
    listing = term.answer("Profile (number or name): ", "7")
    assert " 7  yosemitech-y4000" in listing
    term.answer("Poll interval, seconds [10]: ", "60")
    term.answer("Add another device on rs485-1? [y/N]: ", "")

    term.expect("Devices on sdi-1 (sdi12)")
    term.answer("Device id, e.g. inlet-flow: ", "troll-1")
    term.answer("Address (SDI-12 address: one of 0-9, A-Z, a-z) [0]: ", "")
    listing = term.answer("Profile (number or name): ", "1")
    # Only the SDI-12 driver's profiles are offered for an SDI-12 device.
    assert "insitu-aquatroll400" in listing and "keller" not in listing
    term.answer("Poll interval, seconds [60]: ", "")
    term.answer("Add another device on sdi-1? [y/N]: ", "n")

    term.expect(f"wrote {config} (2 buses, 3 devices, 23 points); it validates")
    assert term.finish() == 0
    assert "Traceback" not in term.transcript

    validate = swm_edge("validate", "--config", str(config))
    assert validate.returncode == 0, validate.stderr
    loaded = load_config(config)
    c = loaded.config
    assert (c.gateway.id, c.gateway.site, c.mqtt[0].host, c.mqtt[0].port, c.mqtt[0].username) == (
        "gw-lima-0001",
        "lima-d3",
        "mqtt.example.net",
        8883,
        "gw-lima-0001",
    )
    assert c.mqtt[0].tls is not None and c.mqtt[0].tls.ca_file is None  # the system's CAs
    assert c.mqtt[0].password_file == tmp_path / "mqtt.password"
    rtu, sdi = loaded.buses
    assert (rtu.id, rtu.port, rtu.baudrate, rtu.parity) == ("rs485-1", BY_ID, 19200, "E")
    assert (sdi.id, sdi.type, sdi.port) == ("sdi-1", "sdi12", "/dev/ttyUSB2")
    assert [(d.id, d.bus, d.interval, d.profile, d.model_extra) for d in c.devices] == [
        ("inlet-pressure", "rs485-1", 30, "keller-series30", {"unit": 1}),
        ("inlet-quality", "rs485-1", 60, "yosemitech-y4000", {"unit": 2}),
        ("troll-1", "sdi-1", 60, "insitu-aquatroll400", {"address": "0"}),
    ]
    assert stat.S_IMODE(config.stat().st_mode) == 0o640


def test_ctrl_c_at_a_prompt_writes_nothing(tmp_path: Path, terminal: list[Terminal]) -> None:
    term = Terminal(["init", "--output", str(tmp_path / "config.yaml")], tmp_path)
    terminal.append(term)
    term.answer("Gateway id (unique in the fleet, part of every MQTT topic): ", "gw-1")
    term.expect("Site, e.g. the DMA (empty: none): ")
    term.interrupt()
    assert term.finish() == 1
    assert "Aborted" in term.transcript and "Traceback" not in term.transcript
    assert list(tmp_path.iterdir()) == []


def test_flags_given_on_a_terminal_are_not_asked_again(
    tmp_path: Path, terminal: list[Terminal]
) -> None:
    config = tmp_path / "config.yaml"
    term = Terminal(
        [
            "init", "-o", str(config), "--broker", "10.0.0.5:1883", "--no-tls",
            "--username", "u", "--password-file", "pw",
            "--bus", "mbus-1:mbus:/dev/ttyUSB1", "--device", "meter-1:mbus-1:5",
        ],
        tmp_path,
    )  # fmt: skip
    terminal.append(term)
    term.answer("Gateway id (unique in the fleet, part of every MQTT topic): ", "gw-9")
    term.answer("Site, e.g. the DMA (empty: none): ", "")
    term.expect(f"wrote {config} (1 buses, 1 devices, 0 points)")
    assert term.finish() == 0
    for not_asked in ("MQTT broker", "TLS", "user name", "File holding", "Bus 1", "Devices on"):
        assert not_asked not in term.transcript
    c = load_config(config).config
    assert (c.gateway.id, c.gateway.site, c.mqtt[0].port, c.mqtt[0].tls) == (
        "gw-9",
        None,
        1883,
        None,
    )
    assert c.mqtt[0].password_file == tmp_path / "pw"


def test_an_existing_file_stops_init_before_any_question(
    tmp_path: Path, terminal: list[Terminal]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("keep me\n")
    term = Terminal(["init", "--output", str(config)], tmp_path)
    terminal.append(term)
    assert term.finish() == 1
    assert "exists; nothing written (--force replaces it" in term.transcript
    assert "Gateway id" not in term.transcript
    assert config.read_text() == "keep me\n"


def test_notes_point_at_an_unstable_port_name_and_shared_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process: a /dev/serial/by-id stand-in with one adapter whose kernel name is used.
    tty = tmp_path / "ttyUSB0"
    tty.touch()
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R_USB_UART_A10K5XYZ-if00-port0").symlink_to(tty)
    monkeypatch.setattr(init_module, "SERIAL_BY_ID", by_id)
    setup = GatewaySetup(
        "gw-1",
        "broker",
        password_file=str(tmp_path / "missing.password"),
        buses=(parse_bus(f"rs485-1:modbus-rtu:{tty}"),),
        devices=(
            DeviceEntry("a", "rs485-1", 1, "keller-series30"),
            DeviceEntry("b", "rs485-1", 1, "keller-series30"),
        ),
    )
    path = tmp_path / "config.yaml"
    catalog = init_module.build_catalog(tmp_path)
    loaded = write_config(path, render_config(setup, catalog, config_path=path))
    assert init_module._notes(setup, loaded) == [
        f"password file {tmp_path / 'missing.password'} does not exist yet; create it before "
        "starting the agent",
        f"bus rs485-1: {tty} may get another number after a re-plug or reboot; "
        f"{by_id / 'usb-FTDI_FT232R_USB_UART_A10K5XYZ-if00-port0'} is the same adapter under a "
        "stable name",
        "devices a and b have the same address 1 on bus rs485-1; fine only if they are one "
        "device read twice",
    ]


def test_interactive_tcp_and_mbus_buses(tmp_path: Path, terminal: list[Terminal]) -> None:
    config = tmp_path / "config.yaml"
    term = Terminal(
        ["init", "-o", str(config), "--site", "dma-7", "--broker", "b", "--no-tls",
         "--username", "u", "--password-file", "pw"],
        tmp_path,
    )  # fmt: skip
    terminal.append(term)
    term.answer("Gateway id (unique in the fleet, part of every MQTT topic): ", "gw-1")
    term.answer("Type (modbus-rtu, modbus-tcp, mbus, sdi12) [modbus-rtu]: ", "modbus-tcp")
    term.answer("Bus id [tcp-1]: ", "")
    term.answer("Host[:port] of the device or RTU->TCP gateway: ", "http://192.0.2.10")
    term.expect("Error: host 'http://192.0.2.10': give the host name without a scheme")
    term.answer("Host[:port] of the device or RTU->TCP gateway: ", "192.0.2.10:1502")
    term.answer("Add another bus? [y/N]: ", "y")
    term.answer("Type (modbus-rtu, modbus-tcp, mbus, sdi12) [modbus-rtu]: ", "MBUS")
    term.answer("Bus id [mbus-1]: ", "tcp-1")
    term.expect("Error: bus id 'tcp-1' is taken; ids must be unique")
    term.answer("Bus id [mbus-1]: ", "")
    term.answer("Serial port", "/dev/ttyUSB1")
    term.answer("Baud rate [2400]: ", "1234")
    term.expect("Error: bus 'mbus-1:mbus:/dev/x:1234': baud rate '1234' is not one of 300")
    term.answer("Baud rate [2400]: ", "")
    term.answer("Parity (N, E, O) [E]: ", "")
    term.answer("Add another bus? [y/N]: ", "")

    term.expect("Devices on tcp-1 (modbus-tcp)")
    term.answer("Device id, e.g. inlet-flow: ", "flow")
    term.answer("Address (Modbus unit id 0..255) [1]: ", "0")
    term.answer("Profile (number or name): ", "siemens-mag6000")
    term.answer("Poll interval, seconds [10]: ", "0")
    term.expect("Error: interval '0' is not a number of seconds from 0.1 to 86400")
    term.answer("Poll interval, seconds [10]: ", "2.5")
    term.answer("Add another device on tcp-1? [y/N]: ", "")
    term.expect("Devices on mbus-1 (mbus)")
    term.answer("Device id, e.g. inlet-flow: ", "meter-1")
    # M-Bus addresses have no default: the meters come with their own.
    term.answer("Address (M-Bus primary address 0..250 or 8-digit secondary address): ", "")
    term.answer("Address (M-Bus primary address 0..250 or 8-digit secondary address): ", "1234ffff")
    term.answer("Poll interval, seconds [900]: ", "")
    term.answer("Add another device on mbus-1? [y/N]: ", "")
    term.expect(f"wrote {config} (2 buses, 2 devices, 5 points); it validates")
    assert term.finish() == 0
    # No profile is offered for M-Bus: there are none, and a meter needs none.
    assert "Profile (number or name; empty" not in term.transcript

    loaded = load_config(config)
    tcp, mbus = loaded.buses
    assert (tcp.host, tcp.tcp_port) == ("192.0.2.10", 1502)
    assert (mbus.port, mbus.baudrate, mbus.parity) == ("/dev/ttyUSB1", 2400, "E")
    assert [(d.id, d.interval, d.profile, d.model_extra) for d in loaded.config.devices] == [
        ("flow", 2.5, "siemens-mag6000", {"unit": 0}),
        ("meter-1", 900, None, {"secondary": "1234FFFF"}),
    ]
    assert loaded.config.gateway.site == "dma-7"
