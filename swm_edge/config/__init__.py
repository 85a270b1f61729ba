"""Configuration: the YAML file, its models, device profiles and the JSON Schema.

``load_config(path)`` is the entry point; it returns the checked :class:`Config` together
with the core's :class:`~swm_edge.model.BusSpec`/:class:`~swm_edge.model.DeviceSpec`, or
raises :class:`ConfigError` listing every problem at ``FILE:LINE:COL``. A device entry's
core keys are checked here (:class:`DeviceConfig`); its other keys by its driver's
``device_model`` (docs/decisions/0003-driver-sdk.md). The JSON Schema is in
:mod:`swm_edge.config.schema` (not imported here, so ``python -m`` can run it).
"""

from swm_edge.config.loader import ConfigError, ConfigIssue, LoadedConfig, load_config
from swm_edge.config.models import (
    BufferConfig,
    BusConfig,
    Config,
    DeviceConfig,
    GatewayConfig,
    LocationConfig,
    MbusBusConfig,
    MqttConfig,
    RtuBusConfig,
    Sdi12BusConfig,
    SerialBusConfig,
    TcpBusConfig,
    TlsConfig,
)
from swm_edge.config.profiles import ProfileConfig, find_profile, load_profile

__all__ = [
    "BufferConfig",
    "BusConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DeviceConfig",
    "GatewayConfig",
    "LoadedConfig",
    "LocationConfig",
    "MbusBusConfig",
    "MqttConfig",
    "ProfileConfig",
    "RtuBusConfig",
    "Sdi12BusConfig",
    "SerialBusConfig",
    "TcpBusConfig",
    "TlsConfig",
    "find_profile",
    "load_config",
    "load_profile",
]
