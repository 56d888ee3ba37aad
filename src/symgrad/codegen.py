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
from dataclasses import dataclass, replace
from pathlib import Path

import sympy as sp

from . import __version__, naming
from .derive import Derivation, Step, derive
from .inplace import plan, reads
from .printing import ArrayCodePrinter, code_names
from .resources import environment
from .spec import NetworkSpec
from .symbolic import LogSumExp

DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Line:
    """The statements of one step of generated code, and the equation they implement."""

    target: str
    statements: tuple[str, ...]
    code: str  # the step's expression, printed whole
    number: int
    comment: str | None  # None: another line of the equation above
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


def _lines(printer: ArrayCodePrinter, steps: list[Step], *, live_out, comments=None
           ) -> list[Line]:
    """The steps of one generated function, with its memory plan (see :mod:`.inplace`)."""
    statements = plan(steps, printer, live_out=live_out)
    comments = comments or {}
    lines = []
    for step, planned in zip(steps, statements):
        target = "loss" if step.phase == "loss" else step.target
        lines.append(Line(target, planned, printer.doprint(step.code_expr), step.number,
                          comments.get(target, _comment(step)), reads(step.code_expr)))
    return lines


def _hoist_into_loss(loss: Step, backward: list[Step]):
    """Backward steps the loss can reuse (``dL_da2 = a2 - T`` inside ``(a2 - T)**2``).

    Returns the loss step rewritten to read them, and the steps to compute before it.
    """
    made = {step.target for step in backward}
    code, hoisted = loss.code_expr, []
    for step in backward:
        if step.elementwise and not (reads(step.code_expr) & made) \
                and not isinstance(step.code_expr, sp.Symbol) and code.has(step.code_expr):
            code = code.xreplace({step.code_expr: sp.Symbol(step.target, real=True)})
            hoisted.append(step)
    return replace(loss, code=code), hoisted


def _share_log_softmax(loss: Step, forward: list[Step]):
    """Softmax with cross-entropy: ``log_a = z - logsumexp(z)`` once, for the output and the loss.

    Returns the loss reading ``log_a``, the forward steps computing it, and their comments.
    """
    steps, comments = [], {}
    for step in forward:
        z = step.code_expr.args[0] if step.rule == "softmax_forward" else None
        log_softmax = None if z is None else z - LogSumExp(z)
        if log_softmax is None or not loss.code_expr.has(log_softmax):
            steps.append(step)
            continue
        name = sp.Symbol(f"log_{step.target}", real=True)
        loss = replace(loss, code=loss.code_expr.xreplace({log_softmax: name}))
        steps += [replace(step, target=name.name, code=log_softmax),
                  replace(step, code=sp.exp(name))]
        comments[name.name] = (f"({step.number}) layer {step.layer}: softmax activation, "
                               f"as the exp of its log (the loss reads the log)")
        comments[step.target] = None  # the second line of the same equation
    return loss, steps, comments


def _needed(steps: list[Step], wanted: set[str]) -> list[Step]:
    """The steps that ``wanted`` depends on, in order."""
    keep = []
    for step in reversed(steps):
        if step.target in wanted:
            keep.append(step)
            wanted |= reads(step.code_expr)
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
    output = graph.node(graph.output)
    forward_steps, loss_step = derivation.forward, derivation.loss_step
    # forward(): only the output is returned.
    forward = _lines(printer, forward_steps, live_out={output.name})
    # loss(): the forward steps the loss reads.
    wanted = _needed(forward_steps, set(reads(loss_step.code_expr)))
    forward_for_loss = _lines(printer, wanted + [loss_step], live_out=set())[:-1]
    loss_only = _lines(printer, [loss_step], live_out=set())[0]
    # loss_and_grad(): forward, loss, backward; what the loss shares with the backward
    # pass is computed once, before the loss.
    reused, hoisted = _hoist_into_loss(loss_step, derivation.backward)
    reused, shared_forward, comments = _share_log_softmax(reused, forward_steps)
    backward_steps = [step for step in derivation.backward if step not in hoisted]
    comments["loss"] = _comment(reused) + "".join(
        f", reusing {step.target} from ({step.number})" for step in hoisted)
    gradient_lines = _lines(printer, shared_forward + hoisted + [reused] + backward_steps,
                            live_out=set(derivation.gradients.values()), comments=comments)
    split = len(shared_forward) + len(hoisted)
    forward_for_grad, loss_line = gradient_lines[:split], gradient_lines[split]
    backward = gradient_lines[split + 1:]
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
    backward_reads = set().union(*(line.reads for line in forward_for_grad + backward),
                                 loss_line.reads)
    template = environment().get_template("module.py.j2")
    return template.render(
        spec=spec, version=__version__, spec_path=spec_path, command=command, dtype=dtype,
        params=graph.params, forward=forward, forward_for_loss=forward_for_loss,
        forward_for_grad=forward_for_grad, loss_only=loss_only,
        uses_n=naming.BATCH in backward_reads, uses_decay=naming.DECAY in backward_reads,
        loss=loss_line, backward=backward,
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
