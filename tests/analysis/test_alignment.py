import numpy as np
import pytest

from mmeb_dllm.analysis.alignment import alignment_metrics


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(q, t):
    """Loop-based independent computation."""
    n = len(q)
    matched = [q[i] @ t[i] for i in range(n)]
    mismatched = [q[i] @ t[j] for i in range(n) for j in range(n) if i != j]

    def uniformity(x):
        vals = [np.exp(-2 * np.sum((x[i] - x[j]) ** 2)) for i in range(n) for j in range(i + 1, n)]
        return np.log(np.mean(vals))

    q2t = np.mean([np.argmax([q[i] @ t[j] for j in range(n)]) == i for i in range(n)])
    t2q = np.mean([np.argmax([t[i] @ q[j] for j in range(n)]) == i for i in range(n)])
    return {
        "matched_cosine": np.mean(matched),
        "mismatched_cosine": np.mean(mismatched),
        "margin": np.mean(matched) - np.mean(mismatched),
        "modality_gap": np.sqrt(np.sum((q.mean(0) - t.mean(0)) ** 2)),
        "alignment": np.mean([np.sum((q[i] - t[i]) ** 2) for i in range(n)]),
        "uniformity_queries": uniformity(q),
        "uniformity_targets": uniformity(t),
        "recall_at_1_q2t": q2t,
        "recall_at_1_t2q": t2q,
    }


def test_metrics_equal_an_independent_computation():
    rng = np.random.default_rng(0)
    q = _unit(rng.normal(size=(17, 8)))
    t = _unit(q + 0.7 * rng.normal(size=(17, 8)))
    ours = alignment_metrics(q, t)
    for key, value in _reference(q, t).items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_perfect_pairs_have_full_recall_and_zero_alignment_loss():
    q = _unit(np.eye(5) + 0.01)
    metrics = alignment_metrics(q, q.copy())
    assert metrics["recall_at_1_q2t"] == 1.0 and metrics["alignment"] == pytest.approx(0.0)
    assert metrics["modality_gap"] == pytest.approx(0.0) and metrics["margin"] > 0.9


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="equal shape"):
        alignment_metrics(np.ones((3, 2)), np.ones((4, 2)))
