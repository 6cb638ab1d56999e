"""Aggregates (mmeb.md section 5): unweighted means per meta-task and split, overall = flat mean over datasets.

Checked against independent numpy means and against the published VLM2Vec Table 6 and repo re-run rows, which the
fact sheet says reproduce exactly from their per-dataset values (apart from its two documented conflicts).
"""

from __future__ import annotations

import numpy as np
import pytest

from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.leaderboard.aggregate import aggregate, groups
from mmeb_dllm.leaderboard.store import Leaderboard
from tests.leaderboard.conftest import REPO

# Counts from mmeb.md section 2, typed here rather than derived from the package's table.
EXPECTED_SIZES = {"CLS": 10, "VQA": 10, "RET": 12, "VG": 4, "IND": 20, "OOD": 16, "Overall": 36}
# Fact sheet section 3: the two rows whose printed aggregates do not follow from their per-dataset values.
KNOWN_CONFLICTS = {
    "vlm2vec-table6/siglip": {"RET": 44.09},
    "vlm2vec-table6/uniir-clip-sf": {"VG": 62.15, "IND": 46.77, "OOD": 41.25, "Overall": 44.31},
}


def test_group_sizes_match_the_fact_sheet():
    assert {name: len(keys) for name, keys in groups(load_table("MMEB")).items()} == EXPECTED_SIZES


def test_flat_means_equal_numpy():
    table = load_table("MMEB")
    rng = np.random.default_rng(0)
    scores = {d.key: float(rng.integers(0, 1001)) / 1000 for d in table.datasets}
    result = aggregate(scores, table)
    for name, keys in groups(table).items():
        assert result[name] == pytest.approx(np.mean([scores[k] for k in keys]), abs=1e-12)
    meta_mean = np.mean([result[m] for m in ("CLS", "VQA", "RET", "VG")])
    assert result["Overall"] != pytest.approx(meta_mean, abs=1e-6)  # overall is not the mean of the meta-tasks


def test_partial_scores_give_only_complete_groups():
    table = load_table("MMEB")
    vg = {d.key: 0.5 for d in table.datasets if d.meta_task == "VG"}
    assert aggregate(vg, table) == {"VG": 0.5}
    assert aggregate({}, table) == {}


def test_published_per_dataset_rows_reproduce_their_aggregates():
    rows, _, _ = Leaderboard(REPO / "leaderboard").load_baselines()
    with_scores = [r for r in rows if r.scores]
    assert len(with_scores) == 16  # 8 Table 6 columns + 8 repo re-runs
    for row in with_scores:
        assert row.aggregate_origin == "recomputed"
        for name, printed in row.published_aggregates.items():
            expected = KNOWN_CONFLICTS.get(row.id, {}).get(name, 100 * printed)
            tolerance = 0.00501 if name in KNOWN_CONFLICTS.get(row.id, {}) or "re-run" in row.name else 0.0501
            assert 100 * row.aggregates[name] == pytest.approx(expected, abs=tolerance), (row.id, name)
