"""Briefs in the engine and the data pipeline (slm_tui/briefing.py and its callers): the one
place a prompt gets its brief block, `SamplingSettings.brief`, a batch of rows with different
briefs, training shards with briefs (the same however stories are batched, validation text
plain, cached apart), `CheckpointInfo.briefs`, and the warnings a front end says.

Real parts: a real SentencePiece tokenizer and the tiny random checkpoint of conftest.py, a
real (two-step) training run on the byte tokenizer."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from conftest import _synthetic_stories

from slm_tui import shards as shards_module
from slm_tui.briefing import (
    TrainingBriefs,
    brief_prompt,
    is_story_request,
    request_brief,
    trained_with_briefs,
    with_blank_lines,
    word_warnings,
)
from slm_tui.briefs import FORMAT_VERSION, Brief, format_brief, split_brief, story_rng, with_brief
from slm_tui.checkpoint.format import read_info
from slm_tui.checkpoint.io import load_checkpoint
from slm_tui.errors import ConfigError, DataError, GenerationError
from slm_tui.generation import SamplingSettings, generate, generate_batch, prepare_prompt
from slm_tui.generation.engine import Decoder
from slm_tui.handle import LocalModel, ServerModel, brief_note
from slm_tui.presets import load_config
from slm_tui.shards import corpus_source, default_shards_dir, load_shard, prepare_shards
from slm_tui.tokenizers.byte import ByteTokenizer
from slm_tui.trainer import train
from slm_tui.trainer.prepare import plan_run

DOG = Brief(words=("dog", "cake"), name="Lily", features=("dialogue",))
FAST = SamplingSettings(max_new_tokens=10, seed=4, ignore_eos=True)


@pytest.fixture(autouse=True)
def _shards_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_SHARDS_DIR", str(tmp_path / "shards-cache"))


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint, "cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    stories = _synthetic_stories(240, seed=5)
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return stories, path


# ---- the prompt -------------------------------------------------------------------------------
def test_the_prompt_is_the_block_then_the_seed_sentence(loaded):
    tok, ctx = loaded.tokenizer, loaded.model.cfg.context_length
    assert brief_prompt(DOG, "  Once") == format_brief(DOG) + "Once"  # no space after "Story:\n"
    assert brief_prompt(None, "  Once") == "  Once" == brief_prompt(Brief(), "  Once")
    ids, truncated = prepare_prompt(tok, "Once", ctx, brief=DOG)
    assert ids == [tok.bos_id, *tok.encode("Words: dog, cake\nName: Lily\nFeatures: dialogue\n"
                                           "Story:\nOnce")] and not truncated  # fmt: skip
    assert prepare_prompt(tok, "Once", ctx)[0] == [tok.bos_id, *tok.encode("Once")]
    # an empty seed sentence: the block alone, the model writes the story from its start
    assert prepare_prompt(tok, "", ctx, brief=DOG)[0] == [
        tok.bos_id,
        *tok.encode(format_brief(DOG)),
    ]


def test_a_story_with_a_brief_is_the_story_only(loaded):
    model, tok = loaded.model, loaded.tokenizer
    with_b = list(generate(model, tok, "Once", FAST.replace(brief=DOG, brief_strength=0)))
    by_hand = list(generate(model, tok, format_brief(DOG) + "Once", FAST))
    text = "".join(e.text for e in with_b)
    assert text == "".join(e.text for e in by_hand)  # the same ids in, the same story out
    assert [e.token_id for e in with_b] == [e.token_id for e in by_hand]
    plain = "".join(e.text for e in generate(model, tok, "Once", FAST))
    assert text != plain  # the brief reached the model


def test_a_batch_of_rows_with_their_own_briefs_shares_one_sampler_call(loaded, monkeypatch):
    model, tok = loaded.model, loaded.tokenizer
    briefs = [DOG, Brief(words=("ball",)), None]
    per_row = [FAST.replace(brief=b) for b in briefs]
    calls = {"sample": 0, "rows": 0}
    sample, rows = Decoder.sample, Decoder._sample_rows

    def counted_sample(self, settings):
        calls["sample"] += 1
        return sample(self, settings)

    def counted_rows(self, *args):
        calls["rows"] += 1
        return rows(self, *args)

    monkeypatch.setattr(Decoder, "sample", counted_sample)
    monkeypatch.setattr(Decoder, "_sample_rows", counted_rows)
    out = generate_batch(model, tok, ["Once"] * 3, per_row, batch_size=3, seeds=[1, 2, 3])
    assert calls["sample"] == 10 and calls["rows"] == 10  # one sampler call a step, not three
    monkeypatch.undo()
    for i, b in enumerate(briefs):  # each row is the story its prompt and brief write alone
        alone = generate(model, tok, "Once", FAST.replace(seed=i + 1, brief=b))
        assert out[i].text == "".join(e.text for e in alone)
        assert out[i].prompt == "Once"
    with pytest.raises(GenerationError, match="2 settings for 3 prompts"):
        generate_batch(model, tok, ["a"] * 3, per_row[:2], seeds=[1, 2, 3])


# ---- settings ---------------------------------------------------------------------------------
def test_settings_carry_a_validated_hashable_brief():
    s = SamplingSettings(brief={"words": ["Dog", "cake"], "name": "Lily"})
    assert s.brief == Brief(("dog", "cake"), "Lily")
    assert hash(s) == hash(SamplingSettings(brief=Brief(("dog", "cake"), "Lily")))
    assert s != SamplingSettings() and s.replace(brief=None) == SamplingSettings()
    d = s.to_dict()
    assert d["brief"] == {"words": ["dog", "cake"], "name": "Lily", "features": []}
    assert json.loads(json.dumps(d)) == d and SamplingSettings(**d) == s  # replayable
    assert SamplingSettings().to_dict()["brief"] is None
    assert SamplingSettings(brief=Brief()).brief is None  # an empty brief is none
    assert SamplingSettings(brief={}).brief is None
    for bad, needle in (
        ({"features": ["funny"]}, "unknown brief feature 'funny'"),
        ({"words": list("abcdefg")}, "at most 6 words"),
        ({"words": ["two words"]}, "one word of letters"),
        ({"colour": "red"}, "unknown brief key 'colour'"),
        ("dog", "brief must be a brief object"),
        (3, "brief must be a brief object"),
    ):
        with pytest.raises(GenerationError, match=needle) as info:
            SamplingSettings(brief=bad)
        assert "\n" not in str(info.value)


# ---- training shards --------------------------------------------------------------------------
def test_training_briefs_are_fixed_by_the_story_and_seed():
    story = _synthetic_stories(1, seed=9)[0]
    tb = TrainingBriefs(1.0, 3, seed=7)
    assert tb.apply(story) == tb.apply(story) == with_brief(story, story_rng(story, 7), 1.0, 3)
    block, rest = split_brief(tb.apply(story))
    assert block and rest == story.lstrip()
    assert TrainingBriefs(0.5, 3, 7).key == f"v{FORMAT_VERSION} fraction=0.5 words=3 seed=7"
    assert TrainingBriefs(1, 3, 7).key != TrainingBriefs(1.0, 3, 8).key
    for bad in (0.0, -0.5, 1.5, True, "half"):
        with pytest.raises(ConfigError, match=r"data\.briefs"):
            TrainingBriefs(bad)
    with pytest.raises(ConfigError, match=r"data\.brief_words"):
        TrainingBriefs(0.5, 7)


def test_blank_lines_double_single_line_breaks_only():
    story = 'Once upon a time.\nTom ran.\n\nHe said, "Hi!"\nThe end.\n'
    assert with_blank_lines(story) == (
        'Once upon a time.\n\nTom ran.\n\nHe said, "Hi!"\n\nThe end.\n'
    )
    assert with_blank_lines("one line") == "one line"
    assert with_blank_lines(with_blank_lines(story)) == with_blank_lines(story)


def test_blank_lines_leave_the_brief_block_and_the_brief_as_they_were():
    stories = _synthetic_stories(40, seed=3)
    both = TrainingBriefs(0.5, 3, seed=7, blank_lines=0.5)
    plain_layout = TrainingBriefs(0.5, 3, seed=7)
    laid_out = 0
    for story in stories:
        text, before = both.apply(story), plain_layout.apply(story)
        block, rest = split_brief(text)
        assert block == split_brief(before)[0]  # the same brief, its block untouched
        assert rest in (story.lstrip(), with_blank_lines(story.lstrip()))
        laid_out += rest != story.lstrip()
    assert 10 < laid_out < 30  # about half, as asked
    # blank lines alone: no brief anywhere; the key of a plain brief setting is unchanged
    alone = TrainingBriefs(0.0, blank_lines=1.0, seed=7)
    assert all(alone.apply(s) == with_blank_lines(s) for s in stories)
    assert plain_layout.key == f"v{FORMAT_VERSION} fraction=0.5 words=3 seed=7"
    assert both.key == plain_layout.key + " blank_lines=0.5"
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(ConfigError, match=r"data\.blank_lines"):
            TrainingBriefs(0.5, blank_lines=bad)


def test_a_run_with_blank_lines_writes_them_into_training_shards_only(corpus, tmp_path):
    _, path = corpus
    cfg = load_config("tiny", ["tokenizer.kind=byte", "data.blank_lines=1"])
    cfg.data.data_files = [str(path)]
    tb = TrainingBriefs.of(cfg)
    assert tb is not None and tb.fraction == 0.0 and not trained_with_briefs(cfg)
    tok = ByteTokenizer()
    shards = prepare_shards(corpus_source(None, [str(path)]), tok, tmp_path / "s",
                            val_fraction=0.1, briefs=tb)  # fmt: skip
    train, val = _decoded(shards.train, tok), _decoded(shards.val, tok)
    assert train and all("\n\n" in t and not split_brief(t)[0] for t in train)
    assert val and all("\n\n" not in t for t in val)  # validation text as written
    assert shards.train.meta["briefs"] == tb.key
    with pytest.raises(ConfigError, match=r"data\.blank_lines"):
        load_config("tiny", ["data.blank_lines=2"])


def _decoded(shard, tok) -> list[str]:
    """The stories of a shard, decoded (BOS ... EOS each)."""
    ids = np.asarray(shard.tokens).tolist()
    out, cur = [], []
    for i in ids:
        if i == tok.bos_id:
            cur = []
        elif i == tok.eos_id:
            out.append(tok.decode(cur))
        else:
            cur.append(i)
    return out


def test_shards_with_briefs_are_the_same_however_stories_are_batched(corpus, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    stories, path = corpus
    tok = ByteTokenizer()
    source, tb = corpus_source(None, [str(path)]), TrainingBriefs(0.5, 3, seed=11)
    one = prepare_shards(source, tok, tmp_path / "one", val_fraction=0.1, briefs=tb)
    monkeypatch.setattr(shards_module, "_BATCH_BYTES", 300)  # a few stories a batch
    many = prepare_shards(source, tok, tmp_path / "many", val_fraction=0.1, briefs=tb)
    for split in ("train", "val"):
        a = (one.dir / f"{split}.bin").read_bytes()
        assert a == (many.dir / f"{split}.bin").read_bytes()
    train = _decoded(one.train, tok)
    briefed = [t for t in train if split_brief(t)[0]]
    assert 0.3 < len(briefed) / len(train) < 0.7  # about half, as asked
    for text in briefed:  # each brief is its own story's, and the story follows it whole
        block, story = split_brief(text)
        assert any(s.lstrip() == story for s in stories)
        assert block == format_brief(Brief(*_fields(block)))
    assert all(not split_brief(t)[0] for t in _decoded(one.val, tok))  # validation: plain
    assert one.val.meta["briefs"] == one.train.meta["briefs"] == tb.key
    assert one.train.num_bytes == sum(len(t.encode()) for t in train)  # the text written


def _fields(block: str) -> tuple:
    from slm_tui.briefs import parse_brief

    b = parse_brief(block)
    return b.words, b.name, b.features


def test_the_cache_keeps_plain_and_briefed_shards_apart(corpus, tmp_path):
    _, path = corpus
    tok = ByteTokenizer()
    source = corpus_source(None, [str(path)])
    tb = TrainingBriefs(0.5, 3, seed=1)
    plain = prepare_shards(source, tok, val_fraction=0.1)
    briefed = prepare_shards(source, tok, val_fraction=0.1, briefs=tb)
    assert plain.dir != briefed.dir == default_shards_dir(source, tok, tb)
    assert "briefs" not in plain.train.meta
    assert prepare_shards(source, tok, val_fraction=0.1, briefs=tb).cached
    assert prepare_shards(source, tok, val_fraction=0.1).cached
    other = prepare_shards(source, tok, val_fraction=0.1, briefs=TrainingBriefs(0.5, 3, seed=2))
    assert not other.cached and other.dir != briefed.dir
    # shards written elsewhere with other briefs are never taken for these
    shutil.copytree(plain.dir, tmp_path / "mine")
    with pytest.raises(DataError, match="brief setting"):
        prepare_shards(source, tok, tmp_path / "mine", val_fraction=0.1, briefs=tb)
    # a briefed shard folder renamed into the plain one's place is rebuilt, not reused
    shutil.rmtree(plain.dir)
    shutil.copytree(briefed.dir, plain.dir)
    again = prepare_shards(source, tok, val_fraction=0.1)
    assert not again.cached and "briefs" not in load_shard(again.dir / "train").meta


def test_a_run_trained_with_briefs_says_so_in_its_checkpoint(corpus, tmp_path):
    _, path = corpus
    cfg = load_config("tiny", [
        "tokenizer.kind=byte", "model.d_model=32", "model.n_layer=1", "model.n_head=2",
        "model.context_length=32", "train.batch_size=4", "train.max_steps=2",
        "train.eval_every=2", "train.save_every=2", "train.eval_batches=1",
        "train.sample_tokens=0", "train.threads=1", "train.device=cpu", "train.warmup_steps=1",
        "data.briefs=1", "data.brief_words=2",
    ])  # fmt: skip
    cfg.data.data_files = [str(path)]
    assert trained_with_briefs(cfg) and cfg.data.briefs == 1.0
    plan = plan_run(cfg, tmp_path / "planned")
    assert plan.shards.train.meta["briefs"] == TrainingBriefs(1.0, 2, cfg.train.seed).key
    train(cfg, tmp_path / "run")
    info = read_info(tmp_path / "run" / "latest")
    assert info.briefs is True
    for bad, needle in (("data.briefs=1.5", "data.briefs"), ("data.brief_words=7", "brief_words")):
        with pytest.raises(ConfigError, match=needle):
            load_config("tiny", [bad])


def test_checkpoint_info_briefs_comes_from_its_config(tiny_checkpoint, tmp_path):
    assert read_info(tiny_checkpoint).briefs is False
    copy = tmp_path / "with-briefs"
    shutil.copytree(tiny_checkpoint, copy)
    text = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(text.replace("briefs: 0.0", "briefs: 0.5"))
    assert read_info(copy).briefs is True
    assert not trained_with_briefs(None) and not trained_with_briefs(load_config("tiny", []))


# ---- what a front end says --------------------------------------------------------------------
def test_the_untrained_note_for_local_models_only(tiny_checkpoint, loaded, tmp_path):
    note = brief_note(LocalModel(loaded))
    assert note is not None and "trained without briefs" in note and "\n" not in note
    copy = tmp_path / "with-briefs"
    shutil.copytree(tiny_checkpoint, copy)
    text = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(text.replace("briefs: 0.0", "briefs: 0.5"))
    assert brief_note(LocalModel(load_checkpoint(copy, "cpu"))) is None
    server = ServerModel(remote=None, model_id="m")  # type: ignore[arg-type]  (info only)
    assert brief_note(server) is None  # a server does not say how its model was trained


def test_word_warnings_name_words_the_tokenizer_splits_badly(loaded, tmp_path):
    tok = loaded.tokenizer  # SentencePiece BPE, 384 ids, trained on the synthetic stories
    assert word_warnings(Brief(("dog", "cake"), "Lily"), tok) == []
    lines = word_warnings(Brief(("dog", "xylophone"), "Zebulon"), tok)
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert lines[0].startswith("brief word 'xylophone' is")
    assert lines[1].startswith("brief name 'Zebulon' is")
    assert word_warnings(Brief(("xylophone",)), ByteTokenizer()) == []  # bytes by design
    assert word_warnings(None, tok) == []
    (line,) = word_warnings(Brief(("ñandú",)), tok)  # letters it never saw: byte fallback
    assert "spelled in bytes" in line


def test_chat_messages_that_ask_for_a_story():
    assert request_brief("a story about a dragon named Max who finds a cake") == Brief(
        ("dragon", "finds", "cake"), "Max"
    )
    assert request_brief("Write a story with the words dog, cake and happy") == Brief(
        ("dog", "cake", "happy")
    )
    b = request_brief("Tell me a bedtime story about a bunny called Hop, with dialogue")
    assert b == Brief(("bunny",), "Hop", ("dialogue",))
    for story_text in ("Once upon a time", "The dog", "There was a girl named Lily.",
                       "Once upon a time there was a dragon. Tom read a story about him."):  # fmt: skip
        assert not is_story_request(story_text)
        assert request_brief(story_text) is None
    assert is_story_request("tell me a story") and request_brief("tell me a story") is None


def test_the_seed_sentence_after_a_block_is_a_token_boundary(loaded):
    # What a model trained with briefs read is block + story encoded together; the prompt
    # block + seed sentence must be a prefix of it, token for token.
    tok = loaded.tokenizer
    rng = random.Random(0)
    for story in _synthetic_stories(20, seed=2):
        b = Brief(("ball",), "Tom") if rng.random() < 0.5 else Brief(features=("dialogue",))
        whole = tok.encode(format_brief(b) + story)
        opening = " ".join(story.split(" ")[:3])
        prompt = prepare_prompt(tok, opening, 10_000, brief=b)[0][1:]
        assert whole[: len(prompt) - 1] == prompt[:-1]  # the last may merge with what follows


def test_shards_with_briefs_are_byte_identical_for_any_worker_count(corpus, tmp_path,
                                                                    monkeypatch, loaded):  # fmt: skip
    _, path = corpus
    tok = loaded.tokenizer  # a tokenizer with a folder: worker processes load it from there
    source, tb = corpus_source(None, [str(path)]), TrainingBriefs(0.5, 3, seed=11)
    monkeypatch.setattr(shards_module, "_BATCH_BYTES", 1500)  # many chunks, every worker
    made = {}
    for workers in (1, 2):
        made[workers] = prepare_shards(source, tok, tmp_path / f"w{workers}", val_fraction=0.1,
                                       briefs=tb, workers=workers)  # fmt: skip
    for split in ("train", "val"):
        one = (made[1].dir / f"{split}.bin").read_bytes()
        assert one == (made[2].dir / f"{split}.bin").read_bytes()
        assert made[1].train.meta["briefs"] == made[2].train.meta["briefs"] == tb.key
    briefed = [t for t in _decoded(made[2].train, tok) if split_brief(t)[0]]
    assert briefed and not any(split_brief(t)[0] for t in _decoded(made[2].val, tok))
