"""A driver with the bugs a watchdog exists for, for the service tests.

This folder is a driver "installed" the plain way: a module next to the dist-info that
registers its entry point, as pip would write it; tests put the folder on the path. While
the device's trigger file is absent the driver reads 1.5 m; once it exists, its content
picks the bug: ``block`` sleeps in the coroutine (the whole event loop stops), ``hang``
awaits forever (only this device's poller stops making progress).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from swm_edge.driver import Driver, PointValue


class StuckPoint(BaseModel):
    name: str = "level"
    unit: str | None = "m"


class StuckDevice(BaseModel):
    trigger: str
    points: tuple[StuckPoint, ...] = (StuckPoint(),)


class StuckDriver(Driver):
    bus_types: ClassVar[frozenset[str]] = frozenset()
    device_model: ClassVar[type[BaseModel]] = StuckDevice

    async def read(self, transport: Any) -> dict[str, PointValue]:
        trigger = Path(self.device.options.trigger)
        mode = trigger.read_text().strip() if trigger.exists() else ""
        if mode == "block":
            time.sleep(3600)  # blocking call in a coroutine: the bug that stops the loop
        elif mode == "hang":
            await asyncio.Event().wait()  # an answer that never comes, and no timeout
        return {"level": PointValue.good(1.5, "m")}
