"""End to end: train the digits classifier (64-32-10, sigmoid hidden, softmax
cross-entropy) until held-out accuracy reaches TARGET, and time it.

All trainers use the same data split, minibatch size, learning rate and momentum
(heavy-ball SGD, no weight decay); the hand-written, symgrad and PyTorch runs also start
from the same parameters.  scikit-learn's MLPClassifier averages its loss over the
minibatch, so it gets the learning rate times the batch size.  Wall time covers training
and the per-epoch accuracy checks, not data loading."""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench import symgrad_adapter
from bench.handwritten import HandwrittenMLP, train_minibatch
from bench.networks import BY_NAME, init_params

TARGET = 0.95
BATCH = 32
LR_MEAN = 0.1  # per-example learning rate; the sum-reduction trainers use LR_MEAN / BATCH
MOMENTUM = 0.9


def load_digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
    Ttr = np.eye(10)[ytr]
    return Xtr, Ttr, ytr, Xte, yte


def _accuracy(scores, y) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == y))


def _timed(train_fn, predict, Xte, yte, max_epochs):
    """Runs ``train_fn(on_epoch)``; returns wall seconds to TARGET, epochs, accuracy."""
    state = {"acc": 0.0, "epochs": 0}

    def on_epoch(epoch):
        state["acc"] = _accuracy(predict(Xte), yte)
        state["epochs"] = epoch + 1
        return state["acc"] >= TARGET or epoch + 1 >= max_epochs

    t0 = time.perf_counter()
    train_fn(on_epoch)
    wall = time.perf_counter() - t0
    return {"seconds": wall, "epochs": state["epochs"], "accuracy": state["acc"],
            "reached": state["acc"] >= TARGET}


def run_hand(data, seed, max_epochs):
    Xtr, Ttr, _, Xte, yte = data
    net = BY_NAME["digits"]
    mlp, P = HandwrittenMLP(net), init_params(net, seed=seed)
    return _timed(lambda cb: train_minibatch(mlp, P, Xtr, Ttr, epochs=max_epochs,
                                             lr=LR_MEAN / BATCH, momentum=MOMENTUM,
                                             batch_size=BATCH, seed=seed, callback=cb),
                  lambda X: mlp.forward(P, X), Xte, yte, max_epochs)


def run_symgrad(data, seed, max_epochs):
    Xtr, Ttr, _, Xte, yte = data
    net = BY_NAME["digits"]
    mod = symgrad_adapter.build_module(net)
    P = symgrad_adapter.to_module_params(mod, init_params(net, seed=seed))
    return _timed(lambda cb: symgrad_adapter.train_epochs(
        mod, P, Xtr, Ttr, epochs=max_epochs, lr=LR_MEAN / BATCH, momentum=MOMENTUM,
        batch_size=BATCH, seed=seed, on_epoch=cb),
        lambda X: mod.forward(P, X), Xte, yte, max_epochs)


def run_torch(data, seed, max_epochs):
    import torch
    import torch.nn.functional as F

    Xtr, Ttr, ytr, Xte, yte = data
    net = BY_NAME["digits"]
    P = {k: torch.tensor(v, requires_grad=True)
         for k, v in init_params(net, seed=seed).items()}
    Xt, yt, Xe = torch.from_numpy(Xtr), torch.from_numpy(ytr), torch.from_numpy(Xte)
    opt = torch.optim.SGD(P.values(), lr=LR_MEAN / BATCH, momentum=MOMENTUM)

    def model(X):
        return F.linear(torch.sigmoid(F.linear(X, P["W1"], P["b1"])), P["W2"], P["b2"])

    def predict(_):
        with torch.no_grad():
            return model(Xe).numpy()

    def train(cb):
        rng = np.random.default_rng(seed)
        for epoch in range(max_epochs):
            order = torch.from_numpy(rng.permutation(len(Xt)))
            for idx in order.split(BATCH):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(Xt[idx]), yt[idx], reduction="sum").backward()
                opt.step()
            if cb(epoch):
                return

    return _timed(train, predict, Xte, yte, max_epochs)


def run_sklearn(data, seed, max_epochs):
    import warnings

    from sklearn.neural_network import MLPClassifier

    Xtr, _, ytr, Xte, yte = data
    clf = MLPClassifier(hidden_layer_sizes=(32,), activation="logistic", solver="sgd",
                        learning_rate="constant", learning_rate_init=LR_MEAN,
                        momentum=MOMENTUM, nesterovs_momentum=False, batch_size=BATCH,
                        alpha=0.0, shuffle=True, random_state=seed)
    classes = np.arange(10)

    def train(cb):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for epoch in range(max_epochs):
                clf.partial_fit(Xtr, ytr, classes=classes)
                if cb(epoch):
                    return

    return _timed(train, lambda X: clf.predict_proba(X), Xte, yte, max_epochs)


TRAINERS = {"numpy (hand)": run_hand, "symgrad": run_symgrad, "PyTorch": run_torch,
            "scikit-learn MLPClassifier": run_sklearn}


def run(settings, log=print) -> dict:
    data = load_digits_split()
    out = {"target": TARGET, "batch": BATCH, "lr_mean": LR_MEAN, "momentum": MOMENTUM,
           "train_size": len(data[0]), "test_size": len(data[3]), "results": {}}
    for name, fn in TRAINERS.items():
        try:
            runs = [fn(data, seed, settings.e2e_max_epochs) for seed in range(settings.e2e_seeds)]
        except Exception as exc:  # symgrad missing, torch missing, ...
            out["results"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  {name}: unavailable ({exc})")
            continue
        res = {"seconds": statistics.median(r["seconds"] for r in runs),
               "epochs": statistics.median(r["epochs"] for r in runs),
               "accuracy": statistics.median(r["accuracy"] for r in runs),
               "reached": all(r["reached"] for r in runs), "runs": runs}
        out["results"][name] = res
        log(f"  {name}: {res['seconds']:.2f} s, {res['epochs']} epochs, "
            f"accuracy {res['accuracy']:.3f}")
    return out
