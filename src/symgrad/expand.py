"""Per-weight mode: the network written out in scalars, differentiated weight by weight.

Contract: for a small network, :func:`per_weight_gradients` builds the
scalar loss exactly as the spec defines it and asks ``sympy.diff`` for the
derivative with respect to every single weight and bias, the way the 1986
paper writes ``dE/dw_ji``.  It is the user-facing ``--per-weight`` view,
printed next to the layer-level (matrix) derivation, and an independent
check of it: nothing here uses :mod:`symgrad.derive`.

Symbols (all real): weight ``W<l>[j, k]`` is ``w<l>_<j>_<k>``, printed
``w^{(l)}_{jk}``; bias ``b<l>[j]`` is ``b<l>_<j>``, printed ``b^{(l)}_{j}``;
indices count from 0 as in the generated code (a comma separates them once
one reaches 10).  The weight decay is the symbol ``weight_decay`` (printed
``\\lambda``), the one the matrix form uses, and appears only when the spec
sets a decay: ``L = reduce(sum of l(y_j, t_j)) + lambda/2 sum w**2``
(weights only, not biases).

Samples: by default (``samples=None``) the loss is that of ONE sample,
inputs ``x_<i>`` (``x_{i}``) and targets ``t_<j>``, which is what the
per-weight LaTeX shows; a batch gradient is the sum (``reduction="sum"``)
or the mean over samples of the loss part, plus ``lambda w``.  With
``samples=n`` the loss is that of a batch of n samples, inputs
``x_<s>_<i>`` (``x_{s,i}``), with the spec's reduction (mean divides by n):
the exact scalar counterpart of the matrix form with ``N = n``.

Networks with more than :data:`MAX_PARAMETERS` weights and biases are
refused with a :class:`~symgrad.spec.SpecError`.

>>> from symgrad.spec import Network
>>> spec = Network(inputs=1).dense(1, "identity").loss("sse").build()
>>> per_weight_gradients(spec)["W1"]
Matrix([[x_0*(b1_0 - t_0 + w1_0_0*x_0)]])
"""

from __future__ import annotations

import sympy as sp

from . import naming, primitives
from .graph import Graph, build_graph
from .spec import NetworkSpec, SpecError

__all__ = ["MAX_PARAMETERS", "weight_symbols", "input_symbols", "target_symbols",
           "latex_names", "scalar_loss", "per_weight_gradients"]

#: The most weights and biases a network may have for per-weight expansion.
MAX_PARAMETERS = 200

LAMBDA = sp.Symbol(naming.DECAY, nonnegative=True)  # the symbol the matrix form uses


def _index(*indices: int) -> str:
    """``01`` for small indices, ``10,11`` once one has two digits."""
    return ("," if any(i >= 10 for i in indices) else "").join(map(str, indices))


def weight_symbols(spec: NetworkSpec) -> dict[str, sp.ImmutableMatrix]:
    """Every parameter as a matrix of scalar symbols: W (units, fan_in), b (units, 1)."""
    out = {}
    for name, shape in build_graph(spec).params.items():
        layer = name[1:]
        if name.startswith("W"):
            out[name] = sp.ImmutableMatrix(*shape, lambda j, k: sp.Symbol(
                f"w{layer}_{j}_{k}", real=True))
        else:
            out[name] = sp.ImmutableMatrix(shape[0], 1, lambda j, _: sp.Symbol(
                f"b{layer}_{j}", real=True))
    return out


def _sample_symbols(letter: str, size: int, samples: int | None) -> sp.ImmutableMatrix:
    if samples is None:
        return sp.ImmutableMatrix(1, size, lambda _, i: sp.Symbol(f"{letter}_{i}", real=True))
    return sp.ImmutableMatrix(samples, size, lambda n, i: sp.Symbol(f"{letter}_{n}_{i}",
                                                                    real=True))


def input_symbols(spec: NetworkSpec, samples: int | None = None) -> sp.ImmutableMatrix:
    """The inputs as symbols, one row per sample (one row ``x_i`` when samples is None)."""
    return _sample_symbols("x", spec.n_inputs, samples)


def target_symbols(spec: NetworkSpec, samples: int | None = None) -> sp.ImmutableMatrix:
    """The targets as symbols, one row per sample (one row ``t_j`` when samples is None)."""
    return _sample_symbols("t", spec.n_outputs, samples)


def latex_names(spec: NetworkSpec, samples: int | None = None) -> dict[sp.Symbol, str]:
    """LaTeX for every scalar symbol, for ``sympy.latex(expr, symbol_names=...)``.

    >>> from symgrad.spec import Network
    >>> names = latex_names(Network(inputs=2).dense(1).loss("sse").build())
    >>> names[sp.Symbol("w1_0_1", real=True)], names[sp.Symbol("x_1", real=True)]
    ('w^{(1)}_{01}', 'x_{1}')
    """
    names: dict[sp.Symbol, str] = {LAMBDA: r"\lambda"}
    for name, matrix in weight_symbols(spec).items():
        layer = name[1:]
        for j in range(matrix.shape[0]):
            for k in range(matrix.shape[1]):
                if name.startswith("W"):
                    names[matrix[j, k]] = f"w^{{({layer})}}_{{{_index(j, k)}}}"
                else:
                    names[matrix[j, k]] = f"b^{{({layer})}}_{{{j}}}"
    for letter, matrix in (("x", input_symbols(spec, samples)),
                           ("t", target_symbols(spec, samples))):
        for n in range(matrix.shape[0]):
            for i in range(matrix.shape[1]):
                names[matrix[n, i]] = (f"{letter}_{{{i}}}" if samples is None
                                       else f"{letter}_{{{n},{i}}}")
    return names


def _check_size(spec: NetworkSpec, graph: Graph) -> None:
    count = sum(int(sp.prod(shape)) for shape in graph.params.values())
    if count > MAX_PARAMETERS:
        raise SpecError(f"per-weight expansion is for small networks: this one has {count} "
                        f"weights and biases (at most {MAX_PARAMETERS}); use the matrix form",
                        field="layers", path=spec.source)


def _forward(graph: Graph, params: dict, inputs: list[sp.Expr]) -> list[sp.Expr]:
    """One sample through the network: the output units as scalar expressions."""
    values: dict[str, list[sp.Expr]] = {}
    for node in graph.nodes:
        if node.op == "input":
            values[node.name] = list(inputs)
        elif node.op == "slice":
            values[node.name] = list(inputs[node.start:node.start + node.size])
        elif node.op == "dense":
            fan_in = [v for source in node.sources for v in values[source]]
            weight = params[node.weight]
            values[node.name] = [
                sp.Add(*(weight[j, k] * fan_in[k] for k in range(len(fan_in))))
                + (params[node.bias][j, 0] if node.bias else 0)
                for j in range(node.size)
            ]
        else:
            z = values[node.sources[0]]
            forward = node.activation.forward()
            if forward is None:  # softmax, written out
                exps = [sp.exp(u) for u in z]
                total = sp.Add(*exps)
                values[node.name] = [e / total for e in exps]
            else:
                values[node.name] = [forward.xreplace({primitives.x: u}) for u in z]
    return values[graph.output]


def scalar_loss(spec: NetworkSpec, samples: int | None = None) -> sp.Expr:
    """The loss as one scalar expression in inputs, targets, weights (and lambda)."""
    graph = build_graph(spec)
    _check_size(spec, graph)
    params = weight_symbols(spec)
    inputs, targets = input_symbols(spec, samples), target_symbols(spec, samples)
    per_output = spec.loss.per_output().subs(primitives.K, spec.n_outputs)
    terms = []
    for n in range(inputs.shape[0]):
        outputs = _forward(graph, params, list(inputs.row(n)))
        terms += [per_output.xreplace({primitives.y: y, primitives.t: t})
                  for y, t in zip(outputs, targets.row(n))]
    loss = sp.Add(*terms)
    if spec.loss.reduction == "mean" and samples is not None:
        loss = loss / samples
    if spec.loss.weight_decay:
        loss += LAMBDA / 2 * sp.Add(*(w**2 for name, matrix in params.items()
                                      if name.startswith("W") for w in matrix))
    return loss


def _tidy(expr: sp.Expr) -> sp.Expr:
    """A shorter equal form when SymPy finds one cheaply, else ``expr``."""
    size = sp.count_ops(expr)
    candidates = [expr]
    if size <= 200:
        candidates.append(sp.factor_terms(expr))
    if size <= 40:  # simplify is slow on the nested exponentials of deep nets
        candidates.append(sp.simplify(expr))
    return min(candidates, key=sp.count_ops)


def per_weight_gradients(spec: NetworkSpec, *, simplify: bool = True,
                         samples: int | None = None) -> dict[str, sp.ImmutableMatrix]:
    """``dL/dw`` for every weight and bias, as matrices shaped like the parameters.

    Keys are the parameter names (``W1``, ``b1``, ...); biases are (units, 1)
    columns.  ``simplify`` tidies each entry cheaply (``factor_terms`` on
    mid-sized entries, ``sympy.simplify`` on short ones only: on the nested exponentials of
    a sigmoid network it takes seconds per entry and rarely shortens them).
    """
    loss = scalar_loss(spec, samples)
    out = {}
    for name, matrix in weight_symbols(spec).items():
        def entry(j: int, k: int, matrix=matrix) -> sp.Expr:
            derivative = sp.diff(loss, matrix[j, k])
            return _tidy(derivative) if simplify else derivative
        out[name] = sp.ImmutableMatrix(*matrix.shape, entry)
    return out
