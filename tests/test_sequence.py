"""The sequence task family: character text, the character language model, per-token outputs.

Real components throughout: the bundled text (scikit-learn's dataset descriptions), real
Lightning fits on tiny budgets, the real ``train.py`` / ``eval.py`` / ``predict.py``.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from expkit.build import build_model, data_sizes
from expkit.config import validate
from expkit.data.text import CharTextDataModule
from expkit.errors import ConfigError, DataError
from expkit.models import CharLanguageModel
from tests.conftest import compose_config, run_cli, run_dirs

# The default text's distinct characters: scikit-learn's dataset descriptions, which differ a little
# between its releases (92 with 1.9, 93 with 1.3).
VOCAB = len(CharTextDataModule().vocabulary)

# A budget that trains in seconds and still leaves uniform guessing far behind.
TINY = ["trainer.max_epochs=2", "+trainer.limit_train_batches=12", "model.d_model=32", "model.num_heads=2",
        "data.seq_len=32", "logger=csv"]


def quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)


def tiny_lm(vocab_size: int, seq_len: int, **kwargs) -> CharLanguageModel:
    return CharLanguageModel(vocab_size, seq_len, optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
                             d_model=16, num_layers=1, num_heads=2, **kwargs)


# -- the data -----------------------------------------------------------------------------------
def test_windows_predict_the_next_character_and_sizes_come_before_setup():
    dm = CharTextDataModule(seq_len=48)
    assert dm.sizes == {"vocab_size": len(set(dm.text)), "seq_len": 48} and not dm.datasets  # nothing built
    assert dm.vocabulary == "".join(sorted(set(dm.text))) and dm.data_files() == []
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (32, 48) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # each target is the next input character
    windows, _ = dm.windows()
    sizes = {split: len(dm.datasets[split]) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == len(windows) and sizes["val"] == sizes["test"] == round(0.1 * len(windows))
    seen = torch.cat([dm.datasets[s].tensors[0] for s in sizes])
    assert len(torch.unique(seen, dim=0)) == len(torch.unique(windows, dim=0))  # disjoint, covering
    assert dm.decode(dm.encode("The iris")) == "The iris"


def test_split_fixed_by_split_seed_and_order_by_epoch():
    def test_inputs(**kwargs):
        dm = CharTextDataModule(seq_len=32, **kwargs)
        dm.setup("fit")
        return dm.datasets["test"].tensors[0]

    assert torch.equal(test_inputs(shuffle_seed=1), test_inputs(shuffle_seed=2))
    assert not torch.equal(test_inputs(split_seed=0), test_inputs(split_seed=1))

    dm = CharTextDataModule(seq_len=32, shuffle_seed=5)
    dm.setup("fit")

    def first_batch(epoch: int) -> torch.Tensor:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)  # what Lightning does each epoch
        return next(iter(loader))[0]

    assert torch.equal(first_batch(3), first_batch(3)) and not torch.equal(first_batch(3), first_batch(4))


def test_vocabulary_travels_in_the_checkpoint_state():
    trained = CharTextDataModule(seq_len=32)
    state = trained.state_dict()
    assert state == {"vocabulary": trained.vocabulary}
    rebuilt = CharTextDataModule(seq_len=32)
    rebuilt.load_state_dict({"vocabulary": state["vocabulary"][::-1]})  # another mapping wins over the text's
    assert rebuilt.encode("a").item() == len(state["vocabulary"]) - 1 - trained.encode("a").item()
    rebuilt.setup("test")
    x, _ = next(iter(rebuilt.test_dataloader()))
    assert rebuilt.decode(x[0]) in rebuilt.text


def test_a_users_text_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("abcab" * 80, encoding="utf-8")
    dm = CharTextDataModule(path=str(path), seq_len=8, batch_size=4)
    assert dm.sizes == {"vocab_size": 3, "seq_len": 8} and dm.data_files() == [path] and dm.name == "book.txt"
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    assert dm.decode(x[0]) in "abcab" * 80 and x.shape == (4, 8)


def test_predict_batches_are_bare_tensors_of_the_test_windows_or_the_prompt():
    dm = CharTextDataModule(seq_len=32, batch_size=16)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert isinstance(batch, torch.Tensor) and batch.shape == (16, 32)
    dm.setup("fit")
    assert torch.equal(batch, dm.datasets["test"].tensors[0][:16])
    prompted = CharTextDataModule(seq_len=32, prompt="The iris ")
    prompted.setup("predict")
    assert prompted.decode(next(iter(prompted.predict_dataloader()))[0]) == "The iris "


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"path": "no/such/file.txt"}, DataError, ["data.path=no/such/file.txt", "no such file"]),
    ({"seq_len": 10**6}, DataError, ["data.seq_len=1000000", "lower data.seq_len"]),
    ({"seq_len": 0}, ConfigError, ["data.seq_len=0"]),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, ConfigError, ["leaves no training data"]),
    ({"prompt": "The \u263a"}, DataError, ["data.prompt", "not in the vocabulary"]),
    ({"prompt": "x" * 65}, DataError, ["data.prompt has 65 characters", "shorten it"]),
])
def test_bad_data_settings_are_one_line_errors_naming_the_key(kwargs, error, words):
    with pytest.raises(error) as exc:
        dm = CharTextDataModule(**kwargs)
        dm.setup("predict" if "prompt" in kwargs else "fit")
    assert all(w in str(exc.value) for w in words) and "\n" not in str(exc.value), str(exc.value)


def test_empty_or_non_utf8_text_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)
    with pytest.raises(DataError, match="is empty"):
        data_sizes(CharTextDataModule(path=str(tmp_path / "empty.txt")))
    with pytest.raises(DataError, match="not UTF-8"):
        data_sizes(CharTextDataModule(path=str(tmp_path / "latin1.txt")))


# -- the model ----------------------------------------------------------------------------------
def test_outputs_are_per_token_and_causal():
    torch.manual_seed(0)
    model = tiny_lm(vocab_size=11, seq_len=16).eval()
    x = torch.randint(0, 11, (3, 16))
    logits = model(x)
    assert logits.shape == (3, 16, 11)
    changed = x.clone()
    changed[:, 9] = (x[:, 9] + 1) % 11
    after = model(changed)
    assert torch.allclose(logits[:, :9], after[:, :9], atol=1e-6)  # the past does not see the future
    assert not torch.allclose(logits[:, 9:], after[:, 9:])
    assert model(x[:, :5]).shape == (3, 5, 11)
    with pytest.raises(ValueError, match="seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ConfigError, match="model.num_heads=3 must divide model.d_model=16"):
        CharLanguageModel(11, 16, optimizer=torch.optim.AdamW, d_model=16, num_heads=3)


def test_perplexity_is_exp_of_the_mean_loss_over_every_character_of_uneven_batches():
    dm = CharTextDataModule(seq_len=32, batch_size=25)  # 134 val windows: batches of 25 and a last of 9
    torch.manual_seed(0)
    model = tiny_lm(**dm.sizes)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=5)
    trainer.fit(model, dm)
    [metrics] = trainer.validate(model, dm, verbose=False)
    model.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="none") for x, y in dm.val_dataloader()]
    assert len(dm.val_dataloader()) > 1 and len(losses[-1]) != len(losses[0])
    mean = torch.cat(losses).mean().item()
    assert metrics["val/loss"] == pytest.approx(mean, rel=1e-5)
    assert metrics["val/perplexity"] == pytest.approx(math.exp(mean), rel=1e-5)
    assert metrics["val/perplexity"] < dm.sizes["vocab_size"]  # already better than uniform guessing


def test_generate_continues_a_prompt():
    dm = CharTextDataModule(seq_len=16)
    torch.manual_seed(0)
    model = tiny_lm(**dm.sizes)
    prompt = dm.encode("The ")
    greedy = model.generate(prompt, 20, temperature=0)
    assert greedy.shape == (24,) and torch.equal(greedy[:4], prompt) and torch.equal(greedy, model.generate(prompt, 20, temperature=0))
    sampled = [model.generate(prompt[None].repeat(2, 1), 20, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    assert sampled[0].shape == (2, 24) and torch.equal(*sampled)  # longer than seq_len: a sliding context
    assert len(dm.decode(greedy)) == 24


# -- configs ------------------------------------------------------------------------------------
def test_the_preset_composes_validates_and_selects_language_model_kpis():
    cfg = compose_config(["experiment=text_char_lm"])
    assert cfg.data._target_ == "expkit.data.CharTextDataModule" and cfg.model._target_ == "expkit.models.CharLanguageModel"
    assert cfg.kpis.perplexity.metric == "test/perplexity" and list(cfg.kpis)[0] == "perplexity"
    assert cfg.model.scheduler_monitor == cfg.monitor.metric == "val/loss"
    sizes = validate(cfg, task="train")
    assert sizes == {"vocab_size": VOCAB, "seq_len": 64}
    refused = compose_config(["experiment=text_char_lm", "model.d_model=30"])  # 4 heads do not divide 30
    with pytest.raises(ConfigError, match="num_heads"):
        build_model(refused.model, sizes)


# -- end to end through the CLI -----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_lm(tmp_path_factory):
    """The preset on a tiny budget, trained once for the CLI tests: (working dir, run dir)."""
    root = tmp_path_factory.mktemp("char_lm")
    run_cli("train.py", "experiment=text_char_lm", *TINY, cwd=root)
    [run] = run_dirs(root)
    return root, run


def test_preset_trains_and_records_perplexity(trained_lm):
    _, run = trained_lm
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/loss", "test/perplexity", "val/loss", "val/perplexity"} <= set(metrics)
    assert metrics["test/perplexity"] == pytest.approx(math.exp(metrics["test/loss"]), rel=1e-4)
    assert metrics["test/perplexity"] < VOCAB / 2  # uniform guessing scores the vocabulary size
    history = pd.read_csv(run / "history.csv")
    assert {"train/loss", "val/loss", "val/perplexity"} <= set(history.columns) and len(history) == 2


def test_eval_reproduces_the_test_metrics(trained_lm):
    root, run = trained_lm
    [best] = (run / "checkpoints").glob("epoch_*.ckpt")  # what train.py tested
    run_cli("eval.py", f"ckpt_path={best}", cwd=root)
    [eval_run] = run_dirs(root, "eval")
    trained = json.loads((run / "metrics.json").read_text())
    evaluated = json.loads((eval_run / "metrics.json").read_text())
    for key in ("test/loss", "test/perplexity"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-5)


def test_predict_writes_per_token_probabilities(trained_lm):
    root, run = trained_lm
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = run_cli("predict.py", f"ckpt_path={ckpt}", f"output={root / 'windows.csv'}", cwd=root)
    probs = np.load(root / "windows.npy")  # more than two dimensions: a .npy beside the CSV path
    dm = CharTextDataModule(seq_len=32)
    dm.setup("fit")
    assert probs.shape == (len(dm.datasets["test"]), 32, VOCAB), proc.stderr[-2000:]
    assert np.allclose(probs.sum(-1), 1, atol=1e-4)
    # A prompt, with the recorded data settings (seq_len=32) kept.
    run_cli("predict.py", f"ckpt_path={ckpt}", '+data.prompt="The iris "', f"output={root / 'prompt.csv'}", cwd=root)
    assert np.load(root / "prompt.npy").shape == (1, 9, VOCAB)


@pytest.mark.slow
def test_the_preset_beats_uniform_guessing_by_far(tmp_path):
    """The quality bar of the preset as shipped (10 epochs; ~30 s on 2 idle CPU cores)."""
    run_cli("train.py", "experiment=text_char_lm", "logger=csv", cwd=tmp_path)
    [run] = run_dirs(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/perplexity"] < 15, metrics  # uniform: VOCAB (about 92)


# -- the Classifier on per-token outputs --------------------------------------------------------
class PerTokenNet(nn.Module):
    """Per-position class logits ``(batch, time, classes)`` of integer tokens ``(batch, time)``."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, width: int = 16) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_outputs, width)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.embedding(x)))


class CopyTokens(pl.LightningDataModule):
    """Label every position with its own token: ``x`` ``(n, 12)`` tokens, ``y = x``."""

    sizes = {"input_shape": (12,), "num_classes": 5}

    def setup(self, stage: str | None = None) -> None:
        x = torch.randint(0, 5, (96, 12), generator=torch.Generator().manual_seed(0))
        self.data = TensorDataset(x, x.clone())

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=32)

    test_dataloader = val_dataloader


def test_classifier_trains_on_per_token_logits():
    model_cfg = {"_target_": "expkit.models.Classifier",
                 "net": {"_target_": "tests.test_sequence.PerTokenNet", "_partial_": True},
                 "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.05}}
    datamodule = CopyTokens()
    pl.seed_everything(0, verbose=False)
    model = build_model(model_cfg, data_sizes(datamodule))
    quiet_trainer(fast_dev_run=True).fit(model, datamodule=datamodule)  # one batch of every stage
    trainer = quiet_trainer(max_epochs=8)
    trainer.fit(model, datamodule=datamodule)
    assert {"train/acc", "val/acc"} <= set(trainer.callback_metrics)
    [metrics] = trainer.test(model, datamodule=datamodule, verbose=False)
    assert metrics["test/acc"] > 0.95 and metrics["test/loss"] < 0.5, metrics  # every position counted
    assert model.predict_step(datamodule.data.tensors[0][:3], 0).shape == (3, 12, 5)
