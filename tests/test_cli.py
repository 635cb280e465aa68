"""The real ``snn-esl`` command (``python -m snn_core``, and the console script
when installed) run as subprocesses on the embedded sample with tiny budgets.

One module-scoped training run is shared by the info/evaluate/plot/resume
tests; each subprocess costs a few seconds of imports and Numba cache loads.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import snn_core

REPO = Path(snn_core.__file__).resolve().parent.parent
SNN_ESL = shutil.which("snn-esl")
LAUNCHERS = [pytest.param([sys.executable, "-m", "snn_core"], id="python-m")]
if SNN_ESL:
    LAUNCHERS.append(pytest.param([SNN_ESL], id="snn-esl"))
else:
    LAUNCHERS.append(pytest.param(None, id="snn-esl", marks=pytest.mark.skip(reason="snn-esl not installed")))


def run_cli(*args, launcher=None, cwd=None, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("SNN_CORE_DATA", None)  # the embedded sample, whatever the developer's environment says
    env["MPLBACKEND"] = "Agg"
    cmd = list(launcher or [sys.executable, "-m", "snn_core"]) + [str(a) for a in args]
    # never run in the repository: a default out_dir ("runs/esl") must not land there
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd or tempfile.gettempdir(),
                          timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def fails(proc):
    assert proc.returncode != 0, f"expected failure\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"a traceback instead of a clear message:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = ok(run_cli("train", "--epochs", 2, "--max-train", 500, "--hidden", 64, "--t-iter", 3,
                      "--out-dir", out, "--quiet", cwd=out.parent))
    return out, proc


# ---------------------------------------------------------------------------
# train / info / evaluate / resume
# ---------------------------------------------------------------------------
def test_train(run_dir):
    out, proc = run_dir
    assert (out / "best.h5").is_file() and (out / "last.h5").is_file()
    s = json.loads((out / "summary.json").read_text())
    for key in ("test_accuracy", "best_val_accuracy", "best_epoch", "density", "layers", "rewiring_events",
                "train_seconds", "train_samples_per_s", "config"):
        assert key in s, key
    assert s["epochs"] == 2 and s["metrics"]["epoch"] == [1, 2]
    assert s["config"]["max_train"] == 500 and s["config"]["hidden"] == [64] and s["config"]["t_iter"] == 3
    assert s["config"]["out_dir"] == str(out)
    assert s["n_train"] + s["n_val"] == 500 and s["n_val"] == 50
    assert s["rewiring_events"] >= 1
    assert [layer["name"] for layer in s["layers"]] == ["fc1", "fc2"]
    nnz = sum(layer["nnz"] for layer in s["layers"])
    size = sum(layer["shape"][0] * layer["shape"][1] for layer in s["layers"])
    assert s["density"] == pytest.approx(nnz / size)
    assert "test accuracy" in proc.stdout and "epoch 2/2" in proc.stdout
    assert "Traceback" not in proc.stderr
    # --quiet: no progress bars
    assert "it/s" not in proc.stderr and "batch/s" not in proc.stderr


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_info(run_dir, launcher):
    out, _ = run_dir
    proc = ok(run_cli("info", out / "last.h5", launcher=launcher))
    s = json.loads((out / "summary.json").read_text())
    text = proc.stdout
    assert "format v2" in text
    assert "trained 2 of 2 epochs" in text
    for layer in s["layers"]:
        line = next(l for l in text.splitlines() if l.startswith(layer["name"] + " "))
        assert str(layer["nnz"]) in line and f"{layer['density']:.4f}" in line
    glob = next(l for l in text.splitlines() if l.startswith("global"))
    assert f"{s['density']:.4f}" in glob
    # turnover lines
    assert "rewiring:" in text and "layer events" in text
    assert "initial connections kept" in text and "grown by rewiring" in text and "positions explored" in text
    assert text.count("events,") >= 2  # one turnover line per sparse layer
    # metrics table
    assert "val_acc" in text


def test_evaluate(run_dir, tmp_path):
    out, _ = run_dir
    js = tmp_path / "eval.json"
    proc = ok(run_cli("evaluate", out / "best.h5", "--energy-samples", 50, "--json", js))
    text = proc.stdout
    s = json.loads((out / "summary.json").read_text())
    assert "test accuracy" in text
    assert f"test accuracy {s['test_accuracy']:.4f}" in text  # the best model, as in summary.json
    assert "SOPs" in text
    assert "Firing rates" in text and "lif1" in text
    report = json.loads(js.read_text())
    assert report["test_accuracy"] == pytest.approx(s["test_accuracy"])


def test_evaluate_on_data_with_other_image_size(run_dir, tmp_path):
    from snn_core.data.datasets import MNIST_FILES
    from snn_core.data.idx import write_idx

    out, _ = run_dir
    d = tmp_path / "idx10"
    d.mkdir()
    rng = np.random.default_rng(0)
    for role, stem in MNIST_FILES.items():
        n = 30
        arr = rng.integers(0, 256, (n, 10, 10), dtype=np.uint8) if "images" in role else \
            (np.arange(n) % 10).astype(np.uint8)
        write_idx(d / stem, arr)
    proc = fails(run_cli("evaluate", out / "best.h5", "--data-dir", d))
    assert "features" in proc.stderr and "784" in proc.stderr


def test_resume(run_dir, tmp_path):
    out, _ = run_dir
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    proc = ok(run_cli("train", "--resume", copy / "last.h5", "--epochs", 3, "--out-dir", copy, "--quiet"))
    assert "resumed" in proc.stdout and "at epoch 2" in proc.stdout
    assert "epoch 3/3" in proc.stdout and "epoch 1/" not in proc.stdout
    before = json.loads((out / "summary.json").read_text())
    after = json.loads((copy / "summary.json").read_text())
    assert after["epochs"] == 3 and after["metrics"]["epoch"] == [1, 2, 3]
    assert after["config"]["epochs"] == 3 and after["config"]["max_train"] == 500
    for k in ("train_loss", "train_accuracy", "val_accuracy", "density", "lr"):
        assert after["metrics"][k][:2] == before["metrics"][k], k
    assert after["rewiring_events"] >= before["rewiring_events"]
    from snn_core.checkpoint import load_checkpoint

    assert load_checkpoint(copy / "last.h5")["trainer"]["epoch"] == 3
    # the original run is untouched
    assert load_checkpoint(out / "last.h5")["trainer"]["epoch"] == 2


def test_resume_cannot_change_architecture(run_dir):
    out, _ = run_dir
    proc = fails(run_cli("train", "--resume", out / "last.h5", "--hidden", 32, "--quiet"))
    assert "hidden" in proc.stderr and "architecture" in proc.stderr


def test_resume_honours_or_rejects_config_file(run_dir, tmp_path):
    # `train --resume CKPT --config FILE` must not silently ignore FILE
    out, _ = run_dir
    copy = tmp_path / "r"
    shutil.copytree(out, copy)
    cfg = tmp_path / "more.toml"
    cfg.write_text(f'epochs = 3\nquiet = true\nout_dir = "{copy.as_posix()}"\n')
    proc = run_cli("train", "--resume", copy / "last.h5", "--config", cfg)
    if proc.returncode != 0:
        fails(proc)
        assert "config" in proc.stderr
    else:
        s = json.loads((copy / "summary.json").read_text())
        assert s["epochs"] == 3, "--config was silently ignored when resuming"


# ---------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------
# (snn-esl sweep: tests/test_sweep.py)


def test_plot(run_dir, tmp_path):
    from PIL import Image

    out, _ = run_dir
    figs = tmp_path / "figs"
    proc = ok(run_cli("plot", out, "--out", figs))
    names = {p.name for p in figs.iterdir()}
    for n in ("training_curves.png", "density_turnover.png", "connectivity_fc1.png", "connectivity_fc2.png"):
        assert n in names, (n, sorted(names))
    gifs = sorted(figs.glob("*.gif"))
    assert gifs, sorted(names)
    assert set(proc.stdout.split()) == {str(p) for p in figs.iterdir()}
    for p in figs.iterdir():
        with Image.open(p) as im:
            im.verify()
    with Image.open(figs / "training_curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    with Image.open(gifs[0]) as im:
        assert im.format == "GIF" and getattr(im, "n_frames", 1) >= 2


def test_plot_missing_run_dir(tmp_path):
    proc = fails(run_cli("plot", tmp_path / "nope"))
    assert "nope" in proc.stderr


# ---------------------------------------------------------------------------
# config files
# ---------------------------------------------------------------------------
def test_toml_config_honoured_and_flags_override(tmp_path):
    out = tmp_path / "toml_run"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'max_train = 200\nhidden = [32]\nepochs = 3\nt_iter = 4\nseed = 7\nzeta0 = 0.2\n'
                   f'quiet = true\nout_dir = "{out.as_posix()}"\n')
    ok(run_cli("train", "--config", cfg, "--epochs", 1, "--seed", 8))
    c = json.loads((out / "summary.json").read_text())["config"]
    assert (c["max_train"], c["hidden"], c["t_iter"], c["zeta0"], c["quiet"]) == (200, [32], 4, 0.2, True)
    assert (c["epochs"], c["seed"]) == (1, 8)  # flags win


def test_layer_density_from_flag_and_toml_holds_the_layer_and_the_global_density(tmp_path):
    out = tmp_path / "ld_flag"
    ok(run_cli("train", "--max-train", 200, "--hidden", 32, "--epochs", 1, "--t-iter", 2, "--quiet",
               "--layer-density", "fc2=0.5", "--out-dir", out))
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["layer_density"] == {"fc2": 0.5}
    layers = {l["name"]: l for l in s["layers"]}
    assert layers["fc2"]["nnz"] == 160  # half of 32 x 10, kept through rewiring
    assert layers["fc1"]["nnz"] + 160 == round(0.1 * (784 * 32 + 32 * 10))
    cfg = tmp_path / "ld.toml"
    cfg.write_text(f'max_train = 200\nhidden = [32]\nepochs = 1\nquiet = true\nout_dir = "{(tmp_path / "ld_toml").as_posix()}"\n'
                   '[layer_density]\nfc2 = 0.5\n')
    ok(run_cli("train", "--config", cfg))
    assert json.loads((tmp_path / "ld_toml" / "summary.json").read_text())["config"]["layer_density"] == {"fc2": 0.5}
    r = fails(run_cli("train", "--max-train", 200, "--hidden", 32, "--layer-density", "fc9=0.5",
                      "--out-dir", tmp_path / "x"))
    assert "'fc9' is not a sparse layer" in r.stderr and "['fc1', 'fc2']" in r.stderr
    r = fails(run_cli("train", "--layer-density", "fc2", "--out-dir", tmp_path / "y"))
    assert "expected NAME=NUMBER, got 'fc2'" in r.stderr


def test_json_config_honoured_and_flags_override(tmp_path):
    out = tmp_path / "json_run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"max_train": 150, "hidden": [24], "epochs": 1, "density": 0.2, "batch_size": 30,
                               "quiet": True, "out_dir": str(tmp_path / "ignored"), "rewiring": True}))
    ok(run_cli("train", "--config", cfg, "--out-dir", out, "--no-rewiring"))
    assert not (tmp_path / "ignored").exists()
    s = json.loads((out / "summary.json").read_text())
    c = s["config"]
    assert (c["max_train"], c["hidden"], c["density"], c["batch_size"]) == (150, [24], 0.2, 30)
    assert c["rewiring"] is False and s["rewiring_events"] == 0
    assert s["density"] == pytest.approx(0.2, abs=0.01)


# ---------------------------------------------------------------------------
# errors: non-zero exit, one clear line, no traceback
# ---------------------------------------------------------------------------
def test_unknown_flag():
    proc = fails(run_cli("train", "--bogus-flag", 3))
    assert "--bogus-flag" in proc.stderr


@pytest.mark.parametrize("suffix, text", [(".toml", "bogus_key = 1\n"), (".json", '{"bogus_key": 1}')])
def test_unknown_key_in_config_file(tmp_path, suffix, text):
    cfg = tmp_path / ("cfg" + suffix)
    cfg.write_text(text)
    proc = fails(run_cli("train", "--config", cfg, "--out-dir", tmp_path / "o"))
    assert "bogus_key" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_unparsable_and_missing_config_file(tmp_path):
    cfg = tmp_path / "broken.toml"
    cfg.write_text("epochs = = 3\n")
    proc = fails(run_cli("train", "--config", cfg))
    assert "broken.toml" in proc.stderr
    proc = fails(run_cli("train", "--config", tmp_path / "absent.json"))
    assert "absent.json" in proc.stderr and "not found" in proc.stderr


def test_bad_density_flag(tmp_path):
    proc = fails(run_cli("train", "--density", 0, "--out-dir", tmp_path / "o"))
    assert "density" in proc.stderr


def test_missing_data_dir(tmp_path):
    proc = fails(run_cli("train", "--data-dir", "/nonexistent", "--out-dir", tmp_path / "o"))
    assert "/nonexistent" in proc.stderr and "not found" in proc.stderr


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_info_on_corrupt_file(tmp_path, launcher):
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    proc = fails(run_cli("info", bad, launcher=launcher))
    assert str(bad) in proc.stderr and "checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_info_on_missing_file(tmp_path):
    proc = fails(run_cli("info", tmp_path / "none.h5"))
    assert "none.h5" in proc.stderr


def test_cuda_device_without_gpu_is_a_clear_error(tmp_path):
    try:
        from numba import cuda

        if cuda.is_available():
            pytest.skip("a CUDA GPU is available here")
    except ImportError:
        pass
    proc = fails(run_cli("train", "--device", "cuda", "--max-train", 100, "--epochs", 1, "--hidden", 16,
                         "--out-dir", tmp_path / "o", "--quiet"))
    assert "cuda" in proc.stderr.lower()


# --------------------------------------------------------------------------- help texts (one source)


def _all_actions(parser, path=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + (name,), "(subcommand)", helps.get(name)
                yield from _all_actions(sub, path + (name,))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action.dest, action.help


def test_every_flag_and_subcommand_has_a_sentence():
    """Not just "default: ...": a real sentence, from the argparse help (TrainConfig metadata for training flags)."""
    import re

    from snn_core.cli import build_parser

    seen = 0
    for path, dest, text in _all_actions(build_parser()):
        seen += 1
        assert text, f"snn-esl {' '.join(path)} {dest}: no help text"
        words = re.sub(r"\(default: [^()]*\)$", "", text).strip()
        assert len(words.split()) >= 3 and not words.startswith("default"), \
            f"snn-esl {' '.join(path)} {dest}: help {text!r} is not a sentence"
    assert seen > 50


def test_train_help_comes_from_trainconfig_metadata():
    import dataclasses

    from snn_core.config import TrainConfig

    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name}: declare it with config.option(default, help)"
        first_words = " ".join(f.metadata["help"].split()[:4])
        assert first_words in text, f"--{f.name.replace('_', '-')}: help sentence missing from train --help"


# --------------------------------------------------------------------------- data download (never the internet)


def _fake_source(tmp_path):
    """Four tiny IDX .gz files in a folder served as a file:// mirror, with their sha256."""
    import gzip
    import hashlib

    from snn_core.data import write_idx
    from snn_core.data.datasets import MNIST_FILES, DatasetSource

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
              "train_labels": np.arange(30, dtype=np.uint8) % 10,
              "test_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "test_labels": np.arange(10, dtype=np.uint8)}
    files = {}
    for role, stem in MNIST_FILES.items():
        raw = tmp_path / stem
        write_idx(raw, arrays[role])
        gz = mirror / f"{stem}.gz"
        gz.write_bytes(gzip.compress(raw.read_bytes()))
        files[gz.name] = hashlib.sha256(gz.read_bytes()).hexdigest()
    return DatasetSource(files, (mirror.as_uri() + "/",), "fake"), arrays


def test_data_download_from_file_mirror_then_train_on_it(tmp_path, monkeypatch):
    from snn_core import cli
    from snn_core.data import load_idx_dir
    from snn_core.data import datasets as ds_mod

    src, arrays = _fake_source(tmp_path)
    monkeypatch.setitem(ds_mod.DATASETS, "mnist", src)
    dest = tmp_path / "data"
    assert cli.main(["data", "download", "mnist", "--dir", str(dest)]) == 0
    ds = load_idx_dir(dest)
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert sorted(p.name for p in dest.iterdir()) == sorted(src.files)  # no temporary files left
    # a second call finds the verified files and fetches nothing
    monkeypatch.setitem(ds_mod.DATASETS, "mnist", src._replace(mirrors=("http://127.0.0.1:9/",)))
    assert cli.main(["data", "download", "mnist", "--dir", str(dest)]) == 0


def test_data_download_offline_is_one_clear_line(tmp_path):
    """An unreachable mirror (nothing listens on 127.0.0.1:9): exit 1, one line, nothing left behind."""
    code = (
        "import sys; from snn_core import cli; from snn_core.data import datasets as d\n"
        "src = d.DATASETS['fashion-mnist']\n"
        "d.DATASETS['fashion-mnist'] = src._replace(mirrors=('http://127.0.0.1:9/', 'http://127.0.0.1:9/b/'))\n"
        f"sys.exit(cli.main(['data', 'download', 'fashion-mnist', '--dir', {str(tmp_path / 'fm')!r},"
        " '--timeout', '5']))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("snn-esl data: error: could not download train-images-idx3-ubyte.gz")
    assert "127.0.0.1:9/b/" in err and "--data-dir" in err
    assert list((tmp_path / "fm").iterdir()) == []  # no partial files


def test_data_download_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    from snn_core import cli
    from snn_core.data import datasets as ds_mod

    src, _ = _fake_source(tmp_path)
    bad = dict(src.files)
    name = next(iter(bad))
    bad[name] = "0" * 64
    monkeypatch.setitem(ds_mod.DATASETS, "mnist", src._replace(files=bad))
    dest = tmp_path / "data"
    assert cli.main(["data", "download", "mnist", "--dir", str(dest)]) == 1
    assert not (dest / name).exists() and not list(dest.glob(".*part"))


def test_data_list():
    proc = run_cli("data", "list")
    assert proc.returncode == 0 and "mnist" in proc.stdout and "fashion-mnist" in proc.stdout
