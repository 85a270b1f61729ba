"""Hardware-in-the-loop kit: simulated water devices, a virtual RS-485 line, fault injection.

Shared by the tests, the demo and the benchmarks::

    async with DemoSite() as site:          # MAG 6000 on TCP, KELLER + Y4000 on RS-485
        ...

    device = SimulatedDevice("keller-series30", unit=1, seed=1)
    with NullModem(agent_link=tmp / "by-id" / "usb-rs485") as line:
        server = await serve_rtu([device], line.device_port)
        line.set_fault(1, "exception:6")

Run ``python -m swm_edge_hil --help`` for the command line.
"""

from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.faults import Fault, FaultKind, FaultTable
from swm_edge_hil.nullmodem import NullModem
from swm_edge_hil.profiles import Profile, load_points, load_profile, synthetic_points
from swm_edge_hil.servers import SimServer, serve_rtu, serve_tcp
from swm_edge_hil.site import DemoSite

__all__ = [
    "DemoSite",
    "Fault",
    "FaultKind",
    "FaultTable",
    "NullModem",
    "Profile",
    "SimServer",
    "SimulatedDevice",
    "load_points",
    "load_profile",
    "serve_rtu",
    "serve_tcp",
    "synthetic_points",
]
