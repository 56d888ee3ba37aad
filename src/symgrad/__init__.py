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

import sys
import types

__version__ = "0.1.0"

#: Public names and the module each lives in: imported on first use (PEP 562), so that
#: ``symgrad --help`` does not pay for SymPy.
_EXPORTS = {
    "generate_module_source": "codegen", "load_module": "codegen", "write_module": "codegen",
    "Derivation": "derive", "Step": "derive", "derive": "derive",
    "check_gradient": "gradcheck",
    "Network": "spec", "NetworkSpec": "spec", "SpecError": "spec", "load_spec": "spec",
    "loads_spec": "spec",
    "BadInput": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'symgrad' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if _EXPORTS[name] == "derive":
        importlib.import_module(".render", __name__)  # registers the derivation's views
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Keeps ``symgrad.derive`` the function when the submodule of that name is imported."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return  # the submodule stays reachable through sys.modules
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
