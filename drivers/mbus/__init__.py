"""The wired M-Bus driver (EN 13757-2 link layer, EN 13757-3 application layer).

Reads water meters (and heat meters' water quantities) on an M-Bus line behind a serial
level converter: primary or secondary addressing, multi-telegram replies, variable data
records selected by quantity, storage number, tariff and subunit. See README.md in this
folder for a sample config.

* :mod:`~swm_edge_drivers.mbus.frames`: link-layer frames, built and checked (pure);
* :mod:`~swm_edge_drivers.mbus.records`: telegram header and data records (pure);
* :mod:`~swm_edge_drivers.mbus.config`: the device model (:class:`MbusDevice`);
* :mod:`~swm_edge_drivers.mbus.driver`: :class:`MbusDriver`, one poll over a
  :class:`~swm_edge.driver.SerialTransport`.
"""

from swm_edge_drivers.mbus.config import MbusDevice, MbusPoint
from swm_edge_drivers.mbus.driver import MbusDriver
from swm_edge_drivers.mbus.records import Function, Quantity

__all__ = ["Function", "MbusDevice", "MbusDriver", "MbusPoint", "Quantity"]
