"""Pure Modbus logic shared by the core, the drivers and the simulators (part of the SDK).

* :mod:`~swm_edge.modbus.codec`: registers and bits to raw values and back, and scaling.
* :mod:`~swm_edge.modbus.planner`: a device's points to as few read requests as its limits allow.
* :mod:`~swm_edge.modbus.timing`: estimated RTU wire time of those requests.

Nothing here does I/O.
"""

from swm_edge.modbus.codec import decode, encode, register_count, scale_value
from swm_edge.modbus.planner import MAX_READ_BITS, MAX_READ_REGISTERS, ReadRequest, plan_reads
from swm_edge.modbus.timing import DEVICE_TURNAROUND_SECONDS, poll_seconds, rtu_request_seconds

__all__ = [
    "DEVICE_TURNAROUND_SECONDS",
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "ReadRequest",
    "decode",
    "encode",
    "plan_reads",
    "poll_seconds",
    "register_count",
    "rtu_request_seconds",
    "scale_value",
]
