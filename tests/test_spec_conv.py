"""Convolutional layer kinds in the spec: shapes computed by hand, one-line errors."""

from __future__ import annotations

import pytest

from symgrad.spec import Network, SpecError, loads_spec

LENET = """name = "lenet"
inputs = { shape = [1, 12, 12] }

[[layers]]
kind = "conv2d"
name = "c1"
filters = 6
kernel = 3
padding = 1
activation = "tanh"

[[layers]]
kind = "maxpool2d"
size = 2

[[layers]]
kind = "conv2d"
filters = 4
kernel = [3, 4]
stride = [1, 2]
padding = [0, 1]
activation = "relu"
bias = false

[[layers]]
kind = "avgpool2d"
size = [2, 1]
stride = 2

[[layers]]
kind = "flatten"

[[layers]]
units = 10
activation = "softmax"

[loss]
kind = "cross_entropy"
"""


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line containing ``fragment``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    assert len(hits) >= occurrence, (fragment, hits)
    return hits[occurrence - 1]


def fails(text: str, field: str, line: int, *words: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        loads_spec(text, path="cnn.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cnn.toml:{line}: {field}: "), message
    for word in words:
        assert word in message, (word, message)
    return info.value


def test_lenet_shapes_by_hand():
    spec = loads_spec(LENET)
    # conv 3x3 pad 1 on 12x12: (12 + 2 - 3) // 1 + 1 = 12
    # maxpool 2 (stride 2): (12 - 2) // 2 + 1 = 6
    # conv [3, 4], stride [1, 2], pad [0, 1]: h (6 - 3) // 1 + 1 = 4, w (6 + 2 - 4) // 2 + 1 = 3
    # avgpool [2, 1] stride 2: h (4 - 2) // 2 + 1 = 2, w (3 - 1) // 2 + 1 = 2
    # flatten: 4 * 2 * 2 = 16
    assert [layer.shape for layer in spec.layers] == [
        (6, 12, 12), (6, 6, 6), (4, 4, 3), (4, 2, 2), (16,), (10,)]
    assert [layer.units for layer in spec.layers] == [6, 6, 4, 4, 16, 10]
    assert [layer.kind for layer in spec.layers] == [
        "conv2d", "maxpool2d", "conv2d", "avgpool2d", "flatten", "dense"]
    c1, pool, c2, avg, flat, out = spec.layers
    assert (c1.kernel, c1.stride, c1.padding, c1.bias) == ((3, 3), (1, 1), (1, 1), True)
    assert (pool.kernel, pool.stride, pool.padding, pool.bias) == ((2, 2), (2, 2), (0, 0), False)
    assert (c2.kernel, c2.stride, c2.padding, c2.bias) == ((3, 4), (1, 2), (0, 1), False)
    assert (avg.kernel, avg.stride) == ((2, 1), (2, 2))
    assert pool.activation.kind == flat.activation.kind == "identity"
    assert c1.activation.kind == "tanh" and c2.activation.kind == "relu"
    assert [layer.sources for layer in spec.layers] == [
        ("input",), ("c1",), ("layer2",), ("layer3",), ("layer4",), ("layer5",)]
    assert spec.input_shape == (1, 12, 12)
    assert spec.inputs == (("input", 144),) and spec.n_inputs == 144 and spec.n_outputs == 10


def test_same_padding_and_python_api_agree():
    text = LENET.replace("padding = 1\n", 'padding = "same"\n')
    from_toml = loads_spec(text)
    assert from_toml.layers[0].padding == (1, 1)
    from_python = (Network("lenet", inputs=[1, 12, 12])
                   .conv2d(6, 3, "tanh", padding="same", name="c1")
                   .maxpool2d(2)
                   .conv2d(4, (3, 4), "relu", stride=(1, 2), padding=(0, 1), bias=False)
                   .avgpool2d((2, 1), stride=2)
                   .flatten()
                   .dense(10, "softmax")
                   .loss("cross_entropy")
                   .build())
    assert from_python.layers == from_toml.layers
    assert from_python.input_shape == from_toml.input_shape


def test_dense_specs_unchanged():
    spec = Network("xor", inputs=2).dense(2, "sigmoid").dense(1, "sigmoid").build()
    assert spec.input_shape is None
    assert [(layer.kind, layer.shape) for layer in spec.layers] == [("dense", (2,)),
                                                                     ("dense", (1,))]


def replace(old: str, new: str, text: str = LENET) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_kernel_larger_than_padded_input():
    text = replace("kernel = 3\npadding = 1", "kernel = 15\npadding = 1")
    fails(text, "layers[1].kernel", line_of(text, "kernel = 15"), "15x15", "14x14", "larger")


def test_pool_larger_than_input():
    text = replace("size = 2\n", "size = 13\n")
    fails(text, "layers[2].size", line_of(text, "size = 13"), "larger")


def test_stride_does_not_divide():
    text = replace("kernel = 3\npadding = 1", "kernel = 3\npadding = 1\nstride = 2")
    # (12 + 2 - 3) = 11 is not a multiple of 2
    fails(text, "layers[1].stride", line_of(text, "stride = 2"), "11", "multiple of 2")


def test_same_padding_needs_odd_kernel_and_stride_one():
    text = replace("kernel = 3\npadding = 1", 'kernel = 4\npadding = "same"')
    fails(text, "layers[1].padding", line_of(text, "same"), "odd kernel")
    text = replace("kernel = 3\npadding = 1", 'kernel = 3\nstride = 3\npadding = "same"')
    fails(text, "layers[1].padding", line_of(text, "same"), "stride 1")
    text = replace("padding = 1\n", 'padding = "valid"\n')
    fails(text, "layers[1].padding", line_of(text, "valid"), "'same'")


def test_dense_after_conv_needs_flatten():
    text = replace('[[layers]]\nkind = "flatten"\n\n', "")
    fails(text, "layers[5]", line_of(text, "[[layers]]", 5), "add a flatten layer")


def test_dense_reading_a_pool_layer_with_from():
    text = replace("units = 10\n", 'units = 10\nfrom = ["c1", "layer5"]\n')
    fails(text, "layers[6].from", line_of(text, "from ="), "'c1'", "add a flatten layer")


@pytest.mark.parametrize("kind,extra", [("conv2d", "filters = 2\nkernel = 1\n"),
                                        ("maxpool2d", "size = 1\n"), ("flatten", "")])
def test_image_layer_after_flatten_or_dense(kind, extra):
    text = replace("units = 10\n", f'kind = "{kind}"\n{extra}[[layers]]\nunits = 10\n')
    fails(text, "layers[6].kind", line_of(text, f'kind = "{kind}"', 3 if kind == "conv2d" else 2),
          "(C, H, W)", "'layer5' is flat")
    dense_first = f'inputs = 4\n[[layers]]\nunits = 3\n[[layers]]\nkind = "{kind}"\n{extra}' \
        "[[layers]]\nunits = 1\n"
    fails(dense_first, "layers[2].kind", line_of(dense_first, "kind ="), "'layer1' is flat")


@pytest.mark.parametrize("inputs", ["16", "{ a = 8, b = 8 }"])
def test_conv_on_flat_inputs(inputs):
    text = replace("inputs = { shape = [1, 12, 12] }", f"inputs = {inputs}")
    fails(text, "layers[1].kind", line_of(text, 'kind = "conv2d"'), "needs image inputs",
          "shape = [C, H, W]")


def test_dense_on_image_inputs_needs_flatten():
    text = "inputs = { shape = [1, 2, 2] }\n[[layers]]\nunits = 1\n"
    fails(text, "layers[1]", 2, "the input has shape", "add a flatten layer")


@pytest.mark.parametrize("kind,extra", [("conv2d", "filters = 1\nkernel = 1\n"),
                                        ("maxpool2d", "size = 1\n"), ("flatten", "")])
def test_from_on_non_dense_layers(kind, extra):
    text = replace('[[layers]]\nkind = "flatten"\n',
                   f'[[layers]]\nkind = "{kind}"\n{extra}from = ["c1"]\n[[layers]]\n'
                   'kind = "flatten"\n' if kind != "flatten" else
                   '[[layers]]\nkind = "flatten"\nfrom = ["c1"]\n')
    fails(text, "layers[5].from", line_of(text, "from ="), "not supported")


def test_units_on_conv_and_filters_on_dense_suggest_the_right_key():
    text = replace("filters = 6\n", "units = 6\n")
    fails(text, "layers[1].units", line_of(text, "units = 6"), "unknown key 'units'",
          "did you mean 'filters'")
    text = replace("units = 10\n", "filters = 10\n")
    fails(text, "layers[6].filters", line_of(text, "filters = 10"), "unknown key 'filters'",
          "did you mean 'units'")
    text = replace("size = 2\n", "kernel = 2\n")
    fails(text, "layers[2].kernel", line_of(text, "kernel = 2"), "did you mean 'size'")
    text = replace("size = 2\n", "size = 2\nbias = true\n")
    fails(text, "layers[2].bias", line_of(text, "bias = true"), "unknown key 'bias'")


def test_missing_required_conv_keys():
    text = replace("kernel = 3\n", "")
    fails(text, "layers[1].kernel", line_of(text, "[[layers]]"), "missing key 'kernel'")


@pytest.mark.parametrize("kind", ["maxpool2d", "flatten"])
def test_pool_and_flatten_have_no_activation(kind):
    old = 'kind = "maxpool2d"\nsize = 2\n' if kind == "maxpool2d" else 'kind = "flatten"\n'
    text = replace(old, old + 'activation = "relu"\n')
    fails(text, f"layers[{2 if kind == 'maxpool2d' else 5}].activation",
          line_of(text, 'activation = "relu"', 1 if kind == "maxpool2d" else 2),
          "has no activation")


def test_softmax_on_conv():
    text = replace('activation = "tanh"', 'activation = "softmax"')
    fails(text, "layers[1].activation", line_of(text, "softmax"), "not supported on conv2d")


def test_unknown_layer_kind():
    text = replace('kind = "maxpool2d"', 'kind = "maxpool"')
    fails(text, "layers[2].kind", line_of(text, "maxpool"), "did you mean 'maxpool2d'")
    text = replace('kind = "maxpool2d"', "kind = 5")
    fails(text, "layers[2].kind", line_of(text, "kind = 5"), "expected one of dense, conv2d",
          "got an integer 5")


def test_last_layer_must_be_dense():
    text = LENET[:LENET.index("[[layers]]\nunits = 10")] + '[loss]\nkind = "sse"\n'
    fails(text, "layers[5].kind", line_of(text, 'kind = "flatten"'), "last layer must be dense")


@pytest.mark.parametrize("old,new,field,words", [
    ("filters = 6", "filters = 100001", "layers[1].filters", ["at most 100,000"]),
    ("filters = 6", "filters = 6.0", "layers[1].filters", ["expected an integer", "float"]),
    ("kernel = 3\n", "kernel = [3, 3, 3]\n", "layers[1].kernel", ["pair"]),
    ("kernel = 3\n", "kernel = 0\n", "layers[1].kernel", ["at least 1"]),
    ("kernel = 3\n", "kernel = 1e9\n", "layers[1].kernel", ["expected an integer"]),
    ("padding = 1\n", "padding = -1\n", "layers[1].padding", ["at least 0"]),
    ("size = 2\n", "size = 9223372036854775807\n", "layers[2].size", ["at most 100,000"]),
    ("shape = [1, 12, 12]", "shape = [1, 2, 12, 12]", "inputs.shape", ["[channels, height, width]"]),
    ("shape = [1, 12, 12]", "shape = [1, 100000, 100000]", "inputs.shape", ["at most"]),
    ("shape = [1, 12, 12]", "shape = [1, 0, 12]", "inputs.shape", ["at least 1"]),
])
def test_bad_sizes(old, new, field, words):
    text = replace(old, new)
    fails(text, field, line_of(text, new.split("\n")[0]), *words)


def test_values_and_parameters_are_capped():
    # 3 filters 1x1 over 1 x 2000 x 2000 inputs: 3 * 2000 * 2000 = 12M values per sample
    text = """inputs = { shape = [1, 2000, 2000] }
[[layers]]
kind = "conv2d"
filters = 3
kernel = 1
[[layers]]
kind = "flatten"
[[layers]]
units = 1
"""
    fails(text, "layers[1]", 2, "12,000,000 values per sample", "at most 10,000,000")
    ok = text.replace("filters = 3", "filters = 2")  # 8M values: accepted
    assert loads_spec(ok).layers[1].units == 8_000_000
    # ... but a dense layer of 7 units on it has 56M weights
    fails(ok.replace("units = 1", "units = 7"), "layers[3]", 8, "50,000,000 parameters")
    huge_dense = "inputs = 100000\n[[layers]]\nunits = 1000\n"
    fails(huge_dense, "layers[1]", 2, "50,000,000 parameters")
