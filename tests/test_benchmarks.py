"""The benchmark command runs end to end and writes its table and JSON (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]


@pytest.mark.slow  # ~60 s: a whole benchmark run, once per workload
def test_quick_benchmark_writes_table_and_json_with_every_field(tmp_path):
    proc = subprocess.run([*RUN, "--quick", "--workloads", "mlp_digits", "--out", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "cpu.json").read_text())
    table = (tmp_path / "cpu.md").read_text()
    variants = result["workloads"]["mlp_digits"]["variants"]
    assert set(variants) == {"a", "a_prefetched", "b", "b_wandb", "c", "c_no_wandb"}
    steps = {name: v["steps"]["median"] for name, v in variants.items()}
    assert len(set(steps.values())) == 1 and steps["c"] > 0, steps  # same number of steps everywhere
    for v in variants.values():
        assert v["training_start_s"]["median"] < v["first_step_s"]["median"]
        for key in ("wall_s", "cpu_s", "training_start_s", "first_step_s", "first_step_cpu_s", "step_ms", "step_cpu_ms", "outside_step_ms",
                    "steps_per_s", "samples_per_s", "peak_rss_mb"):
            assert v[key]["median"] > 0 and len(v[key]["values"]) == 1, key
    ratios = result["workloads"]["mlp_digits"]["ratios"]
    assert all(ratios[r][k] > 0 for r in ("c/a", "c/b", "c/b_wandb", "c_no_wandb/b")
               for k in ("wall_s", "first_step_s", "step_ms", "step_cpu_ms"))
    assert set(result["startup"]) >= {"bare_hydra_cfg_job", "train_cfg_job", "train_help", "import_torch_lightning"}
    deltas = result["startup_deltas"]
    assert deltas["cfg_job_over_bare_hydra"]["cpu"] is not None and deltas["first_step_over_imports_wandb"]["mlp_digits"]["wall"]
    assert deltas["help_over_bare_hydra"]["wall"] is not None
    assert deltas["first_step_over_plain_lightning_wandb"]["mlp_digits"]["wall"] is not None
    start = deltas["training_start_over_imports_wandb"]["mlp_digits"]
    assert start["wall"] < deltas["first_step_over_imports_wandb"]["mlp_digits"]["wall"] and start["cpu"] is None
    for key in ("machine", "load_before", "load_after", "command", "threads"):
        assert key in result
    assert "| c/b |" in table and "| c/b_wandb |" in table and "| c |" in table and "train.py --cfg job" in table
    assert not list(tmp_path.glob("logs")) and not list(tmp_path.glob("wandb")), \
        "the runs (and b_wandb's W&B files) go to a temporary folder, not the working directory"


def test_gpu_dry_run_prints_bf16_channels_last_commands_without_a_gpu(tmp_path):
    proc = subprocess.run([*RUN, "--device", "cuda", "--dry-run", "--compile"], cwd=tmp_path,
                          capture_output=True, text=True, check=True, timeout=120)
    out = proc.stdout
    assert "precision: bf16-mixed" in out and "compile: True" in out
    assert "trainer=gpu" in out and "+callbacks.bench.channels_last=true" in out and "+callbacks.bench.compile=true" in out
    assert "--channels-last" in out and "--device cuda" in out
    for name in ("mlp_digits", "cnn_digits", "cnn_synthetic_heavy"):
        assert name in out
    variants = {line.split(":")[0].strip() for line in out.splitlines() if line.startswith("  ")}
    assert variants == {"a", "a_prefetched", "b", "c"}, "a GPU's short time: the W&B breakdowns run on CPU only"


def test_budget_stops_before_a_repetition_that_would_not_fit_and_keeps_the_finished_one(tmp_path):
    proc = subprocess.run([*RUN, "--quick", "--reps", "3", "--budget", "1", "--workloads", "mlp_digits", "--variants",
                           "a", "--no-startup", "--out", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "stopping after 1 repetitions" in proc.stdout
    result = json.loads((tmp_path / "cpu.json").read_text())
    assert (result["reps"], result["reps_requested"]) == (1, 3)
    assert len(result["workloads"]["mlp_digits"]["variants"]["a"]["step_ms"]["values"]) == 1
    assert "1 repetition (of 3: another would have ended after the 1 s budget)" in (tmp_path / "cpu.md").read_text()


def test_cuda_without_a_gpu_is_refused_with_a_clear_message(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([*RUN, "--device", "cuda", "--no-startup"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "--dry-run" in proc.stderr


def test_steady_state_leaves_out_warmup_and_epoch_boundaries():
    sys.path.insert(0, str(ROOT))
    from benchmarks.run import step_metrics

    # epoch 0: steps end at 1.0, 1.1, 1.2; epoch 1 starts after a 5 s validation: 6.2, 6.3
    steps = [(0, 0.95, 1.0, 0.5), (0, 1.05, 1.1, 0.55), (0, 1.15, 1.2, 0.6), (1, 6.15, 6.2, 0.7), (1, 6.25, 6.3, 0.75)]
    m = step_metrics({"t0": 0.0, "steps": steps, "batch_size": 10}, warmup=1)
    assert m["steps"] == 5 and m["first_step_s"] == pytest.approx(1.0) and m["training_start_s"] == pytest.approx(0.95)
    assert m["step_ms"] == pytest.approx(100) and m["outside_step_ms"] == pytest.approx(50)
    assert m["samples_per_s"] == pytest.approx(100) and m["step_cpu_ms"] == pytest.approx(50)
    assert m["first_step_cpu_s"] == pytest.approx(0.5)


def test_ratios_pair_each_repetitions_variants():
    sys.path.insert(0, str(ROOT))
    from benchmarks.run import fastest_ratio, ratio, startup_difference, summarize

    # repetition 2 ran in a slow spell that slowed both variants: paired ratios 1.0 and 1.0
    c, b = summarize([2.0, 4.0, 2.2]), summarize([2.0, 4.0, 2.2])
    assert ratio(c, b) == pytest.approx(1.0)
    c, b = summarize([2.0, 4.0, 3.0]), summarize([1.0, 4.0, 2.0])  # per repetition: 2.0, 1.0, 1.5
    assert ratio(c, b) == pytest.approx(1.5)
    assert ratio(summarize([3.0]), summarize([1.0, 2.0])) == pytest.approx(3.0 / 1.5)  # unpaired: medians
    assert ratio(None, b) is None
    # the fastest repetitions: the least disturbed by the shared machine
    c, b = summarize([2.0, 4.0, 3.0]), summarize([1.5, 4.0, 2.0])
    assert fastest_ratio(c, b) == pytest.approx(2.0 / 1.5)
    delta = startup_difference(c, b, None, None)
    assert delta["wall"] == pytest.approx(0.5) and delta["wall_fastest"] == pytest.approx(0.5) and delta["cpu"] is None


def test_an_expkit_training_step_runs_no_more_device_operations_than_plain_lightnings():
    """The per-step target (c/b <= 1.05) as a count, which does not vary with the machine's load:
    expkit's module, metrics, callbacks and data add no operation to a step of plain Lightning
    (on a GPU each would be a kernel launch, paid in host time). Counted on the MLP digits workload."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.ops import expkit_ops, plain_lightning_ops

    b, c = plain_lightning_ops(), expkit_ops()
    assert b.per_step() > 50  # forward, backward and AdamW were counted
    assert c.per_step() <= b.per_step(), (c.ops - b.ops, b.ops - c.ops)


@pytest.mark.slow
def test_sequence_workload_runs_the_same_steps_in_every_variant_and_reports_tokens_per_second(tmp_path):
    proc = subprocess.run([*RUN, "--quick", "--workloads", "char_lm_text", "--variants", "a,b,c", "--no-startup",
                           "--out", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "cpu.json").read_text())
    variants = result["workloads"]["char_lm_text"]["variants"]
    assert {v["steps"]["median"] for v in variants.values()} == {17}  # 538 training windows, batch 32
    for v in variants.values():
        assert v["tokens_per_s"]["median"] == pytest.approx(64 * v["samples_per_s"]["median"])
    assert result["workloads"]["char_lm_text"]["ratios"]["c/b"]["step_ms"] > 0
    assert "| tokens/s |" in (tmp_path / "cpu.md").read_text()


def test_workloads_match_the_shipped_configs():
    """a and b are given the network's arguments and the learning rate; c reads them from conf/."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.workloads import NET_DEFAULTS, WHOLE_MODELS, workloads
    from tests.conftest import compose_config

    for w in workloads().values():
        cfg = compose_config(w.train_overrides())
        net = cfg.model if w.model in WHOLE_MODELS else cfg.model.net
        for key, value in {**NET_DEFAULTS[w.model], **w.net_kwargs}.items():
            assert net[key] == value or list(net[key]) == value, (w.name, key)
        assert cfg.model.optimizer.lr == w.lr, w.name


def test_sequence_workload_trains_expkits_data_and_network():
    """The hand-written loop cannot import Lightning: its text windows and network are copies, held
    equal here to what train.py builds (same windows per split; same weights and logits per seed)."""
    sys.path.insert(0, str(ROOT))
    import functools

    import torch

    from benchmarks.workloads import arrays, build_net, num_outputs, workloads
    from expkit.data import CharTextDataModule
    from expkit.models import CharLanguageModel
    from tests.conftest import compose_config

    w = workloads()["char_lm_text"]
    cfg = compose_config(w.train_overrides())
    datamodule = CharTextDataModule(**{k: v for k, v in cfg.data.items() if k != "_target_"})
    datamodule.setup("fit")
    for split, (x, y) in arrays(w).items():
        assert torch.equal(datamodule.datasets[split].tensors[0], torch.as_tensor(x)), split
        assert torch.equal(datamodule.datasets[split].tensors[1], torch.as_tensor(y)), split
    assert num_outputs(w) == datamodule.sizes["vocab_size"]

    torch.manual_seed(0)
    copy = build_net(w, (w.data_kwargs["seq_len"],), num_outputs(w)).eval()
    torch.manual_seed(0)
    model = CharLanguageModel(**datamodule.sizes, optimizer=functools.partial(torch.optim.AdamW),
                              **{k: cfg.model[k] for k in ("d_model", "num_layers", "num_heads", "dim_feedforward", "dropout")}).eval()
    ours, theirs = copy.state_dict(), model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = datamodule.datasets["val"].tensors[0][:4]
    assert torch.equal(copy(x), model(x))
