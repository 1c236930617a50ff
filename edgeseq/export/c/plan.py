"""Static buffer planning for the generated C: every per-step value and op temporary gets a fixed
offset in one arena per C element type, reused as soon as its last reader has run.

The planner is a first-fit interval allocator over a linear arena. Offsets are counted in elements
and aligned to ``ALIGN`` elements (16 bytes for float), so vector loads on any target stay aligned.
Fixed-point lowerings get their own arenas (``int8_t``, ``int16_t``, ``int32_t`` / ``int64_t`` accumulators), so
every access stays type-correct C (no aliasing through casts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ConfigError

ALIGN = 4
CTYPE_BYTES = {"float": 4, "int64_t": 8, "int32_t": 4, "int16_t": 2, "int8_t": 1, "uint8_t": 1}
CTYPE_SUFFIX = {"float": "", "int64_t": "_i64", "int32_t": "_i32", "int16_t": "_i16", "int8_t": "_i8", "uint8_t": "_u8"}


def check_ctype(ctype: str) -> str:
    if ctype not in CTYPE_BYTES:
        raise ConfigError(f"unsupported C element type '{ctype}'; expected one of {', '.join(CTYPE_BYTES)}")
    return ctype


@dataclass
class Block:
    arena: str
    offset: int
    size: int
    owner: str

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass
class Arena:
    """One linear arena of elements of a single C type (``ctype``); ``name`` is the C pointer the
    generated code indexes (``w``, ``w_i8``, ``pw`` ...)."""

    name: str
    ctype: str
    live: list[Block] = field(default_factory=list)
    high_water: int = 0
    history: list[Block] = field(default_factory=list)

    def alloc(self, size: int, owner: str) -> Block:
        size = max(1, int(size))
        padded = -(-size // ALIGN) * ALIGN
        offset = 0
        for b in sorted(self.live, key=lambda b: b.offset):
            if b.offset - offset >= padded:
                break
            offset = max(offset, -(-b.end // ALIGN) * ALIGN)
        block = Block(self.name, offset, size, owner)
        self.live.append(block)
        self.history.append(block)
        self.high_water = max(self.high_water, -(-block.end // ALIGN) * ALIGN)
        return block

    def free(self, block: Block) -> None:
        self.live = [b for b in self.live if b is not block]

    def expr(self, block: Block) -> str:
        return f"({self.name} + {block.offset})" if block.offset else self.name

    @property
    def nbytes(self) -> int:
        return self.high_water * CTYPE_BYTES[self.ctype]

    def describe(self) -> list[dict]:
        return [{"owner": b.owner, "offset": b.offset, "size": b.size} for b in self.history]


class ArenaSet:
    """The arenas of one phase (``step``: in the state struct; ``pooled``: on the stack)."""

    def __init__(self, base: str):
        self.base = base
        self.arenas: dict[str, Arena] = {}

    def get(self, ctype: str) -> Arena:
        check_ctype(ctype)
        if ctype not in self.arenas:
            self.arenas[ctype] = Arena(self.base + CTYPE_SUFFIX[ctype], ctype)
        return self.arenas[ctype]

    def used(self) -> list[Arena]:
        """Arenas with at least one element, widest element type first (no struct padding)."""
        return sorted((a for a in self.arenas.values() if a.high_water), key=lambda a: -CTYPE_BYTES[a.ctype])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arenas.values())

    def describe(self) -> dict:
        return {a.ctype: a.describe() for a in self.used()}
