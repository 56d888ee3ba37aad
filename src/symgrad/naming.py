"""One naming scheme for the derivation, the LaTeX and the generated code.

Contract: every quantity has a code name (``z1``, ``a1``, ``delta2``,
``dL_dW2``) and a LaTeX symbol (``Z^{(1)}``, ``A^{(1)}``, ``\\delta^{(2)}``,
``\\partial L / \\partial W^{(2)}``); both are derived here from the same key,
so a line of generated code and the equation it implements use matching
names.

>>> latex(delta(2)), latex(grad(weight(2)))
('\\\\delta^{(2)}', '\\\\frac{\\\\partial L}{\\\\partial W^{(2)}}')
"""

from __future__ import annotations

import re

INPUT = "X"
TARGET = "T"
LOSS = "L"
BATCH = "N"
DECAY = "weight_decay"


def pre_activation(layer: int) -> str:
    return f"z{layer}"


def activation(layer: int) -> str:
    return f"a{layer}"


def weight(layer: int) -> str:
    return f"W{layer}"


def kernel(layer: int) -> str:
    return f"K{layer}"


def bias(layer: int) -> str:
    return f"b{layer}"


def delta(layer: int) -> str:
    return f"delta{layer}"


def grad(name: str) -> str:
    """The code name of dL/d(name): ``dL_dW1``, ``dL_da1``."""
    return f"dL_d{name}"


def gradient(name: str) -> str:
    """The code name of dL/d(node): ``delta1`` for a pre-activation ``z1``, else ``dL_d<name>``."""
    match = re.fullmatch(r"z(\d+)", name)
    return delta(int(match.group(1))) if match else grad(name)


def input_group(group: str) -> str:
    return f"X_{group}"


def log_softmax(layer: int) -> str:
    return f"log_a{layer}"


def block(weight_name: str, source: str) -> str:
    """The key of the columns of a weight matrix that multiply one source."""
    return f"{weight_name}__{source}"


# Recurrent layers: W_xh (input to hidden), W_hh (hidden to hidden), the hidden states of a
# layer whose output is its last state, the forward tape and the BPTT tuple.
def input_weight(layer: int) -> str:
    return f"Wx{layer}"


def recurrent_weight(layer: int) -> str:
    return f"Wh{layer}"


def hidden(layer: int) -> str:
    return f"h{layer}"


def tape(layer: int) -> str:
    return f"tape{layer}"


def bptt(layer: int) -> str:
    return f"bptt{layer}"


def rows(name: str, layer: int) -> str:
    """A sequence with time folded into the batch for ``layer``: (N, T, U) -> (N*T, U)."""
    return f"rows{layer}_{name}"


def steps(name: str, layer: int) -> str:
    """Rows split back into sequences for ``layer``: (N*T, U) -> (N, T, U)."""
    return f"seq{layer}_{name}"


_RECURRENT = {"Wx": r"W_{{xh}}^{{({0})}}", "Wh": r"W_{{hh}}^{{({0})}}", "h": r"H^{{({0})}}",
              "tape": r"\mathcal{{T}}^{{({0})}}", "bptt": r"\mathcal{{B}}^{{({0})}}"}


def _recurrent_latex(name: str) -> str | None:
    match = re.fullmatch(r"(Wx|Wh|h|tape|bptt)(\d+)", name)
    if match:
        return _RECURRENT[match.group(1)].format(match.group(2))
    match = re.fullmatch(r"(rows|seq)\d+_(\w+)", name)
    if match:
        power = "" if match.group(1) == "rows" else "^{-1}"
        return rf"\operatorname{{rows}}{power}\left({latex(match.group(2))}\right)"
    return None


# Normalisation, embedding and dropout: scale and shift, the stages of the forward pass,
# the running statistics, the embedding table and the dropout mask.
def norm_scale(layer: int) -> str:
    return f"gamma{layer}"


def norm_shift(layer: int) -> str:
    return f"beta{layer}"


def embedding_table(layer: int) -> str:
    return f"E{layer}"


_NORM = {"gamma": r"\gamma", "beta": r"\beta", "E": "E", "m": "M", "mu": r"\mu",
         "xc": r"\tilde{{X}}", "var": r"\sigma^{{2}}", "rstd": r"\sigma^{{-1}}",
         "xhat": r"\hat{{X}}", "running_mean": r"\mu_{{\mathrm{{run}}}}",
         "running_var": r"\sigma^{{2}}_{{\mathrm{{run}}}}"}


def _norm_latex(name: str) -> str | None:
    if name.endswith("_staged"):
        return rf"\left.{latex(name[:-7])}\right|_{{\mathrm{{staged}}}}"
    match = re.fullmatch(r"(gamma|beta|E|m|mu|xc|var|rstd|xhat|running_mean|running_var)(\d+)",
                         name)
    if match:
        return ("{{" + _NORM[match.group(1)] + "}}^{{({0})}}").format(match.group(2))
    return None


_LAYERED = {"z": "Z", "a": "A", "W": "W", "K": "K", "b": "b", "delta": r"\delta", "log_a": r"\log A"}


def latex(name: str) -> str:
    """The LaTeX symbol for a code name."""
    if name.startswith("dL_d"):
        return rf"\frac{{\partial L}}{{\partial {latex(name[4:])}}}"
    if "__" in name:
        weight_name, source = name.split("__", 1)
        return rf"{latex(weight_name)}_{{[{latex(source)}]}}"
    if name.startswith("X_"):
        return rf"X_{{\mathrm{{{name[2:]}}}}}".replace("_", r"\_").replace(r"X\_", "X_", 1)
    match = re.fullmatch(r"(log_a|delta|z|a|W|K|b)(\d+)", name)
    if match:
        return f"{_LAYERED[match.group(1)]}^{{({match.group(2)})}}"
    recurrent = _recurrent_latex(name)
    if recurrent is not None:
        return recurrent
    normalised = _norm_latex(name)
    if normalised is not None:
        return normalised
    match = re.fullmatch(r"(W|b)?(q|k|v|o)(\d+)|(s|p)(\d+)", name)  # attention
    if match and match.group(3):
        role = match.group(2).upper()
        head = f"{match.group(1)}_{{{role}}}" if match.group(1) else role
        return f"{head}^{{({match.group(3)})}}"
    if match:
        return f"{match.group(4).upper()}^{{({match.group(5)})}}"
    return {DECAY: r"\lambda", BATCH: "N", INPUT: "X", TARGET: "T", LOSS: "L"}.get(name, name)


def text(name: str) -> str:
    """A plain-text symbol for a code name, for terminals."""
    if name.startswith("dL_d"):
        return f"dL/d{text(name[4:])}"
    if "__" in name:
        weight_name, source = name.split("__", 1)
        return f"{text(weight_name)}[{text(source)}]"
    match = re.fullmatch(r"(log_a|delta|z|a|W|K|b)(\d+)", name)
    if match:
        head = {"z": "Z", "a": "A", "delta": "δ", "log_a": "log A"}.get(match.group(1),
                                                                         match.group(1))
        return f"{head}{match.group(2)}"
    return {DECAY: "λ"}.get(name, name)
