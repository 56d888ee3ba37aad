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
        return self.node(name).op not in ("input", "slice")

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


#: The nodes each kind of layer adds: the last one is the layer's output.
_LAYERS = {"dense": _dense, "conv2d": _conv2d, "maxpool2d": _pool, "avgpool2d": _pool,
           "flatten": _flatten}
