"""IEC 61850-7-4 / 7-420 logical nodes as object-model components.

A logical node instance appears in a tree under its namespaced name (``iec61850:MMXU1``) and
holds its data objects with their standard names (``TotW``, ``Hz``, ``PhV/phsA``), so a grid
meter or a DER controller that speaks IEC 61850 maps into a station tree without renaming.
Only the magnitudes are kept (``mag.f`` of the 61850 data attributes).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, create_model

from object_model.access import PropertyAccessKind
from object_model.schema import Component, Namespace, Unit
from object_model.types import float32, float64

PREFIX = "iec61850"
NAMESPACE = Namespace(PREFIX, "IEC 61850 logical nodes (measurements, metering, DER)")

_W = float32(-1e8, 1e8)
_V = float32(0, 1e6)
_A = float32(-1e5, 1e5)


def _phases(name: str, unit: str, vt: Any, doc: str) -> type[Component]:
    fields: dict[str, Any] = {
        ph: (Annotated[Any, vt, Unit(unit), PropertyAccessKind.READ] | None, None)
        for ph in ("phsA", "phsB", "phsC")
    }
    return create_model(name, __base__=Component, __doc__=doc, **fields)


PhaseVoltage = _phases("PhaseVoltage", "V", _V, "Phase-to-neutral voltages (WYE).")
PhaseCurrent = _phases("PhaseCurrent", "A", _A, "Phase currents (WYE).")
PhasePower = _phases("PhasePower", "W", _W, "Phase active powers (WYE).")

# logical node class -> data object name -> (annotation, unit or None, title)
LOGICAL_NODES: dict[str, dict[str, tuple[Any, str | None, str]]] = {
    "MMXU": {
        "TotW": (_W, "W", "Total active power"),
        "TotVAr": (_W, "var", "Total reactive power"),
        "TotVA": (_W, "VA", "Total apparent power"),
        "TotPF": (float32(-1, 1), None, "Average power factor"),
        "Hz": (float32(40, 70), "Hz", "Frequency"),
        "PhV": (PhaseVoltage, None, "Phase voltages"),
        "A": (PhaseCurrent, None, "Phase currents"),
        "W": (PhasePower, None, "Phase active powers"),
    },
    "MMTR": {
        "TotWh": (float64(0, 1e15), "Wh", "Net active energy"),
        "SupWh": (float64(0, 1e15), "Wh", "Active energy supplied"),
        "DmdWh": (float64(0, 1e15), "Wh", "Active energy demanded"),
    },
    "DRCT": {
        "WMax": (float32(0, 1e8), "W", "Maximum active power rating"),
        "WMaxAvl": (float32(0, 1e8), "W", "Maximum available active power"),
        "OutWSet": (float32(-1e8, 1e8), "W", "Active power set point"),
    },
}


def logical_node(ln_class: str, *, access: PropertyAccessKind = PropertyAccessKind.READ
                 ) -> type[Component]:
    """The component class of a logical node class (``MMXU``, ``MMTR``, ``DRCT``)."""
    objects = LOGICAL_NODES.get(ln_class)
    if objects is None:
        raise KeyError(f"logical node class {ln_class!r} is not known to the importer")
    fields: dict[str, Any] = {}
    for do_name, (ann, unit, title) in objects.items():
        if isinstance(ann, type) and issubclass(ann, Component):
            fields[do_name] = (ann | None, Field(default=None, description=title))
        else:
            meta: list[Any] = [ann, access]
            if unit:
                meta.append(Unit(unit))
            fields[do_name] = (Annotated[Any, *meta] | None,
                               Field(default=None, description=title))
    return create_model(f"LN_{ln_class}", __base__=Component,
                        __doc__=f"IEC 61850 logical node {ln_class}", **fields)


def segment(instance: str) -> str:
    """The key-path segment of a logical node instance: ``iec61850:MMXU1``."""
    return f"{PREFIX}:{instance}"
