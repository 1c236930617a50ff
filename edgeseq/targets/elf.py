"""Just enough ELF reading for size reports: section sizes by kind and symbol sizes (32/64-bit,
either byte order). Works on objects, Linux executables and Cortex-M firmware alike."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError

SHT_PROGBITS, SHT_SYMTAB, SHT_NOBITS = 1, 2, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    size: int
    offset: int
    link: int
    entsize: int

    @property
    def kind(self) -> str | None:
        """text | rodata | data | bss | stack, or None for sections not loaded on the device."""
        if not self.flags & SHF_ALLOC or self.size == 0:
            return None
        if self.name in (".stack", ".heap_stack"):
            return "stack"
        if self.type == SHT_NOBITS:
            return "bss"
        if self.flags & SHF_EXECINSTR:
            return "text"
        if self.flags & SHF_WRITE:
            return "data"
        return "rodata"


class ElfFile:
    def __init__(self, path):
        self.path = Path(path)
        try:
            self.raw = self.path.read_bytes()
        except OSError as e:
            raise ArtifactError(f"cannot read ELF file ({e.strerror})", where=str(path)) from None
        if self.raw[:4] != b"\x7fELF":
            raise ArtifactError("not an ELF file", where=str(path))
        self.bits = 64 if self.raw[4] == 2 else 32
        self.endian = "<" if self.raw[5] == 1 else ">"
        e = self.endian
        if self.bits == 64:
            (shoff,) = struct.unpack_from(e + "Q", self.raw, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", self.raw, 0x3A)
        else:
            (shoff,) = struct.unpack_from(e + "I", self.raw, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", self.raw, 0x2E)
        (self.machine,) = struct.unpack_from(e + "H", self.raw, 0x12)
        heads = []
        for i in range(shnum):
            off = shoff + i * shentsize
            if self.bits == 64:
                name, typ, flags, addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
                    e + "IIQQQQIIQQ", self.raw, off
                )
            else:
                name, typ, flags, addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
                    e + "IIIIIIIIII", self.raw, off
                )
            heads.append((name, typ, flags, addr, offset, size, link, entsize))
        strtab = heads[shstrndx] if heads else None
        self.sections = [
            Section(self._str(strtab[4], h[0]) if strtab else "", h[1], h[2], h[3], h[5], h[4], h[6], h[7])
            for h in heads
        ]

    def _str(self, base: int, off: int) -> str:
        end = self.raw.index(b"\0", base + off)
        return self.raw[base + off : end].decode("utf-8", "replace")

    def section_sizes(self) -> dict[str, int]:
        out = {"text": 0, "rodata": 0, "data": 0, "bss": 0, "stack": 0}
        for s in self.sections:
            k = s.kind
            if k:
                out[k] += s.size
        return out

    def symbols(self) -> dict[str, int]:
        """Symbol name -> size, for sized symbols."""
        out: dict[str, int] = {}
        for s in self.sections:
            if s.type != SHT_SYMTAB:
                continue
            strtab = self.sections[s.link]
            n = s.size // s.entsize
            for i in range(n):
                off = s.offset + i * s.entsize
                if self.bits == 64:
                    name, _info, _other, _shndx, _value, size = struct.unpack_from(
                        self.endian + "IBBHQQ", self.raw, off
                    )
                else:
                    name, _value, size, _info, _other, _shndx = struct.unpack_from(
                        self.endian + "IIIBBH", self.raw, off
                    )
                if size and name:
                    out[self._str(strtab.offset, name)] = size
        return out


def calls_in_functions(obj, roots, objdump: str) -> dict[str, set[str]]:
    """Every function that each function in ``roots`` calls, directly or through other functions of
    the same object file ``obj`` (from ``objdump -dr``: call instructions and their relocations),
    e.g. to check that a per-step path calls no software floating-point helper."""
    import re
    import subprocess

    try:
        text = subprocess.run([objdump, "-dr", str(obj)], check=True, capture_output=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ArtifactError(f"cannot disassemble the object ({e})", where=str(obj)) from None
    callees: dict[str, set[str]] = {}
    cur = None
    head = re.compile(r"^[0-9a-fA-F]+ <([^>]+)>:$")
    reloc = re.compile(
        r"R_(?:ARM_THM_CALL|ARM_THM_JUMP24|ARM_CALL|ARM_JUMP24|AARCH64_CALL26|AARCH64_JUMP26|"
        r"X86_64_PLT32|X86_64_PC32)\s+([\w.$]+)"
    )
    call = re.compile(r"\b(?:bl|blx|b|b\.w|call|jmp)\s+[0-9a-fA-Fx]+\s+<([\w.$]+)(?:\+0x[0-9a-f]+)?>")
    for line in text.decode("utf-8", "replace").splitlines():
        m = head.match(line.strip())
        if m:
            cur = m.group(1)
            callees.setdefault(cur, set())
            continue
        if cur is None:
            continue
        for rx in (reloc, call):
            for name in rx.findall(line):
                if name != cur and not name.startswith("."):
                    callees[cur].add(name)
    out = {}
    for root in roots:
        seen, todo = set(), [root]
        while todo:
            f = todo.pop()
            for c in callees.get(f, ()):
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        out[root] = seen
    return out
