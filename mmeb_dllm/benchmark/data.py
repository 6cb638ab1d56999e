"""Reading MMEB-eval rows from a local mirror (or the bundled sample) or from the hub at a pinned revision.

Local layout (what ``huggingface-cli download TIGER-Lab/MMEB-eval --repo-type dataset`` gives, plus unzipped
images)::

    $MMEB_DATA_DIR/<Dataset>/test-*.parquet    qry_text, qry_img_path, tgt_text[], tgt_img_path[] (+ qry_inst, tgt_inst)
    $MMEB_DATA_DIR/eval_images/...             image root ($MMEB_IMAGE_DIR overrides); an images.zip there or in
                                               $MMEB_DATA_DIR is extracted safely on first use

Every row keeps its index in the source split, so a prediction traces back to its row. Image paths are relative to
the image root and may not leave it. Each item (text + image content) gets a content id, so repeated candidates
collapse to one item that is encoded once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmeb_dllm.benchmark.images import open_image
from mmeb_dllm.errors import DataError
from mmeb_dllm.paths import cache_dir

if TYPE_CHECKING:
    from mmeb_dllm.benchmark.table import BenchmarkTable, DatasetSpec

logger = logging.getLogger(__name__)

MMEB_IMAGE_TOKEN = "<|image_1|>"
REQUIRED_COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")
EXTRACTED_MARKER = ".mmeb_dllm_extracted"


@dataclass(frozen=True)
class ItemRef:
    """One side of a comparison: the MMEB text (placeholder + instruction + text) and an image path or ''."""

    text: str
    image_path: str
    item_id: str


@dataclass(frozen=True)
class EvalRow:
    """One query with its own candidate list; the ground truth is candidate 0."""

    index: int
    query: ItemRef
    candidates: tuple[ItemRef, ...]


@dataclass
class LoadedDataset:
    """All rows of one dataset's test split, with where they came from (and the rows skipped, if allowed)."""

    spec: DatasetSpec
    rows: list[EvalRow]
    image_root: Path | None
    source: str
    revision: str
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def image_file(self, item: ItemRef) -> Path | None:
        return None if not item.image_path or self.image_root is None else self.image_root / item.image_path


def how_to_get(table: BenchmarkTable, spec: DatasetSpec) -> str:
    return (
        f"Get it with `huggingface-cli download {table.hub_id} --repo-type dataset --revision {table.hub_revision} "
        f"--local-dir <DIR>` (then `export MMEB_DATA_DIR=<DIR>`; images.zip is unpacked on first use), "
        f"or run with network access so it is fetched from the hub."
    )


def load_dataset_rows(table: BenchmarkTable, spec: DatasetSpec) -> LoadedDataset:
    """Load one dataset: the bundled folder, else ``$MMEB_DATA_DIR``, else the hub."""
    if table.data_dir is not None:
        return _load_local(table, spec, table.data_dir, source="bundled")
    mirror = os.environ.get("MMEB_DATA_DIR")
    if mirror:
        return _load_local(table, spec, Path(mirror).expanduser(), source="local mirror")
    return _load_hub(table, spec)


# --- local mirror -------------------------------------------------------------------------------------------------


def _load_local(table: BenchmarkTable, spec: DatasetSpec, root: Path, *, source: str) -> LoadedDataset:
    if not root.is_dir():
        raise DataError(f"MMEB data folder {root} does not exist (dataset {spec.key}). {how_to_get(table, spec)}")
    files = sorted((root / spec.key).glob("test-*.parquet"))
    if not files:
        raise DataError(_layout_message(table, spec, root))
    records = []
    for path in files:
        records.extend(_read_parquet(path, spec))
    image_root = _local_image_root(root, spec) if _needs_images(records) else None
    rows, skipped = _to_rows(records, spec, image_root)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(_file_digest(path).encode())
    for row in rows:
        digest.update(row.query.item_id.encode())
        for cand in row.candidates:
            digest.update(cand.item_id.encode())
    return LoadedDataset(
        spec=spec,
        rows=rows,
        image_root=image_root,
        source=f"{source}: {root}",
        revision=f"local-{digest.hexdigest()[:16]}",
        files=[str(p) for p in files],
        skipped=skipped,
    )


def _layout_message(table: BenchmarkTable, spec: DatasetSpec, root: Path) -> str:
    folder = root / spec.key
    hint = ""
    if folder.is_dir():
        found = sorted(p.name for p in folder.iterdir())[:5]
        hint = f" The folder exists but holds {found or 'nothing'}; expected files named test-*.parquet."
    elif any(root.glob("test-*.parquet")):
        hint = " Parquet files lie directly in the data folder: MMEB_DATA_DIR must be the folder ABOVE the datasets."
    else:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())[:8]
        hint = f" Dataset folders present: {present or 'none'}."
    return (
        f"MMEB dataset {spec.key!r} not found in the local mirror {root}: expected {folder}/test-*.parquet "
        f"(MMEB-eval layout).{hint} {how_to_get(table, spec)}"
    )


def _read_parquet(path: Path, spec: DatasetSpec) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"dataset {spec.key}: cannot read {path}: {exc}. Re-download the file.") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(
            f"dataset {spec.key}: {path} lacks columns {missing} (has {table.column_names}); an MMEB-eval file "
            f"needs {list(REQUIRED_COLUMNS)} (optional qry_inst, tgt_inst)."
        )
    return table.to_pylist()


def _needs_images(records: list[dict[str, Any]]) -> bool:
    return any(r.get("qry_img_path") or any(r.get("tgt_img_path") or []) for r in records)


def _local_image_root(root: Path, spec: DatasetSpec) -> Path:
    override = os.environ.get("MMEB_IMAGE_DIR")
    image_root = Path(override).expanduser() if override else root / "eval_images"
    zips = [image_root / "images.zip", root / "images.zip"]
    archive = next((z for z in zips if z.is_file()), None)
    if archive is not None and not (image_root / EXTRACTED_MARKER).exists():
        safe_extract_zip(archive, image_root)
    if not image_root.is_dir():
        raise DataError(
            f"dataset {spec.key}: image folder {image_root} does not exist. Unzip MMEB-eval's images.zip there, "
            f"put images.zip into {root}, or point MMEB_IMAGE_DIR at the unzipped folder."
        )
    return image_root


def safe_extract_zip(archive: Path, target: Path) -> None:
    """Extract ``archive`` into ``target``; refuses absolute paths, ``..`` and links; atomic via a temp folder.

    If every member lies under one top folder named like ``target`` (``eval_images/...``), that level is dropped.
    """
    logger.warning("extracting %s into %s (first use)", archive, target)
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        for member in members:
            name = member.filename
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
                raise DataError(f"{archive}: refusing unsafe member {name!r} (absolute path or '..').")
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(f"{archive}: refusing symbolic link member {name!r}.")
        tops = {Path(m.filename).parts[0] for m in members}
        strip = len(tops) == 1 and tops == {target.name} and all(len(Path(m.filename).parts) > 1 for m in members)
        staging = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for member in members:
            parts = Path(member.filename).parts[1 if strip else 0 :]
            out = staging.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    target.mkdir(parents=True, exist_ok=True)
    for entry in staging.iterdir():
        dest = target / entry.name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        entry.rename(dest)
    staging.rmdir()
    (target / EXTRACTED_MARKER).write_text(archive.name, encoding="utf-8")


# --- hub ----------------------------------------------------------------------------------------------------------


def _load_hub(table: BenchmarkTable, spec: DatasetSpec) -> LoadedDataset:
    if not table.hub_id:
        raise DataError(f"dataset {spec.key} has no hub id and no local data folder.")
    try:
        from datasets import load_dataset

        ds = load_dataset(table.hub_id, spec.key, split="test", revision=table.hub_revision)
    except Exception as exc:
        raise DataError(
            f"MMEB dataset {spec.key!r} is not available locally and could not be loaded from the hub "
            f"({table.hub_id}@{table.hub_revision}: {type(exc).__name__}: {str(exc)[:200]}). "
            f"No local mirror is set (MMEB_DATA_DIR). {how_to_get(table, spec)}"
        ) from exc
    records = ds.to_list()
    for column in REQUIRED_COLUMNS:
        if records and column not in records[0]:
            raise DataError(f"dataset {spec.key}: hub rows lack column {column!r}")
    image_root = _hub_image_root(table, spec) if _needs_images(records) else None
    rows, skipped = _to_rows(records, spec, image_root)
    return LoadedDataset(
        spec=spec,
        rows=rows,
        image_root=image_root,
        source=f"hub: {table.hub_id}",
        revision=table.hub_revision,
        skipped=skipped,
    )


def _hub_image_root(table: BenchmarkTable, spec: DatasetSpec) -> Path:
    image_root = cache_dir() / "mmeb-eval" / table.hub_revision / "eval_images"
    if (image_root / EXTRACTED_MARKER).exists():
        return image_root
    try:
        from huggingface_hub import hf_hub_download

        archive = hf_hub_download(table.hub_id, table.images_file, repo_type="dataset", revision=table.hub_revision)
    except Exception as exc:
        raise DataError(
            f"dataset {spec.key}: could not fetch {table.images_file} from {table.hub_id}: {exc}. "
            f"{how_to_get(table, spec)}"
        ) from exc
    safe_extract_zip(Path(archive), image_root)
    return image_root


# --- rows ---------------------------------------------------------------------------------------------------------


SKIP_BAD_ROWS_ENV = "MMEB_DLLM_SKIP_BAD_ROWS"


def skip_bad_rows() -> bool:
    """Whether bad rows are skipped (and counted in the result) instead of failing the task."""
    return os.environ.get(SKIP_BAD_ROWS_ENV, "").lower() in {"1", "true", "yes", "on"}


def _to_rows(
    records: list[dict[str, Any]], spec: DatasetSpec, image_root: Path | None
) -> tuple[list[EvalRow], list[str]]:
    """Rows in source order; a bad row raises, or with ``MMEB_DLLM_SKIP_BAD_ROWS=1`` is skipped and reported."""
    digests: dict[str, str] = {}
    rows: list[EvalRow] = []
    skipped: list[str] = []
    for index, record in enumerate(records):
        try:
            rows.append(_to_row(index, record, spec, image_root, digests))
        except DataError as exc:
            if not skip_bad_rows():
                raise DataError(f"{exc} (set {SKIP_BAD_ROWS_ENV}=1 to skip bad rows; the count is recorded)") from None
            skipped.append(str(exc))
    if skipped:
        logger.warning("dataset %s: skipped %d bad rows, e.g. %s", spec.key, len(skipped), skipped[0])
    if not rows:
        raise DataError(f"dataset {spec.key}: no usable rows ({len(skipped)} skipped)")
    return rows, skipped


def _to_row(
    index: int, record: dict[str, Any], spec: DatasetSpec, image_root: Path | None, digests: dict[str, str]
) -> EvalRow:
    where = f"dataset {spec.key}, row {index}"
    for column in ("qry_text", "qry_img_path"):
        if not isinstance(record[column], str | None):
            raise DataError(f"{where}: {column} must be a string, got {type(record[column]).__name__}")
    query_text = _compose(record.get("qry_inst"), record["qry_text"] or "", bool(record["qry_img_path"]))
    query = _item(query_text, record["qry_img_path"] or "", image_root, digests, where + " (query)")
    texts, paths = record["tgt_text"], record["tgt_img_path"]
    if not isinstance(texts, list) or not isinstance(paths, list):
        raise DataError(f"{where}: tgt_text and tgt_img_path must be lists, got {type(texts).__name__}")
    if not texts:
        raise DataError(f"{where}: empty candidate list (the ground truth is candidate 0)")
    if len(texts) != len(paths):
        raise DataError(f"{where}: {len(texts)} candidate texts but {len(paths)} candidate image paths")
    inst = record.get("tgt_inst")
    candidates = []
    for j, (text, path) in enumerate(zip(texts, paths, strict=True)):
        label = "ground truth, candidate 0" if j == 0 else f"candidate {j}"
        if not isinstance(text, str | None) or not isinstance(path, str | None):
            raise DataError(f"{where} ({label}): candidate text and image path must be strings")
        composed = _compose(inst, text or "", bool(path))
        candidates.append(_item(composed, path or "", image_root, digests, f"{where} ({label})"))
    return EvalRow(index=index, query=query, candidates=tuple(candidates))


def _compose(instruction: str | None, text: str, has_image: bool) -> str:
    """MMEB text for a row: V1 rows carry the instruction already; V2 rows (``*_inst``) are joined like V2 eval."""
    if not instruction:
        return text
    joined = f"{instruction} {text}".strip() if text else instruction
    if has_image and MMEB_IMAGE_TOKEN not in joined:
        joined = f"{MMEB_IMAGE_TOKEN}\n{joined}"
    return joined.replace(" \n", "\n")


def _item(text: str, image_path: str, image_root: Path | None, digests: dict[str, str], where: str) -> ItemRef:
    if not isinstance(text, str):
        raise DataError(f"{where}: text must be a string, got {type(text).__name__}")
    image_digest = ""
    if image_path:
        if image_root is None:
            raise DataError(f"{where}: image {image_path!r} given but no image root is configured")
        if image_path not in digests:
            path = resolve_image_path(image_root, image_path, where)
            open_image(path, where=where)  # decodes once now, so a bad file fails the load naming its row
            digests[image_path] = _file_digest(path)
        image_digest = digests[image_path]
    if not text and not image_path:
        raise DataError(f"{where}: item has neither text nor image")
    item_id = hashlib.blake2b(f"{text}\x00{image_digest}".encode(), digest_size=12).hexdigest()
    return ItemRef(text=text, image_path=image_path, item_id=item_id)


def resolve_image_path(image_root: Path, relative: str, where: str) -> Path:
    """The file of a row's image path; it must exist and stay inside ``image_root`` (symlinks resolved)."""
    if Path(relative).is_absolute():
        raise DataError(f"{where}: image path {relative!r} is absolute; paths must be relative to {image_root}")
    root = image_root.resolve()
    path = (image_root / relative).resolve()
    if not path.is_relative_to(root):
        raise DataError(f"{where}: image path {relative!r} escapes the image root {root}")
    if not path.is_file():
        raise DataError(f"{where}: image file {image_root / relative} is missing")
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
