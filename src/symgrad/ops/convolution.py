"""Rows of the convolutional family (LeCun 1989): convolution, max and average pooling, flatten.

Forward forms and VJPs are the expression classes of :mod:`symgrad.ops.conv`:
``Z = A \\star K + b`` (cross-correlation, one kernel shared by every
position), ``dL/dK = A \\star delta`` summed over the batch and positions,
``dL/db = delta`` summed the same way, ``dL/dA`` the full convolution of the
stride-dilated delta with the kernel rotated by 180 degrees; max pooling
routes each gradient to the arg-max of its window (the first maximum on a
tie), average pooling spreads it evenly over the window; flatten reshapes.
Proof obligation: ``tests/test_ops_conv.py`` checks each VJP against
``sympy.diff`` of the operation written out in scalars, with strides,
padding and several channels.
"""

from __future__ import annotations

from .conv import (
    AvgPool2d,
    AvgPool2dGrad,
    ChannelSum,
    Conv2d,
    Conv2dGradInput,
    Conv2dGradKernel,
    Flatten,
    MaxPool2d,
    MaxPool2dGrad,
    Unflatten,
)
from .registry import Op, Rule, Term, register


@register
class Convolution(Op):
    kind = "conv2d"
    rules = {
        "conv2d": Rule("convolution layer: the input cross-correlated with each kernel, plus bias "
                       "(one kernel shared by every position)",
                       "layer {layer}: input cross-correlated with K{layer}, plus bias"),
        "conv_kernel": Rule("gradient of a kernel: the layer input correlated with delta, summed "
                            "over the batch and every position (weight sharing)",
                            "dL/dK{layer} = input correlated with delta{layer}, summed over "
                            "the batch and positions"),
        "conv_bias": Rule("gradient of a convolution bias: delta summed over the batch and "
                          "every position",
                          "dL/db{layer} = delta{layer} summed over the batch and positions"),
        "conv_input": Rule("chain rule through a convolution: the full convolution of delta "
                           "(zero-dilated by the stride) with the kernel rotated by 180 degrees",
                           "dL/d{wrt}: delta{consumer} fully convolved with K{consumer} "
                           "rotated 180 degrees"),
    }

    def forward(self, node, d) -> None:
        (sh, sw), (ph, pw) = node.stride, node.padding
        bias = d.array(node.bias) if node.bias else 0
        expr = Conv2d(d.array(node.sources[0]), d.array(node.weight), bias, sh, sw, ph, pw)
        d.add("forward", node.name, expr, "conv2d", d.shape(node), node.layer)

    def vjp(self, node, d):
        (sh, sw), (ph, pw), (kh, kw) = node.stride, node.padding, node.kernel
        source = d.graph.node(node.sources[0])
        A, K = d.array(source.name), d.array(node.weight)
        delta = d.array(d.gradient_name(node.name))
        kernel_grad = Conv2dGradKernel(A, delta, sh, sw, ph, pw, kh, kw)
        if d.spec.loss.weight_decay:
            kernel_grad = kernel_grad + d.LAMBDA * K
        yield Term(node.weight, kernel_grad, "conv_kernel")
        if node.bias:
            yield Term(node.bias, ChannelSum(delta), "conv_bias")
        _, height, width = source.shape
        yield Term(source.name, Conv2dGradInput(delta, K, sh, sw, ph, pw, height, width),
                   "conv_input", dict(consumer=node.layer))


@register
class MaxPool(Op):
    kind = "maxpool2d"
    rules = {
        "maxpool2d": Rule("max pooling: the largest entry of each window",
                          "layer {layer}: max pooling"),
        "maxpool_route": Rule("chain rule through max pooling: each gradient goes to the arg-max "
                              "of its window (the first maximum on a tie)",
                              "dL/d{wrt}: each gradient routed to the arg-max of its window"),
    }

    def forward(self, node, d) -> None:
        (kh, kw), (sh, sw) = node.kernel, node.stride
        d.add("forward", node.name, MaxPool2d(d.array(node.sources[0]), kh, kw, sh, sw),
              "maxpool2d", d.shape(node), node.layer)

    def vjp(self, node, d):
        (kh, kw), (sh, sw) = node.kernel, node.stride
        source = node.sources[0]
        upstream = d.array(d.gradient_name(node.name))
        yield Term(source, MaxPool2dGrad(upstream, d.array(source), kh, kw, sh, sw),
                   "maxpool_route")


@register
class AvgPool(Op):
    kind = "avgpool2d"
    rules = {
        "avgpool2d": Rule("average pooling: the mean of each window",
                          "layer {layer}: average pooling"),
        "avgpool_spread": Rule("chain rule through average pooling: each gradient spread evenly "
                               "over its window, divided by the window size",
                               "dL/d{wrt}: each gradient spread over its window, divided by "
                               "its size"),
    }

    def forward(self, node, d) -> None:
        (kh, kw), (sh, sw) = node.kernel, node.stride
        d.add("forward", node.name, AvgPool2d(d.array(node.sources[0]), kh, kw, sh, sw),
              "avgpool2d", d.shape(node), node.layer)

    def vjp(self, node, d):
        (kh, kw), (sh, sw) = node.kernel, node.stride
        source = d.graph.node(node.sources[0])
        _, height, width = source.shape
        upstream = d.array(d.gradient_name(node.name))
        yield Term(source.name, AvgPool2dGrad(upstream, kh, kw, sh, sw, height, width),
                   "avgpool_spread")


@register
class FlattenRow(Op):
    kind = "flatten"
    rules = {
        "flatten": Rule("flatten: each sample's channels, rows and columns laid out as one row",
                        "layer {layer}: flatten each sample to one row"),
        "unflatten": Rule("chain rule through flatten: each gradient row reshaped back to "
                          "channels, rows and columns",
                          "dL/d{wrt}: the gradient row reshaped back to channels, rows, columns"),
    }

    def forward(self, node, d) -> None:
        d.add("forward", node.name, Flatten(d.array(node.sources[0])), "flatten", d.shape(node),
              node.layer)

    def vjp(self, node, d):
        source = d.graph.node(node.sources[0])
        upstream = d.array(d.gradient_name(node.name))
        yield Term(source.name, Unflatten(upstream, *source.shape), "unflatten")
