"""The network as a graph of tensor operations.

Contract: :func:`build_graph` turns a :class:`~symgrad.spec.NetworkSpec` into
a :class:`Graph`: nodes in topological order, each an operation (``input``,
``slice`` of an input group, ``dense`` over the concatenation of its
sources, ``activation``), plus the parameters with their shapes.  Names are
the ones the derivation, the LaTeX and the generated code share (see
:mod:`symgrad.naming`).  Skip connections are nodes with several consumers;
multi-input layers are dense nodes with several sources.

>>> from symgrad.spec import Network
>>> g = build_graph(Network(inputs=2).dense(2, "tanh").dense(1).loss("sse").build())
>>> [n.name for n in g.nodes]
['X', 'z1', 'a1', 'z2', 'a2']
>>> g.params
{'W1': (2, 2), 'b1': (2,), 'W2': (1, 2), 'b2': (1,)}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import naming
from .ops import attention_rows
from .spec import INPUT, Activation, Layer, NetworkSpec


@dataclass(frozen=True)
class Node:
    """One tensor operation; ``size`` is its number of columns (batch-first)."""

    name: str
    op: str  # a row of symgrad.ops: input | slice | dense | activation | conv2d | ...
    sources: tuple[str, ...] = ()
    size: int = 0
    layer: int | None = None
    start: int = 0  # slice: first column of X
    activation: Activation | None = None
    weight: str | None = None
    bias: str | None = None
    dims: tuple[int, ...] = ()  # per-sample shape when it is not flat: (C, H, W)
    kernel: tuple[int, int] | None = None  # convolution kernel or pooling window
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The per-sample shape of the node's value: ``(size,)`` unless it has ``dims``."""
        return self.dims or (self.size,)


@dataclass
class Graph:
    """Nodes in topological order, the parameters and the output node."""

    spec: NetworkSpec
    nodes: list[Node]
    params: dict[str, tuple[int, ...]]
    output: str
    consumers: dict[str, list[str]] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        return self._by_name[name]

    def __post_init__(self) -> None:
        self._by_name = {n.name: n for n in self.nodes}
        for n in self.nodes:
            self.consumers.setdefault(n.name, [])
            for source in n.sources:
                self.consumers[source].append(n.name)

    def needs_gradient(self, name: str) -> bool:
        """Whether dL/d(node) is needed: true for every node downstream of a parameter."""
        node = self.node(name)
        if node.op in ("merge_time", "split_time"):  # a view: as its operand (X's rows: none)
            return self.needs_gradient(node.sources[0])
        return node.op not in ("input", "slice")

    def blocks(self, dense: Node) -> list[tuple[str, int, int]]:
        """(source, first column, last column + 1) of each source's block of W."""
        out, start = [], 0
        for source in dense.sources:
            size = self.node(source).size
            out.append((source, start, start + size))
            start += size
        return out


def build_graph(spec: NetworkSpec) -> Graph:
    """Build the operation graph of a validated spec."""
    dims = tuple(spec.input_shape or ())
    nodes = [Node(naming.INPUT, "input", size=spec.n_inputs, dims=dims if len(dims) > 1 else ())]
    aliases = {INPUT: naming.INPUT}
    if len(spec.inputs) == 1:
        aliases[spec.inputs[0][0]] = naming.INPUT  # one group: the whole of X
    else:
        start = 0
        for group, size in spec.inputs:
            name = naming.input_group(group)
            nodes.append(Node(name, "slice", (naming.INPUT,), size, start=start))
            aliases[group] = name
            start += size
    by_name = {node.name: node for node in nodes}
    params: dict[str, tuple[int, ...]] = {}
    for index, layer in enumerate(spec.layers, start=1):
        sources = tuple(aliases[s] for s in layer.sources)
        inputs = [by_name[s] for s in sources]
        for node in _LAYERS[layer.kind](layer, index, sources, inputs, params):
            nodes.append(node)
            by_name[node.name] = node
        aliases[layer.name] = nodes[-1].name
    return Graph(spec, nodes, params, output=nodes[-1].name)


def _dense(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
    weight, bias = naming.weight(index), naming.bias(index) if layer.bias else None
    params[weight] = (layer.units, sum(node.size for node in inputs))
    if bias:
        params[bias] = (layer.units,)
    z, a = naming.pre_activation(index), naming.activation(index)
    return [Node(z, "dense", sources, layer.units, index, weight=weight, bias=bias),
            Node(a, "activation", (z,), layer.units, index, activation=layer.activation)]


def _conv2d(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
    kernel, bias = naming.kernel(index), naming.bias(index) if layer.bias else None
    params[kernel] = (layer.units, inputs[0].shape[0], *layer.kernel)
    if bias:
        params[bias] = (layer.units,)
    z, a = naming.pre_activation(index), naming.activation(index)
    size, dims = math.prod(layer.shape), tuple(layer.shape)
    return [Node(z, "conv2d", sources, size, index, weight=kernel, bias=bias, dims=dims,
                 kernel=layer.kernel, stride=layer.stride, padding=layer.padding),
            Node(a, "activation", (z,), size, index, activation=layer.activation, dims=dims)]


def _pool(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
    return [Node(naming.activation(index), layer.kind, sources, math.prod(layer.shape), index,
                 dims=tuple(layer.shape), kernel=layer.kernel, stride=layer.stride)]


def _flatten(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
    return [Node(naming.activation(index), "flatten", sources, inputs[0].size, index)]


def _per_step(make):
    """A layer that reads rows: each sequence source (dims (T, U)) first folded into rows."""
    def build(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
        if not any(len(node.dims) == 2 for node in inputs):
            return make(layer, index, sources, inputs, params)
        views = [Node(naming.rows(node.name, index), "merge_time", (node.name,), node.dims[-1],
                      index) if len(node.dims) == 2 else node for node in inputs]
        made = make(layer, index, tuple(v.name for v in views), views, params)
        return [v for v in views if v.op == "merge_time"] + made
    return build


#: Rows of each gate a recurrent kind stacks in W_xh, W_hh and b.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _recurrent(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
    """A recurrent layer over a sequence (a dense layer's rows are split back into one first)."""
    nodes, source = [], inputs[0]
    if len(source.dims) != 2:  # the rows of a per-step dense layer
        source = Node(naming.steps(source.name, index), "split_time", (source.name,),
                      layer.steps * source.size, index, dims=(layer.steps, source.size))
        nodes.append(source)
    rows = GATES[layer.kind] * layer.units
    params[naming.input_weight(index)] = (rows, source.dims[-1])
    params[naming.recurrent_weight(index)] = (rows, layer.units)
    bias = naming.bias(index) if layer.bias else None
    if bias:
        params[bias] = (rows,)
    dims = (layer.steps, layer.units)
    sequences = len(layer.shape) == 2
    states = naming.activation(index) if sequences else naming.hidden(index)
    nodes.append(Node(states, layer.kind, (source.name,), math.prod(dims), index,
                      activation=layer.activation, weight=naming.input_weight(index), bias=bias,
                      dims=dims))
    if not sequences:
        nodes.append(Node(naming.activation(index), "last_step", (states,), layer.units, index))
    return nodes


#: The nodes each kind of layer adds: the last one is the layer's output.
_LAYERS = {"dense": _per_step(_dense), "conv2d": _conv2d, "maxpool2d": _pool, "avgpool2d": _pool,
           "flatten": _flatten, "rnn": _recurrent, "lstm": _recurrent, "gru": _recurrent}


def _norm(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
    """Layer or batch norm (scale gamma, shift beta), then its activation."""
    gamma, beta = naming.norm_scale(index), naming.norm_shift(index)
    params[gamma] = params[beta] = (layer.units,)
    z, a = naming.pre_activation(index), naming.activation(index)
    return [Node(z, layer.kind, sources, layer.units, index, weight=gamma, bias=beta),
            Node(a, "activation", (z,), layer.units, index, activation=layer.activation)]


def _embedding(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
    table = naming.embedding_table(index)
    options = dict(layer.options)
    params[table] = (options["vocab"], options["dim"])
    return [Node(naming.activation(index), "embedding", sources, layer.units, index,
                 weight=table)]


def _dropout(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
    return [Node(naming.activation(index), "dropout", sources, inputs[0].size, index,
                 dims=inputs[0].dims)]


_LAYERS.update(layernorm=_norm, batchnorm=_norm, embedding=_embedding, dropout=_dropout)


def _attention(layer: Layer, index: int, sources, inputs, params) -> list[Node]:
    """Q, K, V and output projections; a per-step dense layer's rows are split back first."""
    nodes, source = [], inputs[0]
    if len(source.dims) != 2:
        source = Node(naming.steps(source.name, index), "split_time", (source.name,),
                      layer.steps * source.size, index, dims=(layer.steps, source.size))
        nodes.append(source)
    width, dk = source.dims[-1], dict(layer.options)["dk"]
    for role in attention_rows.ROLES:
        params[attention_rows.weight_name(role, index)] = \
            (width, dk) if role == "o" else (dk, width)
        if layer.bias and role in attention_rows.BIASED:
            params[attention_rows.bias_name(role, index)] = (width,) if role == "o" else (dk,)
    nodes.append(Node(naming.activation(index), "attention", (source.name,),
                      layer.steps * width, index, weight=attention_rows.weight_name("q", index),
                      bias=attention_rows.bias_name("q", index) if layer.bias else None,
                      dims=(layer.steps, width)))
    return nodes


_LAYERS.update(attention=_attention)
