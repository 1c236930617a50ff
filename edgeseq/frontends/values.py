"""Symbolic values tracked while capturing a torch module: an IR value name plus the tensor layout
torch sees (the IR itself is always batch-first)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# Layouts: BTF batch-first sequence, TBF time-major sequence, BFT channels-first (torch Conv1d /
# BatchNorm1d), BF pooled.
SEQ_LAYOUTS = ("BTF", "TBF", "BFT")


@dataclass
class Val:
    name: str
    layout: str
    pad: int = 0  # pending causal left padding (F.pad on a BFT value), consumed by the next Conv1d
    trim: int = 0  # trailing steps that must be sliced off (symmetric-padded Conv1d made causal)
    ids: Optional[tuple] = None  # integer ids (after .long()): the (lo, hi) of a clamp, or () if none

    @property
    def temporal(self) -> bool:
        return self.layout in SEQ_LAYOUTS

    @property
    def time_axis(self) -> Optional[int]:
        return {"BTF": 1, "TBF": 0, "BFT": 2}.get(self.layout)

    @property
    def feature_axis(self) -> int:
        return {"BTF": 2, "TBF": 2, "BFT": 1, "BF": 1}[self.layout]


@dataclass
class StateVal:
    """The final state a recurrent module returns. Only ``state[-1]`` (or ``h_n[-1]``) of the last
    layer's hidden state is representable: it equals the last step of the sequence output."""

    last_output: Val
    module: str
    parts: tuple[str, ...] = ("h",)  # e.g. ('h', 'c') for LSTM
    selected: Optional[str] = None  # after indexing an LSTM state tuple
    layers: int = 1
    forward_last: Optional[Val] = None  # bidirectional: the last layer's forward output (h_n[-2])


@dataclass
class TupleVal:
    items: tuple = field(default_factory=tuple)
