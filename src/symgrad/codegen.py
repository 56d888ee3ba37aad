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

import ast
import importlib.util
import inspect
import math
import shlex
import sys
import types
from dataclasses import dataclass, replace
from pathlib import Path

import sympy as sp

from . import __version__, naming, ops
from .derive import Derivation, Step, derive
from .fileio import write_atomically
from .inplace import plan, reads
from .ops import attention_rows, normalisation, recurrent
from .printing import ArrayCodePrinter, code_names
from .resources import environment
from .spec import NetworkSpec
from .symbolic import LogSumExp, MaskedTotal, Total

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


def text_fragment(text: str) -> str:
    r"""User text as the inside of a double-quoted Python string or docstring.

    Backslashes, double quotes and every character that is not printable (line
    breaks, ANSI escapes, bidirectional controls) become escape sequences, so the
    fragment can end no string, docstring or comment, and reads back as ``text``.

    >>> text_fragment('say "hi"\n\x1b[31m')
    'say \\"hi\\"\\n\\x1b[31m'
    >>> import ast
    >>> payload = '"' * 3 + '\\ \r\n\x1b\u202e'
    >>> ast.literal_eval('"' + text_fragment(payload) + '"') == payload
    True
    """
    out = []
    for char in str(text):
        if char in '\\"':
            out.append("\\" + char)
        elif char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def py_literal(value) -> str:
    r"""The Python source of a plain value (str, int, finite float, bool, None, tuple).

    >>> py_literal(("W1", 2, 0.5, None, True))
    '("W1", 2, 0.5, None, True)'
    >>> py_literal('"; import os')
    '"\\"; import os"'
    """
    if isinstance(value, str):
        return f'"{text_fragment(value)}"'
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be written into generated code")
        return repr(float(value))
    if isinstance(value, tuple):
        items = ", ".join(py_literal(item) for item in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    raise TypeError(f"a {type(value).__name__} cannot be written into generated code")


def comment_text(text: str) -> str:
    """Text for a ``#`` comment: on one line, with non-printable characters escaped."""
    return "".join(char if char.isprintable() else text_fragment(char) for char in str(text))


def _identifier(name: str) -> str:
    """A code name checked to be a plain identifier before it is written as code."""
    if not (isinstance(name, str) and name.isidentifier() and name.isascii()):
        raise ValueError(f"{name!r} is not a valid name in generated code")
    return name


def _comment(step: Step) -> str:
    """The comment beside a generated line: its equation number and the rule's comment."""
    detail = step.detail
    text = ops.rule(step.rule).comment.format(
        layer=step.layer, wrt=step.target[4:] if step.target.startswith("dL_d") else step.target,
        kind=detail["activation"].kind if "activation" in detail else "",
        derivative=sp.sstr(detail.get("slope") or detail.get("derivative")),
        consumer=detail.get("consumer", step.layer))
    return f"({step.number}) {text}"


def _lines(printer: ArrayCodePrinter, steps: list[Step], *, live_out, comments=None,
           free=False) -> list[Line]:
    """The steps of one generated function, with its memory plan (see :mod:`.inplace`)."""
    statements = _one_exp(steps, plan(steps, printer, live_out=live_out, free=free), printer)
    comments = comments or {}
    lines = []
    for step, planned in zip(steps, statements):
        target = "loss" if step.phase == "loss" else step.target
        lines.append(Line(target, planned, printer.doprint(step.code_expr), step.number,
                          comments.get(target, _comment(step)), reads(step.code_expr)))
    return lines


def _one_exp(steps: list[Step], statements: list[tuple], printer) -> list[tuple]:
    """``log_a = z - logsumexp(z)`` then ``a = exp(log_a)`` as one call with one exp."""
    statements = list(statements)
    for i, (first, second) in enumerate(zip(steps, steps[1:])):
        log_a = sp.Symbol(first.target, real=True)
        code = first.code_expr
        found = code.atoms(LogSumExp)
        if second.code_expr != sp.exp(log_a) or len(found) != 1:
            continue
        (z,) = found.pop().args
        if code != z - LogSumExp(z) or not statements[i] or not statements[i + 1]:
            continue
        printer.helpers.add("_log_softmax")
        statements[i] = (f"{first.target}, {second.target} = _log_softmax({printer.doprint(z)})",
                         *statements[i][1:])
        statements[i + 1] = statements[i + 1][1:]
    return statements


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
        comments[name.name] = (f"({step.number}) layer {step.layer}: softmax activation and "
                               f"its log (the loss reads the log), with one exp")
        comments[step.target] = None  # the second line of the same equation
    return loss, steps, comments


#: The rules whose step is the seed of the backward pass (dL/dY, or delta at the output).
_SEED_RULES = ("loss_derivative", "fused", "fused_softmax", "hinge_derivative")


def _masked_code(printer: ArrayCodePrinter, expr: sp.Basic, params) -> str:
    """The loss with every per-row term weighted by ``mask_rows`` (N*T, 1), for a padding mask.

    Applied outside the derivation: each sum over the output rows, ``Total(l)``, becomes
    ``MaskedTotal(l)`` (printed ``np.sum(mask_rows*(l))``); the weight-decay sums (over
    parameters only) stay as they are.
    """
    rows = {total: MaskedTotal(total.args[0]) for total in expr.atoms(Total)
            if not {s.name for s in total.free_symbols} <= set(params)}
    return printer.doprint(expr.xreplace(rows))


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
    norm = normalisation.codegen_context(derivation)  # running statistics, dropout, ids
    forward = _lines(printer, normalisation.evaluation_steps(forward_steps),
                     live_out={output.name})
    # loss(): the forward steps the loss reads.
    wanted = _needed(forward_steps, set(reads(loss_step.code_expr)))
    forward_for_loss = _lines(printer, wanted + [loss_step], live_out=set())[:-1]
    loss_only = _lines(printer, [loss_step], live_out=set())[0]
    # loss_and_grad(): forward, loss, backward; what the loss shares with the backward
    # pass is computed once, before the loss.
    computed = normalisation.computed(derivation.backward)
    reused, hoisted = _hoist_into_loss(loss_step, computed)
    reused, shared_forward, comments = _share_log_softmax(reused, forward_steps)
    backward_steps = [step for step in computed if step not in hoisted]
    comments["loss"] = _comment(reused) + "".join(
        f", reusing {step.target} from ({step.number})" for step in hoisted)
    # A first Elman layer starts loss_and_grad() from the state h0 (None: zeros), for update().
    stateful = bool(spec.layers) and spec.layers[0].kind == "rnn" and _sequence(spec) is not None
    printer.initial_state = stateful  # its two kernels are printed with h0=h0
    gradient_lines = _lines(printer, shared_forward + hoisted + [reused] + backward_steps,
                            live_out=set(derivation.gradients.values()) | norm["live"],
                            comments=comments, free=True)
    printer.initial_state = False
    split = len(shared_forward) + len(hoisted)
    forward_for_grad, loss_line = gradient_lines[:split], gradient_lines[split]
    backward = gradient_lines[split + 1:]
    sequence = _sequence(spec)
    mask = None
    if sequence and sequence["per_step"]:
        # A padding mask weights the loss rows and the seed of the backward pass.
        seed = next(step.target for step in computed if step.rule in _SEED_RULES)
        mask = {"loss": _masked_code(printer, loss_step.code_expr, graph.params),
                "grad": _masked_code(printer, reused.code_expr, graph.params),
                "seed": seed, "hoisted": seed in {step.target for step in hoisted}}
        if not mask["hoisted"]:
            backward = [replace(line, statements=(*line.statements, "if mask is not None:",
                                                  f"    {seed} = {seed} * mask_rows"))
                        if line.target == seed else line for line in backward]
    spec_path = str(spec_path or spec.source or f"{spec.name}.toml")
    command = f"symgrad generate {shlex.quote(spec_path)}"
    if output_path:
        command += f" -o {shlex.quote(str(output_path))}"
    if dtype != "float64":
        command += f" --dtype {dtype}"
    layers = []
    for index, layer in enumerate(spec.layers, start=1):
        if naming.input_weight(index) in graph.params:  # a recurrent layer: W_xh, W_hh, b
            kind = spec.init.kind if layer.init is None else layer.init
            layers += [{"weight": naming.input_weight(index), "init": kind, "receptive": None,
                        "bias": naming.bias(index) if layer.bias else None,
                        "activation": layer.activation.kind},
                       {"weight": naming.recurrent_weight(index), "init": kind, "bias": None,
                        "activation": layer.activation.kind, "receptive": None}]
            continue
        weight = naming.kernel(index) if layer.kind == "conv2d" else naming.weight(index)
        if weight not in graph.params:
            continue  # pooling and flatten have no parameters
        kind = spec.init.kind if layer.init is None else layer.init
        layers.append({"weight": weight, "bias": naming.bias(index) if layer.bias else None,
                       "init": kind, "activation": layer.activation.kind,
                       "receptive": math.prod(graph.params[weight][2:]) if layer.kind == "conv2d"
                       else None})
    layers += norm["init_layers"]
    layers += attention_rows.init_layers(spec, graph)  # Q, K, V and output projections
    backward_reads = set().union(*(line.reads for line in forward_for_grad + backward),
                                 loss_line.reads)
    for name in [*graph.params, *(node.name for node in graph.nodes),
                 *derivation.gradients.values()]:
        _identifier(name)  # code names only; user text never reaches code unquoted
    template = environment().get_template("module.py.j2")
    source = template.render(
        py=py_literal, doc=text_fragment, comment=comment_text,
        spec=spec, version=__version__, spec_path=spec_path, command=command, dtype=dtype,
        params=dict(graph.params, **norm["buffers"]), forward=forward, forward_for_loss=forward_for_loss,
        forward_for_grad=forward_for_grad, loss_only=loss_only,
        uses_n=naming.BATCH in backward_reads, uses_decay=naming.DECAY in backward_reads,
        loss=loss_line, backward=backward,
        output=output.name, layers=layers, helpers=sorted(printer.helpers),
        kernels=_kernel_sources(printer.helpers), input_shape=spec.input_shape,
        groups=_groups(spec),
        gradients=dict(derivation.gradients, **norm["zero_grads"]), architecture=_architecture(spec),
        training=spec.training, weight_decay=spec.loss.weight_decay,
        init_range=spec.init.range, classes=output.activation.vector or spec.loss.coupled,
        norm=norm, mask=mask,
        sequence=sequence, stateful=_stateful(spec, graph) if stateful else None,
    )
    ast.parse(source)  # a template or printer fault fails here, not on import
    return source


def _stateful(spec: NetworkSpec, graph) -> dict:
    """The first Elman layer's kernel arguments, for the module's ``_last_hidden``."""
    layer = spec.layers[0]
    return {"Wx": naming.input_weight(1), "Wh": naming.recurrent_weight(1),
            "b": naming.bias(1) if layer.bias else None,
            "act": recurrent.ACTIVATIONS[layer.activation.kind],
            "units": graph.params[naming.input_weight(1)][0]}


def _groups(spec: NetworkSpec) -> list[dict]:
    """The columns of X each input group occupies, for the module's docstring."""
    out, start = [], 0
    for name, size in spec.inputs:
        out.append({"name": name, "start": start, "stop": start + size})
        start += size
    return out


def _kernel_sources(helpers: set[str]) -> list[str]:
    """The source of each array kernel the printed steps call, dependencies first."""
    sources = []
    for module in ops.kernel_modules():
        order = dict.fromkeys(name for names in module.HELPERS.values() for name in names)
        sources += [inspect.getsource(getattr(module, name)).rstrip() for name in order
                    if name in helpers]
    return sources


def _sequence(spec: NetworkSpec) -> dict | None:
    """Sequence data: T steps of F features; per-step targets (N, T, K) or last-step (N, K)."""
    if spec.input_shape is None or len(spec.input_shape) != 2:
        return None
    steps, features = spec.input_shape
    return {"steps": steps, "features": features, "per_step": len(spec.layers[-1].shape) == 2}


def _architecture(spec: NetworkSpec) -> str:
    if spec.input_shape is None:
        sizes = [str(spec.n_inputs)] + [str(layer.units) for layer in spec.layers]
        kinds = ", ".join(layer.activation.kind for layer in spec.layers)
    else:
        sizes = ["x".join(map(str, spec.input_shape))] + [_layer_text(layer)
                                                          for layer in spec.layers]
        kinds = ", ".join(layer.activation.kind for layer in spec.layers
                          if layer.kind in ("dense", "conv2d", "rnn"))
    # The parsed expression, never the user's text (which may carry a comment).
    loss = (spec.loss.kind if spec.loss.expr is None
            else f"custom ({sp.sstr(spec.loss.per_output())})")
    return f"{'-'.join(sizes)} ({kinds}); loss {loss}, reduction {spec.loss.reduction}"


def _layer_text(layer) -> str:
    """One layer in words: ``conv 8@3x3``, ``maxpool 2x2``, ``flatten``, ``10``."""
    window = "x".join(map(str, layer.kernel))
    if layer.kind in ("rnn", "lstm", "gru"):
        return f"{layer.kind} {layer.units}" + ("" if len(layer.shape) == 2 else " (last step)")
    return {"conv2d": f"conv {layer.units}@{window}", "maxpool2d": f"maxpool {window}",
            "avgpool2d": f"avgpool {window}", "flatten": "flatten"}.get(layer.kind,
                                                                        str(layer.units))


def write_module(spec: NetworkSpec, path: str | Path, *, dtype: str = "float64",
                 spec_path: str | None = None) -> Path:
    """Generate the module and write it atomically to ``path``."""
    path = Path(path)
    source = generate_module_source(spec, dtype=dtype, spec_path=spec_path,
                                    output_path=str(path))
    write_atomically(path, source)
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
