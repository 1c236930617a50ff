"""Export: IR graphs -> deployable artifacts, behind one call.

    art = edgeseq.export(model_or_graph, target="arm", out="out/har-arm", example_input=x)
    y = art.run(x)          # numpy; "arm" runs under qemu-aarch64 here, "onnx" in onnxruntime

Targets
=======
``onnx``        model.onnx with edgeseq-domain Scan functions (``streaming=True``: state in/out,
                ``inline=True``: standard ops only), manifest, golden vectors; a quantized graph
                exports its integer program (standard integer ops, int8 ``MatMulInteger`` kernels
                inside the ``Scan`` bodies, bit-exact with the integer-exact interpreter), or with
                ``onnx_numerics="qdq"`` the float model with QuantizeLinear/DequantizeLinear pairs
                (onnxruntime's fused ``QGemm`` kernels; within a stated tolerance)
``x86``         this machine: TVM library (``tvm/``) + self-contained C executable (``c/``)
``arm``         aarch64 Linux: TVM library for the TVM runtime (``tvm/``) and a zero-dependency static
                executable (``c/``), manifest.json, golden vectors, ``run.sh``; ``cpu=`` / ``arm:cortex-a72``
``cortex-m4``   C library + firmware for qemu-system-arm (``cortex-m7``, ``cortex-m55`` likewise)

``model_or_graph`` is an IR :class:`~edgeseq.ir.graph.Graph`, a torch module (captured with
``example_input``), a quantized graph from :mod:`edgeseq.quant`, or a model spec understood by
:func:`edgeseq.models.load_model` (shipped model name, checkpoint, .esq file).
Every artifact directory is written atomically and holds ``graph.esq``, the IR it was built from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..errors import ArtifactError, ConfigError

TARGETS = ("onnx", "x86", "arm", "cortex-m4", "cortex-m7", "cortex-m55", "nir")
BUNDLE_FORMAT = "edgeseq-bundle/1"

__all__ = ["export", "load_artifact", "Artifact", "TARGETS", "as_graph"]


def as_graph(model, example_input=None):
    """(graph, quantized or None) for anything :func:`export` accepts."""
    from ..ir.graph import Graph

    if isinstance(model, Graph):
        return model, None
    if hasattr(model, "plan") and hasattr(model, "graph") and isinstance(getattr(model, "graph"), Graph):
        return model.graph, model  # a quantized graph: its float graph + the integer program
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            from ..frontends import capture

            return capture(model, example_input), None
    except ImportError:  # pragma: no cover
        pass
    if isinstance(model, (str, Path)):
        from ..models import load_model

        return load_model(model).graph, None
    raise ConfigError(
        f"cannot export a {type(model).__name__}: pass an IR Graph, a torch module, a quantized "
        "graph or a model spec (shipped name, .ckpt, .esq)"
    )


def _split_target(target: str) -> tuple[str, Optional[str]]:
    base, _, cpu = str(target).partition(":")
    if base not in TARGETS:
        raise ConfigError(f"unknown export target '{target}'; choose one of: {', '.join(TARGETS)}")
    if cpu and base != "arm":
        raise ConfigError(f"target '{base}' takes no ':cpu' suffix (only arm:cortex-a72 / arm:cortex-a76)")
    return base, cpu or None


def export(
    model,
    target: str = "onnx",
    out=None,
    *,
    example_input=None,
    quant=None,
    force: bool = False,
    streaming: bool = False,
    inline: bool = False,
    cpu: Optional[str] = None,
    golden_input=None,
    target_options: Optional[Mapping[str, Any]] = None,
    progress=None,
    onnx_numerics: str = "exact",
    fused_rnn: Optional[bool] = None,
    layout: Optional[str] = None,
) -> "Artifact":
    """Export ``model`` for ``target`` into the directory ``out``; returns an :class:`Artifact`.

    ``quant`` is a quantized graph (or None for float32). ``example_input`` is needed only to capture
    a torch module; ``golden_input`` sets the input whose reference outputs are stored. Both are in the
    model's own layout (``graph.metadata["input_layout"]``: (B, T, F), (T, B, F) or a static (B, F);
    ``layout`` overrides it); the artifact stores the golden vectors as (B, T, F).
    ``onnx_numerics`` (onnx target, quantized graphs): 'exact' (the integer program) or 'qdq'.
    ``fused_rnn`` (onnx target, float; default on): scan ops that compute exactly ONNX's GRU / LSTM run
    on those ops (onnxruntime's fused kernels) instead of Scan; ``False`` keeps every one on Scan. With
    ``onnx_numerics='qdq'`` (default off) LSTMs run on onnxruntime's quantized LSTM kernel, within the
    QDQ tolerance ``recurrent_fused`` instead of ``recurrent``."""
    if out is None:
        raise ConfigError("export needs an output directory (out=...)")
    base, tcpu = _split_target(target)
    cpu = cpu or tcpu
    graph, q = as_graph(model, example_input)
    if quant is not None:
        if not (hasattr(quant, "plan") and hasattr(quant, "check_graph")):
            raise ConfigError(
                f"quant must be a quantized graph (edgeseq.quant.quantize / load_quantized), got {type(quant).__name__}"
            )
        if q is None:  # the plan must have been made for this very model (content hash of its float graph)
            quant.check_graph(graph, where="quant")
        q = quant
    if base == "nir":  # an interchange file, not a program: spiking graphs, checked by reading it back
        from .nir import export_nir

        path, manifest = export_nir(graph, out, force=force, quant=q, options=target_options, say=progress)
        return Artifact(path, manifest, None, "nir")
    if golden_input is None and example_input is not None and not isinstance(model, (str, Path)):
        golden_input = example_input
    if golden_input is not None:
        from ..ir.layout import to_ir

        golden_input = np.asarray(to_ir(graph, golden_input, layout), dtype=np.float32)
    say = progress or (lambda msg: None)
    if onnx_numerics not in ("exact", "qdq"):
        raise ConfigError(f"unknown onnx_numerics '{onnx_numerics}'; choose 'exact' or 'qdq'")
    if onnx_numerics == "qdq" and (q is None or base != "onnx"):
        raise ConfigError(
            "onnx_numerics='qdq' needs a quantized graph and target 'onnx'",
            hint="quantize first (edgeseq quantize) and export with --target onnx --quant PLAN",
        )
    if fused_rnn and (base != "onnx" or (q is not None and onnx_numerics != "qdq")):
        raise ConfigError(
            "fused_rnn applies to ONNX exports only: float, or quantized with onnx_numerics='qdq'",
            hint="the exact integer program (onnx_numerics='exact') has no fused kernel: drop --fused-rnn",
        )
    if q is not None:
        return _export_quantized(
            q,
            base,
            out,
            force=force,
            cpu=cpu,
            golden_input=golden_input,
            streaming=streaming,
            target_options=target_options,
            say=say,
            onnx_numerics=onnx_numerics,
            fused_rnn=bool(fused_rnn),
        )
    if base == "onnx":
        from .onnx import export_onnx

        say("onnx: lowering and checking with onnxruntime")
        return Artifact.load(
            export_onnx(
                graph,
                out,
                streaming=streaming,
                inline=inline,
                force=force,
                golden_input=golden_input,
                fused_rnn=fused_rnn is not False,
            ).path
        )
    if base.startswith("cortex-m"):
        from .c import export_c

        say(f"{base}: generating C, building firmware, checking under qemu-system-arm")
        return Artifact.load(
            export_c(
                graph, out, target=base, force=force, golden_input=golden_input, target_options=target_options
            ).path
        )
    return _export_bundle(graph, base, out, force=force, cpu=cpu, golden_input=golden_input, say=say)


def _export_bundle(
    graph,
    base: str,
    out,
    *,
    force: bool,
    cpu: Optional[str],
    golden_input,
    say,
    c_kwargs: Optional[dict] = None,
    tvm: bool = True,
) -> "Artifact":
    """x86 / arm: a TVM library + a self-contained C executable under one manifest."""
    from .._version import __version__
    from ..util.fs import atomic_write_text, check_output_dir, output_dir
    from .c import export_c
    from .manifest import seal

    check_output_dir(out, force)
    c_target = base if cpu is None else f"{base}:{cpu}"
    with output_dir(out, force) as stage:
        parts = {}
        if tvm:
            from .tvm import export_tvm

            say(f"{base}: compiling TVM scan kernels")
            export_tvm(graph, stage / "tvm", base, cpu=cpu)
            parts["tvm"] = {"dir": "tvm", "kind": "tvm", "runs_with": "TVM runtime (libtvm_runtime.so)"}
        say(f"{base}: generating C and building the static executable")
        c_art = export_c(graph, stage / "c", target=c_target, golden_input=golden_input, **(c_kwargs or {}))
        parts["c"] = {"dir": "c", "kind": "c", "runs_with": "nothing (static executable)"}
        graph.save(stage / "graph.esq")
        atomic_write_text(
            stage / "run.sh",
            "#!/bin/sh\n# usage: run.sh [step|run|chunk:K] input.bin output.bin"
            "  (the zero-dependency executable; see c/run.sh)\n"
            'exec "$(dirname "$0")/c/run.sh" "$@"\n',
        )
        (stage / "run.sh").chmod(0o755)
        manifest = {
            "format": BUNDLE_FORMAT,
            "edgeseq_version": __version__,
            "target": base,
            "cpu": cpu,
            "ir_graph": "graph.esq",
            "default_runtime": "tvm" if (tvm and base == "x86") else "c",
            "parts": parts,
            "sizes": c_art.sizes,
            "numerics": c_art.manifest.get("numerics", "float32"),
            "golden": {"dir": "c/golden", "note": "reference outputs of the float64 interpreter (see c/manifest.json)"},
        }
        seal(stage, manifest, files=stage.glob("*"))
    return Artifact.load(out)


def _export_quantized(
    q,
    base: str,
    out,
    *,
    force,
    cpu,
    golden_input,
    streaming,
    target_options,
    say,
    onnx_numerics: str = "exact",
    fused_rnn: bool = False,
):
    """Integer artifacts from a quantized graph: every target runs the integer program (onnx:
    or its QDQ form, ``onnx_numerics='qdq'``)."""
    if base == "onnx":
        try:
            from .onnx.quant import export_onnx_quantized
        except ImportError:
            raise ConfigError("quantized ONNX export is not available in this build", where="onnx") from None
        say(
            "onnx: integer program -> ONNX (int8 MatMulInteger kernels), checked bit for bit with onnxruntime"
            if onnx_numerics == "exact"
            else "onnx: QDQ model (QuantizeLinear/DequantizeLinear at the plan's points), checked against the integer program"
        )
        return Artifact.load(
            export_onnx_quantized(
                q,
                out,
                force=force,
                streaming=streaming,
                golden_input=golden_input,
                numerics=onnx_numerics,
                fused_rnn=fused_rnn,
            ).path
        )
    try:
        from .c.intexport import export_c_int
    except ImportError:
        raise ConfigError(f"integer C export for '{base}' is not available in this build") from None
    if base.startswith("cortex-m"):
        say(f"{base}: generating integer C, building firmware")
        return Artifact.load(
            export_c_int(
                q, out, target=base, force=force, golden_input=golden_input, target_options=target_options
            ).path
        )
    from .._version import __version__
    from ..util.fs import atomic_write_text, check_output_dir, output_dir
    from .manifest import seal

    check_output_dir(out, force)
    c_target = base if cpu is None else f"{base}:{cpu}"
    with output_dir(out, force) as stage:
        parts = {}
        say(f"{base}: generating integer C and building the static executable")
        c_art = export_c_int(q, stage / "c", target=c_target, golden_input=golden_input)
        parts["c"] = {"dir": "c", "kind": "c", "runs_with": "nothing (static executable)"}
        try:
            from .tvm.intexport import export_tvm_int
        except ImportError:
            export_tvm_int = None
        if export_tvm_int is not None:
            say(f"{base}: compiling integer TVM kernels")
            export_tvm_int(q, stage / "tvm", base, cpu=cpu)
            parts["tvm"] = {"dir": "tvm", "kind": "tvm", "runs_with": "TVM runtime (libtvm_runtime.so)"}
        q.graph.save(stage / "graph.esq")
        q.save(stage / "quantized.esq")
        atomic_write_text(stage / "run.sh", '#!/bin/sh\nexec "$(dirname "$0")/c/run.sh" "$@"\n')
        (stage / "run.sh").chmod(0o755)
        manifest = {
            "format": BUNDLE_FORMAT,
            "edgeseq_version": __version__,
            "target": base,
            "cpu": cpu,
            "ir_graph": "graph.esq",
            "quantized_graph": "quantized.esq",
            "default_runtime": "c",
            "parts": parts,
            "sizes": c_art.sizes,
            "numerics": "integer",
            "golden": {"dir": "c/golden", "note": "outputs of the integer-exact interpreter"},
        }
        seal(stage, manifest, files=stage.glob("*"))
    return Artifact.load(out)


def artifact_kind(manifest: Mapping) -> str:
    from .manifest import detect_kind

    return detect_kind(dict(manifest) if isinstance(manifest, Mapping) else manifest)


class Artifact:
    """One exported artifact directory, whatever its kind. ``run(x)`` returns the output array (or a
    tuple for several outputs) as numpy float32, executing the artifact on its own runner."""

    def __init__(self, path: Path, manifest: dict, impl, kind: str, parts: Optional[dict] = None):
        self.path, self.manifest, self.impl, self.kind = path, manifest, impl, kind
        self.parts = parts or {}
        self._layout_graph = None  # the graph.esq that records the input layout (False: none stored)

    @classmethod
    def load(cls, path, *, _nested: bool = False) -> "Artifact":
        """Open an artifact directory: the manifest is read and checked (schema, paths inside the
        directory; :mod:`edgeseq.export.manifest`), every file against its sha256, then the
        exporter's own loader opens it."""
        from .manifest import file_problems, read_checked

        if not isinstance(path, (str, Path)) or (isinstance(path, str) and not path):
            raise ArtifactError(f"expected the path of an artifact directory, got {type(path).__name__} {path!r:.40}")
        path = Path(path)
        manifest, kind = read_checked(path, nested=_nested)
        if kind == "bundle":
            problems = file_problems(path, manifest)
            if problems:
                raise ArtifactError(
                    f"file '{problems[0].split(':')[0]}' is missing or was modified after export", where=str(path)
                )
            parts = {name: cls.load(path / info["dir"], _nested=True) for name, info in manifest["parts"].items()}
            return cls(path, manifest, parts[manifest["default_runtime"]].impl, "bundle", parts)
        try:
            if kind == "c":
                from .c import CArtifact

                return cls(path, manifest, CArtifact.load(path), kind)
            if kind == "tvm":
                from .tvm.artifact import TvmArtifact

                return cls(path, manifest, TvmArtifact.load(path), kind)
            from .onnx import OnnxArtifact

            return cls(path, manifest, OnnxArtifact.load(path), kind)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            # the exporter's loader met a field the manifest schema does not pin down
            raise ArtifactError(
                f"malformed {kind} manifest ({type(e).__name__}: {e})", where=str(path / "manifest.json")
            ) from None

    @property
    def target(self) -> str:
        if self.kind == "bundle":
            return self.manifest["target"]
        if self.kind == "onnx":
            return "onnx"
        if self.kind == "tvm":
            return self.manifest["target"]["name"]
        return self.manifest["target"] if isinstance(self.manifest["target"], str) else self.manifest["target"]["name"]

    @property
    def graph(self):
        from ..ir.serialize import load

        for name in ("graph.esq",):
            if (self.path / name).is_file():
                return load(self.path / name)
        raise ArtifactError("artifact holds no graph.esq", where=str(self.path))

    def runner(self, runtime: Optional[str] = None) -> "Artifact":
        if runtime is None:
            return self
        if self.kind != "bundle" or not isinstance(runtime, str) or runtime not in self.parts:
            raise ConfigError(f"artifact has no '{runtime}' runtime (has: {', '.join(self.parts) or self.kind})")
        return self.parts[runtime]

    def input_layout(self, layout: Optional[str] = None) -> str:
        """The layout :meth:`run` takes: ``layout`` if given, else the model's own (recorded in the
        artifact's graph.esq; 'BTF' when it holds none)."""
        from ..ir.layout import layout_of

        if self._layout_graph is None:
            self._layout_graph = self.graph if (self.path / "graph.esq").is_file() else False
        if self._layout_graph is False:
            if layout not in (None, "BTF"):
                raise ConfigError(
                    f"layout '{layout}' needs the artifact's graph.esq (it records the model's layout)",
                    where=str(self.path),
                    hint="pass the input as (batch, time, features)",
                )
            return "BTF"
        return layout_of(self._layout_graph, layout)

    def run(self, x, runtime: Optional[str] = None, *, layout: Optional[str] = None):
        """Outputs for ``x`` in the model's own layout ((B, T, F), (T, B, F) for a time-major model, a
        static (B, F) for a model that loops over a static input; ``layout`` overrides it, see
        :mod:`edgeseq.ir.layout`): an array, or a tuple of arrays for several outputs, temporal ones
        in that layout."""
        from ..ir.layout import from_ir, to_ir
        from ..util.finite import check_finite

        lay = self.input_layout(layout)
        if lay != "BTF":
            x = to_ir(self._layout_graph, x, lay)
        art = self.runner(runtime)
        if art.kind == "bundle":
            art = art.parts[art.manifest["default_runtime"]]
        x = _as_input(x)
        check_finite(x, "input", str(self.path))
        if art.kind == "tvm":
            y, _ = art.impl.run(x, streaming=False)
        else:
            y = art.impl.run(x)
        ys = tuple(np.asarray(v) for v in (y if isinstance(y, (tuple, list)) else (y,)))
        if lay != "BTF":
            ys = from_ir(self._layout_graph, ys, lay)
        return ys[0] if len(ys) == 1 else ys

    def cost(self, x) -> dict:
        """Instruction counts / sizes / wall time where the artifact's runner can measure them."""
        from ..util.finite import check_finite

        art = self if self.kind != "bundle" else self.parts.get("c")
        if art is None or art.kind != "c":
            raise ConfigError(f"cost measurement needs a C artifact, this is '{self.kind}'")
        return art.impl.cost(check_finite(_as_input(x), "input", str(self.path)))

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}, kind={self.kind}, target={self.target})"


def _as_input(x) -> np.ndarray:
    """``x`` as a float32 (B, T, F) array, or ShapeError (ragged lists, objects, strings, wrong rank)."""
    from ..errors import ShapeError

    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ShapeError(f"input is not a rectangular numeric array ({e})") from None
    if a.dtype.kind not in "biuf":
        raise ShapeError(f"input must be a numeric (B, T, F) array, got dtype {a.dtype}")
    if a.ndim != 3 or 0 in a.shape:
        raise ShapeError(f"input must have shape (batch, time, features) with each >= 1, got {a.shape}")
    return a.astype(np.float32)


def load_artifact(path) -> Artifact:
    """Open an exported artifact directory (see :meth:`Artifact.load`)."""
    return Artifact.load(path)


from ..util.modcall import make_callable  # noqa: E402

make_callable(__name__, "export")
