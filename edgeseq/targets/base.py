"""Target machinery shared by every device kind: capabilities, tool invocation with typed errors,
the generated-driver run protocol, and instruction counting under QEMU.

A :class:`Target` turns generated C (:class:`edgeseq.export.c.CSources`) into a binary for one
device (``build``), runs it on (B, T, F) inputs (``run``, natively or under QEMU) and measures it
(``cost``: executed instructions, flash / RAM bytes, wall time where native).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from ..errors import ArtifactError, ConfigError, EdgeseqError, ShapeError
from ..toolchains import require
from . import compilers
from . import driver as D
from .elf import ElfFile

SUPPORT = Path(__file__).resolve().parent / "support"


class BuildError(ArtifactError):
    """A compiler or linker failed on generated code (the message carries its stderr)."""


class TargetRunError(EdgeseqError):
    """A built binary failed, crashed or timed out on its target (natively or under QEMU)."""


def stderr_tail(text: str | bytes | None, lines: int = 20, chars: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = (text or "").strip()
    tail = "\n".join(text.splitlines()[-lines:])
    return tail[-chars:]


def run_tool(
    argv: Sequence[str],
    *,
    where: str,
    what: str,
    error=TargetRunError,
    timeout: float = 300.0,
    cwd: str | os.PathLike | None = None,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Run ``argv`` (check=True, captured); failures become ``error`` with the tool's stderr tail."""
    argv = [str(a) for a in argv]
    try:
        return subprocess.run(argv, check=True, capture_output=True, timeout=timeout, cwd=cwd, env=env)
    except subprocess.CalledProcessError as e:
        tail = stderr_tail((e.stderr or b"") + b"\n" + (e.stdout or b""))
        raise error(f"{what} failed (exit status {e.returncode}): {tail}", where=where) from None
    except subprocess.TimeoutExpired:
        raise error(
            f"{what} did not finish within {timeout:.0f} s",
            where=where,
            hint="a hung model or emulator; raise the timeout for very long inputs",
        ) from None
    except OSError as e:
        raise error(f"{what} could not start ({e.strerror}): {argv[0]}", where=where) from None


@lru_cache(maxsize=None)
def tool_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = out.stdout.decode("utf-8", "replace").strip().splitlines()
    return text[0] if text else "unknown"


@dataclass(frozen=True)
class Capabilities:
    """What a target offers: instruction set, FPU / SIMD, and the memory of its board (bytes,
    None where a rich OS manages memory)."""

    arch: str
    cpu: str | None
    fpu: str | None
    simd: tuple[str, ...]
    flash_bytes: int | None
    ram_bytes: int | None
    os: str
    board: str | None = None
    emulator: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["simd"] = list(self.simd)
        return d


@dataclass
class RunResult:
    """Outputs of one driver run: per-step outputs (B, T, S), pooled (B, P), canonical state (B, Z)."""

    step: np.ndarray
    pooled: np.ndarray
    state: np.ndarray
    wall_s: float
    model_ns: int = 0
    repeat: int = 1
    instructions: int | None = None
    log: str = ""
    plugin_log: str = ""  # what the QEMU plugin printed (counting runs)


@dataclass
class Target:
    """A device kind edgeseq builds for. Subclasses fill in compilation and execution."""

    name: str
    description: str
    caps: Capabilities
    build_tools: tuple[str, ...] = ()
    run_tools: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    can_run: bool = True
    native: bool = False
    opt_level: str = "-O2"
    run_timeout_s: float = 600.0
    build_jobs: int = 1  # compiler processes run at once (multi-model builds raise it)
    extra_cflags: tuple[str, ...] = ()  # appended to every compile (e.g. -g for profiling builds)
    compiler: str = "auto"  # gcc | clang | clang-NN | auto (see edgeseq.targets.compilers)

    binary_name: ClassVar[str] = "model"
    cc_tool: ClassVar[str] = "gcc"  # the target's GCC: it compiles (compiler gcc) and always links
    clang_triple: ClassVar[str | None] = None  # --target for Clang (None: the host)

    # -- toolchain --------------------------------------------------------------------------------
    def check_toolchain(self, run: bool = True) -> dict[str, str]:
        """Paths of the tools this target needs (build, and run if ``run``); raises
        ToolchainMissingError with the apt command for the first missing one."""
        tools = self.build_tools + (self.run_tools if run and self.can_run else ())
        out = {t: require(t) for t in tools}
        cc = self.resolved_compiler()
        if cc != "gcc":
            out[cc] = compilers.require_clang(cc)
        return out

    def toolchain_versions(self, run: bool = True) -> dict[str, str]:
        return {t: tool_version(p) for t, p in self.check_toolchain(run).items()}

    def resolved_compiler(self) -> str:
        """``gcc`` or the Clang (``clang``, ``clang-NN``) this target compiles with."""
        return compilers.resolve(self.compiler, self.name)

    def compiler_path(self) -> str:
        cc = self.resolved_compiler()
        return require(self.cc_tool) if cc == "gcc" else compilers.require_clang(cc)

    def spec(self) -> dict:
        """JSON description (name, options, capabilities) that :func:`edgeseq.targets.get_target` accepts back;
        ``options["compiler"]`` is the compiler the target resolved to."""
        return {
            "name": self.name,
            "options": {**self.options, "compiler": self.resolved_compiler()},
            "capabilities": self.caps.to_dict(),
            "description": self.description,
        }

    # -- build ------------------------------------------------------------------------------------
    def cflags(self) -> list[str]:
        """Compile flags for the resolved compiler (GCC's, plus Clang's target selection)."""
        flags = self.gcc_flags()
        if self.resolved_compiler() != "gcc":
            flags = self.clang_flags() + flags
        return flags + list(self.extra_cflags)

    def gcc_flags(self) -> list[str]:
        """Flags shared by compiling and linking with the target's GCC (subclasses add the CPU's)."""
        return [
            "-std=c99",
            self.opt_level,
            "-Wall",
            "-Wextra",
            "-fno-math-errno",
            "-ffp-contract=off",
            "-ffunction-sections",
            "-fdata-sections",
        ]

    def clang_flags(self) -> list[str]:
        """What Clang needs besides GCC's flags: the target triple and the C library's headers."""
        out = [f"--target={self.clang_triple}"] if self.clang_triple else []
        return out + ["-fomit-frame-pointer"]

    def precheck(self, info: dict) -> None:
        """Raise ResourceError before compiling when the model cannot fit (boards with fixed memory)."""

    def precheck_graph(self, graph) -> None:
        """Cheap check before code generation (float32 weights vs flash)."""

    def io_floats(self) -> int:
        return 1 << 20

    def driver_files(self) -> dict[str, Path]:
        return {"esq_io.h": SUPPORT / "esq_io.h", "esq_io_stdio.c": SUPPORT / "esq_io_stdio.c"}

    def units(self, sources) -> list[str]:
        """The C files of ``sources`` to compile: the generated ones, plus the generated driver
        ``main.c`` unless the sources bring their own (several models in one binary)."""
        names = [f for f in sources.files if f.endswith(".c")]
        return names if "main.c" in sources.files else names + ["main.c"]

    def stage_sources(self, sources, out_dir) -> Path:
        """Write the model, the generated driver and the support files into ``out_dir/src``."""
        src = Path(out_dir) / "src"
        src.mkdir(parents=True, exist_ok=True)
        sources.write(src)
        if "main.c" not in sources.files:
            (src / "main.c").write_text(D.driver_source(sources.prefix, self.io_floats()))
        for name, path in self.driver_files().items():
            shutil.copyfile(path, src / name)
        return src

    def build(self, sources, out_dir) -> Path:
        raise NotImplementedError

    def _compile_objects(self, cc: str, src: Path, obj: Path, flags: list[str], files: Sequence[str]) -> list[Path]:
        obj.mkdir(parents=True, exist_ok=True)
        objs = [obj / (Path(f).stem + ".o") for f in files]

        def one(f, o):
            res = run_tool(
                [cc, *flags, "-I", src, "-c", src / f, "-o", o],
                where=f"target {self.name}",
                what=f"compiling {f}",
                error=BuildError,
            )
            return res.stderr.decode("utf-8", "replace")

        jobs = max(1, min(int(self.build_jobs), len(files)))
        if jobs == 1:
            log = [one(f, o) for f, o in zip(files, objs)]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                log = list(pool.map(one, files, objs))
        self._last_log = "".join(log)
        return objs

    @property
    def build_log(self) -> str:
        return getattr(self, "_last_log", "")

    # -- sizes ------------------------------------------------------------------------------------
    def sizes(self, binary, model_object=None) -> dict:
        """Section sizes of the binary and of the model object (weights = its rodata)."""
        elf = ElfFile(binary)
        secs = elf.section_sizes()
        out: dict[str, Any] = {"binary_file_bytes": Path(binary).stat().st_size, "sections": secs}
        syms = elf.symbols()
        if "S" in syms:  # the driver's one static model state (sizeof the state struct)
            out["state_struct_bytes"] = syms["S"]
        obj = Path(model_object) if model_object else Path(binary).parent.parent / "obj" / "model.o"
        if obj.exists():
            ms = ElfFile(obj).section_sizes()
            out["model"] = {"code_bytes": ms["text"], "const_bytes": ms["rodata"], "data_bytes": ms["data"] + ms["bss"]}
        return out

    # -- run --------------------------------------------------------------------------------------
    def command(self, binary, args: Sequence[str], plugin: str | None = None, log: str | None = None) -> list[str]:
        raise NotImplementedError

    def run(
        self,
        binary,
        inputs,
        mode: str = "step",
        state: bool = False,
        count: bool | str = False,
        repeat: int = 1,
        *,
        qin: bool = False,
        qout: bool = False,
        init_state=None,
        select: int | None = None,
    ) -> RunResult:
        """Run ``binary`` on ``inputs`` (B, T, F): one driver process for the whole batch.

        ``mode``: step | run | io | chunk:K (see :mod:`edgeseq.targets.driver`); ``state`` also
        returns each sequence's final canonical state; ``count`` counts executed instructions
        under QEMU (a string: the QEMU ``-plugin`` argument of another counting plugin, e.g. the
        profiler of :mod:`edgeseq.targets.profile`); ``repeat`` (mode run) repeats each sequence for timing. ``init_state`` (B, Z)
        starts each sequence from that canonical state instead of zeros. Integer models only:
        ``qout`` returns integer outputs and state (int64 arrays; ``init_state`` is then integer
        too), ``qin`` (with ``qout``) takes integer ``inputs`` (the program's quantized input).
        ``select`` picks the model of a multi-model binary (:mod:`edgeseq.export.c.multi`)."""
        if not self.can_run:
            raise ConfigError(
                f"target '{self.name}' only builds; it cannot run binaries",
                hint="use x86, arm or a cortex-m target to run",
            )
        x = np.asarray(inputs)
        if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ShapeError(f"inputs must have shape (B, T, F) with B, T >= 1, got {x.shape}")
        if not (mode in D.MODES or (mode.startswith("chunk:") and mode[6:].isdigit() and int(mode[6:]) > 0)):
            raise ConfigError(f"unknown run mode '{mode}'; expected step, run, io or chunk:K")
        if qin and not qout:
            raise ConfigError("qin (integer inputs) needs qout (integer outputs)")
        self.check_toolchain(run=True)
        binary = Path(binary).resolve()
        words = "<i4" if qout else "<f4"
        with tempfile.TemporaryDirectory(prefix="edgeseq-run-") as tmp:
            tmp = Path(tmp)
            D.write_input(tmp / "in.bin", x, dtype="<i4" if qin else "<f4")
            args = (
                [mode, "in.bin", "out.bin"]
                + (["state"] if state else [])
                + ([f"repeat={int(repeat)}"] if repeat > 1 else [])
            )
            if init_state is not None:
                init = np.asarray(init_state)
                if init.ndim != 2 or init.shape[0] != x.shape[0]:
                    raise ShapeError(f"init_state must have shape (B, Z) with B = {x.shape[0]}, got {init.shape}")
                D.write_state(tmp / "init.bin", init, dtype=words)
                args.append("init=init.bin")
            args += (["qin"] if qin else []) + (["qout"] if qout else [])
            if select is not None:
                args = [str(int(select))] + args
            plugin = (count if isinstance(count, str) else qemu_plugin()) if count else None
            log = str(tmp / "qemu.log") if count else None
            argv = self.command(binary, args, plugin, log)
            t0 = time.perf_counter()
            res = run_tool(
                argv, where=f"target {self.name}", what=f"running {binary.name}", cwd=tmp, timeout=self.run_timeout_s
            )
            wall = time.perf_counter() - t0
            out = D.read_output(tmp / "out.bin", dtype=words)
            n, plog = None, ""
            if count:
                n = parse_insn_count(Path(log), where=f"target {self.name}")
                plog = Path(log).read_text(errors="replace")
            text = (res.stdout + res.stderr).decode("utf-8", "replace")
        return RunResult(out["step"], out["pooled"], out["state"], wall, out["model_ns"], out["repeat"], n, text, plog)

    @property
    def counts_instructions(self) -> bool:
        return self.caps.emulator is not None

    def cost(self, binary, inputs, timing_repeats: int = 20) -> dict:
        """Executed instructions per inference and per step (QEMU targets), sizes, and wall-clock
        latency (native targets).

        Instruction method: the same driver runs the same input three times under QEMU's
        instruction-count plugin: ``step`` (reset, T steps, pooled readout per sequence),
        ``nostep`` (reset and pooled readout only) and ``io`` (neither); every run does identical
        file I/O. Hence per inference = (step - io) / B, per step = (step - nostep) / (B T) (the
        average over the input's steps) and the per-sequence part = (nostep - io) / B, all exact
        differences of deterministic counts."""
        x = np.asarray(inputs, dtype=np.float32)
        b, t, _ = x.shape
        out: dict[str, Any] = {"target": self.name, "batch": b, "steps": t, "sizes": self.sizes(binary)}
        if self.counts_instructions:
            self.check_toolchain(run=True)
            n = {m: self.run(binary, x, mode=m, count=True).instructions for m in ("step", "nostep", "io")}
            out["instructions"] = {
                "total": n["step"],
                "io_baseline": n["io"],
                "per_inference": (n["step"] - n["io"]) / b,
                "per_step": (n["step"] - n["nostep"]) / (b * t),
                "per_sequence_fixed": (n["nostep"] - n["io"]) / b,
                "method": "qemu TB-count plugin; runs of the same driver and input in step / nostep / io "
                "modes; per_inference = (step - io) / B, per_step = (step - nostep) / (B*T), "
                "per_sequence_fixed = (nostep - io) / B",
            }
            out["emulator"] = self.caps.emulator
        if self.native:
            res = self.run(binary, x, mode="run", repeat=timing_repeats)
            per_inf_s = res.model_ns * 1e-9 / (b * res.repeat)
            out["latency"] = {
                "per_inference_s": per_inf_s,
                "per_step_s": per_inf_s / t,
                "repeats": res.repeat,
                "method": "clock_gettime around esq_reset + esq_run inside the driver",
            }
        return out


# ----------------------------------------------------------------------------------------------
# QEMU instruction counting


def cache_dir() -> Path:
    base = os.environ.get("EDGESEQ_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgeseq"
    )
    return Path(base)


def qemu_plugin() -> str:
    """Path of the instruction-counting QEMU plugin (see :func:`plugin_library`)."""
    return plugin_library("insn_count_plugin")


def plugin_library(name: str) -> str:
    """Path of the QEMU plugin ``support/<name>.c``, compiled with the host gcc on first use and
    cached (keyed by the source hash)."""
    src = SUPPORT / f"{name}.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = cache_dir() / "qemu-plugins" / f"lib{name}-{digest}.so"
    if out.exists():
        return str(out)
    gcc = require("gcc")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
    except OSError as e:
        raise ArtifactError(
            f"cannot write the QEMU plugin cache ({e.strerror})",
            where=str(out.parent),
            hint="set EDGESEQ_CACHE to a writable directory",
        ) from None
    os.close(fd)
    try:
        run_tool(
            [gcc, "-shared", "-fPIC", "-O2", "-o", tmp, src],
            where="qemu plugin",
            what=f"compiling the QEMU plugin {name}",
            error=BuildError,
        )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(out)


def parse_insn_count(log: Path, where: str) -> int:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    for line in reversed(text.splitlines()):
        if line.startswith("edgeseq-insns:"):
            return int(line.split(":", 1)[1])
    raise TargetRunError(
        "the QEMU instruction-count plugin reported nothing",
        where=where,
        hint=f"QEMU log: {stderr_tail(text, 5, 500) or '(empty)'}",
    )
