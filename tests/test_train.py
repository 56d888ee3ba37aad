"""symgrad train: tasks, .npz files, overrides, shape checks, divergence, files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from symgrad.cli import main
from symgrad.spec import load_spec
from symgrad.train import training_options

ROOT = Path(__file__).resolve().parents[1]
XOR = str(ROOT / "examples" / "xor.toml")


def run(capsys, *argv):
    code = main(["train", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_xor_task_solves_and_reports(capsys, tmp_path):
    out_file = tmp_path / "params.npz"
    code, out, err = run(capsys, XOR, "--task", "xor", "--out", out_file)
    assert code == 0, err
    assert "solved after 407 sweeps" in out
    assert "training accuracy 100.0%" in out
    assert "epoch 2000/2000" in err  # the progress bar
    with np.load(out_file) as saved:
        assert set(saved.files) == {"W1", "b1", "W2", "b2"}
        assert saved["W1"].shape == (2, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["params.npz"]  # no temporary left


def test_npz_data_and_overrides(capsys, tmp_path):
    data = tmp_path / "xor.npz"
    np.savez(data, X=[[0, 0], [0, 1], [1, 0], [1, 1]], T=[[0], [1], [1], [0]])
    code, out, _ = run(capsys, XOR, "--data", data, "--epochs", "7", "--learning-rate", "0.25",
                       "--momentum", "0.5", "--seed", "3", "--mode", "online", "--quiet")
    assert code == 0
    assert "online sgd, learning rate 0.25, momentum 0.5, 7 epochs, seed 3" in out
    assert "after 7 epochs" in out and "not solved in 7 sweeps" in out


def test_training_options_override_only_what_is_given():
    spec = load_spec(ROOT / "examples" / "family_trees.toml")
    options = training_options(spec, epochs=3, momentum=None)
    assert options["epochs"] == 3 and options["momentum"] == 0.9
    assert options["shrink"] == 0.002
    assert options["schedule"] == ((0, 0.005, 0.5), (20, 0.01, 0.9))


def test_shape_mismatch_exits_2(capsys):
    code, out, err = run(capsys, ROOT / "examples" / "parity4.toml", "--task", "xor")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "2 inputs per pattern but the network takes 4" in err


def test_missing_data_and_bad_task_exit_2(capsys):
    code, _, err = run(capsys, XOR)
    assert code == 2 and "--task NAME or --data FILE.npz" in err
    code, _, err = run(capsys, XOR, "--task", "xorr")
    assert code == 2 and "did you mean 'xor'" in err


def test_divergence_is_a_clean_message(capsys, tmp_path):
    spec = tmp_path / "linear.toml"
    spec.write_text('inputs = 2\n[[layers]]\nunits = 1\n[training]\nlearning_rate = 1e3\n')
    out_file = tmp_path / "params.npz"
    code, _, err = run(capsys, spec, "--task", "xor", "--quiet", "--out", out_file)
    assert code == 1
    assert err.startswith("symgrad: training diverged: loss became") and "at epoch" in err
    assert "Traceback" not in err
    assert not out_file.exists()


def test_params_are_written_atomically(capsys, tmp_path, monkeypatch):
    out_file = tmp_path / "params.npz"
    out_file.write_bytes(b"old")
    real_savez = np.savez

    def failing_savez(handle, **arrays):
        real_savez(handle, **arrays)
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    code, _, err = run(capsys, XOR, "--task", "xor", "--epochs", "2", "--quiet",
                       "--out", out_file)
    assert code == 2 and err.count("\n") == 1 and "disk full" in err
    assert out_file.read_bytes() == b"old"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["params.npz"]


def test_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "loss.png"
    code, out, _ = run(capsys, XOR, "--task", "xor", "--epochs", "50", "--quiet", "--plot", plot)
    assert code == 0 and "loss curve written" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_one_line(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, out, err = run(capsys, XOR, "--task", "xor", "--plot", "x.png")
    assert code == 2 and out == "" and "needs matplotlib" in err and err.count("\n") == 1


def test_family_trees_multi_input_trains(capsys, tmp_path):
    code, out, err = run(capsys, ROOT / "examples" / "family_trees.toml", "--task",
                         "family-trees", "--epochs", "5", "--quiet")
    assert code == 0, err
    assert "100 patterns (+4 held out)" in out and "shrink 0.002 per update" in out
    assert "held-out patterns right" in out and "after 5 epochs" in out


def test_cwd_untouched(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, XOR, "--task", "xor", "--epochs", "3", "--quiet")
    assert code == 0 and os.listdir(tmp_path) == []


def test_progress_in_a_log_is_plain_lines():
    import io

    from symgrad.train import ProgressBar

    log = io.StringIO()  # not a terminal
    bar = ProgressBar(50, stream=log)
    for epoch in range(1, 51):
        bar.update(epoch, 1.0 / epoch)
    bar.update(50, 0.02, force=True)  # as fit() ends
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 5 <= len(lines) <= 12 and lines[-1].startswith("epoch 50/50")


def test_regression_targets_report_an_error_not_accuracy(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    T = (X @ [[0.5], [-0.25]]) + 0.1  # real-valued targets
    np.savez(tmp_path / "reg.npz", X=X, T=T)
    spec = tmp_path / "reg.toml"
    spec.write_text('inputs = 2\n[[layers]]\nunits = 1\n[loss]\nkind = "mse"\n'
                    '[training]\nepochs = 50\nlearning_rate = 0.1\n')
    assert main(["train", str(spec), "--data", str(tmp_path / "reg.npz")]) == 0
    out = capsys.readouterr().out
    assert "root-mean-square error" in out
    assert "% " not in out and "solved after" not in out and "not solved" not in out
