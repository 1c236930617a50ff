"""Targets with an operating system: ``x86`` (host gcc, native), ``arm`` (aarch64 Linux, static,
run under qemu-aarch64) and the build-only ``null`` target (host C compile, strict warnings)."""

from __future__ import annotations

import platform
import re
from pathlib import Path

from ..errors import ConfigError
from .base import BuildError, Capabilities, Target, run_tool
from .compilers import check_compiler

AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"
AARCH64_CPUS = ("cortex-a53", "cortex-a57", "cortex-a72", "cortex-a76", "neoverse-n1")


class HostedTarget(Target):
    cc_tool = "gcc"
    link_flags: tuple[str, ...] = ()

    def build(self, sources, out_dir) -> Path:
        """Compile the model, driver and stdio I/O into ``out_dir/bin/model``; returns its path."""
        ld = self.check_toolchain(run=False)[self.cc_tool]
        cc = self.compiler_path()
        out_dir = Path(out_dir)
        src = self.stage_sources(sources, out_dir)
        objs = self._compile_objects(cc, src, out_dir / "obj", self.cflags(), self.units(sources) + ["esq_io_stdio.c"])
        binary = out_dir / "bin" / self.binary_name
        binary.parent.mkdir(parents=True, exist_ok=True)
        run_tool(
            [ld, *self.gcc_flags(), *objs, *self.link_flags, "-lm", "-o", binary],
            where=f"target {self.name}",
            what="linking",
            error=BuildError,
        )
        return binary


class X86Target(HostedTarget):
    def gcc_flags(self):
        return super().gcc_flags() + [f"-march={self.options.get('cpu', 'native')}"]

    def command(self, binary, args, plugin=None, log=None):
        if plugin:
            raise ConfigError(
                "instruction counting is not available on the native x86 target", where=f"target {self.name}"
            )
        return [str(binary), *args]


class Aarch64Target(HostedTarget):
    cc_tool = "aarch64-linux-gnu-gcc"
    clang_triple = "aarch64-linux-gnu"
    link_flags = ("-static",)

    def gcc_flags(self):
        cpu = self.options.get("cpu")
        return super().gcc_flags() + ([f"-mcpu={cpu}"] if cpu else [])

    def command(self, binary, args, plugin=None, log=None):
        from ..toolchains import require

        argv = [require("qemu-aarch64"), "-L", AARCH64_SYSROOT]
        cpu = self.options.get("cpu")
        if cpu:
            argv += ["-cpu", cpu]
        if plugin:
            argv += ["-plugin", plugin, "-d", "plugin", "-D", log]
        return argv + [str(binary), *args]


class NullTarget(Target):
    """Generates and compiles host C (C99, -pedantic, warnings are errors) without linking or running."""

    def gcc_flags(self):
        return super().gcc_flags() + ["-pedantic", "-Werror"]

    def build(self, sources, out_dir) -> Path:
        self.check_toolchain(run=False)
        cc = self.compiler_path()
        out_dir = Path(out_dir)
        src = self.stage_sources(sources, out_dir)
        objs = self._compile_objects(cc, src, out_dir / "obj", self.cflags(), self.units(sources) + ["esq_io_stdio.c"])
        return objs[0]

    def sizes(self, binary, model_object=None):
        from .elf import ElfFile

        ms = ElfFile(binary).section_sizes()
        return {"model": {"code_bytes": ms["text"], "const_bytes": ms["rodata"], "data_bytes": ms["data"] + ms["bss"]}}


def _opts(opt_level: str, compiler: str, **extra) -> dict:
    out = {k: v for k, v in extra.items() if v}
    if opt_level != "-O2":
        out["opt_level"] = opt_level
    if check_compiler(compiler) != "auto":
        out["compiler"] = compiler
    return out


X86_CPU = re.compile(r"^(native|x86-64(-v[234])?|[a-z][a-z0-9-]{1,30})$")


def make_x86(opt_level: str = "-O2", compiler: str = "auto", cpu: str = "native") -> Target:
    """``cpu`` sets ``-march``: ``native`` (the default: the target is this machine) uses every
    instruction set it has (AVX2 / AVX-512), so the binary runs here; ``x86:x86-64`` (or
    ``x86-64-v3``, ...) builds a binary for any such x86 machine."""
    if cpu is not None and not X86_CPU.match(str(cpu)):
        raise ConfigError(f"invalid x86 cpu '{cpu}'; expected native, x86-64, x86-64-v2/v3/v4 or a -march name")
    machine = platform.machine() or "x86_64"
    return X86Target(
        name="x86",
        description="this machine: host gcc (-march=native unless a cpu is named), runs natively, wall-time latency",
        caps=Capabilities(
            arch=machine,
            cpu=None,
            fpu="sse2" if machine in ("x86_64", "AMD64") else None,
            simd=("sse2",) if machine in ("x86_64", "AMD64") else (),
            flash_bytes=None,
            ram_bytes=None,
            os="linux",
        ),
        build_tools=("gcc",),
        options=_opts(opt_level, compiler, cpu=cpu if cpu != "native" else None),
        native=True,
        opt_level=opt_level,
        compiler=compiler,
    )


def make_arm(cpu: str | None = None, opt_level: str = "-O2", compiler: str = "auto") -> Target:
    if cpu is not None and cpu not in AARCH64_CPUS:
        raise ConfigError(f"unknown aarch64 cpu '{cpu}'; expected one of: {', '.join(AARCH64_CPUS)}")
    opts = _opts(opt_level, compiler, cpu=cpu)
    return Aarch64Target(
        name="arm",
        description="aarch64 Linux (static executable), runs under qemu-aarch64" + (f" -cpu {cpu}" if cpu else ""),
        caps=Capabilities(
            arch="aarch64",
            cpu=cpu,
            fpu="fp-armv8",
            simd=("neon",),
            flash_bytes=None,
            ram_bytes=None,
            os="linux",
            emulator="qemu-aarch64",
        ),
        build_tools=("aarch64-linux-gnu-gcc",),
        run_tools=("qemu-aarch64",),
        options=opts,
        opt_level=opt_level,
        compiler=compiler,
    )


def make_null(opt_level: str = "-O2", compiler: str = "auto") -> Target:
    return NullTarget(
        name="null",
        description="build only: generated C compiled for the host with -pedantic -Werror",
        caps=Capabilities(arch="c99", cpu=None, fpu=None, simd=(), flash_bytes=None, ram_bytes=None, os="none"),
        build_tools=("gcc",),
        can_run=False,
        opt_level=opt_level,
        options=_opts(opt_level, compiler),
        compiler=compiler,
    )
