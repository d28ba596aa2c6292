"""Checkpoints: round trip, atomic replacement, every refusal (corrupt weights, foreign
tokenizer, bad config, shape mismatch), discovery with broken folders present, bf16 weights,
and trainer state that loads with weights_only=True."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from slm_tui.checkpoint.io import (
    CheckpointInfo,
    bundled_demo_path,
    is_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_trainer_state,
    read_info,
    resolve_checkpoint,
    save_checkpoint,
)
from slm_tui.config import Config, ModelConfig
from slm_tui.errors import CheckpointError, ConfigError
from slm_tui.model import GPT
from slm_tui.tokenizers import Tokenizer, load_tokenizer, train_tokenizer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; two threads on a busy 2-core box only spin
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def byte_tok(tmp_path_factory) -> Tokenizer:
    return train_tokenizer("byte", [], 260, tmp_path_factory.mktemp("tok") / "byte")


def make_config(tok: Tokenizer, **model) -> Config:
    cfg = Config()
    fields = dict(vocab_size=tok.vocab_size, context_length=32, n_layer=2, n_head=2, d_model=32)
    fields.update(model)
    cfg.model = ModelConfig(**fields)
    return cfg


def make_model(cfg: Config, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg.model).eval()


def save(path: Path, tok: Tokenizer, seed: int = 0, step: int = 1, **kwargs) -> GPT:
    cfg = make_config(tok, **kwargs.pop("model", {}))
    model = make_model(cfg, seed)
    save_checkpoint(path, model, cfg, tok, {"step": step, "tokens_seen": step * 100}, **kwargs)
    return model


def logits_of(model: GPT) -> torch.Tensor:
    idx = torch.arange(20).view(2, 10) * 7 % model.cfg.vocab_size
    with torch.no_grad():
        return model(idx)[0]


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith("."))


# ---- round trip ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model_fields",
    [
        {},
        {"tie_embeddings": False, "n_kv_head": 1},
        {"positions": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True},
    ],
    ids=["default", "untied-gqa", "gpt2"],
)
def test_round_trip_gives_same_logits(tmp_path, byte_tok, model_fields) -> None:
    model = save(tmp_path / "ck", byte_tok, model=model_fields, step=7)
    loaded = load_checkpoint(tmp_path / "ck")
    model2, tok2, cfg2 = loaded  # unpacks as (model, tokenizer, config)
    assert not model2.training and model2.tok_emb.weight.dtype == torch.float32
    torch.testing.assert_close(logits_of(model2), logits_of(model), rtol=0, atol=0)
    assert cfg2.model == model.cfg and tok2.fingerprint == byte_tok.fingerprint
    assert loaded.info.step == 7 and loaded.info.params == model.num_params()
    assert loaded.device == torch.device("cpu")
    with safe_open(tmp_path / "ck" / "model.safetensors", "pt") as f:
        stored = set(f.keys())
    assert ("lm_head.weight" in stored) == (not model.cfg.tie_embeddings)
    if model.cfg.tie_embeddings:
        assert model2.lm_head.weight is model2.tok_emb.weight
    # Saving did not repoint the caller's tokenizer at the checkpoint's copy.
    assert byte_tok.path is not None and (tmp_path / "ck") not in byte_tok.path.parents


def test_checkpoint_contents(tmp_path, byte_tok) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 5.0}\n')
    save(
        tmp_path / "ck",
        byte_tok,
        extra_files={"metrics.jsonl": metrics, "loss.png": tmp_path / "not-yet.png"},
    )
    ck = tmp_path / "ck"
    names = sorted(p.name for p in ck.iterdir())
    assert names == ["config.yaml", "meta.json", "metrics.jsonl", "model.safetensors", "tokenizer"]
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["tokenizer_fingerprint"] == byte_tok.fingerprint
    assert meta["step"] == 1 and meta["tokens_seen"] == 100 and "created" in meta
    assert load_tokenizer(ck / "tokenizer").fingerprint == byte_tok.fingerprint
    # Ordinary outputs: the umask's permissions (safetensors alone would write 0600).
    mask = os.umask(0o022)
    try:
        save(tmp_path / "ck2", byte_tok)
    finally:
        os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ck2").iterdir()}
    assert modes["model.safetensors"] == modes["meta.json"] == 0o644
    assert modes["tokenizer"] == 0o755


def test_non_finite_metrics_become_null(tmp_path, byte_tok) -> None:
    cfg = make_config(byte_tok)
    save_checkpoint(tmp_path / "ck", make_model(cfg), cfg, byte_tok, {"val_loss": float("nan")})
    assert json.loads((tmp_path / "ck" / "meta.json").read_text())["val_loss"] is None
    assert read_info(tmp_path / "ck").val_loss is None


def test_fixture_checkpoint_loads(tiny_checkpoint) -> None:
    model, tok, cfg = load_checkpoint(tiny_checkpoint)
    assert tok.kind == "sentencepiece-bpe" and cfg.model.vocab_size == tok.vocab_size
    ids = tok.encode("Once upon a time, Lily saw a ball.")
    assert tok.decode(ids) == "Once upon a time, Lily saw a ball."
    logits, _ = model(torch.tensor([ids]))
    assert logits.shape == (1, len(ids), tok.vocab_size) and torch.isfinite(logits).all()


# ---- atomic writes ------------------------------------------------------------------------
def test_replacing_a_checkpoint_leaves_no_debris(tmp_path, byte_tok) -> None:
    path = tmp_path / "run" / "latest"
    save(path, byte_tok, seed=0, step=1)
    new = save(path, byte_tok, seed=1, step=2)
    assert read_info(path).step == 2
    torch.testing.assert_close(logits_of(load_checkpoint(path).model), logits_of(new))
    assert siblings(path) == []


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, byte_tok) -> None:
    path = tmp_path / "run" / "latest"
    old = save(path, byte_tok, seed=0, step=1)
    # A real failure after the weights are written: an "extra file" that is a directory.
    with pytest.raises(IsADirectoryError):
        save(path, byte_tok, seed=1, step=2, extra_files={"loss.png": tmp_path})
    # Refused before writing anything: a trainer state torch.load(weights_only) could not read.
    with pytest.raises(CheckpointError, match=r"trainer_state\['rng'\]\['numpy'\]"):
        save(
            path, byte_tok, seed=1, step=2, trainer_state={"rng": {"numpy": np.random.get_state()}}
        )
    assert read_info(path).step == 1
    torch.testing.assert_close(logits_of(load_checkpoint(path).model), logits_of(old))
    assert siblings(path) == []


def test_a_checkpoint_replaced_while_it_loads_loads_whole(tmp_path, byte_tok) -> None:
    """A trainer saving latest/ over and over while a reader loads it (the TUI's "write
    with the newest checkpoint" during a run): every load succeeds and gives one save's
    weights with that save's step, never a mix of two. The loop runs until both sides have
    done enough (3 s, 10 loads, 5 saves during them), not for a set time, so a loaded
    machine slows it down but cannot fail it or let it pass without saves in between."""
    path = tmp_path / "run" / "latest"
    cfg = make_config(byte_tok)
    models = [make_model(cfg, seed) for seed in (0, 1)]  # built here: the RNG is global
    stop = threading.Event()
    saves = [0]

    def trainer() -> None:
        step = 1
        while True:
            meta = {"step": step, "tokens_seen": step * 100}
            save_checkpoint(path, models[step % 2], cfg, byte_tok, meta)
            saves[0] += 1
            step += 1
            if stop.wait(0.02):  # a few training steps between saves
                return

    saver = threading.Thread(target=trainer)
    saver.start()
    while not path.is_dir():
        time.sleep(0.01)
    try:
        deadline = time.monotonic() + 3.0
        loads, first = 0, saves[0]
        while time.monotonic() < deadline or loads < 10 or saves[0] - first < 5:
            loaded = load_checkpoint(path)
            want = models[loaded.info.step % 2]
            torch.testing.assert_close(logits_of(loaded.model), logits_of(want))
            loads += 1
    finally:
        stop.set()
        saver.join()


def test_leftover_temp_dirs_are_not_listed(tmp_path, byte_tok) -> None:
    save(tmp_path / "run" / "latest", byte_tok)
    shutil.copytree(tmp_path / "run" / "latest", tmp_path / "run" / ".tmp-latest-999")
    shutil.copytree(tmp_path / "run" / "latest", tmp_path / "run" / ".trash-best-998")
    assert [i.name for i in list_checkpoints(tmp_path)] == ["run/latest"]


def test_saving_over_a_file_is_refused(tmp_path, byte_tok) -> None:
    (tmp_path / "ck").write_text("precious")
    with pytest.raises(CheckpointError, match="is a file"):
        save(tmp_path / "ck", byte_tok)
    assert (tmp_path / "ck").read_text() == "precious"


# ---- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "huge-header"])
def test_corrupt_weights_are_refused(tmp_path, byte_tok, damage) -> None:
    save(tmp_path / "ck", byte_tok)
    f = tmp_path / "ck" / "model.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        f.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        f.write_bytes((10**12).to_bytes(8, "little") + data[8:])
    with pytest.raises(CheckpointError, match=r"model\.safetensors") as exc:
        load_checkpoint(tmp_path / "ck")
    assert "corrupt" in one_line(exc) or "truncated" in one_line(exc)


def test_foreign_tokenizer_is_refused(tmp_path) -> None:
    rng = random.Random(0)
    words = ["apple", "river", "stone", "happy", "green", "little", "house", "jumped"]

    def corpus(k):
        return [" ".join(rng.choice(words[k:]) for _ in range(12)) for _ in range(200)]

    tok_a = train_tokenizer("sentencepiece-bpe", corpus(0), 300, tmp_path / "a", num_threads=1)
    tok_b = train_tokenizer("sentencepiece-bpe", corpus(3), 300, tmp_path / "b", num_threads=1)
    assert tok_a.vocab_size == tok_b.vocab_size and tok_a.fingerprint != tok_b.fingerprint
    save(tmp_path / "ck", tok_a)
    shutil.rmtree(tmp_path / "ck" / "tokenizer")
    shutil.copytree(tmp_path / "b", tmp_path / "ck" / "tokenizer")
    with pytest.raises(CheckpointError, match="not the tokenizer this model was trained with") as e:
        load_checkpoint(tmp_path / "ck")
    one_line(e)
    # Tampering with the copy's files is caught too (its own fingerprint no longer matches).
    shutil.rmtree(tmp_path / "ck" / "tokenizer")
    shutil.copytree(tmp_path / "a", tmp_path / "ck" / "tokenizer")
    load_checkpoint(tmp_path / "ck")
    model_file = next(p for p in (tmp_path / "ck" / "tokenizer").iterdir() if p.suffix == ".model")
    model_file.write_bytes(model_file.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("model:", "model:\n  colour: blue"), "unknown config key"),
        (lambda t: "model: [unclosed", "config.yaml"),
        (lambda t: t.replace("d_model: 32", "d_model: 64"), "weights do not match"),
        (lambda t: t.replace("n_layer: 2", "n_layer: 3"), "weights do not match"),
        (lambda t: t.replace("vocab_size: 260", "vocab_size: 300"), "300"),
    ],
    ids=["unknown-key", "bad-yaml", "wider", "deeper", "vocab"],
)
def test_bad_config_is_refused(tmp_path, byte_tok, edit, message) -> None:
    save(tmp_path / "ck", byte_tok)
    cfg_file = tmp_path / "ck" / "config.yaml"
    cfg_file.write_text(edit(cfg_file.read_text()))
    with pytest.raises(CheckpointError, match=message) as exc:
        load_checkpoint(tmp_path / "ck")
    one_line(exc)


@pytest.mark.parametrize("missing", ["meta.json", "tokenizer", "config.yaml", "model.safetensors"])
def test_missing_parts_are_refused(tmp_path, byte_tok, missing) -> None:
    save(tmp_path / "ck", byte_tok)
    target = tmp_path / "ck" / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(CheckpointError, match=f"{missing}.* missing|missing.*{missing}") as exc:
        load_checkpoint(tmp_path / "ck")
    one_line(exc)


@pytest.mark.parametrize(
    "device", ["toaster", "cuda:7" if not torch.cuda.is_available() else "cuda:99"]
)
def test_unknown_or_missing_device_is_refused(tmp_path, byte_tok, device) -> None:
    save(tmp_path / "ck", byte_tok)
    with pytest.raises(ConfigError, match=f"--device .*{device}") as exc:
        load_checkpoint(tmp_path / "ck", device=device)
    one_line(exc)


# ---- resolving and listing ----------------------------------------------------------------
def test_resolve_run_dirs(tmp_path, byte_tok) -> None:
    run = tmp_path / "run"
    save(run / "latest", byte_tok, step=2)
    assert resolve_checkpoint(run) == run / "latest"
    save(run / "best", byte_tok, step=1)
    assert resolve_checkpoint(run) == run / "best"
    assert resolve_checkpoint(run / "latest") == run / "latest"
    assert load_checkpoint(run).info.step == 1
    assert is_checkpoint(run / "best") and not is_checkpoint(run)
    for bad, message in [
        (tmp_path / "nope", "not found"),
        (tmp_path / "empty", "not a checkpoint"),
        (run / "best" / "meta.json", "is a file"),
    ]:
        if bad.name == "empty":
            bad.mkdir()
        with pytest.raises(CheckpointError, match=message) as exc:
            resolve_checkpoint(bad)
        one_line(exc)


def test_list_checkpoints_with_broken_dirs(tmp_path, byte_tok) -> None:
    save(tmp_path / "a" / "latest", byte_tok, step=10)
    save(tmp_path / "b", byte_tok, step=20, model={"d_model": 64})
    save(tmp_path / "nested" / "deeper" / "c", byte_tok, step=30)
    save(tmp_path / "truncated", byte_tok)
    f = tmp_path / "truncated" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    (tmp_path / "weights-only").mkdir()
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "weights-only")
    (tmp_path / "not-a-checkpoint").mkdir()
    (tmp_path / "not-a-checkpoint" / "notes.txt").write_text("hello")

    infos = list_checkpoints(tmp_path)
    by_name = {i.name: i for i in infos}
    assert set(by_name) == {"a/latest", "b", "nested/deeper/c", "truncated", "weights-only"}
    assert all(isinstance(i, CheckpointInfo) for i in infos)
    good = [i.name for i in infos if i.error is None]
    assert good == ["nested/deeper/c", "b", "a/latest"]  # newest first
    assert "truncated" in by_name["truncated"].error
    assert "config.yaml is missing" in by_name["weights-only"].error
    assert by_name["b"].d_model == 64 and by_name["b"].step == 20
    assert by_name["b"].tokenizer_kind == "byte" and by_name["b"].vocab_size == 260
    assert list_checkpoints(tmp_path / "does-not-exist") == []


def test_bundled_demo_path(tmp_path, byte_tok, monkeypatch) -> None:
    save(tmp_path / "demo" / "best", byte_tok)
    monkeypatch.setenv("SLM_TUI_DEMO", str(tmp_path / "demo"))
    assert bundled_demo_path() == tmp_path / "demo" / "best"
    monkeypatch.setenv("SLM_TUI_DEMO", str(tmp_path / "missing"))
    found = bundled_demo_path()  # falls back to the repo's copy, if it has one
    assert found is None or (is_checkpoint(found) and found.name != "missing")


# ---- bf16 weights and trainer state -------------------------------------------------------
def test_bf16_weights_load_as_float32(tmp_path, byte_tok) -> None:
    full = save(tmp_path / "f32", byte_tok)
    save(tmp_path / "bf16", byte_tok, weights_dtype=torch.bfloat16)
    size = (tmp_path / "bf16" / "model.safetensors").stat().st_size
    assert size < 0.6 * (tmp_path / "f32" / "model.safetensors").stat().st_size
    model = load_checkpoint(tmp_path / "bf16").model
    assert all(p.dtype == torch.float32 for p in model.parameters())
    rounded = {k: v.to(torch.bfloat16).float() for k, v in full.state_dict().items()}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, rounded[k], rtol=0, atol=0)
    assert json.loads((tmp_path / "bf16" / "meta.json").read_text())["weights_dtype"] == "bfloat16"


def test_trainer_state_round_trip_with_weights_only(tmp_path, byte_tok) -> None:
    cfg = make_config(byte_tok)
    model = make_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _, loss = model(torch.zeros(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long))
    loss.backward()
    opt.step()
    state = {
        "optimizer": opt.state_dict(),
        "step": 1,
        "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])},
        "sampler": {"cursor": 12345},
        "schedule": "cosine",
    }
    run = tmp_path / "run"
    save_checkpoint(run / "latest", model, cfg, byte_tok, {"step": 1}, trainer_state=state)
    loaded = load_trainer_state(run)  # a run dir resumes from latest/
    # What resuming needs: the optimizer takes the state back, the RNG is restored exactly.
    opt2 = torch.optim.AdamW(make_model(cfg).parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    assert loaded["sampler"] == {"cursor": 12345} and loaded["step"] == 1
    torch.load(run / "latest" / "trainer_state.pt", weights_only=True)

    (run / "latest" / "trainer_state.pt").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="corrupt") as exc:
        load_trainer_state(run / "latest")
    one_line(exc)
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        load_trainer_state(tmp_path / "elsewhere")


def test_a_checkout_finds_its_bundled_demo(monkeypatch) -> None:
    """`make run` opens the TUI on checkpoints/tinystories-demo of the checkout."""
    monkeypatch.delenv("SLM_TUI_DEMO", raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert bundled_demo_path() == repo / "checkpoints" / "tinystories-demo"
