"""The wire-time warning for serial lines whose devices cannot all be polled in time.

Expected figures are worked out by hand from the RTU timing model (swm_edge.modbus.timing):
at 1200 baud 8N1 a character takes 10/1200 s; a one-register read is 8 request + 7
response characters (0.125 s), two 3.5-character silences (0.0583 s) and 10 ms device
turnaround: 0.19333 s.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from swm_edge.config import load_config

ONE_REGISTER_1200 = 15 * 10 / 1200 + 2 * 3.5 * 10 / 1200 + 0.010


def site(
    tmp_path: Path, *, baudrate: int, p_interval: float, q_interval: float, delay: str = ""
) -> Path:
    text = f"""\
    gateway: {{id: gw-1}}
    mqtt: {{host: b}}
    buses:
      - {{id: lan, type: modbus-tcp, host: 192.0.2.10}}
      - {{id: rs485-1, type: modbus-rtu, port: /dev/ttyUSB0, baudrate: {baudrate}{delay}}}
    devices:
      - id: p-1
        bus: rs485-1
        unit: 1
        interval: {p_interval}
        single_point_reads: true
        points:
          - {{name: a, address: 0}}
          - {{name: b, address: 1}}
          - {{name: c, address: 2}}
      - id: q-2
        bus: rs485-1
        unit: 2
        interval: {q_interval}
        single_point_reads: true
        points: [{{name: a, address: 0}}, {{name: b, address: 10}}]
      - id: t-3
        bus: lan
        unit: 1
        interval: 0.1
        single_point_reads: true
        points: [{{name: a, address: 0}}, {{name: b, address: 10}}]
    """
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_overloaded_1200_baud_line_warns_with_figures(tmp_path: Path) -> None:
    path = site(tmp_path, baudrate=1200, p_interval=1, q_interval=0.5)
    loaded = load_config(path)
    p_load = 3 * ONE_REGISTER_1200 / 1  # 0.58
    q_load = 2 * ONE_REGISTER_1200 / 0.5  # 0.773
    assert (round(p_load, 2), round(q_load, 2), round(p_load + q_load, 2)) == (0.58, 0.77, 1.35)
    (warning,) = loaded.warnings
    assert (warning.file, warning.line, warning.col, warning.path) == (str(path), 5, 5, "buses.1")
    assert warning.severity == "warning"
    assert warning.message.startswith(
        "line 'rs485-1' needs 1.35 s of wire time per second at 1200 baud: "
        "devices q-2 0.77, p-1 0.58;"
    )
    # A warning does not stop the config from loading.
    assert [d.id for d in loaded.devices] == ["p-1", "q-2", "t-3"]


def test_block_reads_are_counted_as_planned(tmp_path: Path) -> None:
    # Without single_point_reads p-1's three registers are one read of 3 registers:
    # 19 characters instead of 15, once instead of three times.
    path = site(tmp_path, baudrate=1200, p_interval=0.2, q_interval=100)
    text = path.read_text().replace("    single_point_reads: true\n", "", 1)
    path.write_text(text)
    (warning,) = load_config(path).warnings
    p_load = (19 * 10 / 1200 + 2 * 3.5 * 10 / 1200 + 0.010) / 0.2  # 1.13
    assert f"devices p-1 {p_load:.2f}, q-2 0.00" in warning.message


def test_light_line_has_no_warning(tmp_path: Path) -> None:
    loaded = load_config(site(tmp_path, baudrate=9600, p_interval=10, q_interval=10))
    assert loaded.warnings == []


def test_same_devices_at_1200_baud_with_long_intervals_fit(tmp_path: Path) -> None:
    assert load_config(site(tmp_path, baudrate=1200, p_interval=10, q_interval=5)).warnings == []


def test_request_delay_counts_per_request(tmp_path: Path) -> None:
    # At 9600 baud the reads alone take 0.033 s each; a 0.5 s pause before each of q-2's
    # two reads every second is what overloads the line.
    delayed = site(
        tmp_path, baudrate=9600, p_interval=60, q_interval=1, delay=", request_delay: 0.5"
    )
    (warning,) = load_config(delayed).warnings
    one_read = 15 * 10 / 9600 + 2 * 3.5 * 10 / 9600 + 0.010
    q_load = 2 * (one_read + 0.5)
    assert f"needs {q_load + 3 * (one_read + 0.5) / 60:.2f} s" in warning.message
    assert f"devices q-2 {q_load:.2f}, p-1 0.03" in warning.message
    undelayed = site(tmp_path, baudrate=9600, p_interval=60, q_interval=1)
    assert load_config(undelayed).warnings == []
