"""Bad rows: a clear error naming dataset and row by default; skipped and counted only when asked."""

from __future__ import annotations

import mteb
import numpy as np
import pyarrow as pa
import pytest

from mmeb_dllm.benchmark.tasks import mmeb_hit_at_1
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import DataError
from tests.embed.toy_backbone import ToyBackbone, toy_encoder
from tests.robustness.conftest import load, query_image, rewrite


def test_empty_text_and_no_image(data_root):
    rewrite(data_root, "MSCOCO_t2i", lambda rows: rows[4].update(qry_text=""))
    with pytest.raises(DataError, match=r"dataset MSCOCO_t2i, row 4 \(query\): item has neither text nor image"):
        load("MSCOCO_t2i")


def test_missing_ground_truth(data_root):
    rewrite(data_root, "OK-VQA", lambda rows: rows[2]["tgt_text"].__setitem__(0, ""))
    with pytest.raises(DataError, match=r"row 2 \(ground truth, candidate 0\): item has neither text nor image"):
        load("OK-VQA")


def test_empty_candidate_list(data_root):
    rewrite(data_root, "OK-VQA", lambda rows: rows[5].update(tgt_text=[], tgt_img_path=[]))
    with pytest.raises(DataError, match="dataset OK-VQA, row 5: empty candidate list"):
        load("OK-VQA")


def test_candidate_lists_of_different_lengths(data_root):
    rewrite(data_root, "OK-VQA", lambda rows: rows[1].update(tgt_img_path=rows[1]["tgt_img_path"][:-1]))
    with pytest.raises(DataError, match="row 1: 10 candidate texts but 9 candidate image paths"):
        load("OK-VQA")


def test_missing_parquet_column_names_the_file(data_root):
    rewrite(data_root, "VOC2007", lambda rows: [r.pop("tgt_img_path") for r in rows])
    with pytest.raises(DataError, match=r"VOC2007: .*test-00000-of-00001.parquet lacks columns \['tgt_img_path'\]"):
        load("VOC2007")


def test_wrong_column_type_names_the_row(data_root):
    def numbers(rows):
        for i, row in enumerate(rows):
            row["qry_text"] = i

    schema = pa.schema([("qry_text", pa.int64()), ("qry_img_path", pa.string()),
                        ("tgt_text", pa.list_(pa.string())), ("tgt_img_path", pa.list_(pa.string()))])
    rewrite(data_root, "VOC2007", numbers, schema=schema)
    with pytest.raises(DataError, match="dataset VOC2007, row 0: qry_text must be a string, got int"):
        load("VOC2007")


def test_candidate_list_that_is_not_a_list(data_root):
    schema = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                        ("tgt_text", pa.string()), ("tgt_img_path", pa.string())])
    rewrite(data_root, "OK-VQA", lambda rows: [r.update(tgt_text="a", tgt_img_path="") for r in rows], schema=schema)
    with pytest.raises(DataError, match="row 0: tgt_text and tgt_img_path must be lists, got str"):
        load("OK-VQA")


def test_duplicate_candidates_share_one_id_and_do_not_compete(data_root):
    def duplicate_ground_truth(rows):
        rows[0]["tgt_text"][3] = rows[0]["tgt_text"][0]

    rewrite(data_root, "VOC2007", duplicate_ground_truth)
    row = load("VOC2007").rows[0]
    ids = [c.item_id for c in row.candidates]
    assert ids[3] == ids[0] and len(set(ids)) == len(ids) - 1
    scores = {cid: 0.1 for cid in ids}
    scores[ids[0]] = 0.9  # the duplicate has the same id, hence the same score: not a competitor
    assert mmeb_hit_at_1(scores, ids, ids[0])
    scores[ids[1]] = 0.9  # a *distinct* candidate tying the ground truth is a miss
    assert not mmeb_hit_at_1(scores, ids, ids[0])


def test_duplicate_rows_are_scored_separately(data_root):
    rewrite(data_root, "OK-VQA", lambda rows: rows.append(dict(rows[0])))
    loaded = load("OK-VQA")
    assert len(loaded.rows) == 13 and loaded.rows[-1].index == 12
    assert loaded.rows[-1].query.item_id == loaded.rows[0].query.item_id


def test_odd_unicode_embeds_to_finite_distinct_vectors():
    texts = ["naïve café", "\u202eevil\u202c RTL", "emoji 🧪👩‍🔬", "zero\u200bwidth", "nul\x00char"]
    texts.append("e\u0301 combining")
    embedder = Embedder(ToyBackbone(), EmbeddingRecipe(model="test/toy", checkpoint="toy", revision="0"))
    vectors = embedder.embed([Item(t) for t in texts], show_progress=False)
    assert np.isfinite(vectors).all()
    assert len({v.tobytes() for v in vectors}) == len(texts)


def test_skip_option_skips_and_counts_bad_rows(data_root, monkeypatch):
    query_image(data_root, "VOC2007", 7).write_bytes(b"garbage")
    monkeypatch.setenv("MMEB_DLLM_SKIP_BAD_ROWS", "1")
    loaded = load("VOC2007")
    assert [r.index for r in loaded.rows] == [i for i in range(12) if i != 7]
    assert len(loaded.skipped) == 1 and "row 7" in loaded.skipped[0]
    result = mteb.evaluate(toy_encoder(), mteb.get_tasks(tasks=["MMEB-VOC2007"]), cache=None, co2_tracker=False,
                           show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    assert scores["mmeb_skipped_rows"] == 1 and scores["mmeb_num_queries"] == 11
    assert scores["mmeb_protocol"]["data"]["skipped_rows"] == 1


def test_non_finite_embeddings_name_the_task(data_root, monkeypatch):
    encoder = mteb.get_model("lavida-embed-tiny", device="cpu")
    backbone = encoder.embedder.backbone
    real = backbone.forward_embeds
    monkeypatch.setattr(backbone, "forward_embeds", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(Exception, match=r"MMEB-OK-VQA.*non-finite embedding"):
        mteb.evaluate(encoder, mteb.get_tasks(tasks=["MMEB-OK-VQA"]), cache=None, co2_tracker=False,
                      show_progress_bar=False)
