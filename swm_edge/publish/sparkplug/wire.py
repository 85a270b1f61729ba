"""Sparkplug B 3.0 as a destination's wire (``mqtt.payload: sparkplug``).

The gateway is one Sparkplug *edge node* (``spBv1.0/{group_id}/.../{edge_node_id}``, the edge
node id defaulting to the gateway id) and every configured device a Sparkplug *device* of it.
README.md beside this file is the integrator's description; in short:

Session
    :meth:`~SparkplugWire.will` registers an NDEATH carrying a new ``bdSeq`` (Int64, 0-255,
    +1 per CONNECT, persisted: :mod:`.bdseq`). On CONNACK :meth:`~SparkplugWire.connected`
    sends the NBIRTH (``seq`` 0; ``bdSeq`` of that connection's will, ``Node Control/Rebirth``
    false, ``Properties/...``) followed by a DBIRTH of every device this process knows alive
    (its last values). ``seq`` then rises by one (255 wraps to 0) over every NBIRTH, DBIRTH,
    DDATA and DDEATH of the session. An NCMD ``Node Control/Rebirth`` = true repeats that
    birth sequence (same ``bdSeq``, ``seq`` 0). A clean close publishes the NDEATH itself
    (a DISCONNECT discards the will).

Readings
    One reading is one DDATA: every point a metric by alias (no name, no datatype), with the
    poll time as its timestamp. A device that is not born in the session gets its DBIRTH
    first (every metric it ever reported: name, alias, datatype, current value), as it does
    when a point appears or a value no longer fits the datatype it was born with. A reading
    whose points are all bad for a connection reason (``timeout``, ``connection``) is a
    DDEATH (the message that carries it); the next good reading births the device again.

Decisions (README.md has the reasons)
    - Aliases: per edge node, 1-based, fixed for the process: 1-4 are the node's metrics,
      then every (device, point) gets the next number at its first appearance.
    - Datatypes: bool -> Boolean, int -> Int64 (UInt64 past Int64's range), float -> Double,
      str -> String; a point never read good yet is born Double.
    - Quality: the specification's ``Quality`` property (Int32; 192 good, 0 bad): on every
      metric of a birth, and in DDATA on bad metrics and on the first good one after a bad.
      Bad points are ``is_null`` with their reason in ``swm/error``.
    - ``is_historical``: on the metrics of a reading taken before the session's connect
      (:meth:`connected`'s wall time): the backlog of an outage.
    - ``Reading.clock``: a ``swm/clock`` String property on every metric of the reading.
    - The buffer's ``seq`` is not sent (Sparkplug's own ``seq`` orders the session).
    - QoS 0, not retained, for everything but the NDEATH (QoS 1), as the specification
      requires: a reading leaves the buffer once handed to the socket ("sent", not
      "acknowledged"); ``mqtt.qos`` does not apply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from swm_edge import __version__
from swm_edge.lograte import FailureLog
from swm_edge.model import PointValue, Quality, Reading, Reason
from swm_edge.publish.sparkplug.bdseq import BdSeqStore
from swm_edge.publish.sparkplug.payload import (
    DataType,
    Metric,
    PayloadError,
    Property,
    Value,
    decode_metrics,
    encode,
)
from swm_edge.publish.wire import Message, Wire

if TYPE_CHECKING:
    from swm_edge.publish.mqtt import BrokerSettings

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
#: The specification's quality codes (section 6.4 "Quality Codes"): an Int32 ``Quality``
#: property, 192 GOOD, 0 BAD (500 STALE is the host's, for metrics of a dead node).
QUALITY = "Quality"
GOOD = 192
BAD = 0
#: swm-edge's own metric properties.
ERROR = "swm/error"
CLOCK = "swm/clock"
#: The engineering unit property (Ignition's ``engUnit`` tag property, which Cirrus Link's
#: MQTT Engine maps from Sparkplug metric properties).
UNIT = "engUnit"
#: Bad readings for these reasons mean the device cannot be reached: a DDEATH.
CONNECTION_REASONS = frozenset({Reason.TIMEOUT.value, Reason.CONNECTION.value})
#: Commands larger than this are not even parsed (a rebirth request is ~50 bytes).
MAX_COMMAND_BYTES = 64 * 1024
#: NBIRTH, DBIRTH, NDATA, DDATA, DDEATH: QoS 0, not retained (tck-id-topics-*-mqtt);
#: the NDEATH will: QoS 1, not retained (tck-id-payloads-ndeath-will-message-qos).
DATA_QOS = 0
DEATH_QOS = 1
#: NCMD subscription QoS (tck-id-message-flow-edge-node-ncmd-subscribe).
COMMAND_QOS = 1


def _check_id(what: str, value: str) -> str:
    # Sparkplug ids are UTF-8 without the topic's reserved characters (tck-id-topic-structure-*).
    if not value or any(c in value for c in "+/#"):
        raise ValueError(f"sparkplug {what} {value!r} must be non-empty, without + / #")
    return value


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _datatype_of(value: Value) -> DataType:
    if isinstance(value, bool):
        return DataType.BOOLEAN
    if isinstance(value, int):
        if -(1 << 63) <= value < (1 << 63):
            return DataType.INT64
        return DataType.UINT64 if 0 <= value < (1 << 64) else DataType.DOUBLE
    if isinstance(value, float):
        return DataType.DOUBLE
    return DataType.STRING


def _fits(datatype: DataType, value: Value) -> bool:
    if isinstance(value, bool):
        return datatype is DataType.BOOLEAN
    if isinstance(value, int):
        if datatype is DataType.INT64:
            return -(1 << 63) <= value < (1 << 63)
        if datatype is DataType.UINT64:
            return 0 <= value < (1 << 64)
        return datatype is DataType.DOUBLE
    if isinstance(value, float):
        return datatype is DataType.DOUBLE
    return datatype is DataType.STRING


def _value(pv: PointValue) -> Value | None:
    """The value to send: None (``is_null``) for bad points and missing values."""
    return pv.value if pv.quality == Quality.GOOD else None


def _is_dead(reading: Reading) -> bool:
    points = reading.points.values()
    return bool(points) and all(
        pv.quality == Quality.BAD and pv.error in CONNECTION_REASONS for pv in points
    )


@dataclass
class _Point:
    """What the edge node knows of one device point (for births), for the process."""

    alias: int
    datatype: DataType
    #: The datatype is a guess (Double): no good value was seen yet.
    guessed: bool
    unit: str | None = None
    value: Value | None = None
    error: str | None = None
    ts_ms: int = 0
    clock: str | None = None


@dataclass
class _Device:
    points: dict[str, _Point] = field(default_factory=dict)
    #: False after a reading that made it a DDEATH, until a reading that is not.
    alive: bool = True


class SparkplugWire(Wire):
    """Sparkplug B 3.0 edge node session for one destination.

    Args:
        settings: the destination; ``sparkplug_group_id`` is required,
            ``sparkplug_edge_node_id`` defaults to ``gateway_id``.
        state_file: where the ``bdSeq`` is kept across restarts (a small JSON file).
        clock: wall clock (seconds since the epoch), for payload timestamps and the
            connect time that tells historical readings.

    Raises:
        ValueError: no group id, or an id with a reserved character (``+ / #``).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        state_file: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings)
        if settings.sparkplug_group_id is None:
            raise ValueError("payload sparkplug needs a group id (mqtt.sparkplug.group_id)")
        self.group_id = _check_id("group_id", settings.sparkplug_group_id)
        self.edge_node_id = _check_id(
            "edge_node_id", settings.sparkplug_edge_node_id or settings.gateway_id
        )
        self.bdseq = BdSeqStore(state_file)
        self._clock = clock
        self._node_properties: tuple[tuple[str, str], ...] = (
            ("Properties/Software", "swm-edge"),
            ("Properties/Software Version", __version__),
            ("Properties/Gateway ID", settings.gateway_id),
        )
        # Alias 1 is bdSeq, 2.. the node properties; device points follow.
        self._next_alias = 2 + len(self._node_properties)
        self._devices: dict[str, _Device] = {}
        # The session (reset by every NBIRTH).
        self._connected_at: float | None = None
        self._seq = 0
        self._born: set[str] = set()
        #: Devices the session has a DBIRTH of (born, or born and then dead).
        self._announced: set[str] = set()
        #: (device, point) whose last sent quality was bad.
        self._sent_bad: set[tuple[str, str]] = set()
        self._commands = FailureLog(log, f"sparkplug {settings.name}: NCMD")

    # ---- topics -------------------------------------------------------------------
    def node_topic(self, message_type: str) -> str:
        """``spBv1.0/{group}/{NBIRTH|NDEATH|NDATA|NCMD}/{edge node}``."""
        return f"{NAMESPACE}/{self.group_id}/{message_type}/{self.edge_node_id}"

    def device_topic(self, message_type: str, device_id: str) -> str:
        """``spBv1.0/{group}/{DBIRTH|DDEATH|DDATA|DCMD}/{edge node}/{device}``."""
        return f"{self.node_topic(message_type)}/{device_id}"

    # ---- the Wire interface ---------------------------------------------------------
    def will(self) -> Message:
        """The NDEATH with a new bdSeq (persisted before it is handed out)."""
        return self._ndeath(self.bdseq.next())

    def connected(self) -> list[Message]:
        """NBIRTH (seq 0) and a DBIRTH of every device known alive."""
        self._connected_at = self._clock()
        return self._birth_sequence()

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.node_topic("NCMD"), COMMAND_QOS)]

    def received(self, topic: str, payload: bytes) -> list[Message]:
        """A rebirth request (NCMD ``Node Control/Rebirth`` = true) gets the whole birth
        sequence again; anything else is ignored (invalid payloads with a log line)."""
        if topic != self.node_topic("NCMD") or self._connected_at is None:
            return []
        if len(payload) > MAX_COMMAND_BYTES:
            self._commands.failure(f"ignored a {len(payload)}-byte command (too large)")
            return []
        try:
            metrics = decode_metrics(payload)
        except PayloadError as exc:
            self._commands.failure(f"ignored an invalid command ({exc})")
            return []
        self._commands.success()
        if any(m.name == REBIRTH and m.value is True for m in metrics):
            log.info("sparkplug %s: rebirth requested by a host", self.settings.name)
            return self._birth_sequence()
        return []

    def encode(self, seq: int, reading: Reading) -> list[Message]:
        device_id = reading.device_id
        device = self._devices.setdefault(device_id, _Device())
        if _is_dead(reading):
            device.alive = False
            if device_id in self._announced and device_id not in self._born:
                return []  # its DDEATH was sent this session: one per outage, not per poll
            messages = []
            if device_id not in self._announced:
                # The session has not heard of it: declare its metrics (null), then its death.
                self._learn(device, reading)
                self._remember(device, reading)
                messages.append(self._dbirth(device_id, device))
            self._born.discard(device_id)
            messages.append(self._ddeath(device_id))
            return messages
        redefined = self._learn(device, reading)
        self._remember(device, reading)
        device.alive = True
        messages = []
        if redefined or device_id not in self._born:
            messages.append(self._dbirth(device_id, device))
        messages.append(self._ddata(device_id, reading))
        return messages

    def closing(self) -> Message:
        """The NDEATH of the current connection (a clean DISCONNECT discards the will)."""
        return self._ndeath(self.bdseq.current)

    # ---- messages -------------------------------------------------------------------
    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _message(self, topic: str, metrics: list[Metric], *, datatypes: bool) -> Message:
        payload = encode(
            metrics, timestamp=_ms(self._clock()), seq=self._next_seq(), datatypes=datatypes
        )
        return Message(topic, payload, DATA_QOS)

    def _ndeath(self, bdseq: int) -> Message:
        now = _ms(self._clock())
        metric = Metric(DataType.INT64, bdseq, name=BDSEQ, timestamp=now)
        payload = encode([metric], timestamp=now, seq=None, datatypes=True)
        return Message(self.node_topic("NDEATH"), payload, DEATH_QOS)

    def _birth_sequence(self) -> list[Message]:
        self._seq = 0
        self._born.clear()
        self._announced.clear()
        self._sent_bad.clear()
        now = _ms(self._clock())
        metrics = [
            Metric(DataType.INT64, self.bdseq.current, name=BDSEQ, alias=1, timestamp=now),
            # No alias (tck-id-operational-behavior-data-commands-rebirth-name-aliases).
            Metric(DataType.BOOLEAN, False, name=REBIRTH, timestamp=now),
        ]
        metrics += [
            Metric(DataType.STRING, value, name=name, alias=alias, timestamp=now)
            for alias, (name, value) in enumerate(self._node_properties, start=2)
        ]
        messages = [self._message(self.node_topic("NBIRTH"), metrics, datatypes=True)]
        messages += [
            self._dbirth(device_id, device)
            for device_id, device in self._devices.items()
            if device.alive and device.points
        ]
        return messages

    def _dbirth(self, device_id: str, device: _Device) -> Message:
        self._born.add(device_id)
        self._announced.add(device_id)
        metrics = []
        for name, point in device.points.items():
            bad = point.value is None
            key = (device_id, name)
            if bad:
                self._sent_bad.add(key)
            else:
                self._sent_bad.discard(key)
            props: list[tuple[str, Property]] = [
                (QUALITY, Property(DataType.INT32, BAD if bad else GOOD))
            ]
            if point.unit:
                props.append((UNIT, Property(DataType.STRING, point.unit)))
            if bad and point.error:
                props.append((ERROR, Property(DataType.STRING, point.error)))
            if point.clock:
                props.append((CLOCK, Property(DataType.STRING, point.clock)))
            metrics.append(
                Metric(
                    point.datatype,
                    point.value,
                    name=name,
                    alias=point.alias,
                    timestamp=point.ts_ms,
                    properties=tuple(props),
                )
            )
        return self._message(self.device_topic("DBIRTH", device_id), metrics, datatypes=True)

    def _ddata(self, device_id: str, reading: Reading) -> Message:
        device = self._devices[device_id]
        ts = _ms(reading.ts)
        historical = self._connected_at is not None and reading.ts < self._connected_at
        metrics = []
        for name, pv in reading.points.items():
            point = device.points[name]
            value = _value(pv)
            key = (device_id, name)
            props: list[tuple[str, Property]] = []
            if value is None:
                props.append((QUALITY, Property(DataType.INT32, BAD)))
                if pv.error:
                    props.append((ERROR, Property(DataType.STRING, pv.error)))
                self._sent_bad.add(key)
            elif key in self._sent_bad:
                props.append((QUALITY, Property(DataType.INT32, GOOD)))
                self._sent_bad.discard(key)
            if reading.clock:
                props.append((CLOCK, Property(DataType.STRING, reading.clock)))
            metrics.append(
                Metric(
                    point.datatype,
                    value,
                    alias=point.alias,
                    timestamp=ts,
                    is_historical=historical,
                    properties=tuple(props),
                )
            )
        return self._message(self.device_topic("DDATA", device_id), metrics, datatypes=False)

    def _ddeath(self, device_id: str) -> Message:
        return self._message(self.device_topic("DDEATH", device_id), [], datatypes=False)

    # ---- what the edge node knows of its devices ------------------------------------
    def _learn(self, device: _Device, reading: Reading) -> bool:
        """Add the reading's new points to the device's metric definitions and correct
        datatypes; True when the definitions changed (a new DBIRTH is due)."""
        changed = False
        for name, pv in reading.points.items():
            value = _value(pv)
            point = device.points.get(name)
            if point is None:
                guessed = value is None
                datatype = DataType.DOUBLE if value is None else _datatype_of(value)
                device.points[name] = _Point(self._next_alias, datatype, guessed, pv.unit)
                self._next_alias += 1
                changed = True
                continue
            if value is not None and (point.guessed or not _fits(point.datatype, value)):
                datatype = _datatype_of(value)
                point.guessed = False
                if datatype is not point.datatype:
                    point.datatype = datatype
                    changed = True
            if pv.unit and pv.unit != point.unit:
                point.unit = pv.unit
                changed = True
        return changed

    def _remember(self, device: _Device, reading: Reading) -> None:
        ts = _ms(reading.ts)
        for name, pv in reading.points.items():
            point = device.points[name]
            point.value = _value(pv)
            point.error = pv.error
            point.ts_ms = ts
            point.clock = reading.clock
