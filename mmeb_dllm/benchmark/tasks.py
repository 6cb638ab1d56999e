"""mteb task classes generated from the task tables: one retrieval task per dataset, aggregates, benchmarks.

Protocol (MMEB leaderboard): every query is ranked against its own candidate list (mteb's ``top_ranked``), the
ground truth is candidate 0, the main score is P@1 (= hit@1). The corpus is the set of unique candidate items, so a
candidate that repeats across queries is encoded once.

Ties: MMEB's ``argmax`` lets candidate 0 win a tie, so a constant encoder scores 100 %. ``mmeb_hit_at_1`` counts a
hit only when the ground truth scores strictly above every *other distinct item* in the list (identical items share
one id, so a duplicate of the ground truth is not a competitor). For any encoder whose distinct items get distinct
scores this equals MMEB's number; a degenerate encoder scores 0 instead of 100.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from datasets import Dataset, Features, Image, Value
from mteb.abstasks import AbsTaskRetrieval
from mteb.abstasks.aggregate_task_metadata import AggregateTaskMetadata
from mteb.abstasks.aggregated_task import AbsTaskAggregate
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation, CustomGroup, CustomGrouping

from mmeb_dllm.benchmark.data import LoadedDataset, load_dataset_rows
from mmeb_dllm.benchmark.protocol import chance_guard, chance_level, protocol_record
from mmeb_dllm.benchmark.table import META_TASKS, SPLITS, BenchmarkTable, DatasetSpec, load_table

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mteb.results.task_result import TaskResult

logger = logging.getLogger(__name__)

MAIN_SCORE = "mmeb_hit_at_1"
SPLIT = "test"
VLM2VEC_REFERENCE = "https://arxiv.org/abs/2410.05160"
VLM2VEC_CITATION = """@inproceedings{jiang2025vlm2vec,
  title={{VLM2Vec}: Training Vision-Language Models for Massive Multimodal Embedding Tasks},
  author={Jiang, Ziyan and Meng, Rui and Yang, Xinyi and Yavuz, Semih and Zhou, Yingbo and Chen, Wenhu},
  booktitle={ICLR},
  year={2025}
}"""
META_TASK_NAMES = {"CLS": "Classification", "VQA": "VQA", "RET": "Retrieval", "VG": "Visual Grounding"}
PAPER_META_TASKS = ("CLS", "VQA", "RET")


def task_name(table: BenchmarkTable, spec: DatasetSpec) -> str:
    return f"{table.name}-{spec.key}"


def mmeb_hit_at_1(scores: Mapping[str, float], candidates: list[str], ground_truth: str) -> bool:
    """True when ``ground_truth`` scores strictly above every other distinct candidate id."""
    if ground_truth not in scores:
        return False
    others = [scores[c] for c in set(candidates) if c != ground_truth and c in scores]
    return not others or scores[ground_truth] > max(others)


class MMEBTask(AbsTaskRetrieval):
    """One MMEB dataset as an mteb retrieval task with per-query candidate lists."""

    table_name: ClassVar[str]
    dataset_key: ClassVar[str]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded: LoadedDataset | None = None
        self.k_values = (1, 3, 5, 10, 20, 100, 1000)

    @property
    def spec(self) -> DatasetSpec:
        return load_table(self.table_name).dataset(self.dataset_key)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        table = load_table(self.table_name)
        loaded = load_dataset_rows(table, self.spec)
        self.loaded = loaded
        self.dataset = {"default": {SPLIT: build_split(loaded)}}
        self.metadata.dataset["revision"] = loaded.revision
        longest = max(len(row.candidates) for row in loaded.rows)
        self._top_k = max(self._top_k, longest)
        self.data_loaded = True

    def evaluate(self, model: Any, split: str = SPLIT, subsets_to_run: Any = None, **kwargs: Any) -> Any:
        self._model = model  # recorded in the protocol record; mteb passes the model only here
        return super().evaluate(model, split, subsets_to_run, **kwargs)

    def task_specific_scores(
        self,
        scores: dict[str, dict[str, float]],
        qrels: Mapping[str, Mapping[str, int]],
        results: dict[str, dict[str, float]],
        hf_split: str,
        hf_subset: str,
    ) -> dict[str, float]:
        assert self.loaded is not None
        hits = []
        for row in self.loaded.rows:
            candidates = [c.item_id for c in row.candidates]
            hits.append(mmeb_hit_at_1(results.get(str(row.index), {}), candidates, candidates[0]))
        score = float(np.mean(hits))
        chance = chance_level(self.loaded)
        model = getattr(self, "_model", None)
        return {
            MAIN_SCORE: score,
            "mmeb_num_queries": float(len(hits)),
            "mmeb_skipped_rows": float(len(self.loaded.skipped)),
            "mmeb_chance_at_1": chance,
            "mmeb_below_chance_guard": float(chance_guard(self.metadata.name, score, chance, model)),
            "mmeb_protocol": protocol_record(self.loaded, model),
        }


def build_split(loaded: LoadedDataset) -> RetrievalSplitData:
    """Queries (id = source row index), de-duplicated corpus, qrels (candidate 0) and per-query candidate lists."""
    # Images stay undecoded paths: the encoder opens them with mmeb_dllm.benchmark.images.open_image.
    features = Features({"id": Value("string"), "text": Value("string"), "image": Image(decode=False)})

    def image_value(item_path: str) -> str | None:
        return str(loaded.image_root / item_path) if item_path and loaded.image_root else None

    queries = {"id": [], "text": [], "image": []}
    corpus = {"id": [], "text": [], "image": []}
    seen: set[str] = set()
    relevant: dict[str, dict[str, int]] = {}
    top_ranked: dict[str, list[str]] = {}
    for row in loaded.rows:
        qid = str(row.index)
        queries["id"].append(qid)
        queries["text"].append(row.query.text)
        queries["image"].append(image_value(row.query.image_path))
        for cand in row.candidates:
            if cand.item_id not in seen:
                seen.add(cand.item_id)
                corpus["id"].append(cand.item_id)
                corpus["text"].append(cand.text)
                corpus["image"].append(image_value(cand.image_path))
        relevant[qid] = {row.candidates[0].item_id: 1}
        top_ranked[qid] = [c.item_id for c in row.candidates]
    return RetrievalSplitData(
        queries=Dataset.from_dict(queries, features=features),
        corpus=Dataset.from_dict(corpus, features=features),
        relevant_docs=relevant,
        top_ranked=top_ranked,
    )


def _class_name(name: str) -> str:
    return re.sub(r"\W", "_", name)


def leaf_task_class(table: BenchmarkTable, spec: DatasetSpec) -> type[MMEBTask]:
    name = task_name(table, spec)
    source = f"{table.hub_id}, config {spec.key}" if table.hub_id else "bundled sample in the MMEB-eval layout"
    metadata = TaskMetadata(
        name=name,
        description=(
            f"{table.name} {META_TASK_NAMES[spec.meta_task]} dataset {spec.key} ({spec.split}): "
            f"{spec.query_modality} query -> {spec.target_modality} target, ranked against its own "
            f"{spec.num_candidates} candidates; main score P@1 with the ground truth at candidate 0. Data: {source}."
        ),
        reference=VLM2VEC_REFERENCE,
        dataset={"path": table.hub_id or f"mmeb-dllm/{table.name}", "revision": table.hub_revision or "bundled"},
        type="VisionCentricQA" if spec.meta_task == "VQA" else "Any2AnyRetrieval",
        category=spec.mteb_category(),
        modalities=["image", "text"],
        eval_splits=[SPLIT],
        eval_langs=["eng-Latn"],
        main_score=MAIN_SCORE,
        license="not specified",
        bibtex_citation=VLM2VEC_CITATION,
    )
    attrs = {"metadata": metadata, "table_name": table.name, "dataset_key": spec.key}
    return type(_class_name(name), (MMEBTask,), attrs)


class MMEBAggregate(AbsTaskAggregate):
    """Flat mean over its datasets; also writes the per-meta-task, IND and OOD means when all results exist."""

    table_name: ClassVar[str]

    def task_results_to_scores(self, task_results: list[TaskResult]) -> dict[str, Any]:
        scores = super().task_results_to_scores(task_results)
        table = load_table(self.table_name)
        by_name = {task_name(table, spec): spec for spec in table.datasets}
        values = {tr.task_name: tr.get_score() for tr in task_results if tr.task_name in self.taskname_to_task}
        if len(values) != len(self.taskname_to_task):
            return scores
        groups: dict[str, list[float]] = {}
        for name, value in values.items():
            spec = by_name[name]
            groups.setdefault(spec.meta_task, []).append(value)
            groups.setdefault(spec.split, []).append(value)
        extra = {key: float(np.mean(vals)) for key, vals in groups.items()}
        for split_scores in scores.values():
            split_scores["default"].update(extra)
        return scores


def aggregate_class(table: BenchmarkTable, name: str, description: str, tasks: list[MMEBTask]) -> type:
    metadata = AggregateTaskMetadata(
        name=name,
        description=description,
        reference=VLM2VEC_REFERENCE,
        tasks=tasks,
        main_score=MAIN_SCORE,
        type="Any2AnyRetrieval",
        eval_splits=[SPLIT],
        bibtex_citation=VLM2VEC_CITATION,
    )
    return type(_class_name(name), (MMEBAggregate,), {"metadata": metadata, "table_name": table.name})


def build_tasks(table: BenchmarkTable) -> tuple[list[type[MMEBTask]], list[type], Benchmark]:
    """Leaf task classes, aggregate task classes and the benchmark for one table."""
    leaves = [leaf_task_class(table, spec) for spec in table.datasets]
    instances = {cls.dataset_key: cls() for cls in leaves}
    specs = {spec.key: spec for spec in table.datasets}

    def select(*meta_tasks: str) -> list[MMEBTask]:
        return [inst for key, inst in instances.items() if specs[key].meta_task in meta_tasks]

    n = len(table.datasets)
    aggregates = [
        aggregate_class(table, table.name, f"{table.name}: flat mean P@1 over all {n} datasets.", select(*META_TASKS))
    ]
    for meta in META_TASKS:
        chosen = select(meta)
        if chosen:
            desc = f"{table.name} {META_TASK_NAMES[meta]}: mean P@1 over its {len(chosen)} datasets."
            aggregates.append(aggregate_class(table, f"{table.name}-{meta}", desc, chosen))
    paper = select(*PAPER_META_TASKS)
    aggregates.append(
        aggregate_class(
            table,
            f"{table.name}-paper",
            f"{table.name} CLS+VQA+RET ({len(paper)} datasets), the meta-tasks reported by arXiv 2602.06056.",
            paper,
        )
    )
    grouping = [BenchmarkAggregation.MEAN_TASK]
    for label, key_of in (("Meta-task", lambda s: s.meta_task), ("Split", lambda s: s.split)):
        groups = []
        for value in META_TASKS if label == "Meta-task" else SPLITS:
            members = [inst for key, inst in instances.items() if key_of(specs[key]) == value]
            if members:
                groups.append(CustomGroup(label=value, tasks=members))
        grouping.append(CustomGrouping(name=label, groups=groups))
    benchmark = Benchmark(
        name=table.name,
        tasks=list(instances.values()),
        description=f"{table.name}: {n} datasets in four meta-tasks; P@1 against per-query candidate lists.",
        reference=VLM2VEC_REFERENCE,
        citation=VLM2VEC_CITATION,
        aggregations=tuple(grouping),
    )
    return leaves, aggregates, benchmark
