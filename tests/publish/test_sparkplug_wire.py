"""SparkplugWire: Sparkplug B 3.0 topics, births and deaths, seq/bdSeq, aliases, quality,
historical data and rebirth requests. Payloads are decoded with pysparkplug (a separate
Sparkplug implementation) and with a protobuf class protoc builds from the .proto in the test,
never with the encoder's own module; the session also runs against a real mosquitto."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import socket
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.client as paho
import pysparkplug as spb
import pytest
from google.protobuf import descriptor_pb2
from paho.mqtt.enums import CallbackAPIVersion

from swm_edge import __version__
from swm_edge.model import PointValue, Reading
from swm_edge.publish.mqtt import BrokerSettings
from swm_edge.publish.sparkplug import SparkplugWire
from swm_edge.publish.sparkplug import sparkplug_b_pb2 as committed_pb2
from swm_edge.publish.wire import Message
from swm_edge.testing import Mosquitto


def _load_host_kit() -> ModuleType:
    name = "sparkplug_host"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


kit = _load_host_kit()

GROUP = "water-utility"
NODE = "gw-1"
T0 = 1_800_000_000.0  # wall clock of the tests (2027-01-15)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(**kw: Any) -> BrokerSettings:
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=1883,
        client_id="gw-1",
        gateway_id="gw-1",
        payload="sparkplug",
        sparkplug_group_id=GROUP,
    )
    base.update(kw)
    return BrokerSettings(**base)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_wire(tmp_path: Path, clock: Clock) -> Any:
    def make(state: Path | None = None, **kw: Any) -> SparkplugWire:
        return SparkplugWire(
            settings(**kw), state or tmp_path / "default.sparkplug.json", clock=clock
        )

    return make


@pytest.fixture(scope="session")
def schema_files(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    return kit.compile_schema(tmp_path_factory.mktemp("protoc"))


@pytest.fixture(scope="session")
def decoder(schema_files: descriptor_pb2.FileDescriptorSet) -> Any:
    return kit.SchemaDecoder(schema_files)


def flow(ts: float, rate: float = 12.5, **more: PointValue) -> Reading:
    points = {
        "flow_rate": PointValue.good(rate, "m3/h"),
        "totalizer": PointValue.good(123_456, "m3"),
        "reverse": PointValue.good(False),
        "offset": PointValue.good(-7),
        **more,
    }
    return Reading("flow-1", ts, points)


def dead(device: str, ts: float, reason: str = "timeout") -> Reading:
    return Reading(device, ts, {"flow_rate": PointValue.bad(reason, "m3/h")})


def seq_of(message: Message) -> int | None:
    payload = kit.spb_protobuf.Payload.FromString(message.payload)
    return payload.seq if payload.HasField("seq") else None


def kinds(messages: list[Message]) -> list[str]:
    return [m.topic.split("/")[2] for m in messages]


# ---- the schema -------------------------------------------------------------------------
def test_the_committed_module_is_generated_from_the_proto(
    schema_files: descriptor_pb2.FileDescriptorSet,
) -> None:
    (compiled,) = schema_files.file
    compiled = descriptor_pb2.FileDescriptorProto.FromString(compiled.SerializeToString())

    def drop_json_names(messages: Any) -> None:
        # protoc's descriptor set names each field's JSON name; the Python generator leaves
        # those out of the descriptor it embeds (they follow from the field names).
        for m in messages:
            for f in m.field:
                f.ClearField("json_name")
            drop_json_names(m.nested_type)

    drop_json_names(compiled.message_type)
    committed = descriptor_pb2.FileDescriptorProto.FromString(
        committed_pb2.DESCRIPTOR.serialized_pb
    )
    assert committed == compiled, "regenerate sparkplug_b_pb2.py (see sparkplug_b.proto)"
    assert committed.SerializeToString() == committed_pb2.DESCRIPTOR.serialized_pb


def test_the_schema_is_the_one_pysparkplug_ships() -> None:
    # pysparkplug bundles the Eclipse Tahu sparkplug_b.proto of Sparkplug 3.0 (compiled by
    # its own protoc): the same file descriptor, byte for byte.
    from pysparkplug._protobuf import sparkplug_b_pb2 as theirs

    assert committed_pb2.DESCRIPTOR.serialized_pb == theirs.DESCRIPTOR.serialized_pb


def test_the_schema_has_the_specifications_field_numbers(
    schema_files: descriptor_pb2.FileDescriptorSet,
) -> None:
    # Sparkplug 3.0, section 6.4.1 (field: number, protobuf type), written out independently.
    (f,) = schema_files.file
    assert f.package == "org.eclipse.tahu.protobuf"
    assert f.syntax in ("", "proto2")  # protoc leaves proto2 implicit
    T = descriptor_pb2.FieldDescriptorProto
    payload = {m.name: m for m in f.message_type}["Payload"]
    nested = {m.name: m for m in payload.nested_type}

    def fields(msg: Any) -> dict[str, tuple[int, int]]:
        return {x.name: (x.number, x.type) for x in msg.field}

    assert fields(payload) == {
        "timestamp": (1, T.TYPE_UINT64),
        "metrics": (2, T.TYPE_MESSAGE),
        "seq": (3, T.TYPE_UINT64),
        "uuid": (4, T.TYPE_STRING),
        "body": (5, T.TYPE_BYTES),
    }
    assert fields(nested["Metric"]) == {
        "name": (1, T.TYPE_STRING),
        "alias": (2, T.TYPE_UINT64),
        "timestamp": (3, T.TYPE_UINT64),
        "datatype": (4, T.TYPE_UINT32),
        "is_historical": (5, T.TYPE_BOOL),
        "is_transient": (6, T.TYPE_BOOL),
        "is_null": (7, T.TYPE_BOOL),
        "metadata": (8, T.TYPE_MESSAGE),
        "properties": (9, T.TYPE_MESSAGE),
        "int_value": (10, T.TYPE_UINT32),
        "long_value": (11, T.TYPE_UINT64),
        "float_value": (12, T.TYPE_FLOAT),
        "double_value": (13, T.TYPE_DOUBLE),
        "boolean_value": (14, T.TYPE_BOOL),
        "string_value": (15, T.TYPE_STRING),
        "bytes_value": (16, T.TYPE_BYTES),
        "dataset_value": (17, T.TYPE_MESSAGE),
        "template_value": (18, T.TYPE_MESSAGE),
        "extension_value": (19, T.TYPE_MESSAGE),
    }
    assert fields(nested["PropertyValue"]) == {
        "type": (1, T.TYPE_UINT32),
        "is_null": (2, T.TYPE_BOOL),
        "int_value": (3, T.TYPE_UINT32),
        "long_value": (4, T.TYPE_UINT64),
        "float_value": (5, T.TYPE_FLOAT),
        "double_value": (6, T.TYPE_DOUBLE),
        "boolean_value": (7, T.TYPE_BOOL),
        "string_value": (8, T.TYPE_STRING),
        "propertyset_value": (9, T.TYPE_MESSAGE),
        "propertysets_value": (10, T.TYPE_MESSAGE),
        "extension_value": (11, T.TYPE_MESSAGE),
    }
    assert fields(nested["PropertySet"]) == {
        "keys": (1, T.TYPE_STRING),
        "values": (2, T.TYPE_MESSAGE),
    }
    assert set(nested) == {
        "Template",
        "DataSet",
        "PropertyValue",
        "PropertySet",
        "PropertySetList",
        "MetaData",
        "Metric",
    }
    (datatype,) = f.enum_type
    values = {v.name: v.number for v in datatype.value}
    assert values["Int64"] == 4 and values["UInt64"] == 8 and values["Double"] == 10
    assert values["Boolean"] == 11 and values["String"] == 12 and values["DateTimeArray"] == 34
    assert len(values) == 35


# ---- topics, will, birth ------------------------------------------------------------------
def test_topics_and_subscriptions(make_wire: Any) -> None:
    wire = make_wire()
    assert wire.will().topic == f"spBv1.0/{GROUP}/NDEATH/{NODE}"
    (nbirth,) = wire.connected()
    assert nbirth.topic == f"spBv1.0/{GROUP}/NBIRTH/{NODE}"
    assert wire.subscriptions() == [(f"spBv1.0/{GROUP}/NCMD/{NODE}", 1)]
    birth, data = wire.encode(1, flow(T0 + 1))
    assert birth.topic == f"spBv1.0/{GROUP}/DBIRTH/{NODE}/flow-1"
    assert data.topic == f"spBv1.0/{GROUP}/DDATA/{NODE}/flow-1"
    (death,) = wire.encode(2, dead("flow-1", T0 + 2))
    assert death.topic == f"spBv1.0/{GROUP}/DDEATH/{NODE}/flow-1"
    # the edge node id, when configured, replaces the gateway id
    other = make_wire(sparkplug_edge_node_id="plant-7")
    assert other.will().topic == f"spBv1.0/{GROUP}/NDEATH/plant-7"
    assert other.subscriptions() == [(f"spBv1.0/{GROUP}/NCMD/plant-7", 1)]


@pytest.mark.parametrize(
    "kw",
    [
        {"sparkplug_group_id": None},
        {"sparkplug_group_id": "a/b"},
        {"sparkplug_group_id": "a+"},
        {"sparkplug_edge_node_id": "n#"},
    ],
)
def test_ids_must_be_valid_sparkplug_ids(make_wire: Any, kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="sparkplug"):
        make_wire(**kw)


def test_qos_and_retain_are_the_specifications(make_wire: Any) -> None:
    wire = make_wire()
    will = wire.will()
    assert (will.qos, will.retain) == (1, False)  # NDEATH will: QoS 1, not retained
    messages = [
        *wire.connected(),
        *wire.encode(1, flow(T0 + 1)),
        *wire.encode(2, dead("flow-1", T0)),
    ]
    assert kinds(messages) == ["NBIRTH", "DBIRTH", "DDATA", "DDEATH"]
    assert all((m.qos, m.retain) == (0, False) for m in messages)
    closing = wire.closing()
    assert (closing.qos, closing.retain) == (1, False)


def test_nbirth(make_wire: Any, clock: Clock) -> None:
    wire = make_wire()
    will = wire.will()
    (nbirth,) = wire.connected()
    birth = spb.NBirth.decode(nbirth.payload)
    assert birth.seq == 0
    assert birth.timestamp == round(T0 * 1000)
    metrics = {m.name: m for m in birth.metrics}
    assert metrics["bdSeq"].datatype == spb.DataType.INT64
    assert metrics["bdSeq"].value == spb.NDeath.decode(will.payload).bd_seq_metric.value == 0
    rebirth = metrics["Node Control/Rebirth"]
    assert (rebirth.datatype, rebirth.value, rebirth.alias) == (spb.DataType.BOOLEAN, False, None)
    assert metrics["Properties/Software"].value == "swm-edge"
    assert metrics["Properties/Software Version"].value == __version__
    assert metrics["Properties/Gateway ID"].value == "gw-1"
    assert all(m.timestamp == round(T0 * 1000) for m in birth.metrics)
    # every metric but the rebirth control has a unique alias (aliases are in use)
    aliases = [m.alias for m in birth.metrics if m.name != "Node Control/Rebirth"]
    assert None not in aliases and len(set(aliases)) == len(aliases)


# ---- bdSeq ----------------------------------------------------------------------------
def bdseq_of(message: Message) -> int:
    if "/NDEATH/" in message.topic:
        metric = spb.NDeath.decode(message.payload).bd_seq_metric
    else:
        metric = {m.name: m for m in spb.NBirth.decode(message.payload).metrics}["bdSeq"]
    assert metric.datatype == spb.DataType.INT64
    return int(metric.value)


def test_bdseq_rises_per_connection_attempt_and_survives_a_restart(
    tmp_path: Path, make_wire: Any
) -> None:
    state = tmp_path / "state" / "cloud.sparkplug.json"
    wire = make_wire(state)
    assert [bdseq_of(wire.will()) for _ in range(3)] == [0, 1, 2]  # two attempts failed
    (nbirth,) = wire.connected()
    assert bdseq_of(nbirth) == 2  # the NBIRTH carries the will of its own connection
    assert bdseq_of(wire.closing()) == 2
    assert json.loads(state.read_text()) == {"bdSeq": 2}
    assert not list(state.parent.glob(".*.tmp"))  # written via a temporary file, renamed
    # a restart (or kill -9) after the will went out: the next value is new
    again = make_wire(state)
    will = again.will()
    assert bdseq_of(will) == 3
    assert bdseq_of(again.connected()[0]) == 3


def test_bdseq_wraps_from_255_to_0(tmp_path: Path, make_wire: Any) -> None:
    state = tmp_path / "s.json"
    state.write_text('{"bdSeq": 254}')
    wire = make_wire(state)
    assert [bdseq_of(wire.will()) for _ in range(3)] == [255, 0, 1]


def test_an_unreadable_bdseq_file_starts_again_at_0(
    tmp_path: Path, make_wire: Any, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "s.json"
    state.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert bdseq_of(make_wire(state).will()) == 0
    assert "bdSeq starts at 0" in caplog.text
    state.write_text('{"bdSeq": 999}')
    assert bdseq_of(make_wire(state).will()) == 0


def test_an_unwritable_bdseq_file_is_a_warning_not_a_failure(
    tmp_path: Path, make_wire: Any, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    wire = make_wire(blocker / "sub" / "s.json")  # its folder cannot be created
    with caplog.at_level(logging.WARNING):
        assert [bdseq_of(wire.will()) for _ in range(3)] == [0, 1, 2]
    assert caplog.text.count("cannot write") == 1  # rate-limited


# ---- seq ----------------------------------------------------------------------------------
def test_seq_runs_over_every_message_of_the_session_and_wraps(make_wire: Any) -> None:
    wire = make_wire()
    wire.will()
    messages = list(wire.connected())
    for i in range(300):
        reading = dead("flow-1", T0 + i) if i % 50 == 49 else flow(T0 + i, rate=i / 10)
        messages += wire.encode(i + 1, reading)
    seqs = [seq_of(m) for m in messages]
    assert seqs == [i % 256 for i in range(len(messages))]
    assert len(messages) > 300  # births and deaths in between
    assert seq_of(wire.closing()) is None  # NDEATH has none
    assert seq_of(wire.will()) is None
    # a new session starts again at 0
    assert seq_of(wire.connected()[0]) == 0


# ---- DBIRTH / DDATA ----------------------------------------------------------------------
def test_the_first_reading_of_a_device_births_it_with_every_metric(
    make_wire: Any, decoder: Any
) -> None:
    wire = make_wire()
    wire.connected()
    ts = T0 + 0.25
    reading = flow(
        ts,
        big=PointValue.good(2**64 - 5),
        level=PointValue.bad("crc", "m"),
    )
    dbirth, ddata = wire.encode(7, reading)
    birth = spb.DBirth.decode(dbirth.payload)
    assert birth.seq == 1 and birth.timestamp == round(T0 * 1000)
    by_name = {m.name: m for m in birth.metrics}
    assert list(by_name) == list(reading.points)
    D = spb.DataType
    assert {n: m.datatype for n, m in by_name.items()} == {
        "flow_rate": D.DOUBLE,
        "totalizer": D.INT64,
        "reverse": D.BOOLEAN,
        "offset": D.INT64,
        "big": D.UINT64,
        "level": D.DOUBLE,  # never read good yet: Double until a value says otherwise
    }
    assert by_name["flow_rate"].value == 12.5
    assert by_name["totalizer"].value == 123_456
    assert by_name["reverse"].value is False
    assert by_name["offset"].value == -7
    assert by_name["big"].value == 2**64 - 5
    assert by_name["level"].is_null and by_name["level"].value is None
    assert all(m.timestamp == round(ts * 1000) for m in birth.metrics)
    aliases = [m.alias for m in birth.metrics]
    assert aliases == list(range(aliases[0], aliases[0] + len(aliases)))  # first appearance
    assert aliases[0] == 5  # 1-4 are the node's metrics (bdSeq, Properties/...)
    # DDATA: by alias only, no names, no datatypes; timestamps are the poll time
    raw = decoder.decode(ddata.payload)
    assert raw["seq"] == 2 and raw["timestamp"] == round(T0 * 1000)
    assert [m["alias"] for m in raw["metrics"]] == aliases
    assert all("name" not in m and "datatype" not in m for m in raw["metrics"])
    assert all(m["timestamp"] == round(ts * 1000) for m in raw["metrics"])
    data = spb.DData.decode(ddata.payload, birth=birth)
    values = {m.name: m.value for m in data.metrics}
    assert values == {
        "flow_rate": 12.5,
        "totalizer": 123_456,
        "reverse": False,
        "offset": -7,
        "big": 2**64 - 5,
        "level": None,
    }
    # units go with the birth (Ignition's engUnit property), not with every DDATA
    props = {m["name"]: m.get("properties", {}) for m in decoder.decode(dbirth.payload)["metrics"]}
    assert props["flow_rate"]["engUnit"]["value"] == "m3/h"
    assert "engUnit" not in props["reverse"]
    # the next reading is DDATA alone
    (more,) = wire.encode(8, flow(T0 + 1, rate=13.0))
    assert kinds([more]) == ["DDATA"] and seq_of(more) == 3


def test_quality_is_the_specifications_quality_property(make_wire: Any, decoder: Any) -> None:
    wire = make_wire()
    wire.connected()
    good_bad = flow(T0 + 1, level=PointValue.bad("exception:2", "m"))
    dbirth, ddata = wire.encode(1, good_bad)

    def quality(message: Message) -> dict[str, Any]:
        metrics = decoder.decode(message.payload)["metrics"]
        key = "name" if "DBIRTH" in message.topic else "alias"
        return {m[key]: m.get("properties", {}) for m in metrics}

    births = quality(dbirth)
    # every metric of a birth states its quality: Int32 (type 3) in int_value, 192 or 0
    assert births["flow_rate"]["Quality"] == {
        "type": 3,
        "value": 192,
        "field": "int_value",
        "is_null": False,
    }
    assert births["level"]["Quality"]["value"] == 0
    assert births["level"]["swm/error"]["value"] == "exception:2"
    # DDATA: only bad metrics carry it (absent means good), with the reason
    data = list(quality(ddata).values())
    assert data[:4] == [{}, {}, {}, {}]
    assert data[4]["Quality"]["value"] == 0 and data[4]["Quality"]["type"] == 3
    assert data[4]["swm/error"] == {
        "type": 12,
        "value": "exception:2",
        "field": "string_value",
        "is_null": False,
    }
    assert decoder.decode(ddata.payload)["metrics"][4]["is_null"] is True
    # the level comes back: 192 once, to clear the bad quality, then nothing
    (back,) = wire.encode(2, flow(T0 + 2, level=PointValue.good(3.5, "m")))
    assert list(quality(back).values())[4]["Quality"]["value"] == 192
    (steady,) = wire.encode(3, flow(T0 + 3, level=PointValue.good(3.6, "m")))
    assert all(p == {} for p in quality(steady).values())


def test_a_datatype_guessed_for_a_bad_point_is_corrected_by_a_new_birth(make_wire: Any) -> None:
    wire = make_wire()
    wire.connected()
    wire.encode(1, flow(T0 + 1, level=PointValue.bad("crc")))
    dbirth, ddata = wire.encode(2, flow(T0 + 2, level=PointValue.good(4)))
    birth = spb.DBirth.decode(dbirth.payload)
    level = {m.name: m for m in birth.metrics}["level"]
    assert (level.datatype, level.value) == (spb.DataType.INT64, 4)
    assert {m.name: m.value for m in spb.DData.decode(ddata.payload, birth=birth).metrics}[
        "level"
    ] == 4
    # an int where a float was born fits a Double (no rebirth); a float in an Int64 does not
    (plain,) = wire.encode(3, flow(T0 + 3, rate=12))
    assert kinds([plain]) == ["DDATA"]
    rebirth, _ = wire.encode(4, flow(T0 + 4, level=PointValue.good(4.5)))
    assert kinds([rebirth]) == ["DBIRTH"]


def test_a_new_point_births_the_device_again_with_the_same_aliases(make_wire: Any) -> None:
    wire = make_wire()
    wire.connected()
    first = spb.DBirth.decode(wire.encode(1, flow(T0 + 1))[0].payload)
    dbirth, ddata = wire.encode(2, flow(T0 + 2, ph=PointValue.good(7.1, "pH")))
    second = spb.DBirth.decode(dbirth.payload)
    old = {m.name: m.alias for m in first.metrics}
    new = {m.name: m.alias for m in second.metrics}
    assert {k: new[k] for k in old} == old
    assert new["ph"] == max(old.values()) + 1
    assert {m.name: m.value for m in spb.DData.decode(ddata.payload, birth=second).metrics}[
        "ph"
    ] == 7.1


def test_aliases_are_unique_across_the_devices_of_the_edge_node(make_wire: Any) -> None:
    wire = make_wire()
    wire.connected()
    aliases: list[int] = []
    for device in ("flow-1", "pressure-1", "quality-1"):
        reading = Reading(device, T0, {"a": PointValue.good(1.0), "b": PointValue.good(2.0)})
        birth = spb.DBirth.decode(wire.encode(1, reading)[0].payload)
        aliases += [m.alias for m in birth.metrics]
    assert aliases == list(range(5, 11))


def test_the_clock_flag_travels_as_a_metric_property(make_wire: Any, decoder: Any) -> None:
    wire = make_wire()
    wire.connected()
    wire.encode(1, flow(T0 + 1))
    flagged = Reading("flow-1", 190.0, {"flow_rate": PointValue.good(1.0)}, "unsynchronized")
    (ddata,) = wire.encode(2, flagged)
    (metric,) = decoder.decode(ddata.payload)["metrics"]
    assert metric["properties"]["swm/clock"]["value"] == "unsynchronized"
    assert metric["timestamp"] == 190_000
    (plain,) = wire.encode(3, flow(T0 + 3))
    assert all("properties" not in m for m in decoder.decode(plain.payload)["metrics"])


# ---- historical -------------------------------------------------------------------------
def test_readings_older_than_the_connection_are_historical(
    make_wire: Any, clock: Clock, decoder: Any
) -> None:
    wire = make_wire()
    wire.connected()
    wire.encode(1, flow(T0 + 1))
    clock.now = T0 + 600
    wire.will()
    wire.connected()  # reconnected after an outage of ten minutes
    backlog = wire.encode(2, flow(T0 + 300))[-1]  # read during the outage
    live = wire.encode(3, flow(T0 + 601))[-1]
    assert all(m["is_historical"] for m in decoder.decode(backlog.payload)["metrics"])
    assert not any(m.get("is_historical") for m in decoder.decode(live.payload)["metrics"])
    # a birth is never historical: it states the values as the edge node knows them
    birth = wire.encode(4, flow(T0 + 200, extra=PointValue.good(1.0)))[0]
    assert not any(m.get("is_historical") for m in decoder.decode(birth.payload)["metrics"])


# ---- device death ---------------------------------------------------------------------
def test_a_device_that_stops_answering_dies_and_is_born_again(make_wire: Any) -> None:
    wire = make_wire()
    wire.connected()
    wire.encode(1, flow(T0 + 1))
    (death,) = wire.encode(2, dead("flow-1", T0 + 2))
    assert kinds([death]) == ["DDEATH"]
    ddeath = spb.DDeath.decode(death.payload)
    assert ddeath.seq == 3 and ddeath.timestamp == round(T0 * 1000)
    assert not kit.spb_protobuf.Payload.FromString(death.payload).metrics
    # still dead: one DDEATH per outage, the next dead readings send nothing
    assert wire.encode(3, dead("flow-1", T0 + 3, "connection")) == []
    # other bad reasons are data, not death: the device answers, badly
    assert kinds(wire.encode(4, dead("flow-1", T0 + 4, "crc"))) == ["DBIRTH", "DDATA"]
    assert kinds(wire.encode(5, dead("flow-1", T0 + 5))) == ["DDEATH"]
    dbirth, ddata = wire.encode(6, flow(T0 + 6, rate=9.5))
    assert kinds([dbirth, ddata]) == ["DBIRTH", "DDATA"]
    birth = spb.DBirth.decode(dbirth.payload)
    assert {m.name: m.value for m in birth.metrics}["flow_rate"] == 9.5


def test_a_device_dead_from_the_start_is_declared_then_dead(make_wire: Any) -> None:
    wire = make_wire()
    wire.connected()
    dbirth, ddeath = wire.encode(1, dead("pressure-1", T0 + 1))
    assert kinds([dbirth, ddeath]) == ["DBIRTH", "DDEATH"]
    (metric,) = spb.DBirth.decode(dbirth.payload).metrics
    assert (metric.name, metric.is_null) == ("flow_rate", True)
    assert wire.encode(2, dead("pressure-1", T0 + 2)) == []


# ---- rebirth ----------------------------------------------------------------------------
def test_a_rebirth_request_repeats_the_birth_sequence(make_wire: Any) -> None:
    wire = make_wire()
    will = wire.will()
    wire.connected()
    wire.encode(1, flow(T0 + 1, rate=1.0))
    wire.encode(2, Reading("pressure-1", T0 + 1, {"pressure": PointValue.good(4.2, "bar")}))
    wire.encode(3, flow(T0 + 2, rate=2.0))
    wire.encode(4, Reading("quality-1", T0 + 2, {"ph": PointValue.good(7.0)}))
    wire.encode(5, dead("quality-1", T0 + 3))
    answer = wire.received(f"spBv1.0/{GROUP}/NCMD/{NODE}", kit.rebirth_request())
    # NBIRTH (seq 0, the same bdSeq) and the DBIRTHs of the devices alive, last values
    assert kinds(answer) == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert [seq_of(m) for m in answer] == [0, 1, 2]
    assert bdseq_of(answer[0]) == bdseq_of(will)
    assert [m.topic.rsplit("/", 1)[1] for m in answer[1:]] == ["flow-1", "pressure-1"]
    births = [spb.DBirth.decode(m.payload) for m in answer[1:]]
    assert {m.name: m.value for m in births[0].metrics}["flow_rate"] == 2.0
    assert {m.name: m.timestamp for m in births[0].metrics}["flow_rate"] == round((T0 + 2) * 1000)
    # data goes on after the births, seq continuing
    (ddata,) = wire.encode(6, flow(T0 + 4))
    assert seq_of(ddata) == 3
    # the dead device is declared again when next heard of
    assert kinds(wire.encode(7, dead("quality-1", T0 + 5))) == ["DBIRTH", "DDEATH"]


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # not protobuf
        b"\x12\x05\x0a\x03abc\x12",  # truncated
        b"\x12" + b"\x80" * 11,  # varint too long
    ],
)
def test_garbage_commands_are_ignored(
    make_wire: Any, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    wire = make_wire()
    wire.connected()
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            assert wire.received(f"spBv1.0/{GROUP}/NCMD/{NODE}", payload) == []
    assert caplog.text.count("ignored an invalid command") == 1  # rate-limited


def test_other_commands_are_ignored(make_wire: Any) -> None:
    wire = make_wire()
    wire.connected()
    ncmd = f"spBv1.0/{GROUP}/NCMD/{NODE}"
    now = spb.get_current_timestamp()

    def command(name: str, value: Any, datatype: Any) -> bytes:
        metric = spb.Metric(timestamp=now, name=name, datatype=datatype, value=value)
        return spb.NCmd(timestamp=now, metrics=(metric,)).encode(include_dtypes=True)

    B = spb.DataType.BOOLEAN
    assert wire.received(ncmd, command("Node Control/Rebirth", False, B)) == []
    assert wire.received(ncmd, command("Node Control/Reboot", True, B)) == []
    assert wire.received(ncmd, command("Node Control/Rebirth", 1, spb.DataType.INT32)) == []
    assert wire.received(ncmd, b"") == []  # an empty payload is a payload without metrics
    assert wire.received(ncmd, b"\x00" * (64 * 1024 + 1)) == []  # too large to parse
    # a rebirth request on another node's topic is not ours
    other = f"spBv1.0/{GROUP}/NCMD/gw-2"
    assert wire.received(other, kit.rebirth_request()) == []
    assert kinds(wire.received(ncmd, kit.rebirth_request())) == ["NBIRTH"]


def test_connecting_again_births_the_devices_known_alive(make_wire: Any) -> None:
    wire = make_wire()
    wire.will()
    wire.connected()
    wire.encode(1, flow(T0 + 1))
    wire.encode(2, dead("pressure-1", T0 + 1))
    wire.will()
    messages = wire.connected()
    assert kinds(messages) == ["NBIRTH", "DBIRTH"]
    assert messages[1].topic.endswith("/flow-1")
    assert bdseq_of(messages[0]) == 1


def test_closing_is_the_ndeath_of_the_connection(make_wire: Any) -> None:
    wire = make_wire()
    wire.will()
    wire.will()
    wire.connected()
    wire.encode(1, flow(T0 + 1))
    closing = wire.closing()
    assert closing.topic == f"spBv1.0/{GROUP}/NDEATH/{NODE}"
    death = spb.NDeath.decode(closing.payload)
    assert death.bd_seq_metric.name == "bdSeq" and death.bd_seq_metric.value == 1


def test_nan_and_infinity_are_doubles(make_wire: Any) -> None:
    wire = make_wire()
    wire.connected()
    reading = Reading("x", T0, {"a": PointValue.good(math.nan), "b": PointValue.good(math.inf)})
    birth = spb.DBirth.decode(wire.encode(1, reading)[0].payload)
    a, b = birth.metrics
    assert math.isnan(a.value) and b.value == math.inf


# ---- a session on a real broker ----------------------------------------------------------
class Edge:
    """Drives a SparkplugWire over a real MQTT connection the way a Destination does."""

    def __init__(self, wire: SparkplugWire, broker: Mosquitto) -> None:
        self.wire = wire
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="edge-under-test", reconnect_on_failure=False
        )
        will = wire.will()
        self.client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self.incoming: list[tuple[str, bytes]] = []
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.on_message = lambda _c, _u, m: self.incoming.append((m.topic, m.payload))
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert connected.wait(10), "no CONNACK"
        self.publish(wire.connected())
        for topic, qos in wire.subscriptions():
            self.client.subscribe(topic, qos)

    def publish(self, messages: list[Message]) -> None:
        for m in messages:
            self.client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain).wait_for_publish(5)

    def answer_commands(self) -> None:
        while self.incoming:
            self.publish(self.wire.received(*self.incoming.pop(0)))

    def crash(self) -> None:
        """The TCP connection drops without DISCONNECT: the broker sends the will."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()

    def close(self) -> None:
        self.publish([self.wire.closing()])
        self.client.disconnect()
        self.client.loop_stop()


def test_a_host_follows_the_session_on_a_real_broker(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Any
) -> None:
    host = kit.SparkplugHost(mosquitto, mqtt_collector(mosquitto, "spBv1.0/#"))
    state = tmp_path / "bdseq.json"
    wire = SparkplugWire(settings(), state)
    edge = Edge(wire, mosquitto)
    now = time.time()
    for i in range(5):
        edge.publish(wire.encode(i, flow(now + i, rate=float(i))))
    edge.publish(wire.encode(5, dead("flow-1", now + 5)))
    edge.publish(wire.encode(6, flow(now + 6, rate=6.0)))
    host.wait(lambda h: len(h.values_of("flow-1", "flow_rate")) == 6)
    # the host asks for a rebirth: a new NBIRTH with the same bdSeq, the DBIRTH, data goes on
    host.request_rebirth(GROUP, NODE)
    deadline = time.monotonic() + 10
    while host.count("NBIRTH") < 2 and time.monotonic() < deadline:
        edge.answer_commands()
        host.update()
        time.sleep(0.05)
    edge.publish(wire.encode(7, flow(now + 7, rate=7.0)))
    host.wait(lambda h: len(h.values_of("flow-1", "flow_rate")) == 7)
    # the connection dies: the broker sends the will, whose bdSeq ends this session
    edge.crash()
    host.wait(lambda h: h.count("NDEATH") == 1)
    # a restarted edge node (new process, same state file): a new bdSeq, a new session
    wire2 = SparkplugWire(settings(), state)
    edge2 = Edge(wire2, mosquitto)
    edge2.publish(wire2.encode(8, flow(now + 8, rate=8.0)))
    host.wait(lambda h: len(h.values_of("flow-1", "flow_rate")) == 8)
    edge2.close()
    host.wait(lambda h: h.count("NDEATH") == 2)
    assert host.problems == []
    events = [(e[0], e[3], e[4]) for e in host.events if e[0] in ("NBIRTH", "NDEATH")]
    assert events == [
        ("NBIRTH", 0, 0),
        ("NBIRTH", 0, 0),  # the rebirth
        ("NDEATH", None, 0),  # the will
        ("NBIRTH", 0, 1),
        ("NDEATH", None, 1),  # the clean close
    ]
    values = host.values_of("flow-1", "flow_rate")
    assert [v.value for v in values] == [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0]
    assert not any(v.historical for v in values)
    assert host.count("DDEATH", "flow-1") == 1
    assert host.rebirths_requested == 1
