import warnings

import mteb
import pytest

from mmeb_dllm.benchmark.protocol import chance_guard
from tests.embed.toy_backbone import toy_encoder


def test_guard_fires_at_or_below_twice_chance_only():
    with pytest.warns(UserWarning, match="CHANCE-LEVEL SCORE"):
        assert chance_guard("T", 0.2, 0.1, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not chance_guard("T", 0.21, 0.1, None)


def test_image_blind_model_triggers_the_guard_and_result_records_it():
    encoder = toy_encoder(ignore_image=True)
    with pytest.warns(UserWarning, match=r"CHANCE-LEVEL SCORE: .* on MMEB-mini-Digits"):
        result = mteb.evaluate(encoder, mteb.get_tasks(tasks=["MMEB-mini-Digits"]), cache=None, co2_tracker=False,
                               show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    assert scores["mmeb_below_chance_guard"] == 1.0
    assert scores["mmeb_hit_at_1"] <= 2 * scores["mmeb_chance_at_1"]


def test_result_carries_the_protocol_record():
    result = mteb.evaluate(toy_encoder(), mteb.get_tasks(tasks=["MMEB-mini-Scenes_t2i"]), cache=None,
                           co2_tracker=False, show_progress_bar=False)
    record = result.task_results[0].scores["test"][0]["mmeb_protocol"]
    assert record["packages"]["mteb"].startswith("2.26")
    assert record["model"]["recipe"]["pooling"] == "last" and record["model"]["recipe_key"]
    assert record["instructions"]["placement"] == "mmeb"
    assert record["instructions"]["query_instruction"].startswith("Find")
    assert record["data"]["source"].startswith("bundled") and record["data"]["revision"].startswith("local-")
    assert record["candidates"]["per_query_max"] == record["candidates"]["declared"]
    assert result.task_results[0].dataset_revision == record["data"]["revision"]


def test_guard_lists_the_causes_once_per_model_then_one_line_per_task():
    class Model:
        class mteb_model_meta:
            name = "guard-once-test-model"

    with pytest.warns(UserWarning) as first:
        chance_guard("TaskA", 0.1, 0.1, Model())
    with pytest.warns(UserWarning) as second:
        chance_guard("TaskB", 0.1, 0.1, Model())
    assert "Likely causes" in str(first[0].message) and "TaskA" in str(first[0].message)
    later = str(second[0].message)
    assert "TaskB" in later and "\n" not in later and "mmeb-dllm doctor -m guard-once-test-model -t TaskB" in later
