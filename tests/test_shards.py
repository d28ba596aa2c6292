"""Corpus reading, token shards (format, caching, invalidation, split) and the samplers.

Real parts throughout: files the tests write, a real SentencePiece model, real `datasets`
loading a local folder, and the real TinyStories text when it is present."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_tokenizers import make_stories

from slm_tui.errors import DataError
from slm_tui.shards import (
    BatchSampler,
    ShardProgress,
    corpus_source,
    default_shards_dir,
    iter_stories,
    iter_windows,
    load_shard,
    plan_split,
    prepare_shards,
)
from slm_tui.tokenizers import train_tokenizer
from slm_tui.tokenizers.byte import ByteTokenizer


def write_txt(path, stories, sep="\n<|endoftext|>\n"):
    path.write_text(sep.join(stories) + sep, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _shard_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_SHARDS_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return train_tokenizer(
        "sentencepiece-bpe", make_stories(300), 400, tmp_path_factory.mktemp("t") / "bpe"
    )


@pytest.fixture()
def corpus(tmp_path):
    stories = make_stories(450, seed=1)
    return stories, write_txt(tmp_path / "corpus.txt", stories)


# ---- reading --------------------------------------------------------------------------------


def test_txt_dump_format(tmp_path) -> None:
    raw = "  First story.\nLine two.\n<|endoftext|>\n\n<|endoftext|>\r\nSecond\r\n<|endoftext|>\nThird"
    (tmp_path / "a.txt").write_bytes(raw.encode())
    got = list(iter_stories(corpus_source(data_files=[str(tmp_path / "a.txt")])))
    assert got == ["First story.\nLine two.", "Second", "Third"]


def test_jsonl_json_parquet_and_globs(tmp_path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "1.jsonl").write_text('{"text": "one"}\n\n{"text": "  "}\n{"text": "two", "x": 1}\n')
    (d / "2.json").write_text(json.dumps([{"text": "three"}, {"text": "four"}]))
    (d / "3.json").write_text('{"text": "five"}\n')
    pq.write_table(pa.table({"text": ["six", "", "seven"], "id": [1, 2, 3]}), d / "4.parquet")
    got = list(iter_stories(corpus_source(data_files=[str(d / "*")])))
    assert got == ["one", "two", "three", "four", "five", "six", "seven"]


def test_invalid_utf8_names_file_and_offset(tmp_path) -> None:
    good = b"Once upon a time.\n<|endoftext|>\n"
    (tmp_path / "bad.txt").write_bytes(good + b"abc\xff\xfedef\n")
    with pytest.raises(DataError, match=rf"bad\.txt: invalid UTF-8 at byte {len(good) + 3}"):
        list(iter_stories(corpus_source(data_files=[str(tmp_path / "bad.txt")])))
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xc3("}\n')
    with pytest.raises(DataError, match="invalid UTF-8 at byte 25"):
        list(iter_stories(corpus_source(data_files=[str(tmp_path / "bad.jsonl")])))


@pytest.mark.parametrize(
    ("setup", "pattern"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_text(""), "corpus is empty"),
        (lambda p: p.write_text("\n<|endoftext|>\n  \n<|endoftext|>\n"), "corpus is empty"),
    ],
    ids=["missing", "directory", "empty", "only-empty-stories"],
)
def test_bad_files(tmp_path, setup, pattern) -> None:
    target = tmp_path / "x.txt"
    setup(target)
    with pytest.raises(DataError, match=pattern) as exc:
        list(iter_stories(corpus_source(data_files=[str(target)])))
    assert "\n" not in str(exc.value)


def test_more_bad_sources(tmp_path) -> None:
    with pytest.raises(DataError, match="no files match"):
        list(iter_stories(corpus_source(data_files=[str(tmp_path / "*.txt")])))
    (tmp_path / "x.csv").write_text("text\nhi\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'"):
        list(iter_stories(corpus_source(data_files=[str(tmp_path / "x.csv")])))
    (tmp_path / "x.jsonl").write_text('{"body": "hi"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:1: expected an object with a 'text' field"):
        list(iter_stories(corpus_source(data_files=[str(tmp_path / "x.jsonl")])))
    with pytest.raises(DataError, match="either --dataset or --data-files"):
        corpus_source(dataset="a/b", data_files=["x.txt"])


def test_hub_unreachable_fails_fast_with_hint(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="unreachable; use --data-files") as exc:
        list(iter_stories(corpus_source(dataset="roneneldan/TinyStories")))
    assert time.perf_counter() - t0 < 10
    assert "\n" not in str(exc.value)


def test_hub_offline_mode_is_one_line_error() -> None:
    # conftest sets HF_HUB_OFFLINE=1: the dataset is not cached, so datasets itself fails.
    with pytest.raises(DataError, match=r"cannot load dataset 'no-such/dataset'.*--data-files"):
        list(iter_stories(corpus_source(dataset="no-such/dataset")))


def test_dataset_folder_uses_its_validation_split(tmp_path, bpe) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    train, val = make_stories(40, seed=2), make_stories(7, seed=3)
    (d / "train.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in train))
    (d / "validation.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in val))
    src = corpus_source(dataset=str(d))
    plan = plan_split(src)
    assert plan.val is not None and plan.val.split == "validation"
    shards = prepare_shards(src, bpe)
    assert shards.train.num_stories == 40 and shards.val.num_stories == 7


# ---- shards ---------------------------------------------------------------------------------


def test_shard_contents_and_sidecar(corpus, bpe) -> None:
    stories, path = corpus
    seen: list[ShardProgress] = []
    shards = prepare_shards(
        corpus_source(data_files=[str(path)]), bpe, val_fraction=0.1, progress=seen.append
    )
    tr, va = shards.train, shards.val
    assert seen and seen[-1].stories == len(stories)  # progress ends with every story
    assert seen[-1].tokens == tr.num_tokens + va.num_tokens
    assert seen[-1].total_bytes == path.stat().st_size
    assert tr.tokens.dtype == np.uint16 and tr.meta["dtype"] == "uint16"
    assert tr.num_stories + va.num_stories == len(stories)
    assert va.num_stories == 45  # every 10th story, the first included
    val_stories = stories[::10]
    expected = []
    for s in val_stories:
        expected += [bpe.bos_id, *bpe.encode(s), bpe.eos_id]
    assert va.tokens.tolist() == expected
    assert va.num_bytes == sum(len(s.encode()) for s in val_stories)
    assert va.meta["tokenizer_fingerprint"] == bpe.fingerprint
    assert tr.meta["source_fingerprint"] == va.meta["source_fingerprint"]
    assert tr.num_tokens == len(tr.tokens) == tr.meta["tokens"]
    # Reloading from disk gives the same view (either file name works).
    assert load_shard(tr.path.with_suffix(".json")).tokens.tolist() == tr.tokens.tolist()


def test_uint32_when_vocab_exceeds_uint16(tmp_path) -> None:
    class WideBytes(ByteTokenizer):
        """Bytes shifted above 65535, so ids need 32 bits."""

        kind = "wide-bytes"

        def __init__(self, path=None):
            super().__init__(path)
            self.vocab_size = 70_000
            self.bos_id, self.eos_id = 69_998, 69_999

        def encode(self, text):
            return [65_600 + b for b in text.encode()]

        def encode_batch(self, texts):
            return [self.encode(t) for t in texts]

    tok = WideBytes()
    tok.fingerprint = "wide"
    path = write_txt(tmp_path / "c.txt", ["ab", "cd", "ef"])
    shards = prepare_shards(corpus_source(data_files=[str(path)]), tok, val_fraction=0.4)
    assert shards.train.tokens.dtype == np.uint32
    assert shards.train.tokens.tolist()[:3] == [69_998, 65_600 + ord("c"), 65_600 + ord("d")]


def test_cache_hit_does_no_work(corpus, bpe) -> None:
    _, path = corpus
    src = corpus_source(data_files=[str(path)])
    first = prepare_shards(src, bpe)
    assert not first.cached and first.dir == default_shards_dir(src, bpe)
    mtime = first.train.path.stat().st_mtime_ns
    second = prepare_shards(src, bpe)
    assert second.cached and second.train.path.stat().st_mtime_ns == mtime


def test_changed_source_or_tokenizer_never_reuses(corpus, bpe, tmp_path) -> None:
    stories, path = corpus
    src = corpus_source(data_files=[str(path)])
    a = prepare_shards(src, bpe)
    write_txt(path, [*stories, "A brand new story."])
    b = prepare_shards(src, bpe)
    assert not b.cached and b.dir != a.dir
    assert b.train.num_stories + b.val.num_stories == len(stories) + 1
    byte = ByteTokenizer.train([], 0, tmp_path / "byte")
    c = prepare_shards(src, byte)
    assert not c.cached and c.dir != b.dir and c.train.meta["tokenizer_kind"] == "byte"
    # A different held-out fraction is a different split: rebuilt, not reused.
    d = prepare_shards(src, bpe, val_fraction=0.25)
    assert not d.cached and d.val.num_stories > b.val.num_stories


def test_explicit_output_refuses_foreign_or_stale_without_force(corpus, bpe, tmp_path) -> None:
    stories, path = corpus
    src = corpus_source(data_files=[str(path)])
    out = tmp_path / "out"
    prepare_shards(src, bpe, out)
    assert prepare_shards(src, bpe, out).cached
    write_txt(path, stories[:-5])  # the source changed: the shards in `out` are stale
    with pytest.raises(DataError, match=r"already holds files.*--force"):
        prepare_shards(src, bpe, out)
    fresh = prepare_shards(src, bpe, out, force=True)
    assert not fresh.cached
    assert fresh.train.num_stories + fresh.val.num_stories == len(stories) - 5
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    with pytest.raises(DataError, match="already holds files"):
        prepare_shards(src, bpe, foreign)
    assert (foreign / "notes.txt").read_text() == "my notes"


def test_truncated_shard_is_an_error_and_rebuilt_in_cache(corpus, bpe) -> None:
    _, path = corpus
    src = corpus_source(data_files=[str(path)])
    shards = prepare_shards(src, bpe)
    with open(shards.train.path, "r+b") as f:
        f.truncate(10)
    with pytest.raises(DataError, match="missing or truncated"):
        load_shard(shards.train.path)
    again = prepare_shards(src, bpe)  # the cache rebuilds what it owns
    assert not again.cached and again.train.num_tokens == shards.train.num_tokens


def test_too_few_stories(tmp_path, bpe) -> None:
    path = write_txt(tmp_path / "one.txt", ["Only one story."])
    with pytest.raises(DataError, match="none left for training"):
        prepare_shards(corpus_source(data_files=[str(path)]), bpe)


def test_bad_val_fraction(corpus, bpe) -> None:
    with pytest.raises(DataError, match=r"must be in \(0, 0.5\)"):
        prepare_shards(corpus_source(data_files=[str(corpus[1])]), bpe, val_fraction=0.7)


# ---- samplers -------------------------------------------------------------------------------


@pytest.fixture()
def shard(corpus, bpe):
    return prepare_shards(corpus_source(data_files=[str(corpus[1])]), bpe).train


def test_sampler_deterministic_and_windows_are_slices(shard) -> None:
    a = BatchSampler(shard, 8, 32, seed=7).next_batch()
    s1, s2 = BatchSampler(shard, 8, 32, seed=7), BatchSampler(shard, 8, 32, seed=7)
    batches1 = [s1.next_batch() for _ in range(5)]
    batches2 = [s2.next_batch() for _ in range(5)]
    assert all((x == y).all() for x, y in zip(batches1, batches2, strict=True))
    assert (batches1[0] == a).all()
    assert not (batches1[0] == batches1[1]).all()
    assert not (BatchSampler(shard, 8, 32, seed=8).next_batch() == a).all()
    assert a.shape == (8, 33) and a.dtype == np.int64
    tokens = np.asarray(shard.tokens, dtype=np.int64)
    for row in a:
        starts = np.flatnonzero(
            np.lib.stride_tricks.sliding_window_view(tokens, 33).__eq__(row).all(1)
        )
        assert len(starts) >= 1


def test_sampler_resumes_from_cursor(shard) -> None:
    s = BatchSampler(shard, 4, 16, seed=3)
    for _ in range(3):
        s.next_batch()
    state = json.loads(json.dumps(s.state_dict()))  # JSON-safe
    expected = [s.next_batch() for _ in range(3)]
    r = BatchSampler(shard, 4, 16, seed=3)
    r.load_state_dict(state)
    assert all((x == r.next_batch()).all() for x in expected)


def test_sampler_rank_sharding_matches_one_process(shard) -> None:
    whole = BatchSampler(shard, 8, 16, seed=5)
    ranks = [BatchSampler(shard, 2, 16, seed=5, rank=r, world_size=4) for r in range(4)]
    for _ in range(3):
        parts = [s.next_batch() for s in ranks]
        assert all(p.shape == (2, 17) for p in parts)
        assert (np.concatenate(parts) == whole.next_batch()).all()


def test_sampler_bad_arguments(shard) -> None:
    with pytest.raises(DataError, match="not in a world"):
        BatchSampler(shard, 2, 16, seed=0, rank=4, world_size=4)
    with pytest.raises(DataError, match="must be positive"):
        BatchSampler(shard, 0, 16, seed=0)
    with pytest.raises(DataError, match="fewer than one window"):
        BatchSampler(shard, 2, shard.num_tokens, seed=0)


def _targets(windows: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([w[:, 1:].reshape(-1) for w in windows])


def test_eval_windows_make_every_token_after_the_first_a_target_once(shard) -> None:
    T = 50
    tokens = np.asarray(shard.tokens, dtype=np.int64)
    assert (tokens.size - 1) % T != 0  # the shard ends in a partial window: it is included
    windows = list(iter_windows(shard.tokens, T, batch_size=7))
    assert windows[0].shape == (7, T + 1) and windows[0].dtype == np.int64
    assert all(w.shape[1] == T + 1 for w in windows[:-1])
    assert windows[-1].shape == (1, (tokens.size - 1) % T + 1)  # the tail, shorter
    assert (_targets(windows) == tokens[1:]).all()  # every target once, in order
    first = np.concatenate([w[:, 0] for w in windows])
    assert (first == tokens[: tokens.size - 1 : T]).all()  # stride T, one shared token
    assert len(list(iter_windows(shard.tokens, T, 7, max_batches=2))) == 2
    # A stream of uneven chunks (how `slm-train eval` reads a corpus) gives the same windows.
    cuts = [0, 1, 13, 400, 401, 2000, tokens.size]
    chunks = [tokens[a:b] for a, b in itertools.pairwise(cuts)]
    streamed = list(iter_windows(iter(chunks), T, batch_size=7))
    assert [w.tolist() for w in streamed] == [w.tolist() for w in windows]


def test_eval_windows_of_tiny_inputs() -> None:
    assert list(iter_windows(np.zeros(1, dtype=np.uint16), 4, 2)) == []  # no target at all
    (only,) = iter_windows(np.arange(3, dtype=np.uint16), 4, 2)
    assert only.tolist() == [[0, 1, 2]]  # one short window: two targets
    whole = list(iter_windows(np.arange(9, dtype=np.uint16), 4, 2))
    assert [w.tolist() for w in whole] == [[[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]]  # no empty tail


# ---- real text ------------------------------------------------------------------------------


@pytest.mark.realdata
def test_tinystories_dump_reads_every_story(tinystories_dir) -> None:
    stories = list(iter_stories(corpus_source(data_files=[str(tinystories_dir / "valid.txt")])))
    assert len(stories) == 500
    assert all("<|endoftext|>" not in s and s == s.strip() for s in stories)
