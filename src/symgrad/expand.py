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

import re

import sympy as sp

from . import naming, primitives
from .errors import BadInput
from .graph import Graph, build_graph
from .spec import NetworkSpec, SpecError

__all__ = ["MAX_PARAMETERS", "weight_symbols", "input_symbols", "target_symbols",
           "latex_names", "scalar_loss", "per_weight_gradients", "DeltaForm", "parse_weight",
           "WeightNameError"]

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
    if spec.loss.coupled:
        raise SpecError(f"per-weight expansion covers per-output losses; {spec.loss.kind} "
                        "couples the outputs; use the matrix form", field="loss.kind",
                        path=spec.source)
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


# --------------------------------------------------------------------------- the delta form

def unit_symbol(kind: str, layer: int, j: int) -> sp.Symbol:
    """One unit's scalar: ``unit_symbol("a", 2, 0)`` is ``a2_0`` (printed ``a^{(2)}_{0}``)."""
    return sp.Symbol(f"{kind}{layer}_{j}", real=True)


class WeightNameError(BadInput):
    """A ``--weight`` that names no parameter entry of the network."""


def parse_weight(text: str, shapes: dict[str, tuple]) -> tuple[str, tuple[int, ...]]:
    """``"W2[0,1]"`` -> ``("W2", (0, 1))``; a bias takes one index (``"b1[0]"``).

    >>> parse_weight("W2[0, 1]", {"W2": (1, 2), "b2": (1, 1)})
    ('W2', (0, 1))
    >>> parse_weight("W2[1,0]", {"W2": (1, 2)})
    Traceback (most recent call last):
    ...
    symgrad.expand.WeightNameError: --weight 'W2[1,0]': W2 is 1x2, rows 0..0 and columns 0..1 (indices count from 0)
    """
    shown = repr(str(text)[:40])
    match = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*\[\s*(\d+)\s*(?:(?:,\s*|\]\s*\[\s*)(\d+)\s*)?\]\s*",
                         str(text))
    if not match:
        raise WeightNameError(f"--weight {shown}: expected a parameter entry such as "
                              f"'W1[0,1]' or 'b1[0]'")
    name, first, second = match.groups()
    if name not in shapes:
        raise WeightNameError(f"--weight {shown}: no parameter {name} (parameters: "
                              f"{', '.join(shapes)})")
    rows, cols = shapes[name]
    bias = name.startswith("b")
    idx = (int(first),) if second is None else (int(first), int(second))
    if bias and len(idx) == 2 and idx[1] == 0:
        idx = idx[:1]
    if bias:
        if len(idx) != 1 or idx[0] >= rows:
            raise WeightNameError(f"--weight {shown}: {name} has {rows} entries, "
                                  f"{name}[0]..{name}[{rows - 1}] (indices count from 0)")
        return name, (idx[0], 0)
    if len(idx) != 2 or idx[0] >= rows or idx[1] >= cols:
        raise WeightNameError(f"--weight {shown}: {name} is {rows}x{cols}, rows 0..{rows - 1} "
                              f"and columns 0..{cols - 1} (indices count from 0)")
    return name, idx


class DeltaForm:
    r"""Every weight's derivative written with named error signals, as textbooks write it.

    For one sample, ``delta<l>_<j>`` (:math:`\delta^{(l)}_j = \partial\ell/\partial z^{(l)}_j`)
    and ``a<l>_<j>`` (:math:`a^{(l)}_j`, unit j's activation; the inputs are ``x_<i>``)
    stand for numbers the forward and backward passes compute once, so
    ``dl/dw^{(l)}_{ji} = delta^{(l)}_j a_i`` (plus ``lambda w`` with weight decay) and
    the error signals are defined one unit at a time, top layer first
    (:attr:`deltas`).  Printed, the whole gradient grows linearly with the number of
    weights, where the fully expanded scalar derivatives (:func:`per_weight_gradients`)
    grow with depth as nested sums.

    Each error signal is derived by SymPy from the scalar network: the output's from
    the per-output loss and the activation (``l'(a) f'(z)``, rewritten in the forward
    value ``a`` and simplified together where they cancel, so binary cross-entropy on a
    sigmoid gives ``a - t``), a hidden unit's as ``f'(z_j) sum_m sum_k delta^{(m)}_k
    dz^{(m)}_k/da_j`` over every layer m that reads it (``sympy.diff`` of the weighted
    sums).  :meth:`expanded` substitutes everything back; it equals
    :func:`per_weight_gradients` (softmax with cross-entropy: for targets summing to 1).

    >>> from symgrad.spec import Network
    >>> spec = Network(inputs=1).dense(1, "sigmoid").loss("bce").build()
    >>> form = DeltaForm(spec)
    >>> form.deltas
    [(delta1_0, a1_0 - t_0)]
    >>> form.gradients["W1"]
    Matrix([[delta1_0*x_0]])
    """

    def __init__(self, spec: NetworkSpec):
        graph = build_graph(spec)
        _check_size(spec, graph)
        self.spec, self.graph = spec, graph
        self.params = weight_symbols(spec)
        inputs = list(input_symbols(spec).row(0))
        targets = list(target_symbols(spec).row(0))
        self.targets = targets
        values: dict[str, list] = {}  # node -> its units, as symbols
        self.forward: list[tuple[sp.Symbol, sp.Expr]] = []  # z and a of every unit
        self.fan_in: dict[int, list] = {}
        self.layer_of: dict = {}
        for node in graph.nodes:
            if node.op == "input":
                values[node.name] = inputs
            elif node.op == "slice":
                values[node.name] = inputs[node.start:node.start + node.size]
            elif node.op == "dense":
                fan_in = [v for source in node.sources for v in values[source]]
                self.fan_in[node.layer] = fan_in
                self.layer_of.update({node.weight: node.layer, node.bias: node.layer})
                weight = self.params[node.weight]
                units = []
                for j in range(node.size):
                    z = unit_symbol("z", node.layer, j)
                    self.forward.append((z, sp.Add(*(weight[j, k] * fan_in[k]
                                                      for k in range(len(fan_in))))
                                         + (self.params[node.bias][j, 0] if node.bias else 0)))
                    units.append(z)
                values[node.name] = units
            elif node.op == "activation":
                z = values[node.sources[0]]
                units = [unit_symbol("a", node.layer, j) for j in range(node.size)]
                function = node.activation.forward()
                if function is None:  # softmax
                    total = sp.Add(*(sp.exp(u) for u in z))
                    self.forward += [(a, sp.exp(u) / total) for a, u in zip(units, z)]
                else:
                    self.forward += [(a, function.xreplace({primitives.x: u}))
                                     for a, u in zip(units, z)]
                values[node.name] = units
            else:
                raise SpecError(f"per-weight expansion covers dense layers; '{node.op}' "
                                "is not one", field="layers", path=spec.source)
        self.values = values
        self.softmax_cross_entropy = False
        self.slopes: dict = {}  # f_l' by name, where f' is not a function of a
        self.parts: dict = {}  # delta -> (f'(z), dl/da): the product as a textbook prints it
        self.deltas = self._deltas()
        self.gradients = self._gradients()

    # -- error signals

    def _deltas(self) -> list[tuple[sp.Symbol, sp.Expr]]:
        graph, spec = self.graph, self.spec
        per_output = spec.loss.per_output().subs(primitives.K, spec.n_outputs)
        definitions: dict[str, list] = {}
        out = []
        for node in reversed(graph.nodes):
            if node.op != "activation":
                continue
            layer, units = node.layer, self.values[node.name]
            zs = self.values[node.sources[0]]
            if node.name == graph.output:
                derivative = sp.factor_terms(primitives.loss_derivative(per_output))
                upstream = [derivative.xreplace({primitives.y: a, primitives.t: t})
                            for a, t in zip(units, self.targets)]
            else:
                upstream = [self._upstream(node.name, j) for j in range(node.size)]
            function = node.activation.forward()
            if function is None:  # softmax: a_j (g_j - sum_k g_k a_k)
                if node.name == graph.output and spec.loss.kind == "cross_entropy":
                    self.softmax_cross_entropy = True
                    signals = [a - t for a, t in zip(units, self.targets)]
                else:
                    mean = sp.Add(*(g * a for g, a in zip(upstream, units)))
                    signals = [a * (g - mean) for g, a in zip(upstream, units)]
            else:
                fused = (primitives.fused_delta(per_output, function)
                         if node.name == graph.output else None)
                slope = primitives.in_forward_terms(function)
                signals = []
                for j, (a, z, g) in enumerate(zip(units, zs, upstream)):
                    if fused is not None:
                        signals.append(fused.xreplace({primitives.a: a,
                                                       primitives.t: self.targets[j]}))
                        continue
                    if function == primitives.x:
                        signals.append(g)
                        continue
                    if slope is not None:
                        local = slope.xreplace({primitives.a: a})
                    else:  # f' once, by name: f_l'(z_j)
                        prime = sp.Function(f"fprime{layer}", real=True)
                        self.slopes[prime] = primitives.activation_derivative(function)
                        local = prime(z)
                    signals.append(g * local)
                    self.parts[unit_symbol("delta", layer, j)] = (local, g)
            symbols = [unit_symbol("delta", layer, j) for j in range(node.size)]
            definitions[node.sources[0]] = symbols
            out += list(zip(symbols, signals))
        return out

    def _upstream(self, name: str, j: int) -> sp.Expr:
        """``dl/da_j``: every weighted sum that reads unit j, by ``sympy.diff``."""
        unit = self.values[name][j]
        forward = dict(self.forward)
        total = sp.S.Zero
        for consumer in self.graph.consumers[name]:
            node = self.graph.node(consumer)
            for k, z in enumerate(self.values[node.name]):
                total += unit_symbol("delta", node.layer, k) * sp.diff(forward[z], unit)
        return total

    def _gradients(self) -> dict[str, sp.ImmutableMatrix]:
        out = {}
        decay = bool(self.spec.loss.weight_decay)
        for node in self.graph.nodes:
            if node.op != "dense":
                continue
            layer, fan_in = node.layer, self.fan_in[node.layer]
            weight = self.params[node.weight]
            out[node.weight] = sp.ImmutableMatrix(*weight.shape, lambda j, k: (
                unit_symbol("delta", layer, j) * fan_in[k]
                + (LAMBDA * weight[j, k] if decay else 0)))
            if node.bias:
                out[node.bias] = sp.ImmutableMatrix(
                    node.size, 1, lambda j, _: unit_symbol("delta", layer, j))
        return {name: out[name] for name in self.params}

    # -- views

    def shown(self, symbol: sp.Symbol) -> sp.Expr:
        """A delta's definition for print: slope first, then the upstream sum, unexpanded."""
        if symbol in self.parts:
            local, upstream = self.parts[symbol]
            return sp.Mul(local, upstream, evaluate=False)
        return dict(self.deltas)[symbol]

    def signal(self, param: str, idx: tuple) -> sp.Symbol:
        """The error signal in a parameter entry's derivative: delta^{(l)}_j."""
        return unit_symbol("delta", self.layer_of[param], idx[0])

    def input_of(self, param: str, idx: tuple) -> sp.Expr:
        """What weight ``param[j, i]`` multiplies: input i of its layer (an a or an x)."""
        return self.fan_in[self.layer_of[param]][idx[1]]

    def entry(self, text: str) -> tuple[str, tuple[int, ...]]:
        """``"W2[0,1]"`` -> ``("W2", (0, 1))``, checked against the network's parameters."""
        return parse_weight(text, {name: m.shape for name, m in self.params.items()})

    def needed(self, expr: sp.Expr) -> list[tuple[sp.Symbol, sp.Expr]]:
        """The error-signal definitions ``expr`` uses, directly or through others, top first."""
        wanted = {s for s in expr.free_symbols if s.name.startswith("delta")}
        out = []
        for symbol, definition in self.deltas:  # top layer first: a definition uses only
            if symbol in wanted:               # deltas defined above it
                wanted |= {s for s in definition.free_symbols if s.name.startswith("delta")}
        for symbol, definition in self.deltas:
            if symbol in wanted:
                out.append((symbol, definition))
        return out

    def expanded(self) -> dict[str, sp.ImmutableMatrix]:
        """The gradients with every delta, activation and weighted sum substituted back."""
        values: dict[sp.Symbol, sp.Expr] = {}
        slopes = {prime: sp.Lambda(primitives.x, derivative)
                  for prime, derivative in self.slopes.items()}
        for symbol, expr in self.forward:
            values[symbol] = expr.xreplace(values)
        for symbol, expr in self.deltas:
            values[symbol] = expr.replace(lambda e: type(e) in slopes,
                                          lambda e: slopes[type(e)](*e.args)).xreplace(values)
        return {name: matrix.xreplace(values) for name, matrix in self.gradients.items()}

    def latex_names(self) -> dict[sp.Symbol, str]:
        """LaTeX for every symbol of the delta form (weights, inputs, units)."""
        names = latex_names(self.spec)
        for symbol, _ in self.forward + self.deltas:
            head, _, j = symbol.name.partition("_")
            letter = head.rstrip("0123456789")
            layer = head[len(letter):]
            head = r"\delta" if letter == "delta" else letter
            names[symbol] = f"{head}^{{({layer})}}_{{{j}}}"
        return names

