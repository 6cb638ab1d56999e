"""Training pairs in the MMEB-train layout, from the bundled MMEB-mini split, a local mirror, or the hub.

Row layout (``TIGER-Lab/MMEB-train``, one config per dataset, splits ``original`` and ``diverse_instruction``)::

    qry, qry_image_path, pos_text, pos_image_path [, neg_text, neg_image_path]

Where rows come from, for a dataset name ``D`` and split ``S``:

- ``MMEB-mini`` / ``MMEB-mini/<Key>``: ``tasks/mini/train/<Key>/<S>-*.parquet``, images under
  ``tasks/mini/train_images/`` (the bundled sample; only ``original`` exists);
- ``$MMEB_TRAIN_DIR/<D>/<S>-*.parquet`` (a local mirror of the hub repo), images under ``$MMEB_TRAIN_IMAGE_DIR``
  or else ``$MMEB_TRAIN_DIR`` (row image paths are relative to that root and may not leave it);
- otherwise the hub at :data:`TRAIN_HUB_REVISION`, images again from ``$MMEB_TRAIN_IMAGE_DIR``.

Each dataset keeps at most ``samples_per_task`` rows: a random subset seeded by the run's seed and the dataset
name, so the same seed always picks the same rows. Training order is a seeded shuffle of all pairs per epoch,
a pure function of the step, so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmeb_dllm.benchmark.data import resolve_image_path
from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.errors import DataError

if TYPE_CHECKING:
    from PIL.Image import Image

    from mmeb_dllm.embed.embedder import Item

TRAIN_HUB_ID = "TIGER-Lab/MMEB-train"
# The commit of TIGER-Lab/MMEB-train could not be read from this offline workplace: "main" is pinned until it can
# be (override with $MMEB_TRAIN_REVISION). Every card records the revision actually used.
TRAIN_HUB_REVISION = "main"
REQUIRED_COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path")
NEGATIVE_COLUMNS = ("neg_text", "neg_image_path")
MINI = "MMEB-mini"
FULL = "MMEB"


@dataclass(frozen=True)
class TrainItem:
    """One side of a pair: MMEB text (``<|image_1|>`` placeholder where the image goes) and an image file."""

    text: str
    image: Path | None = None

    def load(self) -> Item:
        from mmeb_dllm.embed.embedder import Item

        return Item(text=self.text, image=load_image(self.image) if self.image is not None else None)


@dataclass(frozen=True)
class TrainPair:
    """A query, its positive target and its hard negatives (maybe none); ``dataset`` and ``row`` trace it back."""

    query: TrainItem
    positive: TrainItem
    negatives: tuple[TrainItem, ...]
    dataset: str
    row: int


@dataclass
class TrainSet:
    """The pairs used from one dataset, and where they came from."""

    name: str
    split: str
    source: str
    revision: str
    files: list[str]
    rows_available: int
    pairs: list[TrainPair] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "split": self.split,
            "source": self.source,
            "revision": self.revision,
            "files": self.files,
            "rows_available": self.rows_available,
            "rows_used": len(self.pairs),
            "hard_negatives": sum(len(p.negatives) for p in self.pairs),
        }


class TrainData:
    """All training pairs and the seeded order in which steps draw them.

    Mixed batches (default): each epoch is one seeded permutation of all pairs, cut into consecutive batches (an epoch
    boundary continues into the next permutation). Homogeneous batches: each epoch cuts every dataset's own seeded
    permutation into batches (``max(1, rows // batch)`` per dataset, wrapping round a dataset smaller than a batch)
    and shuffles the batches, so every batch comes from one dataset.
    """

    def __init__(self, sets: Sequence[TrainSet], seed: int, *, homogeneous: bool = False) -> None:
        self.sets = list(sets)
        self.pairs = [pair for train_set in self.sets for pair in train_set.pairs]
        if not self.pairs:
            raise DataError(f"no training pairs in {[s.name for s in self.sets]}")
        self.seed = seed
        self.homogeneous = homogeneous
        self._orders: dict[tuple[int, int], Any] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of all pairs used in ``epoch`` (mixed batches)."""
        key = (epoch, 0)
        if key not in self._orders:
            rng = np.random.default_rng([self.seed, epoch])
            self._orders = {key: rng.permutation(len(self.pairs))}  # only the current epoch is kept
        return self._orders[key]

    def _batches_per_epoch(self, size: int) -> int:
        return sum(max(1, len(s.pairs) // size) for s in self.sets if s.pairs)

    def _homogeneous_batches(self, epoch: int, size: int) -> list[list[int]]:
        key = (epoch, size)
        if key not in self._orders:
            rng = np.random.default_rng([self.seed, epoch])
            batches, offset = [], 0
            for train_set in self.sets:
                count = len(train_set.pairs)
                if count:
                    permutation = rng.permutation(count) + offset
                    batches += [[int(permutation[(b * size + j) % count]) for j in range(size)]
                                for b in range(max(1, count // size))]
                offset += count
            self._orders = {key: [batches[i] for i in rng.permutation(len(batches))]}
        return self._orders[key]

    def position(self, step: int, global_batch_size: int) -> tuple[int, int]:
        """(epoch, offset) of ``step`` (0-based): the pair offset in the epoch's permutation, or the batch index."""
        if self.homogeneous:
            return divmod(step, self._batches_per_epoch(global_batch_size))
        start = step * global_batch_size
        return start // len(self.pairs), start % len(self.pairs)

    def batch(self, step: int, global_batch_size: int) -> list[TrainPair]:
        """The ``global_batch_size`` pairs of ``step``."""
        if self.homogeneous:
            epoch, index = self.position(step, global_batch_size)
            return [self.pairs[i] for i in self._homogeneous_batches(epoch, global_batch_size)[index]]
        start = step * global_batch_size
        out = []
        for position in range(start, start + global_batch_size):
            epoch, offset = divmod(position, len(self.pairs))
            out.append(self.pairs[int(self.order(epoch)[offset])])
        return out

    def summary(self) -> list[dict[str, Any]]:
        return [train_set.summary() for train_set in self.sets]


@lru_cache(maxsize=512)
def load_image(path: Path) -> Image:
    """A training image as RGB (decoded once while it stays among the 512 most recent)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise DataError(f"training image {path} cannot be decoded ({exc}); re-download or remove the row") from None


# --- which datasets -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRequest:
    """One dataset to read: its display name, the folder/config name, and whether it is the bundled sample."""

    name: str
    config: str
    bundled: bool


def resolve_train_names(names: Sequence[str]) -> list[DatasetRequest]:
    """Expand ``--train`` entries (``MMEB-mini``, ``MMEB-mini/<Key>``, ``MMEB``, config names) in order, deduplicated.

    An MMEB-eval key with train data (``ImageNet-1K``) maps to its MMEB-train config (``ImageNet_1K``).
    """
    requests: list[DatasetRequest] = []
    for name in names:
        if name == MINI:
            table = load_table(MINI)
            requests += [DatasetRequest(f"{MINI}/{d.train_config}", d.train_config, True) for d in table.datasets
                         if d.train_config]
        elif name.startswith(f"{MINI}/"):
            key = name.removeprefix(f"{MINI}/")
            spec = load_table(MINI).dataset(key)
            if not spec.train_config:
                trainable = [d.key for d in load_table(MINI).datasets if d.train_config]
                raise DataError(f"{name} is an OOD dataset without training data; choose one of {trainable}")
            requests.append(DatasetRequest(f"{MINI}/{spec.train_config}", spec.train_config, True))
        elif name == FULL:
            configs = dict.fromkeys(d.train_config for d in load_table(FULL).datasets if d.train_config)
            requests += [DatasetRequest(config, config, False) for config in configs]
        else:
            config = _train_config_of(name)
            requests.append(DatasetRequest(config, config, False))
    unique: dict[str, DatasetRequest] = {}
    for request in requests:
        unique.setdefault(request.name, request)
    return list(unique.values())


def _train_config_of(name: str) -> str:
    for spec in load_table(FULL).datasets:
        if name == spec.key and spec.train_config:
            return spec.train_config
    return name


# --- reading ------------------------------------------------------------------------------------------------------


def load_train_data(
    names: Sequence[str], *, split: str, samples_per_task: int, seed: int, hard_negatives: bool = True,
    homogeneous: bool = False,
) -> TrainData:
    """Read, check and sample every requested dataset (see the module docstring for where rows come from)."""
    sets = []
    for request in resolve_train_names(names):
        sets.append(
            load_train_set(request, split=split, samples_per_task=samples_per_task, seed=seed,
                           hard_negatives=hard_negatives)
        )
    return TrainData(sets, seed, homogeneous=homogeneous)


def load_train_set(
    request: DatasetRequest, *, split: str, samples_per_task: int, seed: int, hard_negatives: bool = True
) -> TrainSet:
    if request.bundled:
        table = load_table(MINI)
        assert table.data_dir is not None
        records, files, revision = _read_local(request, table.data_dir / "train", split)
        source, image_root = f"bundled: {table.data_dir / 'train'}", table.data_dir / "train_images"
    elif os.environ.get("MMEB_TRAIN_DIR"):
        root = Path(os.environ["MMEB_TRAIN_DIR"]).expanduser()
        records, files, revision = _read_local(request, root, split)
        source, image_root = f"local mirror: {root}", _image_root(root)
    else:
        records, files, revision = _read_hub(request, split)
        source, image_root = f"hub: {TRAIN_HUB_ID}", _image_root(None)
    chosen = sample_rows(len(records), samples_per_task, seed, request.name)
    where_file = files[0] if len(files) == 1 else f"{len(files)} files under {Path(files[0]).parent}"
    pairs = [
        _pair(records[i], i, request.name, where_file, image_root, hard_negatives) for i in chosen
    ]
    return TrainSet(request.name, split, source, revision, files, len(records), pairs)


def sample_rows(available: int, limit: int, seed: int, dataset: str) -> list[int]:
    """Row indices to use: all of them, or a sorted random ``limit``-subset seeded by ``seed`` and ``dataset``."""
    if available <= limit:
        return list(range(available))
    return sorted(random.Random(f"{seed}/{dataset}").sample(range(available), limit))


def _read_local(request: DatasetRequest, root: Path, split: str) -> tuple[list[dict[str, Any]], list[str], str]:
    folder = root / request.config
    files = sorted(folder.glob(f"{split}-*.parquet"))
    if not files:
        present = sorted(p.name for p in folder.iterdir())[:6] if folder.is_dir() else None
        hint = (
            f"the folder holds {present}" if present is not None
            else f"dataset folders present: {sorted(p.name for p in root.iterdir() if p.is_dir())[:8]}"
            if root.is_dir() else f"{root} does not exist"
        )
        raise DataError(
            f"training data {request.name!r} (split {split!r}) not found: expected {folder}/{split}-*.parquet "
            f"(MMEB-train layout); {hint}. Download it with `huggingface-cli download {TRAIN_HUB_ID} "
            f"--repo-type dataset --local-dir <DIR>` and set MMEB_TRAIN_DIR=<DIR>."
        )
    records: list[dict[str, Any]] = []
    digest = hashlib.sha256()
    for path in files:
        records.extend(_read_parquet(path, request.name))
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return records, [str(p) for p in files], f"local-{digest.hexdigest()[:16]}"


def _read_parquet(path: Path, dataset: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"training data {dataset}: cannot read {path} ({exc}); re-download the file") from exc
    _check_columns(table.column_names, dataset, str(path))
    return table.to_pylist()


def _check_columns(columns: Sequence[str], dataset: str, where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"training data {dataset}: {where} lacks column(s) {missing}; it has {list(columns)}. MMEB-train rows "
            f"need {list(REQUIRED_COLUMNS)} (optional {list(NEGATIVE_COLUMNS)})."
        )


def _read_hub(request: DatasetRequest, split: str) -> tuple[list[dict[str, Any]], list[str], str]:
    revision = os.environ.get("MMEB_TRAIN_REVISION", TRAIN_HUB_REVISION)
    try:
        from datasets import load_dataset

        dataset = load_dataset(TRAIN_HUB_ID, request.config, split=split, revision=revision)
    except Exception as exc:
        raise DataError(
            f"training data {request.name!r} (split {split!r}) is not available locally (MMEB_TRAIN_DIR is unset) "
            f"and could not be loaded from {TRAIN_HUB_ID}@{revision} ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Download the repo with `huggingface-cli download {TRAIN_HUB_ID} --repo-type dataset --local-dir "
            f"<DIR>`, unzip its images and set MMEB_TRAIN_DIR=<DIR>."
        ) from exc
    _check_columns(dataset.column_names, request.name, f"{TRAIN_HUB_ID}@{revision} config {request.config}")
    return dataset.to_list(), [f"{TRAIN_HUB_ID}@{revision}:{request.config}/{split}"], revision


def _image_root(mirror: Path | None) -> Path | None:
    override = os.environ.get("MMEB_TRAIN_IMAGE_DIR")
    if override:
        return Path(override).expanduser()
    return mirror


def _text(record: dict[str, Any], column: str, where: str) -> str:
    value = record.get(column)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: column {column!r} must be a string, got {type(value).__name__} ({value!r:.60})")
    return value


def _item(text: str, image_path: str, image_root: Path | None, where: str) -> TrainItem | None:
    if not text and not image_path:
        return None
    if not image_path:
        return TrainItem(text)
    if image_root is None:
        raise DataError(
            f"{where}: image {image_path!r} but no image folder is configured; unzip the MMEB-train images and set "
            f"MMEB_TRAIN_IMAGE_DIR (or MMEB_TRAIN_DIR) to the folder the row paths are relative to"
        )
    return TrainItem(text, resolve_image_path(image_root, image_path, where))


def _pair(
    record: dict[str, Any], index: int, dataset: str, file: str, image_root: Path | None, hard_negatives: bool
) -> TrainPair:
    where = f"training data {dataset}, row {index} ({file})"
    query = _item(_text(record, "qry", where), _text(record, "qry_image_path", where), image_root, where + " query")
    positive = _item(
        _text(record, "pos_text", where), _text(record, "pos_image_path", where), image_root, where + " positive"
    )
    if query is None or positive is None:
        side = "query (qry, qry_image_path)" if query is None else "positive (pos_text, pos_image_path)"
        raise DataError(f"{where}: the {side} has neither text nor image; fix or drop the row")
    negatives: list[TrainItem] = []
    if hard_negatives:
        texts, paths = record.get("neg_text"), record.get("neg_image_path")
        texts = texts if isinstance(texts, list) else [texts]
        paths = paths if isinstance(paths, list) else [paths] * len(texts)
        if len(texts) != len(paths):
            raise DataError(f"{where}: {len(texts)} neg_text entries but {len(paths)} neg_image_path entries")
        for j, (text, path) in enumerate(zip(texts, paths, strict=True)):
            holder = {"neg_text": text, "neg_image_path": path}
            negative = _item(_text(holder, "neg_text", where), _text(holder, "neg_image_path", where), image_root,
                             f"{where} negative {j}")
            if negative is not None:
                negatives.append(negative)
    return TrainPair(query, positive, tuple(negatives), dataset, index)
