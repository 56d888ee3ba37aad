"""Time to first gradient: from launching a fresh interpreter to the first gradient computed
(imports, derivation/compilation and the first call included).  The child prints
``time.time()`` right after its first gradient; the parent subtracts its launch time."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench import symgrad_adapter
from bench.networks import BY_NAME

NETS = ("xor", "mnist")
BATCH = {"xor": 4, "mnist": 32}

_PRELUDE = f"""
import sys, time
sys.path.insert(0, {str(symgrad_adapter.REPO_ROOT)!r})
"""

_DATA = """
from bench.networks import BY_NAME, init_params, make_data
net = BY_NAME[{net!r}]
P0 = init_params(net)
X, T = make_data(net, {batch})
"""

SCRIPTS = {
    "numpy (hand)": _PRELUDE + _DATA + """
from bench.handwritten import HandwrittenMLP
HandwrittenMLP(net).loss_and_grad(P0, X, T)
print(repr(time.time()))
""",
    "PyTorch": _PRELUDE + """
import torch
torch.set_num_threads(1)
""" + _DATA + """
from bench.peers import torch_loss_fn
P = {{k: torch.tensor(v, requires_grad=True) for k, v in P0.items()}}
Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)
idx = Tt.argmax(1) if net.loss == "cross_entropy" else None
torch.autograd.grad(torch_loss_fn(net)(P, Xt, Tt, idx), list(P.values()))
print(repr(time.time()))
""",
    "JAX jit": _PRELUDE + """
import jax
jax.config.update("jax_enable_x64", True)
""" + _DATA + """
from bench.peers import jax_loss_fn
vg = jax.jit(jax.value_and_grad(jax_loss_fn(net)))
jax.block_until_ready(vg({{k: jax.numpy.asarray(v) for k, v in P0.items()}}, X, T))
print(repr(time.time()))
""",
}


def _once(script: str, timeout_s: float = 300.0):
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout_s, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["?"])[-1])
    return float(proc.stdout.split()[-1]) - t0


def _symgrad_scripts(net_name: str, tmpdir: str) -> dict:
    ok, reason = symgrad_adapter.available()
    if not ok:
        raise symgrad_adapter.SymgradUnavailable(reason)
    path = os.path.join(tmpdir, f"{net_name}_generated.py")
    with open(path, "w") as fh:
        fh.write(symgrad_adapter.derive_source(BY_NAME[net_name]))
    return {"symgrad (derive+generate+run)": symgrad_adapter.ttfg_script(net_name),
            "symgrad (generated module only)": symgrad_adapter.ttfg_script(net_name, path)}


def run(settings, log=print) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for net_name in NETS:
            scripts = {k: s.format(net=net_name, batch=BATCH[net_name])
                       for k, s in SCRIPTS.items()}
            res = {}
            try:
                scripts.update(_symgrad_scripts(net_name, tmp))
            except Exception as exc:
                res["symgrad"] = {"error": str(exc)}
            for name, script in scripts.items():
                try:
                    ts = [_once(script) for _ in range(settings.ttfg_repeats)]
                    res[name] = {"median": statistics.median(ts), "min": min(ts)}
                except Exception as exc:
                    res[name] = {"error": str(exc)}
            log(f"  {net_name}: " + ", ".join(
                f"{k} {v['median']:.2f} s" for k, v in res.items() if "median" in v))
            out[net_name] = res
    return out
