"""Pydantic models of the configuration file.

The models check everything that can be checked inside one section (types, ranges,
patterns, combinations of fields within one bus). A device entry is checked in two parts
(docs/decisions/0003-driver-sdk.md): :class:`DeviceConfig` holds the core keys, the same
for every driver; all other keys belong to the device's driver and are checked by its
``device_model`` (for Modbus, :class:`swm_edge.modbus.config.ModbusDevice`). Checks that
span sections (a device's bus exists, ids are unique, profiles resolve, the driver's keys)
live in :mod:`swm_edge.config.loader`, which also knows where each value sits in the YAML
file.

Types are strict on purpose: YAML guesses scalar types, and a gateway id written as
``0001`` would silently become the integer 1 under lax coercion, ``port: "502"`` or
``byte_swap: 1`` are more likely typos than intent. Integers are accepted where a float is
expected, because ``interval: 10`` is how people write it.

Relative paths are resolved against ``context={"base_dir": <config dir>}`` when one is
passed to ``model_validate``; the loader passes the config file's directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from swm_edge.model import BusSpec
from swm_edge.sdk_types import POINT_NAME_PATTERN, FiniteFloat, field_error

__all__ = [
    "BAUDRATES",
    "BUS_TYPES",
    "CLIENT_ID_PATTERN",
    "CORE_DEVICE_KEYS",
    "DEFAULT_BUFFER_PATH",
    "DEFAULT_STATUS_SOCKET_NAME",
    "ENV_NAME_PATTERN",
    "HOST_PATTERN",
    "ID_PATTERN",
    "MAX_UNIX_SOCKET_PATH",
    "MBUS_BAUDRATES",
    "PATTERN_HELP",
    "POINT_NAME_PATTERN",
    "QUIRK_KEYS",
    "SERIAL_BUS_TYPES",
    "TOPIC_PREFIX_PATTERN",
    "BufferConfig",
    "BusConfig",
    "Config",
    "ConfigModel",
    "DeviceConfig",
    "DeviceQuirks",
    "GatewayConfig",
    "LocationConfig",
    "MbusBusConfig",
    "MqttConfig",
    "RtuBusConfig",
    "Sdi12BusConfig",
    "TcpBusConfig",
    "TlsConfig",
    "field_error",
]

#: Gateway, bus and device ids: safe as one MQTT topic level and as a file name.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: MQTT topic prefix: one or more topic levels, no wildcards, no empty levels.
TOPIC_PREFIX_PATTERN = r"^[^+#/\s]+(/[^+#/\s]+)*$"
#: Environment variable names (POSIX portable set).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Host names and IP addresses: anything without spaces, slashes or a scheme.
HOST_PATTERN = r"^[^\s/]+$"
#: MQTT client ids: printable ASCII without spaces (every broker accepts those).
CLIENT_ID_PATTERN = r"^[!-~]{1,128}$"

#: Plain-language explanations of the patterns above, for error messages.
PATTERN_HELP: dict[str, str] = {
    ID_PATTERN: "must be 1-64 characters: letters, digits, '.', '_' and '-', "
    "starting with a letter or digit",
    POINT_NAME_PATTERN: "must be 1-64 characters: letters, digits, '_', '.' and '-', "
    "starting with a letter or '_'",
    TOPIC_PREFIX_PATTERN: "must be MQTT topic levels separated by single '/', without "
    "'+', '#', spaces or a leading/trailing '/'",
    ENV_NAME_PATTERN: "must be an environment variable name: letters, digits and '_', "
    "not starting with a digit",
    HOST_PATTERN: "must be a host name or IP address, without scheme or slashes",
    CLIENT_ID_PATTERN: "must be 1-128 printable ASCII characters without spaces",
}

#: Standard serial line rates a modbus-rtu or sdi12 bus accepts.
BAUDRATES = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200)
#: Line rates of M-Bus (EN 13757-2): meters ship at 2400 or 300 baud, some up to 38400.
MBUS_BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)

DEFAULT_BUFFER_PATH = Path("/var/lib/swm-edge/buffer.sqlite")
#: File name of the status socket in the buffer's folder, when ``status_socket`` is not set.
DEFAULT_STATUS_SOCKET_NAME = "swm-edge.sock"
#: Longest path (bytes) bind() takes for a Unix socket on Linux: sun_path is 108 bytes
#: including the terminating NUL. A longer path would only fail when the agent starts.
MAX_UNIX_SOCKET_PATH = 107


def _one_of(*choices: int) -> AfterValidator:
    # Literal[1, 2] would accept True and 1.0; a strict int with an explicit check does not.
    listed = ", ".join(str(c) for c in choices)

    def check(value: int) -> int:
        if value not in choices:
            raise PydanticCustomError(
                "literal_error", "Input should be one of {expected}", {"expected": listed}
            )
        return value

    return AfterValidator(check)


def _int_enum(*choices: int) -> WithJsonSchema:
    return WithJsonSchema({"type": "integer", "enum": list(choices)})


def _non_empty_path(value: Any) -> Any:
    # Path("") is ".", which would silently mean "the config directory".
    if isinstance(value, str) and not value.strip():
        raise PydanticCustomError("path_empty", "Path must not be empty")
    if not isinstance(value, (str, Path)):
        raise PydanticCustomError("path_type", "Input should be a path (a string)")
    return value


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    value = value.expanduser()
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if value.is_absolute() or base is None:
        return value
    return Path(base) / value


def _protocol_before(value: Any) -> Any:
    # "protocol: 5" is a YAML integer.
    if type(value) is int and value == 5:
        return "5"
    return value


Id = Annotated[StrictStr, Field(pattern=ID_PATTERN)]
FilePath = Annotated[Path, BeforeValidator(_non_empty_path), AfterValidator(_resolve_path)]
Baudrate = Annotated[StrictInt, _one_of(*BAUDRATES), _int_enum(*BAUDRATES)]
MbusBaudrate = Annotated[StrictInt, _one_of(*MBUS_BAUDRATES), _int_enum(*MBUS_BAUDRATES)]
StopBits = Annotated[StrictInt, _one_of(1, 2), _int_enum(1, 2)]
ByteSize = Annotated[StrictInt, _one_of(7, 8), _int_enum(7, 8)]
Qos = Annotated[StrictInt, _one_of(0, 1, 2), _int_enum(0, 1, 2)]
Protocol = Annotated[
    Literal["5", "3.1.1"],
    BeforeValidator(_protocol_before),
    WithJsonSchema({"enum": ["5", "3.1.1", 5]}),
]


class ConfigModel(BaseModel):
    """Base of the config models: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LocationConfig(ConfigModel):
    """Where the gateway is, for maps."""

    lat: FiniteFloat = Field(ge=-90, le=90, description="Latitude, WGS84 decimal degrees.")
    lon: FiniteFloat = Field(ge=-180, le=180, description="Longitude, WGS84 decimal degrees.")


class GatewayConfig(ConfigModel):
    """This gateway's identity."""

    id: Id = Field(description="Gateway id; part of every MQTT topic, unique in the fleet.")
    site: Id | None = Field(
        default=None, description="Site (e.g. district metering area) the gateway serves."
    )
    location: LocationConfig | None = Field(default=None, description="Position of the gateway.")


class TlsConfig(ConfigModel):
    """TLS towards the broker. The broker's certificate is always verified."""

    ca_file: FilePath | None = Field(
        default=None,
        description="CA bundle (PEM) to verify the broker with; default: the system CAs.",
    )
    cert_file: FilePath | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS; needs key_file."
    )
    key_file: FilePath | None = Field(
        default=None, description="Private key (PEM) of the client certificate; needs cert_file."
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if self.cert_file is not None and self.key_file is None:
            raise field_error(
                "cert_file", "cert_file needs key_file (the certificate's private key)"
            )
        if self.key_file is not None and self.cert_file is None:
            raise field_error("key_file", "key_file needs cert_file (the client certificate)")
        return self


# Sparkplug ids are topic levels: no MQTT wildcards or separators (Sparkplug B 3.0, 4.1.1).
SPARKPLUG_ID_PATTERN = r"^[^+#/\s]+$"
# host, host:port, or [IPv6]:port
ENDPOINT_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)(:\d{1,5})?$"


def _one_or_many(schema: dict[str, Any]) -> None:
    """JSON schema of a list that may also be written as its one item."""
    array = {k: schema.pop(k) for k in ("type", "items", "minItems", "maxItems") if k in schema}
    schema["anyOf"] = [array["items"], array]


class SparkplugConfig(ConfigModel):
    """Sparkplug B identity of this gateway (an edge node)."""

    group_id: StrictStr = Field(
        pattern=SPARKPLUG_ID_PATTERN, description="Sparkplug group id (e.g. the utility's site)."
    )
    edge_node_id: StrictStr | None = Field(
        default=None,
        pattern=SPARKPLUG_ID_PATTERN,
        description="Sparkplug edge node id; default: the gateway id.",
    )


class MqttConfig(ConfigModel):
    """One MQTT destination readings are published to: a broker, or the nodes of a broker
    cluster (``hosts``), with its own payload format.

    Holds no secret: the password stays in its file or environment variable until
    :meth:`read_password` is called, so logging or dumping the config cannot leak it.
    """

    name: Id = Field(
        default="default",
        description="Name of the destination (in logs, status and the buffer's delivery "
        "bookkeeping); each destination of a list needs its own.",
    )
    host: StrictStr | None = Field(
        default=None, pattern=HOST_PATTERN, description="Broker host name or IP address."
    )
    hosts: list[Annotated[StrictStr, Field(pattern=ENDPOINT_PATTERN)]] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="Instead of host: the brokers to try in order (host or host:port each), "
        "e.g. the nodes of an EMQX/HiveMQ cluster or a primary and its standby.",
    )
    payload: Literal["json", "senml", "senml-cbor", "sparkplug"] = Field(
        default="json",
        description="Payload format: json (wire contract v1), senml / senml-cbor (RFC 8428), "
        "sparkplug (Sparkplug B 3.0).",
    )
    sparkplug: SparkplugConfig | None = Field(
        default=None, description="Sparkplug B identity; required with payload: sparkplug."
    )
    port: StrictInt = Field(
        default=1883,
        ge=1,
        le=65535,
        description="Broker TCP port; default 1883, or 8883 when tls is given.",
    )
    client_id: StrictStr = Field(
        default="swm-edge",
        pattern=CLIENT_ID_PATTERN,
        description="MQTT client id; default swm-edge-<gateway id>.",
    )
    username: StrictStr | None = Field(
        default=None, min_length=1, description="User name to log in with."
    )
    password_file: FilePath | None = Field(
        default=None,
        description="File holding the password (one trailing newline is ignored). "
        "Plain passwords are not allowed in the config.",
    )
    password_env: StrictStr | None = Field(
        default=None,
        pattern=ENV_NAME_PATTERN,
        description="Environment variable holding the password.",
    )
    tls: TlsConfig | None = Field(
        default=None,
        description="Use TLS; an empty mapping means TLS verified against the system CAs.",
    )
    qos: Qos = Field(default=1, description="MQTT QoS of published readings (0, 1 or 2).")
    keepalive: StrictInt = Field(
        default=30, ge=5, le=3600, description="Keepalive interval, seconds."
    )
    topic_prefix: StrictStr = Field(
        default="swm",
        pattern=TOPIC_PREFIX_PATTERN,
        description="First topic level(s) of every topic.",
    )
    protocol: Protocol = Field(default="5", description='MQTT protocol version: "5" or "3.1.1".')
    inflight: StrictInt = Field(
        default=64,
        ge=1,
        le=1000,
        description="Messages published but not yet acknowledged, at most.",
    )
    batch: StrictInt = Field(
        default=1,
        ge=1,
        le=1000,
        description="Readings of one device sent together in one message (a wire contract "
        "`batch` message) when a backlog is delivered; 1 sends one message per reading. A "
        "broker lets a client have only a few messages in flight (mosquitto: 20), so over a "
        "slow link a backlog drains up to this many times faster. Payload json only; the "
        "backend must read batch messages.",
    )
    reconnect_min: FiniteFloat = Field(
        default=1.0,
        ge=0.1,
        le=60,
        description="First wait before reconnecting to the broker, seconds.",
    )
    reconnect_max: FiniteFloat = Field(
        default=60.0, ge=0.1, le=3600, description="Longest wait between reconnects, seconds."
    )

    @model_validator(mode="before")
    @classmethod
    def _tls_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and "port" not in data and data.get("tls") is not None:
            return {**data, "port": 8883}
        return data

    @model_validator(mode="after")
    def _combinations(self) -> MqttConfig:
        if self.host is None and self.hosts is None:
            raise field_error("host", "missing required key 'host' (or 'hosts', a list of brokers)")
        if self.host is not None and self.hosts is not None:
            raise field_error("hosts", "give host (one broker) or hosts (a list), not both")
        if self.payload == "sparkplug" and self.sparkplug is None:
            raise field_error("payload", "payload sparkplug needs sparkplug: {group_id: ...}")
        if self.sparkplug is not None and self.payload != "sparkplug":
            raise field_error(
                "sparkplug", f"sparkplug settings need payload: sparkplug, not {self.payload}"
            )
        if self.batch > 1 and self.payload != "json":
            raise field_error(
                "batch", f"batch messages are part of payload json, not {self.payload}"
            )
        if self.password_file is not None and self.password_env is not None:
            raise field_error("password_env", "give password_file or password_env, not both")
        has_password = self.password_file is not None or self.password_env is not None
        if has_password and self.username is None and self.protocol == "3.1.1":
            field = "password_file" if self.password_file is not None else "password_env"
            raise field_error(field, "MQTT 3.1.1 allows a password only together with a username")
        if self.reconnect_max < self.reconnect_min:
            raise field_error(
                "reconnect_max",
                f"reconnect_max ({self.reconnect_max:g}) must be >= reconnect_min "
                f"({self.reconnect_min:g})",
            )
        return self

    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) of every broker to try, in order (``port`` where none is given)."""
        if self.host is not None:
            return [(self.host, self.port)]
        out = []
        for item in self.hosts or ():
            match = re.fullmatch(ENDPOINT_PATTERN, item)
            assert match is not None  # checked by the field's pattern
            host = match.group(1).strip("[]")
            out.append((host, int(match.group(2)[1:]) if match.group(2) else self.port))
        return out

    def read_password(self) -> str | None:
        """The broker password, read now from ``password_file`` or ``password_env``.

        Returns ``None`` when no password is configured. One trailing newline of the file
        is dropped (editors add one); other whitespace is part of the password.

        Raises:
            OSError: the password file cannot be read.
            LookupError: the environment variable is not set.
        """
        if self.password_file is not None:
            text = self.password_file.read_text(encoding="utf-8")
            if text.endswith("\r\n"):
                return text[:-2]
            if text.endswith("\n"):
                return text[:-1]
            return text
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise LookupError(f"environment variable {self.password_env} is not set")
            return value
        return None


class BufferConfig(ConfigModel):
    """The local store-and-forward buffer."""

    path: FilePath = Field(default=DEFAULT_BUFFER_PATH, description="SQLite file of the buffer.")
    max_mb: FiniteFloat = Field(
        default=256.0,
        gt=0,
        description="Largest size of the buffer, MB; the oldest readings go first.",
    )


class ClockConfig(ConfigModel):
    """How far the gateway's wall clock is trusted for timestamping readings."""

    require_sync: bool = Field(
        default=True,
        description="Flag readings `clock: unsynchronized` while the kernel reports the clock "
        "as not synchronised by NTP (adjtimex). Set false on gateways whose clock is set by "
        "other means (a GPS or a disciplined RTC, with no NTP client); a clock earlier than "
        "this software's release is flagged either way.",
    )
    step_threshold: FiniteFloat = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="Seconds the wall clock may move against the monotonic clock between "
        "two readings before it counts (and is logged) as a step.",
    )


class _BusConfig(ConfigModel):
    """What every bus has: an id, a default answer timeout and a pause between requests."""

    id: Id = Field(description="Bus id, referenced by devices.")
    timeout: FiniteFloat = Field(
        default=1.0,
        gt=0,
        le=30,
        description="Seconds to wait for an answer (devices may override).",
    )
    request_delay: FiniteFloat = Field(
        default=0.0,
        ge=0,
        le=10,
        description="Pause before each request on this line, seconds (for slow devices or "
        "RS-485 converters that switch direction late).",
    )


class _SerialBusConfig(_BusConfig):
    """A serial port. Each bus type declares ``type``, ``baudrate``, ``parity`` and
    ``bytesize`` with its own literal and line defaults."""

    type: str
    baudrate: int
    parity: str
    bytesize: int
    port: StrictStr = Field(
        min_length=1, description="Serial device, e.g. /dev/serial/by-id/usb-FTDI_..."
    )
    stopbits: StopBits = Field(default=1, description="Stop bits: 1 or 2.")

    def to_spec(self) -> BusSpec:
        """The bus as the core's :class:`~swm_edge.model.BusSpec`."""
        return BusSpec(
            id=self.id,
            type=self.type,
            timeout=self.timeout,
            port=self.port,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            bytesize=self.bytesize,
            request_delay=self.request_delay,
        )


class RtuBusConfig(_SerialBusConfig):
    """A serial RS-485/RS-232 line speaking Modbus RTU."""

    type: Literal["modbus-rtu"] = Field(description="Bus type.")
    baudrate: Baudrate = Field(default=9600, description="Line speed, baud.")
    parity: Literal["N", "E", "O"] = Field(
        default="N", description="Parity: N(one), E(ven) or O(dd)."
    )
    bytesize: ByteSize = Field(default=8, description="Data bits: 7 or 8.")
    timeout: FiniteFloat = Field(
        default=0.5,
        gt=0,
        le=30,
        description="Seconds to wait for an answer (devices may override).",
    )
    backend: Literal["native", "pymodbus", "minimalmodbus"] = Field(
        default="native",
        description=(
            "What frames Modbus RTU on the line: native (swm-edge's own framing, which "
            "skips late answers of other requests), or the pymodbus or minimalmodbus library."
        ),
    )

    def to_spec(self) -> BusSpec:
        """The bus as the core's :class:`~swm_edge.model.BusSpec`."""
        return dataclasses.replace(super().to_spec(), backend=self.backend)


class TcpBusConfig(_BusConfig):
    """A Modbus TCP connection to one host (a device or a gateway)."""

    type: Literal["modbus-tcp"] = Field(description="Bus type.")
    host: StrictStr = Field(pattern=HOST_PATTERN, description="Host name or IP address.")
    port: StrictInt = Field(default=502, ge=1, le=65535, description="TCP port.")

    def to_spec(self) -> BusSpec:
        """The bus as the core's :class:`~swm_edge.model.BusSpec`."""
        return BusSpec(
            id=self.id,
            type=self.type,
            timeout=self.timeout,
            host=self.host,
            tcp_port=self.port,
            request_delay=self.request_delay,
        )


class MbusBusConfig(_SerialBusConfig):
    """A wired M-Bus (EN 13757-2) line behind a level converter, read by an M-Bus driver."""

    type: Literal["mbus"] = Field(description="Bus type.")
    baudrate: MbusBaudrate = Field(
        default=2400, description="Line speed, baud (M-Bus meters ship at 2400 or 300)."
    )
    parity: Literal["N", "E", "O"] = Field(
        default="E", description="Parity: N(one), E(ven) or O(dd); M-Bus uses even."
    )
    bytesize: ByteSize = Field(default=8, description="Data bits: 7 or 8.")


class Sdi12BusConfig(_SerialBusConfig):
    """An SDI-12 data line behind a serial adapter, read by an SDI-12 driver."""

    type: Literal["sdi12"] = Field(description="Bus type.")
    baudrate: Baudrate = Field(
        default=1200, description="Line speed, baud (SDI-12 itself is always 1200)."
    )
    parity: Literal["N", "E", "O"] = Field(
        default="E", description="Parity: N(one), E(ven) or O(dd); SDI-12 uses even."
    )
    bytesize: ByteSize = Field(default=7, description="Data bits: 7 or 8; SDI-12 uses 7.")


class SerialBusConfig(_SerialBusConfig):
    """A plain serial line (RS-232/RS-485) for devices with their own ASCII or binary
    protocol; no driver is chosen by default, devices name theirs with ``driver:``."""

    type: Literal["serial"] = Field(description="Bus type.")
    baudrate: Baudrate = Field(default=9600, description="Line speed, baud.")
    parity: Literal["N", "E", "O"] = Field(
        default="N", description="Parity: N(one), E(ven) or O(dd)."
    )
    bytesize: ByteSize = Field(default=8, description="Data bits: 7 or 8.")


BusConfig = Annotated[
    RtuBusConfig | TcpBusConfig | MbusBusConfig | Sdi12BusConfig | SerialBusConfig,
    Field(discriminator="type"),
]
#: The allowed values of a bus's ``type``.
BUS_TYPES: tuple[str, ...] = ("modbus-rtu", "modbus-tcp", "mbus", "sdi12", "serial")
#: Bus types that are a serial line (a ``port``), for the line-load warning.
SERIAL_BUS_TYPES: frozenset[str] = frozenset({"modbus-rtu", "mbus", "sdi12", "serial"})


class DeviceQuirks(ConfigModel):
    """Per-device polling options of the core, for devices that need gentler handling.

    Device profiles may set defaults for these; a device's own settings win.
    """

    timeout: FiniteFloat | None = Field(
        default=None,
        gt=0,
        le=30,
        description="Seconds to wait for an answer; default: the bus's timeout.",
    )
    retries: StrictInt = Field(
        default=1, ge=0, le=5, description="Retries of a failed request within one poll."
    )
    request_delay: FiniteFloat = Field(
        default=0.0, ge=0, le=10, description="Pause before each request to this device, seconds."
    )
    offline_after: StrictInt = Field(
        default=3,
        ge=1,
        le=1000,
        description="Consecutive failed polls before the device is backed off.",
    )
    offline_backoff_max: FiniteFloat = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="Longest wait between attempts to reach a backed-off device, seconds.",
    )


#: The core keys a device profile's ``device:`` may default (its driver's keys too).
QUIRK_KEYS: tuple[str, ...] = tuple(DeviceQuirks.model_fields)


class DeviceConfig(DeviceQuirks):
    """A device on a bus, polled every ``interval`` seconds: its core keys.

    Every other key of the entry belongs to the device's driver, which checks it with its
    ``device_model`` (see :mod:`swm_edge.config.loader`); here such keys are kept as
    written, in ``model_extra``.
    """

    model_config = ConfigDict(extra="allow")

    id: Id = Field(description="Device id; part of the MQTT topic of its readings.")
    bus: Id = Field(description="Id of the bus the device is on.")
    interval: FiniteFloat = Field(
        default=10.0, ge=0.1, le=86400, description="Poll interval, seconds."
    )
    profile: Id | None = Field(
        default=None,
        description="Device profile (NAME of a NAME.yaml) supplying points and defaults.",
    )
    driver: Id | None = Field(
        default=None,
        description="Driver (entry point in swm_edge.drivers) that reads the device; default: "
        "the installed driver for the bus's type.",
    )


#: The keys of a device entry the core checks; all others go to the device's driver.
CORE_DEVICE_KEYS: frozenset[str] = frozenset(DeviceConfig.model_fields)


class Config(ConfigModel):
    """A swm-edge configuration file."""

    model_config = ConfigDict(title="swm-edge configuration")

    gateway: GatewayConfig = Field(description="This gateway.")
    mqtt: Annotated[
        list[MqttConfig],
        # One mapping is the common case and stays the documented form; it is the list's
        # only item (the config loader reports its errors at the mapping's own keys).
        BeforeValidator(lambda v: v if isinstance(v, list) else [v]),
        Field(min_length=1, max_length=8),
    ] = Field(
        description="The MQTT destination, or a list of them (each with its own broker, "
        "payload format and delivery position over the one buffer).",
        json_schema_extra=_one_or_many,
    )
    buffer: BufferConfig = Field(default=BufferConfig(), description="Local buffer.")
    clock: ClockConfig = Field(default=ClockConfig(), description="Trust in the wall clock.")
    buses: list[BusConfig] = Field(
        default_factory=list, description="Serial lines and TCP connections."
    )
    devices: list[DeviceConfig] = Field(default_factory=list, description="Devices to poll.")
    status_socket: FilePath | None = Field(
        default=None,
        description="Unix socket on which `swm-edge status` asks the running agent for its "
        "state; created mode 0660, so root and the agent's group can query it. Default: "
        f"{DEFAULT_STATUS_SOCKET_NAME} in the buffer file's folder.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_client_id(cls, data: Any) -> Any:
        # The client id defaults to one derived from the gateway id; only a valid id is
        # used, so a bad gateway id is reported once (at gateway.id), not twice.
        if not isinstance(data, dict):
            return data
        mqtt, gateway = data.get("mqtt"), data.get("gateway")
        gw_id = gateway.get("id") if isinstance(gateway, dict) else None
        if not (isinstance(gw_id, str) and re.fullmatch(ID_PATTERN, gw_id)):
            return data

        def with_id(dest: Any) -> Any:
            if not isinstance(dest, dict) or "client_id" in dest:
                return dest
            name = dest.get("name", "default")
            # Two destinations on one broker must not share a client id (the broker would
            # disconnect one for the other), so the non-default ones get their name added.
            suffix = "" if name == "default" or not isinstance(name, str) else f"-{name}"
            return {**dest, "client_id": f"swm-edge-{gw_id}{suffix}"}

        if isinstance(mqtt, list):
            return {**data, "mqtt": [with_id(d) for d in mqtt]}
        if isinstance(mqtt, dict):
            return {**data, "mqtt": with_id(mqtt)}
        return data

    @property
    def destinations(self) -> list[MqttConfig]:
        """The MQTT destinations (one for a single ``mqtt:`` mapping)."""
        return self.mqtt

    def client_tls(self) -> TlsConfig | None:
        """The TLS settings that name the gateway's client certificate: those of the first
        destination with ``cert_file``, else the first destination's."""
        for dest in self.destinations:
            if dest.tls is not None and dest.tls.cert_file is not None:
                return dest.tls
        return self.destinations[0].tls

    @model_validator(mode="after")
    def _unique_destinations(self) -> Config:
        seen: dict[str, int] = {}
        for i, dest in enumerate(self.destinations):
            if dest.name in seen:
                raise field_error(
                    "mqtt",
                    f"mqtt.{i}.name: {dest.name!r} is already the name of mqtt.{seen[dest.name]}; "
                    "give each destination its own name",
                )
            seen[dest.name] = i
        return self

    def status_socket_path(self) -> Path:
        """Where the agent serves its status: ``status_socket``, else
        ``swm-edge.sock`` in the buffer file's folder (under systemd, the StateDirectory)."""
        if self.status_socket is not None:
            return self.status_socket
        return self.buffer.path.parent / DEFAULT_STATUS_SOCKET_NAME

    @model_validator(mode="after")
    def _status_socket_usable(self) -> Config:
        # Checked here rather than when the agent binds the socket: a technician should
        # learn it from `swm-edge validate`, not from a service that fails to start.
        path = self.status_socket_path()
        # The default is derived from buffer.path, so that is what the user must change.
        field = "status_socket" if self.status_socket is not None else "buffer"
        size = len(os.fsencode(path))
        if size > MAX_UNIX_SOCKET_PATH:
            what = (
                f"status_socket {path} is"
                if self.status_socket is not None
                else f"the status socket defaults to {path} (next to buffer.path),"
            )
            raise field_error(
                field,
                f"{what} {size} bytes long; a Unix socket path may have at most "
                f"{MAX_UNIX_SOCKET_PATH} bytes: set status_socket to a shorter path",
            )
        if path == self.buffer.path:
            raise field_error(
                field, f"the status socket {path} is the buffer file; set status_socket to another"
            )
        return self
