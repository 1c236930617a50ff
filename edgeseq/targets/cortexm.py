"""Cortex-M targets: bare-metal firmware for QEMU's Arm MPS2/MPS3 boards.

The firmware is the generated model, the generated driver, edgeseq's own start-up code (vector
table; the reset handler enables the FPU, copies .data to RAM and zeroes .bss) and semihosting I/O,
linked with newlib-nano's libm. Inputs and outputs are host files opened through semihosting, so
one firmware image runs any number of inputs. Weights are ``const`` and live in flash; RAM holds
.data, .bss (the model state and scratch, the driver buffers) and the stack.

================  ==============  ======================  ==============================
target            QEMU board      flash (code + rodata)    RAM (data + bss + stack)
================  ==============  ======================  ==============================
cortex-m4         mps2-an386      4 MiB SSRAM1 @0x0        4 MiB SSRAM2/3 @0x20000000
cortex-m7         mps2-an500      4 MiB SSRAM1 @0x0        4 MiB SSRAM2/3 @0x20000000
cortex-m55        mps3-an547      512 KiB ITCM @0x10000000 512 KiB DTCM @0x30000000
================  ==============  ======================  ==============================

Smaller parts are modelled with ``flash_bytes`` / ``ram_bytes`` options (e.g. an STM32F4's 1 MiB /
192 KiB): the linker then enforces them and a model that does not fit raises ResourceError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ResourceError
from .base import SUPPORT, BuildError, Capabilities, Target, run_tool
from .compilers import check_compiler
from .elf import ElfFile


@dataclass(frozen=True)
class Board:
    machine: str
    cpu: str
    cflags: tuple[str, ...]
    fpu: str
    simd: tuple[str, ...]
    arch: str
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int


BOARDS = {
    "cortex-m4": Board(
        "mps2-an386",
        "cortex-m4",
        ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
        "fpv4-sp-d16 (single precision)",
        ("dsp",),
        "armv7e-m",
        0x00000000,
        4 << 20,
        0x20000000,
        4 << 20,
    ),
    "cortex-m7": Board(
        "mps2-an500",
        "cortex-m7",
        ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
        "fpv5-d16 (single and double precision)",
        ("dsp",),
        "armv7e-m",
        0x00000000,
        4 << 20,
        0x20000000,
        4 << 20,
    ),
    "cortex-m55": Board(
        "mps3-an547",
        "cortex-m55",
        ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
        "fp-armv8 (half, single and double precision)",
        ("dsp", "mve", "mve.fp"),
        "armv8.1-m.main",
        0x10000000,
        512 << 10,
        0x30000000,
        512 << 10,
    ),
}

_OVERFLOW = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")


class CortexMTarget(Target):
    board: Board
    flash_bytes: int
    ram_bytes: int
    stack_bytes: int
    io_buffer_floats: int
    binary_name = "model.elf"

    def io_floats(self) -> int:
        return self.io_buffer_floats

    cc_tool = "arm-none-eabi-gcc"
    clang_triple = "arm-none-eabi"

    def gcc_flags(self):
        return super().gcc_flags() + list(self.board.cflags)

    def clang_flags(self):
        from .compilers import gcc_system_includes

        incs = gcc_system_includes(self.check_toolchain(run=False)[self.cc_tool])
        return super().clang_flags() + [f for d in incs for f in ("-isystem", d)]

    def driver_files(self):
        return {
            "esq_io.h": SUPPORT / "esq_io.h",
            "esq_io_semihost.c": SUPPORT / "esq_io_semihost.c",
            "cortexm_startup.c": SUPPORT / "cortexm_startup.c",
            "cortexm_sections.ld": SUPPORT / "cortexm_sections.ld",
        }

    def linker_script(self) -> str:
        b = self.board
        return (
            f"/* edgeseq {self.name} on QEMU {b.machine}: memory regions, then the common sections. */\n"
            f"MEMORY\n{{\n"
            f"    FLASH (rx) : ORIGIN = 0x{b.flash_origin:08X}, LENGTH = {self.flash_bytes}\n"
            f"    RAM (rwx)  : ORIGIN = 0x{b.ram_origin:08X}, LENGTH = {self.ram_bytes}\n}}\n"
            f"__esq_stack_size = {self.stack_bytes};\n"
            f"INCLUDE cortexm_sections.ld\n"
        )

    def precheck_graph(self, graph) -> None:
        self.precheck(
            {
                "weights_bytes": 4 * graph.num_params(),
                "buffer_plan": {"struct_bytes_estimate": 0, "pooled_stack_bytes": 0},
            }
        )

    def precheck(self, info: dict) -> None:
        """Fail before compiling when the weights alone exceed flash, or the model state plus
        scratch, driver buffers and stack exceed RAM."""
        w = int(info["weights_bytes"])
        plan = info["buffer_plan"]
        ram = int(plan["struct_bytes_estimate"]) + 8 * self.io_buffer_floats + self.stack_bytes
        if w > self.flash_bytes:
            raise ResourceError(
                f"the weights alone need {w} bytes of flash; {self.name} ({self.board.machine}) has "
                f"{self.flash_bytes} bytes",
                where=f"target {self.name}",
                hint="prune or quantize the model, or pick a target with more flash",
            )
        if ram > self.ram_bytes:
            raise ResourceError(
                f"model state and scratch ({plan['struct_bytes_estimate']} bytes) + driver I/O buffers "
                f"({8 * self.io_buffer_floats}) + stack ({self.stack_bytes}) need {ram} bytes of RAM; "
                f"{self.name} has {self.ram_bytes} bytes",
                where=f"target {self.name}",
                hint="use a smaller hidden size, or a target with more RAM",
            )
        if plan["pooled_stack_bytes"] + 1024 > self.stack_bytes:
            raise ResourceError(
                f"the pooled readout needs {plan['pooled_stack_bytes']} bytes of stack; the stack is "
                f"{self.stack_bytes} bytes",
                where=f"target {self.name}",
                hint="raise stack_bytes",
            )

    def build(self, sources, out_dir) -> Path:
        """Compile and link ``out_dir/bin/model.elf``; ResourceError when the linker finds that a
        memory region overflows."""
        tools = self.check_toolchain(run=False)
        cc, ld = self.compiler_path(), tools["arm-none-eabi-gcc"]
        self.precheck(sources.info)
        out_dir = Path(out_dir)
        src = self.stage_sources(sources, out_dir)
        (src / "board.ld").write_text(self.linker_script())
        objs = self._compile_objects(
            cc, src, out_dir / "obj", self.cflags(), self.units(sources) + ["esq_io_semihost.c", "cortexm_startup.c"]
        )
        binary = out_dir / "bin" / self.binary_name
        binary.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_tool(
                [
                    ld,
                    *self.gcc_flags(),
                    *objs,
                    "-nostartfiles",
                    "-Wl,--gc-sections",
                    "-L",
                    src,
                    "-T",
                    src / "board.ld",
                    "--specs=nano.specs",
                    "-Wl,--start-group",
                    "-lm",
                    "-lc",
                    "-lnosys",
                    "-Wl,--end-group",
                    "-o",
                    binary,
                ],
                where=f"target {self.name}",
                what="linking the firmware",
                error=BuildError,
            )
        except BuildError as e:
            over = {m.group(1): int(m.group(2)) for m in _OVERFLOW.finditer(e.message)}
            if over:
                cap = {"FLASH": self.flash_bytes, "RAM": self.ram_bytes}
                parts = [
                    f"{r.lower()} needs {cap.get(r, 0) + n} bytes, the board has {cap.get(r, 0)}"
                    for r, n in over.items()
                ]
                raise ResourceError(
                    f"the firmware does not fit {self.name} ({self.board.machine}): " + "; ".join(parts),
                    where=f"target {self.name}",
                    hint="prune or quantize the model, or pick a target with more memory",
                ) from None
            raise
        return binary

    def sizes(self, binary, model_object=None) -> dict:
        out = super().sizes(binary, model_object)
        s = ElfFile(binary).section_sizes()
        flash = s["text"] + s["rodata"] + s["data"]
        ram = s["data"] + s["bss"] + s["stack"]
        out.update(
            {
                "flash_bytes": flash,
                "ram_bytes": ram,
                "stack_bytes": s["stack"],
                "flash_capacity": self.flash_bytes,
                "ram_capacity": self.ram_bytes,
                "flash_used": round(flash / self.flash_bytes, 4),
                "ram_used": round(ram / self.ram_bytes, 4),
            }
        )
        if flash > self.flash_bytes or ram > self.ram_bytes:
            raise ResourceError(
                f"firmware needs {flash} bytes of flash and {ram} of RAM; {self.name} has "
                f"{self.flash_bytes} and {self.ram_bytes}",
                where=f"target {self.name}",
            )
        return out

    def command(self, binary, args, plugin=None, log=None):
        from ..toolchains import require

        bad = [a for a in args if "," in a or " " in a]
        if bad:
            raise ConfigError(f"semihosting arguments cannot contain commas or spaces: {bad}")
        semi = ",".join(["enable=on", "target=native", "arg=model"] + [f"arg={a}" for a in args])
        argv = [
            require("qemu-system-arm"),
            "-M",
            self.board.machine,
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            "none",
            "-semihosting-config",
            semi,
            "-kernel",
            str(binary),
        ]
        if plugin:
            argv += ["-plugin", plugin, "-d", "plugin", "-D", log]
        return argv


def make_cortexm(
    name: str,
    flash_bytes: int | None = None,
    ram_bytes: int | None = None,
    stack_bytes: int = 8192,
    io_buffer_floats: int = 1024,
    opt_level: str = "-O2",
    compiler: str = "auto",
) -> Target:
    board = BOARDS[name]
    flash = board.flash_bytes if flash_bytes is None else int(flash_bytes)
    ram = board.ram_bytes if ram_bytes is None else int(ram_bytes)
    if not 0 < flash <= board.flash_bytes or not 0 < ram <= board.ram_bytes:
        raise ConfigError(
            f"{name} memory limits must be positive and at most the board's "
            f"({board.flash_bytes} flash, {board.ram_bytes} RAM), got {flash} / {ram}"
        )
    if stack_bytes < 2048 or io_buffer_floats < 64:
        raise ConfigError("stack_bytes must be >= 2048 and io_buffer_floats >= 64")
    opts = {}
    for k, v, d in (
        ("flash_bytes", flash, board.flash_bytes),
        ("ram_bytes", ram, board.ram_bytes),
        ("stack_bytes", stack_bytes, 8192),
        ("io_buffer_floats", io_buffer_floats, 1024),
        ("opt_level", opt_level, "-O2"),
        ("compiler", check_compiler(compiler), "auto"),
    ):
        if v != d:
            opts[k] = v
    t = CortexMTarget(
        name=name,
        description=f"{board.cpu} firmware on QEMU {board.machine} (qemu-system-arm, semihosting)",
        caps=Capabilities(
            arch=board.arch,
            cpu=board.cpu,
            fpu=board.fpu,
            simd=board.simd,
            flash_bytes=flash,
            ram_bytes=ram,
            os="bare-metal",
            board=board.machine,
            emulator="qemu-system-arm",
        ),
        build_tools=("arm-none-eabi-gcc",),
        run_tools=("qemu-system-arm",),
        options=opts,
        opt_level=opt_level,
        compiler=check_compiler(compiler),
    )
    t.board, t.flash_bytes, t.ram_bytes = board, flash, ram
    t.stack_bytes, t.io_buffer_floats = int(stack_bytes), int(io_buffer_floats)
    return t
