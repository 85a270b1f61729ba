"""The SDI-12 driver: sensors on an SDI-12 data line behind a transparent serial adapter.

Registered as ``sdi12`` under ``swm_edge.drivers``; the default driver of buses of type
``sdi12``. See ``README.md`` beside this file for the configuration, and
:mod:`swm_edge_drivers.sdi12.protocol` for the wire format.
"""

from swm_edge_drivers.sdi12.driver import Sdi12Device, Sdi12Driver, Sdi12Point

__all__ = ["Sdi12Device", "Sdi12Driver", "Sdi12Point"]
