"""Test kit for Sparkplug B: decoders independent of swm_edge's encoder, and a small host.

- :func:`compile_schema` runs grpcio-tools' protoc on ``sparkplug_b.proto`` and loads the
  result into a private descriptor pool: :class:`SchemaDecoder` decodes payloads with it,
  properties included (pysparkplug does not expose metric properties).
- :class:`SparkplugHost` is what a Sparkplug host application does with an edge node's
  messages (decoded with pysparkplug, a separate implementation): it follows each edge node's
  sessions, checks ``seq`` continuity and that every NDEATH's ``bdSeq`` matches the NBIRTH of
  the session it ends, resolves DDATA aliases through the DBIRTHs, and asks for a rebirth
  (NCMD) when data arrives for a node it has no birth of, as a host must.

Test files load this module with :func:`load` (tests are not a package).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pysparkplug as spb
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from pysparkplug import _protobuf as spb_protobuf

from swm_edge.testing import BrokerAddress, MqttCollector, mqtt_publish

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "swm_edge" / "publish" / "sparkplug" / "sparkplug_b.proto"


def compile_schema(out_dir: Path, proto: Path = PROTO) -> descriptor_pb2.FileDescriptorSet:
    """``protoc --descriptor_set_out`` of ``proto`` (grpcio-tools, in this process)."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "sparkplug_b.desc"
    code = protoc.main(
        ["protoc", f"-I{proto.parent}", f"--descriptor_set_out={target}", str(proto)]
    )
    assert code == 0, f"protoc failed on {proto} ({code})"
    return descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes())


class SchemaDecoder:
    """Decodes Sparkplug B payloads into plain dicts with a protobuf class built from the
    .proto by protoc (not the committed generated module), in a pool of its own."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        for f in files.file:
            self.pool.Add(f)
        self.payload_class = message_factory.GetMessageClass(
            self.pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
        )

    def message(self, raw: bytes) -> Any:
        return self.payload_class.FromString(raw)

    def decode(self, raw: bytes) -> dict[str, Any]:
        """``{"timestamp", "seq", "metrics": [{field: value, "properties": {...}}]}``; absent
        optional fields are absent keys."""
        p = self.message(raw)
        doc: dict[str, Any] = {"metrics": [self._metric(m) for m in p.metrics]}
        for name in ("timestamp", "seq", "uuid", "body"):
            if p.HasField(name):
                doc[name] = getattr(p, name)
        return doc

    @staticmethod
    def _metric(m: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name in (
            "name",
            "alias",
            "timestamp",
            "datatype",
            "is_historical",
            "is_transient",
            "is_null",
        ):
            if m.HasField(name):
                doc[name] = getattr(m, name)
        which = m.WhichOneof("value")
        if which is not None:
            doc["value_field"] = which
            doc["value"] = getattr(m, which)
        if m.HasField("properties"):
            props = {}
            for key, pv in zip(m.properties.keys, m.properties.values, strict=True):
                which = pv.WhichOneof("value")
                props[key] = {
                    "type": pv.type,
                    "value": getattr(pv, which) if which else None,
                    "field": which,
                    "is_null": pv.is_null,
                }
            doc["properties"] = props
        return doc


def rebirth_request() -> bytes:
    """An NCMD payload asking for a rebirth, encoded by pysparkplug."""
    now = spb.get_current_timestamp()
    metric = spb.Metric(
        timestamp=now, name="Node Control/Rebirth", datatype=spb.DataType.BOOLEAN, value=True
    )
    return spb.NCmd(timestamp=now, metrics=(metric,)).encode(include_dtypes=True)


@dataclass
class Value:
    """One metric value a host received in DDATA (or a DBIRTH)."""

    device: str
    name: str | None
    value: Any
    timestamp: int | None
    historical: bool
    kind: str  # "DBIRTH" | "DDATA"
    seq: int


@dataclass
class _Node:
    online: bool = False
    bdseq: int | None = None
    next_seq: int | None = None
    births: dict[str, Any] = field(default_factory=dict)  # device -> pysparkplug DBirth
    dead: set[str] = field(default_factory=set)


class SparkplugHost:
    """A Sparkplug host on ``broker``, fed by an :class:`MqttCollector` on ``spBv1.0/#``.

    Call :meth:`update` (or :meth:`wait`) to process what arrived. ``problems`` lists every
    protocol violation seen; ``values`` every metric value received; ``events`` the message
    types in order, as ``(type, node, device, seq, bdSeq)``.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        collector: MqttCollector,
        *,
        auto_rebirth: bool = True,
        forget_on_reconnect: bool = True,
    ) -> None:
        self.broker = broker
        self.collector = collector
        self.auto_rebirth = auto_rebirth
        #: A reconnected host forgets the edge nodes' state (it may have missed messages);
        #: not with a persistent session whose messages the broker queued meanwhile.
        self.forget_on_reconnect = forget_on_reconnect
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.problems: list[str] = []
        self.values: list[Value] = []
        self.events: list[tuple[str, str, str | None, int | None, int | None]] = []
        self.rebirths_requested = 0
        self.reconnects = 0
        self._subscribed = collector.subscribe_count
        self._seen = 0
        self._lock = threading.Lock()
        self._last_rebirth: dict[tuple[str, str], float] = {}

    def update(self) -> None:
        with self._lock:
            subscribed = self.collector.subscribe_count
            if subscribed != self._subscribed and self.forget_on_reconnect:
                # This host lost its connection (a broker restart): whatever it knew of the
                # edge nodes is stale now; it waits for births (or asks for them).
                self._subscribed = subscribed
                self.reconnects += 1
                for node in self.nodes.values():
                    node.online, node.next_seq = False, None
                    node.births.clear()
            messages = self.collector.messages()
            for m in messages[self._seen :]:
                self._handle(m.topic, m.payload, m.qos, m.retain)
            self._seen = len(messages)

    def wait(self, condition: Callable[[SparkplugHost], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.update()
            if condition(self):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"host condition not met in {timeout:g} s; events: {self.events[-20:]}; "
                    f"problems: {self.problems}"
                )
            time.sleep(0.05)

    def request_rebirth(self, group: str, node: str) -> None:
        topic = f"spBv1.0/{group}/NCMD/{node}"
        mqtt_publish(self.broker.host, self.broker.port, topic, rebirth_request(), qos=0)
        self.rebirths_requested += 1

    def values_of(self, device: str, name: str, kind: str = "DDATA") -> list[Value]:
        self.update()
        return [v for v in self.values if v.device == device and v.name == name and v.kind == kind]

    def count(self, message_type: str, device: str | None = None, *, since: int = 0) -> int:
        """How many messages of a type (of a device) arrived, from event index ``since``."""
        self.update()
        return sum(
            1
            for e in self.events[since:]
            if e[0] == message_type and (device is None or e[2] == device)
        )

    def last_nbirth(self) -> int:
        """Event index of the latest NBIRTH (0 without one)."""
        self.update()
        found = [i for i, e in enumerate(self.events) if e[0] == "NBIRTH"]
        return found[-1] if found else 0

    # ---- protocol ---------------------------------------------------------------------
    def _problem(self, text: str) -> None:
        self.problems.append(text)

    def _handle(self, topic_str: str, raw: bytes, qos: int, retain: bool) -> None:
        parts = topic_str.split("/")
        if parts[0] != "spBv1.0" or len(parts) < 4:
            return
        group, kind, node_id = parts[1], parts[2], parts[3]
        device = parts[4] if len(parts) > 4 else None
        if kind in ("NCMD", "DCMD", "STATE"):
            return
        if retain:
            self._problem(f"{kind} {topic_str} was retained")
        key = (group, node_id)
        node = self.nodes.setdefault(key, _Node())
        if kind == "NDEATH":
            death = spb.NDeath.decode(raw)
            bdseq = death.bd_seq_metric.value
            self.events.append((kind, node_id, None, None, bdseq))
            if death.bd_seq_metric.datatype != spb.DataType.INT64:
                self._problem(f"NDEATH bdSeq datatype {death.bd_seq_metric.datatype}")
            if node.bdseq is not None and bdseq == node.bdseq:
                node.online = False
                node.next_seq = None
            # an NDEATH of an older session (a different bdSeq) is ignored, as hosts must
            return
        payload_seq = _seq(raw)
        if kind == "NBIRTH":
            birth = spb.NBirth.decode(raw)
            metrics = {m.name: m for m in birth.metrics}
            bdseq = metrics["bdSeq"].value if "bdSeq" in metrics else None
            self.events.append((kind, node_id, None, birth.seq, bdseq))
            if birth.seq != 0:
                self._problem(f"NBIRTH seq {birth.seq}")
            if bdseq is None or metrics["bdSeq"].datatype != spb.DataType.INT64:
                self._problem("NBIRTH without an Int64 bdSeq")
            rebirth = metrics.get("Node Control/Rebirth")
            if rebirth is None or rebirth.value is not False or rebirth.alias is not None:
                self._problem(f"NBIRTH Node Control/Rebirth is {rebirth}")
            if qos != 0:
                self._problem(f"NBIRTH delivered at QoS {qos}")
            node.online, node.bdseq, node.next_seq = True, bdseq, 1
            node.births.clear()
            node.dead.clear()
            return
        self.events.append((kind, node_id, device, payload_seq, None))
        if not node.online:
            # Data of a session whose NBIRTH this host did not see: ask for a rebirth.
            if self.auto_rebirth:
                now = time.monotonic()
                if now - self._last_rebirth.get(key, 0.0) > 2.0:
                    self._last_rebirth[key] = now
                    self.request_rebirth(group, node_id)
            return
        if payload_seq != node.next_seq:
            self._problem(f"{kind} {device}: seq {payload_seq}, expected {node.next_seq}")
        node.next_seq = ((payload_seq or 0) + 1) % 256
        if qos != 0:
            self._problem(f"{kind} delivered at QoS {qos}")
        assert device is not None
        if kind == "DBIRTH":
            birth = spb.DBirth.decode(raw)
            node.births[device] = birth
            node.dead.discard(device)
            aliases = [m.alias for m in birth.metrics]
            if None in aliases or len(set(aliases)) != len(aliases):
                self._problem(f"DBIRTH {device}: aliases {aliases}")
            for m in birth.metrics:
                self.values.append(
                    Value(device, m.name, m.value, m.timestamp, m.is_historical, kind, birth.seq)
                )
        elif kind == "DDATA":
            if device not in node.births or device in node.dead:
                self._problem(f"DDATA of {device}, which is not born")
                return
            try:
                data = spb.DData.decode(raw, birth=node.births[device])
            except KeyError as exc:
                self._problem(f"DDATA {device}: unknown alias {exc}")
                return
            for m in data.metrics:
                if m.timestamp is None:
                    self._problem(f"DDATA {device}: metric {m.name} without timestamp")
                self.values.append(
                    Value(device, m.name, m.value, m.timestamp, m.is_historical, kind, data.seq)
                )
        elif kind == "DDEATH":
            node.dead.add(device)


def _seq(raw: bytes) -> int | None:
    # pysparkplug's classes require a seq for some types only; read it the same way for all.
    payload = spb_protobuf.Payload.FromString(raw)
    return payload.seq if payload.HasField("seq") else None
