"""Shared pytest configuration: the swm-edge test kit (brokers, MQTT collector) as fixtures."""

pytest_plugins = ["swm_edge.testing"]
