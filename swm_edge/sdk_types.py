"""Field types of the driver SDK: what a driver's ``device_model`` and the core's config
models both use, so a point name or a scale means the same in every driver.

Re-exported from :mod:`swm_edge.driver`, the one module a driver imports::

    from swm_edge.driver import FiniteFloat, PointName, Unit, field_error

    class MyPoint(BaseModel):
        name: PointName = Field(description="Point name, unique per device.")
        unit: Unit | None = None
        scale: FiniteFloat = 1.0

Conventions the config loader relies on (any model may use them):

* Errors of a custom type (a :class:`~pydantic_core.PydanticCustomError` whose type is not
  one of pydantic's) carry a complete message; the loader does not append the value.
* A model validator's error may name the field it is about in ``ctx["field"]``: the
  loader reports it at that key's line instead of at the model's. :func:`field_error`
  makes such an error.
* An error about a relation between keys may name the other keys in ``ctx["related"]``
  (comma-separated dotted paths from the model's root). When the key the error is at comes
  from a device profile, the loader reports it at the first related key the device entry
  sets itself, since that is where the user can fix it.

Types are strict on purpose: YAML guesses scalar types, and ``scale: "2"`` or
``name: 1`` are more likely typos than intent.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AllowInfNan, Field, Strict, StrictStr
from pydantic_core import PydanticCustomError

from swm_edge.units import Unit

__all__ = ["POINT_NAME_PATTERN", "FiniteFloat", "PointName", "Unit", "field_error"]

#: Point names: safe as a JSON key, a topic level and an identifier in most query languages.
POINT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"

#: A point's name: a string of :data:`POINT_NAME_PATTERN` (1-64 letters, digits, ``_``,
#: ``.`` and ``-``, starting with a letter or ``_``).
PointName = Annotated[StrictStr, Field(pattern=POINT_NAME_PATTERN)]

#: A number that is neither NaN nor infinite (JSON cannot carry those); integers are
#: accepted, strings are not.
FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]


def field_error(
    field: str,
    message: str,
    *,
    related: str | None = None,
    error_type: str = "swm_config",
) -> PydanticCustomError:
    """An error, raised by a model validator, that belongs to one field of the model.

    Pydantic reports a model validator's errors at the model; the config loader reads
    ``ctx["field"]`` to point at the field's line instead.

    Args:
        field: the field the error is about, as named in the model.
        message: the whole message; it is printed as it is.
        related: other keys the error is about (comma-separated dotted paths from the
            model's root), where the device entry, not a profile, may set them.
        error_type: the error's type; any type that is not one of pydantic's own.
    """
    ctx: dict[str, Any] = {"field": field}
    if related is not None:
        ctx["related"] = related
    return PydanticCustomError(error_type, message, ctx)
