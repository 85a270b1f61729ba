"""Sparkplug B 3.0 payloads (``mqtt.payload: sparkplug``): :class:`SparkplugWire`.

- :mod:`.wire`: the edge node session (births, deaths, data, rebirth requests);
- :mod:`.payload`: typed encoding and decoding of Sparkplug B protobuf payloads;
- :mod:`.bdseq`: the birth/death sequence number, kept across restarts;
- ``sparkplug_b.proto`` / ``sparkplug_b_pb2.py``: the specification's protobuf schema and
  the Python module generated from it (committed; regenerate with grpcio-tools, see the
  .proto's header).

README.md beside this file describes the format for integrators.
"""

from swm_edge.publish.sparkplug.wire import SparkplugWire

__all__ = ["SparkplugWire"]
