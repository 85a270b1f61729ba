"""Encoders: pure functions from a buffered reading to the bytes of one MQTT payload."""

from swm_edge.publish.encoders.json_v1 import encode as encode_json_v1

__all__ = ["encode_json_v1"]
