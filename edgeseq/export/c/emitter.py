"""The C emitter interface: what lowers one op kind at one numeric format (``Emitter``, registered
with ``register`` under (kind, numeric), or with ``register_program`` for every op with a step
program), and what an emitter sees of its node (``NodeCtx``). :mod:`.codegen` plans buffers and
writes the sources around the emitters' C text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import ConfigError, UnsupportedOpError
from ...ir.graph import Node

if TYPE_CHECKING:
    from .codegen import CodeGen

F32 = "f32"


# ----------------------------------------------------------------------------------------------
# emitter interface and registry


class Emitter:
    """Lowers one op kind at one numeric format to C.

    ``temps`` asks the planner for per-node scratch buffers, ``int_state`` for extra integer state
    fields; ``step`` returns the C statements of one time step (inside ``esq_step``), ``pooled``
    those of a pooled evaluation (inside ``esq_pooled``, stateless ops only). ``save_state`` /
    ``load_state`` convert a state entry to and from its canonical ``state_spec`` layout when the
    in-memory layout differs (ring buffers)."""

    kind: ClassVar[str] = ""
    numeric: ClassVar[str] = F32
    stateless: ClassVar[bool] = False

    def temps(self, ctx: "NodeCtx") -> dict[str, "int | tuple[int, str]"]:
        """Scratch buffers: name -> element count, or (count, C type) for non-float buffers."""
        return {}

    def out_ctype(self, ctx: "NodeCtx", i: int) -> str:
        """C element type of output ``i`` (float unless the lowering keeps values quantized)."""
        return "float"

    def int_state(self, ctx: "NodeCtx") -> tuple[str, ...]:
        return ()

    def step(self, ctx: "NodeCtx") -> str:
        raise NotImplementedError

    def pooled(self, ctx: "NodeCtx") -> str:
        if not self.stateless:
            raise UnsupportedOpError(f"{ctx.op.kind} cannot run on a pooled value", where=ctx.where)
        return self.step(ctx)

    def save_state(self, ctx: "NodeCtx", key: str, dst: str) -> str | None:
        return None

    def load_state(self, ctx: "NodeCtx", key: str, src: str) -> str | None:
        return None


EMITTERS: dict[tuple[str, str], Emitter] = {}


def register(cls):
    """Class decorator: register an emitter instance under (cls.kind, cls.numeric)."""
    key = (cls.kind, cls.numeric)
    if key in EMITTERS:
        raise ConfigError(f"C emitter for {key} registered twice")
    EMITTERS[key] = cls()
    return cls


PROGRAM_EMITTERS: dict[str, Emitter] = {}


def register_program(cls):
    """Class decorator: the emitter of every op with a step program at ``cls.numeric`` (ops without
    an emitter of their own kind)."""
    PROGRAM_EMITTERS[cls.numeric] = cls()
    return cls


# ----------------------------------------------------------------------------------------------
# per-node context handed to emitters


class NodeCtx:
    """What an emitter sees of its node: buffer expressions, state fields, constants, sizes."""

    def __init__(self, gen: "CodeGen", node: Node, phase: str):
        self.gen = gen
        self.node = node
        self.op = node.op
        self.phase = phase
        self.in_types = gen.graph.input_types(node)
        self.out_types = [gen.graph.type_of(o) for o in node.outputs]
        self.bufs: dict[str, str] = {}
        self.memo: dict[str, Any] = {}  # an emitter's per-node results (shared by temps() and step())

    @property
    def where(self) -> str:
        return f"node '{self.node.name}' ({self.op.kind}), target {self.gen.target}"

    # buffers
    def inp(self, i: int = 0) -> str:
        return self.gen.value_expr(self.node.inputs[i], self.phase)

    def out(self, i: int = 0) -> str:
        return self.gen.value_expr(self.node.outputs[i], self.phase)

    def tmp(self, name: str) -> str:
        return self.bufs[f"tmp:{name}"]

    def n_in(self, i: int = 0) -> int:
        return self.in_types[i].features

    def in_ctype(self, i: int = 0) -> str:
        return self.gen.ctypes.get(self.node.inputs[i], "float")

    def n_out(self, i: int = 0) -> int:
        return self.out_types[i].features

    # state
    def state(self, name: str) -> str:
        return "s->" + self.gen.state_field(self.node.name, name)

    def istate(self, name: str) -> str:
        return "s->" + self.gen.int_field(self.node.name, name)

    # constants
    def const(self, name: str, values, comment: str = "", ctype: str = "float") -> str:
        """A read-only table (flash) of ``values``; integer ``ctype`` for fixed-point lowerings."""
        return self.gen.add_const(self.node.name, name, values, comment, ctype)

    def uses(self, *fns: str) -> None:
        self.gen.libm.update(fns)
