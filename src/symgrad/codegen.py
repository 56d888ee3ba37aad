"""Generate a standalone NumPy training module from a derivation.

Contract: :func:`generate_module_source` prints every step of a
:class:`~symgrad.derive.Derivation` with :class:`~symgrad.printing.ArrayCodePrinter`
(stable forms), and the Jinja2 template ``module.py.j2`` lays them out as one
Python file that imports nothing but NumPy: ``PARAM_SHAPES``,
``init_params``, ``forward``, ``predict``, ``loss``, ``loss_and_grad``,
``update`` and ``train`` (batch, minibatch, stochastic and online modes; SGD
with momentum as in 1986, and Adam), and a command line.  Each generated
line carries a comment with the number of the equation it implements.  The
output is deterministic: the same spec and options give the same bytes.

>>> from symgrad.spec import Network
>>> source = generate_module_source(Network("tiny", inputs=2).dense(1, "sigmoid").build())
>>> "delta1 = " in source and "import numpy as np" in source
True
"""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from . import __version__, naming
from .derive import Derivation, Step, derive
from .printing import ArrayCodePrinter, code_names
from .resources import environment
from .spec import NetworkSpec

DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Line:
    """One line of generated code and the equation it implements."""

    target: str
    code: str
    number: int
    comment: str
    reads: frozenset[str]


def _comment(step: Step) -> str:
    """The comment beside a generated line: its equation number and what it computes."""
    n, layer, detail = f"({step.number})", step.layer, step.detail
    kind = detail["activation"].kind if "activation" in detail else ""
    text = {
        "dense": f"layer {layer}: weighted inputs plus bias",
        "activation_forward": f"layer {layer}: {kind} activation",
        "softmax_forward": f"layer {layer}: softmax activation",
        "loss": "the loss",
        "loss_derivative": f"dL/d{step.target[4:]}: derivative of the loss, "
                           f"dl/dy = {sp.sstr(detail.get('derivative'))}",
        "fused": f"delta{layer}: loss and output activation differentiated together",
        "fused_softmax": f"delta{layer}: softmax with cross-entropy gives p - t (lemma)",
        "activation": f"delta{layer}: chain rule through {kind}, f' = "
                      f"{sp.sstr(detail.get('slope') or detail.get('derivative'))}",
        "identity": f"delta{layer}: chain rule through the identity",
        "softmax": f"delta{layer}: chain rule through softmax (its Jacobian times dL/da)",
        "weight": f"dL/dW{layer} = delta{layer}^T times the layer input, summed over the batch",
        "bias": f"dL/db{layer} = delta{layer} summed over the batch",
        "backprop": f"dL/d{step.target[4:]}: chain rule back through the next dense layer",
        "backprop_sum": f"dL/d{step.target[4:]}: contributions of every consumer add up",
    }[step.rule]
    return f"{n} {text}"


def _lines(derivation: Derivation, printer: ArrayCodePrinter, steps: list[Step]) -> list[Line]:
    out = []
    for step in steps:
        target = "loss" if step.phase == "loss" else step.target
        out.append(Line(target, printer.doprint(step.code_expr), step.number,
                        _comment(step), _reads(step.code_expr)))
    return out


def _reads(expr) -> frozenset[str]:
    """The variables a line of code reads."""
    names = set()
    for symbol in _variables(expr):
        name = str(symbol.name)
        name = name.split("__")[0]  # a block of a weight matrix reads the matrix
        names.add(naming.INPUT if name.startswith("X_") else name)
    return frozenset(names)


def _variables(expr):
    """Symbols and matrix symbols in ``expr``, not counting the sizes in shapes."""
    if isinstance(expr, (sp.Symbol, sp.MatrixSymbol)):
        yield expr
    elif not isinstance(expr, sp.OneMatrix):
        for arg in expr.args:
            yield from _variables(arg)


def _needed(lines: list[Line], wanted: set[str]) -> list[Line]:
    """The lines that ``wanted`` depends on, in order."""
    keep = []
    for line in reversed(lines):
        if line.target in wanted:
            keep.append(line)
            wanted |= line.reads
    return keep[::-1]


def generate_module_source(spec: NetworkSpec | Derivation, *, dtype: str = "float64",
                           spec_path: str | None = None, output_path: str | None = None) -> str:
    """The source of the generated training module for ``spec``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    derivation = spec if isinstance(spec, Derivation) else derive(spec)
    spec = derivation.spec
    graph = derivation.graph
    printer = ArrayCodePrinter(code_names(graph))
    forward = _lines(derivation, printer, derivation.forward)
    loss_line = _lines(derivation, printer, [derivation.loss_step])[0]
    backward = _lines(derivation, printer, derivation.backward)
    spec_path = spec_path or spec.source or f"{spec.name}.toml"
    command = f"symgrad generate {spec_path}"
    if output_path:
        command += f" -o {output_path}"
    if dtype != "float64":
        command += f" --dtype {dtype}"
    layers = []
    for index, layer in enumerate(spec.layers, start=1):
        kind = spec.init.kind if layer.init is None else layer.init
        layers.append({"weight": naming.weight(index),
                       "bias": naming.bias(index) if layer.bias else None,
                       "init": kind, "activation": layer.activation.kind})
    output = graph.node(graph.output)
    backward_reads = set().union(*(line.reads for line in backward), loss_line.reads)
    template = environment().get_template("module.py.j2")
    return template.render(
        spec=spec, version=__version__, spec_path=spec_path, command=command, dtype=dtype,
        params=graph.params, forward=forward,
        forward_for_loss=_needed(forward, set(loss_line.reads)),
        uses_n=naming.BATCH in backward_reads, uses_decay=naming.DECAY in backward_reads, loss=loss_line, backward=backward,
        output=output.name, layers=layers, helpers=sorted(printer.helpers),
        gradients=derivation.gradients, architecture=_architecture(spec),
        training=spec.training, weight_decay=spec.loss.weight_decay,
        init_range=spec.init.range, classes=output.activation.vector,
    )


def _architecture(spec: NetworkSpec) -> str:
    sizes = [str(spec.n_inputs)] + [str(layer.units) for layer in spec.layers]
    kinds = ", ".join(layer.activation.kind for layer in spec.layers)
    loss = spec.loss.kind if spec.loss.expr is None else f"custom ({spec.loss.expr})"
    return f"{'-'.join(sizes)} ({kinds}); loss {loss}, reduction {spec.loss.reduction}"


def write_module(spec: NetworkSpec, path: str | Path, *, dtype: str = "float64",
                 spec_path: str | None = None) -> Path:
    """Generate the module and write it atomically to ``path``."""
    path = Path(path)
    source = generate_module_source(spec, dtype=dtype, spec_path=spec_path,
                                    output_path=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(source, encoding="utf-8")
    temporary.replace(path)
    return path


def load_module(source_or_path: str | Path, name: str | None = None) -> types.ModuleType:
    """Import a generated module from its source text or its file."""
    if isinstance(source_or_path, Path) or (
            isinstance(source_or_path, str) and "\n" not in source_or_path):
        path = Path(source_or_path)
        module_name = name or f"symgrad_generated_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        return module
    module = types.ModuleType(name or "symgrad_generated")
    exec(compile(source_or_path, f"<{module.__name__}>", "exec"), module.__dict__)
    return module
