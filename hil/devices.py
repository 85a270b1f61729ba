"""Simulated water devices: a register map with plausible, slowly changing values.

A :class:`SimulatedDevice` holds the register image of one Modbus unit, built from a
device profile or a list of :class:`~swm_edge.model.PointSpec`. Values are encoded with
the agent's own codec (:func:`swm_edge.modbus.codec.encode`), and :meth:`values` decodes
them back from the image, so it returns exactly what a correct agent must publish,
float32 rounding included.

The device knows nothing about Modbus transports; :mod:`swm_edge_hil.servers` serves the
image. All methods are meant to be called from one thread (the event loop's).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from swm_edge_hil.profiles import Profile, load_profile

from swm_edge.modbus.codec import decode, encode, register_count, scale_value
from swm_edge.model import DataType, PointSpec, Table

__all__ = ["SimulatedDevice"]

PointValue = int | float | bool

_INT_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(1 << 15), (1 << 15) - 1),
    DataType.UINT16: (0, (1 << 16) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1),
    DataType.UINT32: (0, (1 << 32) - 1),
    DataType.INT64: (-(1 << 63), (1 << 63) - 1),
    DataType.UINT64: (0, (1 << 64) - 1),
}

# Unit conversions for the quantities the signal models know, from their base unit.
_M3_PER_VOLUME = {"m3": 1.0, "L": 0.001}
_SECONDS_PER = {"s": 1.0, "min": 60.0, "h": 3600.0}
_PER_BAR = {"bar": 1.0, "mbar": 1000.0, "kPa": 100.0, "Pa": 1e5, "MPa": 0.1}
_PER_METRE = {"m": 1.0, "cm": 100.0, "mm": 1000.0}
_PER_US_CM = {"uS/cm": 1.0, "mS/cm": 0.001}
_PER_VOLT = {"V": 1.0, "mV": 1000.0}

# Name parts of integer points that hold a state or code (0 = all clear), not a quantity.
_STATE_WORDS = ("status", "flag", "quality", "error", "code")
# Name parts of counters of operating time, and of time spent in a fault.
_RUN_TIME_WORDS = ("run", "operat", "uptime", "power_on")
_FAULT_TIME_WORDS = ("fault", "alarm", "error")
# Name parts of totalizers counting the other way (reverse flow): they do not follow the
# device's forward flow.
_REVERSE_WORDS = ("reverse", "negative", "backward")

_DAY = 86400.0
# Daily mean of the raw demand shape below, so the demand factor averages 1.
_DEMAND_SHAPE_MEAN = 0.63876
# Relaxation time of the slow random walk every analogue value makes around its daily
# course: long enough to look like process drift, short enough to be seen in a demo.
_WALK_TAU = 1800.0


def _hour_of_day(now: float) -> float:
    return (now % _DAY) / 3600.0


def _demand_factor(hour: float) -> float:
    """Relative water demand over a day (daily mean 1): low at night, peaks around 07:30
    and 19:30 UTC."""

    def bump(centre: float, width: float) -> float:
        # Distance on the 24 h circle, so the evening peak also lifts the small hours.
        d = min(abs(hour - centre), 24.0 - abs(hour - centre))
        return math.exp(-((d / width) ** 2))

    shape = 0.35 + 0.9 * bump(7.5, 1.8) + 0.7 * bump(19.5, 2.2) + 0.25 * bump(13.0, 3.0)
    return shape / _DEMAND_SHAPE_MEAN


class _Signal:
    """An analogue quantity: a daily course, a slow random walk and measurement noise.

    The daily course is either the demand curve scaled to ``mean`` (``demand``), or a
    cosine of amplitude ``daily`` peaking at ``phase_h`` o'clock UTC, minus ``sag`` times
    the demand above its daily mean.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        mean: float,
        daily: float = 0.0,
        phase_h: float = 15.0,
        walk: float = 0.0,
        noise: float = 0.0,
        lo: float = -math.inf,
        hi: float = math.inf,
        demand: bool = False,
        sag: float = 0.0,
    ) -> None:
        self.rng = rng
        self.mean = mean
        self.daily = daily
        self.phase_h = phase_h
        self.walk_sigma = walk
        self.noise = noise
        self.lo = lo
        self.hi = hi
        self.demand = demand
        self.sag = sag
        self.walk = 0.0

    def sample(self, now: float, dt: float) -> float:
        hour = _hour_of_day(now)
        if self.demand:
            base = self.mean * _demand_factor(hour)
        else:
            base = self.mean + self.daily * math.cos(2 * math.pi * (hour - self.phase_h) / 24)
        if self.sag:
            base -= self.sag * (_demand_factor(hour) - 1.0)
        if dt > 0 and self.walk_sigma:
            # Ornstein-Uhlenbeck step: stays near the daily course whatever the tick rate.
            keep = math.exp(-dt / _WALK_TAU)
            self.walk = self.walk * keep + self.walk_sigma * math.sqrt(
                1 - keep * keep
            ) * self.rng.gauss(0.0, 1.0)
        value = base + self.walk + (self.rng.gauss(0.0, self.noise) if self.noise else 0.0)
        return min(max(value, self.lo), self.hi)


class _Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def sample(self, now: float, dt: float) -> float:
        return self.value


class _Mirror:
    """A second copy of another point's value, e.g. a float32 copy of a float64 counter."""

    def __init__(self, source: str) -> None:
        self.source = source


class _Totalizer:
    """A volume counter integrating the device's flow (or its own demand curve).

    A reverse-flow totalizer (``reverse=True``) ignores the device's forward flow and
    counts a small back-flow of its own, from a small start value.
    """

    def __init__(self, rng: random.Random, m3_per_unit: float, *, reverse: bool = False) -> None:
        self.m3_per_unit = m3_per_unit
        self.reverse = reverse
        if reverse:
            self.total = rng.uniform(0.5, 50.0) / m3_per_unit
            self.own_flow = _Signal(rng, mean=0.02 / 3600.0, walk=0.01 / 3600.0, lo=0.0)
        else:
            self.total = rng.uniform(1_000.0, 50_000.0) / m3_per_unit
            self.own_flow = _Signal(rng, mean=30.0 / 3600.0, demand=True, lo=0.0)

    def advance(self, dt: float, flow_m3s: float | None, now: float) -> float:
        if dt > 0:
            q = (
                flow_m3s
                if flow_m3s is not None and not self.reverse
                else self.own_flow.sample(now, dt)
            )
            # Meters count forward flow only on this totalizer.
            self.total += max(q, 0.0) * dt / self.m3_per_unit
        return self.total


class _RunTime:
    """An operating-time counter: a start value, then it advances with the clock."""

    def __init__(self, rng: random.Random, seconds_per_unit: float) -> None:
        self.seconds_per_unit = seconds_per_unit
        # Somewhere between a day and a year of service.
        self.value = rng.uniform(86_400.0, 3.15e7) / seconds_per_unit

    def sample(self, now: float, dt: float) -> float:
        self.value += max(dt, 0.0) / self.seconds_per_unit
        return self.value


def _flow_factor(unit: str | None) -> float | None:
    """Multiplier from m3/s to ``unit`` if it is a volume flow unit, else ``None``."""
    if not unit or "/" not in unit:
        return None
    volume, _, per = unit.partition("/")
    if volume not in _M3_PER_VOLUME or per not in _SECONDS_PER:
        return None
    return _SECONDS_PER[per] / _M3_PER_VOLUME[volume]


# Name suffixes of points that hold a copy of another point in a different format.
_COPY_SUFFIXES = ("_float", "_copy", "_int", "_float32", "_int16", "_int32")


def _mirrored(point: PointSpec, by_name: Mapping[str, PointSpec]) -> str | None:
    """The name of the point ``point`` is a copy of (``totalizer_1_float`` ->
    ``totalizer_1``), or ``None``."""
    for suffix in _COPY_SUFFIXES:
        base = point.name.removesuffix(suffix)
        if base != point.name and base in by_name and not by_name[base].table.is_bits:
            return base
    return None


def _signal_for(
    point: PointSpec, rng: random.Random
) -> _Signal | _Constant | _Totalizer | _RunTime:
    """Pick a plausible behaviour from the point's name and unit."""
    name = point.name.lower()
    unit = point.unit
    if point.table.is_bits or point.type is DataType.BOOL:
        return _Constant(0.0)
    if point.type in _INT_RANGE and unit is None and any(w in name for w in _STATE_WORDS):
        # Status words, error codes and data-quality ids: all clear, whatever else the
        # name says (e.g. dissolved_oxygen_quality).
        return _Constant(0.0)
    if name.startswith(("total", "volume")) and unit in _M3_PER_VOLUME:
        reverse = any(w in name for w in _REVERSE_WORDS)
        return _Totalizer(rng, _M3_PER_VOLUME[unit], reverse=reverse)
    if unit in _SECONDS_PER and any(w in name for w in _FAULT_TIME_WORDS):
        return _Constant(0.0)  # a healthy device spends no time in a fault
    if unit in _SECONDS_PER and any(w in name for w in _RUN_TIME_WORDS):
        return _RunTime(rng, _SECONDS_PER[unit])
    if "batt" in name and unit in _PER_VOLT:
        # A lithium cell of a battery-powered meter.
        k = _PER_VOLT[unit]
        return _Signal(rng, mean=3.6 * k, walk=0.01 * k, noise=0.002 * k, lo=0.0)
    if "volt" in name and unit in _PER_VOLT:
        # A supply voltage, also in mV (before the mV rule for redox potentials below).
        k = _PER_VOLT[unit]
        return _Signal(rng, mean=12.3 * k, walk=0.05 * k, noise=0.01 * k, lo=0.0)
    if (factor := _flow_factor(unit)) is not None:
        # A DN100 main into a small supply zone: 30 m3/h on average, ~16 at night, ~60 at peak.
        per_h = factor / 3600
        return _Signal(rng, mean=30 * per_h, demand=True, walk=1.5 * per_h, noise=0.4 * per_h, lo=0)
    if "pressure" in name or unit in _PER_BAR:
        k = _PER_BAR.get(unit or "bar", 1.0)
        # Network pressure sags while demand peaks (head loss), highest in the night.
        return _Signal(rng, mean=3.6 * k, sag=0.3 * k, walk=0.04 * k, noise=0.01 * k, lo=0)
    if "temp" in name or unit == "Cel":
        return _Signal(rng, mean=12.5, daily=0.6, phase_h=16.0, walk=0.2, noise=0.02)
    if name in ("ph", "p_h") or unit == "pH":
        return _Signal(rng, mean=7.2, daily=0.05, walk=0.04, noise=0.01, lo=0.0, hi=14.0)
    if "turbid" in name or unit == "NTU":
        return _Signal(rng, mean=0.4, walk=0.12, noise=0.04, lo=0.02)
    if "oxygen" in name or name == "do" or unit == "mg/L":
        return _Signal(rng, mean=8.2, daily=0.3, phase_h=15.0, walk=0.15, noise=0.03, lo=0.0)
    if "conduct" in name or unit in _PER_US_CM:
        k = _PER_US_CM.get(unit or "uS/cm", 1.0)
        return _Signal(rng, mean=450 * k, walk=8 * k, noise=1.5 * k, lo=0.0)
    if "orp" in name or "redox" in name or unit == "mV":
        return _Signal(rng, mean=250.0, walk=15.0, noise=2.0)
    if "chloroph" in name:
        return _Signal(rng, mean=1.2, walk=0.3, noise=0.05, lo=0.0)
    if "algae" in name or name == "bga":
        return _Signal(rng, mean=0.3, walk=0.08, noise=0.02, lo=0.0)
    if "level" in name or "depth" in name or unit in _PER_METRE:
        k = _PER_METRE.get(unit or "m", 1.0)
        return _Signal(rng, mean=2.5 * k, daily=0.3 * k, phase_h=5.0, walk=0.05 * k, lo=0.0)
    if "volt" in name or unit == "V":
        return _Signal(rng, mean=12.3, walk=0.05, noise=0.01, lo=0.0)
    if point.type in _INT_RANGE and (unit is None or "status" in name or "flag" in name):
        # Status words and error flags: all clear.
        return _Constant(0.0)
    mean = rng.uniform(10.0, 100.0)
    return _Signal(rng, mean=mean, daily=0.1 * mean, walk=0.03 * mean, noise=0.005 * mean)


class SimulatedDevice:
    """One simulated Modbus unit serving a register map with plausible changing values.

    Values follow the quantity each point measures (guessed from its name and unit):
    flow with a daily demand curve and noise, totalizers integrating that flow (reverse
    totalizers a small back-flow of their own), pressure around 3.6 bar, slow temperature,
    pH near 7.2, low turbidity, dissolved oxygen near 8 mg/L, supply voltages near 12.3 V
    and batteries near 3.6 V (in V or mV), run-time counters counting up, and so on;
    status words, error codes, quality ids, fault times and bits stay 0. Given the same
    ``seed``, ``start`` and sequence of :meth:`tick` times, the values are the same on
    every run.

    Args:
        points: a :class:`Profile`, a built-in profile name, or the points themselves.
        unit: the Modbus unit id (1..247 on RS-485; up to 255 on TCP).
        seed: seed of the random parts.
        start: the time (epoch seconds) the first values are computed for; default now.
        name: a label for logs and JSON output; defaults to the profile name.
        frozen: start in static mode (see :meth:`freeze`).
        gaps_readable: whether unused registers between points can be read (as 0) in a
            block read; ``False`` makes them answer exception 2, like devices that refuse
            reads over gaps.
        vendor: what the device reports as its vendor name to Read Device Identification
            (function 43/14); defaults to the profile's manufacturer. A device with neither
            (points given directly) does not support the function: it answers exception 1.
        model: its model name there; defaults to the profile's model.

    Raises:
        ValueError: two points share a register or bit, or a bad unit id.
    """

    def __init__(
        self,
        points: Profile | str | Sequence[PointSpec],
        unit: int = 1,
        *,
        seed: int = 0,
        start: float | None = None,
        name: str | None = None,
        frozen: bool = False,
        gaps_readable: bool = True,
        vendor: str | None = None,
        model: str | None = None,
    ) -> None:
        if isinstance(points, str):
            points = load_profile(points)
        if isinstance(points, Profile):
            name = name or points.name
            self.profile: Profile | None = points
            specs = tuple(points.points)
            vendor = vendor if vendor is not None else points.manufacturer
            model = model if model is not None else points.model
        else:
            self.profile = None
            specs = tuple(points)
        #: Vendor and model name served by Read Device Identification (43/14); ``None``
        #: vendor: the device does not implement the function.
        self.vendor: str | None = vendor
        self.model: str | None = model
        if not 1 <= unit <= 255:
            raise ValueError(f"unit id {unit} outside 1..255")
        if not specs:
            raise ValueError("a device needs at least one point")
        self.unit = unit
        self.name = name or f"device-{unit}"
        self.seed = seed
        self.gaps_readable = gaps_readable
        self.points: tuple[PointSpec, ...] = specs
        self._by_name = {p.name: p for p in specs}
        if len(self._by_name) != len(specs):
            raise ValueError("duplicate point names")
        self._check_overlaps()
        self._signals: dict[str, _Signal | _Constant | _Totalizer | _RunTime | _Mirror] = {}
        for p in specs:
            source = _mirrored(p, self._by_name)
            self._signals[p.name] = (
                _Mirror(source)
                if source is not None
                else _signal_for(p, random.Random(f"{seed}/{self.name}/{unit}/{p.name}"))
            )
        # The flow a totalizer integrates: the first volume-flow point of the device.
        self._flow = next((p for p in specs if _flow_factor(p.unit) is not None), None)
        # Flow first, so totalizers integrate the flow served in the same tick; copies last.
        self._order = sorted(
            specs,
            key=lambda p: (
                isinstance(self._signals[p.name], _Mirror),
                p is not self._flow,
            ),
        )
        self._image: dict[Table, dict[int, int]] = {t: {} for t in Table}
        self._pinned: dict[str, PointValue] = {}
        self._frozen = frozen
        self._last: float | None = None
        self._update(time.time() if start is None else start)

    # -- running -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance every value that is not pinned to time ``now`` (epoch seconds).

        Does nothing in static mode. A clock that goes backwards advances nothing.
        """
        if self._frozen:
            return
        self._update(now)

    def freeze(self) -> None:
        """Static mode: :meth:`tick` changes nothing, so served values can be compared
        with :meth:`values` without racing a ticker. :meth:`set` still works."""
        self._frozen = True

    def unfreeze(self) -> None:
        """Leave static mode; the next :meth:`tick` moves values on again."""
        self._frozen = False

    @property
    def frozen(self) -> bool:
        """True in static mode."""
        return self._frozen

    def set(self, name: str, value: PointValue) -> None:
        """Pin point ``name`` to ``value`` (engineering units, after scale and offset).

        The value is served until :meth:`unpin`, whatever :meth:`tick` does. Integer
        points round ``(value - offset) / scale`` to the nearest raw integer.

        Raises:
            KeyError: no such point.
            ValueError: the value does not fit the point's type.
        """
        point = self._by_name[name]
        self._write(point, value, saturate=False)
        self._pinned[name] = value

    def unpin(self, name: str) -> None:
        """Let point ``name`` follow its simulation again from the next :meth:`tick`."""
        if name not in self._by_name:
            raise KeyError(name)
        self._pinned.pop(name, None)

    # -- what is served ------------------------------------------------------------------

    def values(self) -> dict[str, PointValue]:
        """Every point's value as served now: decoded from the registers, then scaled.

        This is what an agent reading the device must publish.
        """
        return {p.name: self._value(p) for p in self.points}

    def value(self, name: str) -> PointValue:
        """The served value of one point; see :meth:`values`."""
        return self._value(self._by_name[name])

    def image(self, table: Table) -> Mapping[int, int]:
        """A live read-only view of one table: address -> register word (or 0/1 per bit)."""
        return MappingProxyType(self._image[table])

    def words(self, table: Table, address: int, count: int) -> list[int]:
        """``count`` words (or bits as 0/1) from ``address``; unused addresses read 0."""
        image = self._image[table]
        return [image.get(a, 0) for a in range(address, address + count)]

    def span(self, table: Table) -> tuple[int, int] | None:
        """``(first, end)`` addresses used in ``table`` (end exclusive), or ``None``."""
        image = self._image[table]
        if not image:
            return None
        return min(image), max(image) + 1

    def __repr__(self) -> str:
        return f"SimulatedDevice({self.name!r}, unit={self.unit}, points={len(self.points)})"

    # -- internals -----------------------------------------------------------------------

    def _check_overlaps(self) -> None:
        owner: dict[tuple[Table, int], str] = {}
        for p in self.points:
            width = 1 if p.table.is_bits else register_count(p.type)
            if p.address + width > 0x10000:
                raise ValueError(f"{p.name}: address {p.address} + {width} beyond 65535")
            for a in range(p.address, p.address + width):
                other = owner.setdefault((p.table, a), p.name)
                if other != p.name:
                    raise ValueError(f"{p.name} and {other} share {p.table} address {a}")

    def _update(self, now: float) -> None:
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now if self._last is None else max(now, self._last)
        flow_m3s: float | None = None
        current: dict[str, PointValue] = {}
        for point in self._order:
            signal = self._signals[point.name]
            if point.name in self._pinned:
                value: PointValue = self._pinned[point.name]
            elif isinstance(signal, _Mirror):
                value = current[signal.source]
            elif isinstance(signal, _Totalizer):
                value = signal.advance(dt, flow_m3s, now)
            else:
                value = signal.sample(now, dt)
            current[point.name] = value
            if point is self._flow:
                factor = _flow_factor(point.unit)
                assert factor is not None
                flow_m3s = float(value) / factor
            if point.name not in self._pinned:
                self._write(point, value, saturate=True)

    def _write(self, point: PointSpec, value: PointValue, *, saturate: bool) -> None:
        words = encode(point, self._raw(point, value, saturate=saturate))
        table = self._image[point.table]
        for i, word in enumerate(words):
            table[point.address + i] = word

    @staticmethod
    def _raw(point: PointSpec, value: PointValue, *, saturate: bool) -> int | float | bool:
        if point.table.is_bits or point.type is DataType.BOOL:
            return bool(value)
        if isinstance(value, bool):
            value = int(value)
        raw = (value - point.offset) / point.scale
        if point.type in _INT_RANGE:
            if not math.isfinite(raw):
                raise ValueError(f"{point.name}: {value!r} is not a finite number")
            lo, hi = _INT_RANGE[point.type]
            if saturate:
                # A simulated quantity may drift past what the type holds; a real device
                # saturates rather than wrapping around.
                return min(max(round(raw), lo), hi)
            return round(raw)
        return raw

    def _value(self, point: PointSpec) -> PointValue:
        width = 1 if point.table.is_bits else register_count(point.type)
        raw = decode(point, self.words(point.table, point.address, width))
        return scale_value(point, raw)
