"""What goes on the wire to one destination: topics, payloads and the session protocol.

A :class:`Wire` turns buffered readings into MQTT messages and says what to send around a
connection (the will, what to publish on connect and on a clean close, what to subscribe
to and how to answer what arrives). The :class:`~swm_edge.publish.mqtt.Destination` owns
the connection, the in-flight window and the acknowledgements; the wire owns the format.

- ``json`` (:class:`JsonWire`): wire contract v1, one message per reading (or, with
  ``mqtt.batch``, several readings of one device per message), plus the retained status
  topic (docs/wire-contract.md).
- ``senml`` / ``senml-cbor``: RFC 8428 records (swm_edge.publish.senml).
- ``sparkplug``: Sparkplug B 3.0 (swm_edge.publish.sparkplug), a stateful session.

Every method is called on the event loop's thread.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from swm_edge import __version__
from swm_edge.model import Reading
from swm_edge.publish.encoders import json_v1

if TYPE_CHECKING:
    from swm_edge.buffer import Row
    from swm_edge.publish.mqtt import BrokerSettings


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message to publish."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    #: MQTT 5 content type (e.g. ``application/senml+json``); not sent over 3.1.1.
    content_type: str | None = None


class Wire(ABC):
    """The payload format and session protocol of one destination."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings

    def will(self) -> Message | None:
        """The last will for the next connection (called before each attempt)."""
        return None

    def connected(self) -> list[Message]:
        """What to publish first on a new connection (before any reading)."""
        return []

    def subscriptions(self) -> list[tuple[str, int]]:
        """Topic filters (with QoS) to subscribe to on each connection."""
        return []

    def received(self, topic: str, payload: bytes) -> list[Message]:
        """A message arrived on a subscription: what to publish in answer."""
        return []

    @abstractmethod
    def encode(self, seq: int, reading: Reading) -> list[Message]:
        """The messages of one buffered reading; the *last* one carries the reading (its
        acknowledgement releases it from the buffer), earlier ones are control messages the
        format needs first (a Sparkplug DBIRTH). An empty list releases the reading without
        sending anything (a dead device's next bad reading, once its DDEATH was sent)."""

    def encode_batch(self, rows: Sequence[Row], max_bytes: int) -> tuple[Message, int]:
        """One message carrying the first of ``rows`` (several readings of one device, in
        seq order) and as many following ones as fit in ``max_bytes``; and how many it
        carries. Only for formats that can batch (``mqtt.batch`` > 1 is refused otherwise)."""
        raise NotImplementedError(f"{type(self).__name__} cannot batch readings")

    def closing(self) -> Message | None:
        """What to publish before a clean disconnect (the will is not sent then)."""
        return None

    def health(self, problems: dict[str, str]) -> list[Message]:
        """The gateway's health changed (``problems``: e.g. ``{"buffer": "disk full"}``,
        empty when all is well): what to publish now, and to include on reconnects."""
        return []


def _status(settings: BrokerSettings, state: str, **extra: object) -> Message:
    doc = {"state": state, "gateway": settings.gateway_id, **extra}
    return Message(settings.status_topic, json.dumps(doc).encode(), qos=1, retain=True)


class StatusWire(Wire):
    """A per-reading format with swm-edge's retained status topic (``online``/``offline``,
    the offline one also as the will)."""

    #: MQTT 5 content type of the telemetry payloads.
    content_type: str | None = None
    #: Last topic level of the telemetry topic.
    suffix = "telemetry"

    _problems: dict[str, str] | None = None
    _since: int = 0

    def will(self) -> Message:
        return _status(self.settings, "offline")

    def connected(self) -> list[Message]:
        self._since = int(time.time())
        return [self._online()]

    def health(self, problems: dict[str, str]) -> list[Message]:
        self._problems = dict(problems) or None
        return [self._online()]

    def _online(self) -> Message:
        extra: dict[str, object] = {"version": __version__, "since": self._since}
        if self._problems:
            extra["problems"] = self._problems
        return _status(self.settings, "online", **extra)

    def closing(self) -> Message:
        return _status(self.settings, "offline")

    def encode(self, seq: int, reading: Reading) -> list[Message]:
        s = self.settings
        topic = f"{s.topic_prefix}/{s.gateway_id}/{reading.device_id}/{self.suffix}"
        return [Message(topic, self.payload(seq, reading), s.qos, content_type=self.content_type)]

    @abstractmethod
    def payload(self, seq: int, reading: Reading) -> bytes:
        """The telemetry payload of one reading."""


class JsonWire(StatusWire):
    """Wire contract v1 (the default): ``{prefix}/{gateway}/{device}/telemetry``."""

    content_type = "application/json"

    def payload(self, seq: int, reading: Reading) -> bytes:
        return json_v1.encode(self.settings.gateway_id, seq, reading)

    def encode_batch(self, rows: Sequence[Row], max_bytes: int) -> tuple[Message, int]:
        if len(rows) == 1:
            return self.encode(rows[0].seq, rows[0].reading)[0], 1
        entries: list[bytes] = []
        size = 0
        for row in rows:
            entry = json_v1.encode_entry(row.seq, row.reading)
            if entries and size + len(entry) > max_bytes:
                break
            entries.append(entry)
            size += len(entry) + 1
        if len(entries) == 1:  # one poll alone fills the message: send it as it is
            return self.encode(rows[0].seq, rows[0].reading)[0], 1
        s = self.settings
        device = rows[0].reading.device_id
        payload = json_v1.encode_batch(s.gateway_id, device, entries)
        topic = f"{s.topic_prefix}/{s.gateway_id}/{device}/{self.suffix}"
        return Message(topic, payload, s.qos, content_type=self.content_type), len(entries)


#: The payload formats (``mqtt.payload``).
PAYLOADS = ("json", "senml", "senml-cbor", "sparkplug")


def make_wire(settings: BrokerSettings, state_dir: Path) -> Wire:
    """The wire of a destination's configured payload format. ``state_dir`` is where a
    stateful format keeps what must survive a restart (Sparkplug's bdSeq), in files named
    after the destination."""
    if settings.payload == "json":
        return JsonWire(settings)
    if settings.payload in ("senml", "senml-cbor"):
        from swm_edge.publish.senml import SenmlWire

        return SenmlWire(settings)
    if settings.payload == "sparkplug":
        from swm_edge.publish.sparkplug import SparkplugWire

        return SparkplugWire(settings, state_dir / f"{settings.name}.sparkplug.json")
    raise ValueError(f"unknown payload format {settings.payload!r}")
