"""symgrad: symbolic backpropagation.

A network is described in a TOML spec or with :class:`Network`; SymPy derives
dL/dW and dL/db for every parameter layer by layer (:func:`derive`); the
derivation prints as LaTeX, Markdown or text, and :func:`generate_module_source`
emits a standalone NumPy training module that is checked against finite
differences (:func:`check_gradient`).

>>> import symgrad
>>> spec = symgrad.Network("xor", inputs=2).dense(2, "sigmoid").dense(1, "sigmoid").build()
>>> [step.target for step in symgrad.derive(spec).backward][:2]
['dL_da2', 'delta2']
"""

__version__ = "0.1.0"

from .codegen import generate_module_source, load_module, write_module
from .derive import Derivation, Step, derive
from .gradcheck import check_gradient
from .spec import Network, NetworkSpec, SpecError, load_spec, loads_spec

__all__ = [
    "Derivation", "Network", "NetworkSpec", "SpecError", "Step", "check_gradient", "derive",
    "generate_module_source", "load_module", "load_spec", "loads_spec",
    "write_module",
]
