"""swm-edge driver for the ACME LS-100 level sensor."""

from swm_edge_mydevice.driver import MyDevice, MyDeviceDriver, MyPoint

__all__ = ["MyDevice", "MyDeviceDriver", "MyPoint"]
