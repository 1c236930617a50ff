"""The sequence IR: typed ops, graphs, verifier, safe serialisation and the reference interpreter."""

from .graph import Graph, GraphBuilder, Input, Node
from .interpret import reference, run, run_chunked
from .legendre import lmu_matrices
from .ops import OP_REGISTRY, NeuronParams, Op, op_class, struct_equal
from .serialize import load, save
from .types import Act, Discretizer, ReadoutMode, Recurrence, ResetRule, ValueType

__all__ = [
    "Act",
    "Discretizer",
    "Graph",
    "GraphBuilder",
    "Input",
    "NeuronParams",
    "Node",
    "OP_REGISTRY",
    "Op",
    "ReadoutMode",
    "Recurrence",
    "ResetRule",
    "ValueType",
    "lmu_matrices",
    "load",
    "op_class",
    "reference",
    "run",
    "run_chunked",
    "save",
    "struct_equal",
]
