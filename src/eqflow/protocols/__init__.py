"""Measurement protocols: plain functions of a flow and its data that return numbers and figures
(``Protocol.measure(flow, data, generator, figures) -> Measurement``)."""

from eqflow.protocols.base import Measurement, Protocol
from eqflow.protocols.chaos import Chaos, flow_lyapunov, sustained_chaos
from eqflow.protocols.creatures import Creatures
from eqflow.protocols.fidelity import Fidelity
from eqflow.protocols.figures import Figures
from eqflow.protocols.patterns import Patterns
from eqflow.protocols.preservation import Preservation
from eqflow.protocols.residual import Residual
from eqflow.protocols.start_patterns import StartPatterns, pick_pattern, pick_patterns
from eqflow.protocols.table2 import pattern_fidelity

__all__ = [
    "Chaos",
    "Creatures",
    "Fidelity",
    "Figures",
    "Measurement",
    "Patterns",
    "Preservation",
    "Protocol",
    "Residual",
    "StartPatterns",
    "flow_lyapunov",
    "pattern_fidelity",
    "pick_pattern",
    "pick_patterns",
    "sustained_chaos",
]
