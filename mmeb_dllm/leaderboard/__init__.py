"""The leaderboard: registered baselines, validated submissions, comparisons, generated pages and exports.

Modules: :mod:`~mmeb_dllm.leaderboard.schema` (types and name rules), :mod:`~mmeb_dllm.leaderboard.validate`
(mteb output folder -> normalised record), :mod:`~mmeb_dllm.leaderboard.aggregate` (meta-task/IND/OOD/overall
means), :mod:`~mmeb_dllm.leaderboard.store` (the folder, atomic writes), :mod:`~mmeb_dllm.leaderboard.compare`,
:mod:`~mmeb_dllm.leaderboard.render` (markdown, HTML, PNG), :mod:`~mmeb_dllm.leaderboard.export` (MMEB JSON, mteb
layout) and :mod:`~mmeb_dllm.leaderboard.cli` (``mmeb-dllm leaderboard ...``).
"""

from mmeb_dllm.leaderboard.aggregate import aggregate
from mmeb_dllm.leaderboard.schema import LeaderboardError, Row, SubmissionError
from mmeb_dllm.leaderboard.store import Leaderboard
from mmeb_dllm.leaderboard.validate import read_submission

__all__ = ["Leaderboard", "LeaderboardError", "Row", "SubmissionError", "aggregate", "read_submission"]
