"""Run every numbered tutorial ``examples/NN_*.py`` in FAST mode.

Each script runs as a subprocess with ``SNN_CORE_FAST=1`` (tiny budgets),
``MPLBACKEND=Agg`` and ``SNN_CORE_FIGURES`` pointing at a temporary folder,
so the test leaves nothing behind; it must exit 0, print its "OK" checks
and write the figures listed below.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))

#: figures each tutorial must write (file names inside $SNN_CORE_FIGURES)
EXPECTED_FIGURES = {
    "01_lif_neuron.py": ["01_lif_reset_modes.png", "01_euler_vs_exact.png"],
    "02_spike_encodings.py": ["02_input_encodings.png"],
    "03_surrogate_gradients.py": ["03_surrogate_curves.png", "03_sgd_membrane.png", "03_count_staircase.png"],
    "04_bptt_by_hand.py": ["04_bptt_unrolled.png"],
    "05_sparse_connectivity.py": ["05_small_layer_weights.png", "05_fc1_density_blocks.png"],
    "06_rewiring_up_close.py": ["06_diff_first_event.png", "06_diff_initial_vs_final.png", "06_structure.gif",
                                "06_density_turnover.png"],
    "07_esl_mnist.py": ["07_training_curves.png", "07_density_turnover.png", "07_accuracy_vs_density.png",
                        "07_fc1_structure_diff.png", "07_fc1_fan_out.png"],
    "08_energy.py": ["08_energy.png"],
    "09_nir_export.py": ["09_nir_export.png"],
    "10_spiking_convolution.py": ["10_conv2_kernels.png"],
}

#: lines a tutorial must print (its self-checks)
EXPECTED_OUTPUT = {
    "01_lif_neuron.py": ["OK hard reset: LIF layer recorded u, v, spikes == lif_step",
                         "OK Euler matches its closed form"],
    "03_surrogate_gradients.py": ["closed form"],
    "04_bptt_by_hand.py": ["OK dL/dW1 engine == hand", "OK dL/dW2 engine == hand",
                           "OK finite differences agree with network.backward",
                           "OK the reference backend's carries == the hand computation",
                           "OK a real run on the reference backend"],
    "05_sparse_connectivity.py": ["OK all three agree", "OK every row holds exactly round(D x total)"],
    "06_rewiring_up_close.py": ["OK pruned = the 6 smallest |w|", "OK Adam state was remapped"],
    "08_energy.py": ["OK; energy ="],
    "09_nir_export.py": ["OK the network read back from the NIR file gives bit-identical outputs"],
    "10_spiking_convolution.py": ["OK currents == hand convolution", "OK spikes == hand LIF steps",
                                  "OK gradients == hand computation"],
}

#: per-script wall-clock limit in FAST mode (generous: a cold Numba cache compiles kernels first)
TIMEOUT_S = 180


def test_every_tutorial_is_listed():
    assert [p.name for p in EXAMPLES] == sorted(EXPECTED_FIGURES), \
        "a tutorial was added or renamed: update EXPECTED_FIGURES"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_tutorial_runs_fast(script, tmp_path):
    figures = tmp_path / "figures"
    env = dict(os.environ, SNN_CORE_FAST="1", MPLBACKEND="Agg", SNN_CORE_FIGURES=str(figures),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for name in EXPECTED_FIGURES[script.name]:
        path = figures / name
        assert path.is_file() and path.stat().st_size > 1000, f"{script.name}: {name} was not written"
    assert "Traceback" not in proc.stderr
    for line in EXPECTED_OUTPUT.get(script.name, []):
        assert line in proc.stdout, f"{script.name}: expected output {line!r}"
    # nothing may be written next to the scripts or into the working directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]

