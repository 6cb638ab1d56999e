"""Validate an mteb output folder and turn it into a normalised submission record (nothing is executed or unpickled).

Input: the folder written by ``mteb run -m <model> -t MMEB --output-folder X`` (or any folder below it down to the
run folder ``X/results/<org>__<model>/<revision>[/experiments/<name>]`` holding ``model_meta.json`` and one
``MMEB-<key>.json`` per dataset). Output: a JSON-ready dict (``mmeb-dllm-submission/1``) with per-dataset scores and
metrics, model metadata, the embedding recipe and two hashes; aggregates are *not* copied: they are recomputed
from the per-dataset scores wherever they are shown, and any aggregate file in the input must agree with them.

Every problem found is collected and reported together in one :class:`SubmissionError`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmeb_dllm.benchmark.table import META_TASKS, BenchmarkTable, load_table
from mmeb_dllm.errors import MmebDllmError
from mmeb_dllm.leaderboard.aggregate import subset_means
from mmeb_dllm.leaderboard.schema import (
    ARCHITECTURES,
    BOARDS,
    KEPT_METRICS,
    REQUIRED_METRICS,
    SUBMISSION_FORMAT,
    URL_RE,
    SubmissionError,
    fraction_reason,
    is_number,
    plain_text_reason,
    unsafe_name_reason,
    unsafe_revision_reason,
)

MAX_FILE_BYTES = 4_000_000
MAX_STRING = 4000
AGGREGATE_TOLERANCE = 5e-5  # mteb writes 6 decimals
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
META_FIELDS = (
    "name", "revision", "release_date", "languages", "n_parameters", "max_tokens", "embed_dim", "license",
    "open_weights", "reference", "similarity_fn_name", "use_instructions", "modalities", "framework",
    "loader_kwargs", "experiment_kwargs", "adapted_from",
)
DIFFUSION_HINTS = ("lavida", "mmada", "llada", "dream")
AUTOREGRESSIVE_HINTS = ("qwen2-vl", "qwen2vl", "qwen2_vl", "llava", "phi-3", "phi3", "vlm2vec")


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def load_json(path: Path, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Parse one JSON file safely: regular file (no symlink), size-capped, UTF-8, no duplicate keys.

    Raises ValueError with a message naming the file and the problem. ``NaN``/``Infinity`` tokens parse to floats
    (mteb writes ``NaN`` for a missing CO2 figure); score fields are checked for finiteness separately.
    """
    if path.is_symlink():
        raise ValueError(f"{path.name} is a symbolic link; copy the real file into the folder")
    if not path.is_file():
        raise ValueError(f"{path.name} is not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path.name} is {size} bytes, more than the {max_bytes}-byte limit for a result file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise ValueError(f"{path.name} has the key {exc.args[0]!r} twice (tampered or hand-edited JSON)") from None
    except json.JSONDecodeError as exc:
        hint = " (truncated file?)" if exc.pos >= len(text.rstrip()) else ""
        raise ValueError(
            f"{path.name} is not valid JSON{hint}: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ValueError(f"{path.name} is nested too deeply to be an mteb result") from None


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def result_hash(record: Mapping[str, Any]) -> str:
    """Identity of a result: benchmark, model, revision, recipe and every dataset's P@1 (for duplicate checks)."""
    payload = {
        "benchmark": record["benchmark"],
        "model": record["model"]["name"],
        "revision": record["model"]["revision"],
        "recipe_key": record["recipe_key"],
        "scores": {k: v["hit_at_1"] for k, v in record["datasets"].items()},
    }
    return "sha256:" + hashlib.sha256(canonical(payload)).hexdigest()


def content_hash(record: Mapping[str, Any]) -> str:
    """Hash over the whole normalised record except the hash itself (detects edits of stored files)."""
    body = {k: v for k, v in record.items() if k != "content_hash"}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def find_run_folders(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) holding a ``model_meta.json``; symbolic links are not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        if "model_meta.json" in filenames:
            found.append(Path(dirpath))
    return found


def classify(stem: str) -> tuple[str, str, str] | None:
    """(board, kind, name) of a result file stem: kind ``dataset`` (name = key), ``aggregate`` (name = the
    aggregate's group: ``Overall``, a meta-task or ``paper``) or ``unknown`` (name = the unknown key); None when
    the file is no MMEB result at all."""
    for board in sorted(BOARDS, key=len, reverse=True):
        if stem == board:
            return board, "aggregate", "Overall"
        if stem.startswith(board + "-"):
            rest = stem[len(board) + 1 :]
            keys = {d.key for d in load_table(board).datasets}
            if rest in keys:
                return board, "dataset", rest
            if rest in META_TASKS or rest == "paper":
                return board, "aggregate", rest
            return board, "unknown", rest
    return None


def aggregate_members(table: BenchmarkTable, group: str) -> list[str]:
    if group == "Overall":
        return [d.key for d in table.datasets]
    if group == "paper":
        return [d.key for d in table.datasets if d.meta_task in ("CLS", "VQA", "RET")]
    return [d.key for d in table.datasets if d.meta_task == group]


def _date(epoch: object) -> str:
    if is_number(epoch) and math.isfinite(epoch) and 0 < epoch < 4_102_444_800:
        return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).date().isoformat()
    return ""


def _json_safe(value: Any, what: str, problems: list[str], depth: int = 0) -> Any:
    """Copy of a recipe/metadata value with only JSON scalars, printable bounded strings and finite numbers."""
    if depth > 6:
        problems.append(f"{what} is nested too deeply")
        return None
    if value is None or isinstance(value, bool):
        return value
    if is_number(value):
        if not math.isfinite(value):
            problems.append(f"{what} is {value} (not finite)")
            return None
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING or not value.replace("\n", "").replace("\t", "").isprintable():
            problems.append(f"{what} must be printable text (newlines allowed) of at most {MAX_STRING} characters")
        return value
    if isinstance(value, list):
        return [_json_safe(v, f"{what}[{i}]", problems, depth + 1) for i, v in enumerate(value[:64])]
    if isinstance(value, dict):
        return {str(k): _json_safe(v, f"{what}.{k}", problems, depth + 1) for k, v in list(value.items())[:64]}
    problems.append(f"{what} has an unsupported type {type(value).__name__}")
    return None


def infer_architecture(name: str, recipe: Mapping[str, Any], backbone_class: str) -> str:
    """``diffusion`` or ``autoregressive`` from the zoo family (every zoo family is a VLM: the diffusion ones are
    LaViDa, MMaDA, LLaDA and Dream, the rest autoregressive), else from name hints, else ``unknown``."""
    try:
        from mmeb_dllm.zoo import get_spec

        family = get_spec(name).family.lower()
    except MmebDllmError:  # not a zoo model: fall back to names
        family = ""
    if family:
        return "diffusion" if any(h in family for h in DIFFUSION_HINTS) else "autoregressive"
    text = " ".join([name, str(recipe.get("checkpoint", "")), backbone_class]).lower()
    if any(h in text for h in DIFFUSION_HINTS):
        return "diffusion"
    return "autoregressive" if any(h in text for h in AUTOREGRESSIVE_HINTS) else "unknown"


class _Reader:
    """Collects problems while reading one run folder."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.problems: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def json(self, path: Path) -> Any:
        try:
            return load_json(path)
        except ValueError as exc:
            self.fail(str(exc))
            return None

    def fraction(self, value: object, what: str) -> float | None:
        reason = fraction_reason(value, what)
        if reason:
            self.fail(reason)
            return None
        return float(value)  # type: ignore[arg-type]


def _read_meta(reader: _Reader, run: Path) -> dict[str, Any] | None:
    meta = reader.json(run / "model_meta.json")
    if meta is None:
        return None
    if not isinstance(meta, dict):
        reader.fail(f"model_meta.json must hold a JSON object, got {type(meta).__name__}")
        return None
    for field_name, check in (("name", unsafe_name_reason), ("revision", unsafe_revision_reason)):
        if field_name not in meta:
            reader.fail(f"model_meta.json has no {field_name!r} (model metadata is required)")
            continue
        reason = check(meta[field_name])
        if reason:
            reader.fail(f"model_meta.json: {reason}")
    for field_name in ("n_parameters", "embed_dim"):
        value = meta.get(field_name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            reader.fail(f"model_meta.json: {field_name} must be a positive integer or null, got {value!r}")
    value = meta.get("max_tokens")
    if value is not None and (not is_number(value) or not math.isfinite(value) or value <= 0):
        reader.fail(f"model_meta.json: max_tokens must be a positive number or null, got {value!r}")
    date = meta.get("release_date")
    if date is not None and not (isinstance(date, str) and DATE_RE.fullmatch(date)):
        reader.fail(f"model_meta.json: release_date must be YYYY-MM-DD or null, got {date!r}")
    for field_name in ("loader_kwargs", "experiment_kwargs"):
        value = meta.get(field_name)
        if value is not None and not isinstance(value, dict):
            reader.fail(f"model_meta.json: {field_name} must be an object or null, got {type(value).__name__}")
    return meta


def _check_layout(reader: _Reader, run: Path, meta: Mapping[str, Any]) -> None:
    """In mteb's layout the folder names repeat the model name and revision: they must agree with model_meta."""
    revision_dir = run.parent.parent if run.parent.name == "experiments" else run
    model_dir = revision_dir.parent
    if model_dir.parent.name != "results":
        return
    name, revision = meta.get("name"), meta.get("revision")
    if isinstance(name, str) and model_dir.name != name.replace("/", "__").replace(" ", "_"):
        reader.fail(f"folder {model_dir.name!r} does not match model_meta.json name {name!r} (moved or tampered)")
    if isinstance(revision, str) and revision_dir.name != revision:
        reader.fail(f"folder {revision_dir.name!r} does not match model_meta.json revision {revision!r}")


def _first_scores(reader: _Reader, data: Any, file_name: str, stem: str) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        reader.fail(f"{file_name} must hold a JSON object, got {type(data).__name__}")
        return None
    if data.get("task_name") != stem:
        reader.fail(f"{file_name} says task_name {data.get('task_name')!r}, not {stem!r} (renamed or tampered file)")
        return None
    scores = data.get("scores")
    test = scores.get("test") if isinstance(scores, dict) else None
    if not isinstance(test, list) or len(test) != 1 or not isinstance(test[0], dict):
        reader.fail(f"{file_name} must have scores.test = a list with exactly one object (the 'default' subset)")
        return None
    entry = test[0]
    if entry.get("hf_subset", "default") != "default":
        reader.fail(f"{file_name}: subset {entry.get('hf_subset')!r} is not 'default'")
        return None
    return entry


def _read_dataset(
    reader: _Reader, data: Any, file_name: str, stem: str, table: BenchmarkTable, key: str, model_name: object
) -> dict[str, Any] | None:
    entry = _first_scores(reader, data, file_name, stem)
    if entry is None:
        return None
    spec = table.dataset(key)
    problems_before = len(reader.problems)
    hit = reader.fraction(entry.get("mmeb_hit_at_1"), f"{file_name}: mmeb_hit_at_1")
    main = reader.fraction(entry.get("main_score"), f"{file_name}: main_score")
    if hit is not None and main is not None and abs(hit - main) > 1e-9:
        reader.fail(f"{file_name}: main_score {main} differs from mmeb_hit_at_1 {hit} (tampered score)")
    n = entry.get("mmeb_num_queries")
    if not is_number(n) or not math.isfinite(n) or n != int(n):
        reader.fail(f"{file_name}: mmeb_num_queries must be a whole number, got {n!r}")
        n = None
    elif int(n) != spec.num_queries:
        reader.fail(f"{file_name}: scored {int(n)} queries, but {table.name} {key} has {spec.num_queries}")
    if hit is not None and n:
        hits = hit * n
        if abs(hits - round(hits)) > 5e-6 * n + 1e-9:
            reader.fail(f"{file_name}: P@1 {hit} is not a whole number of hits out of {int(n)} queries (tampered)")
    metrics: dict[str, float] = {}
    for name in KEPT_METRICS:
        if name in entry or name in REQUIRED_METRICS:
            value = reader.fraction(entry.get(name), f"{file_name}: {name}")
            if value is not None:
                metrics[name] = value
    chance = entry.get("mmeb_chance_at_1")
    chance = reader.fraction(chance, f"{file_name}: mmeb_chance_at_1") if chance is not None else None
    guard = entry.get("mmeb_below_chance_guard", 0.0)
    if guard not in (0, 1) or isinstance(guard, bool):
        reader.fail(f"{file_name}: mmeb_below_chance_guard must be 0 or 1, got {guard!r}")
        guard = 0
    protocol = entry.get("mmeb_protocol")
    if protocol is not None and not isinstance(protocol, dict):
        reader.fail(f"{file_name}: mmeb_protocol must be an object, got {type(protocol).__name__}")
        protocol = None
    if protocol is not None:
        proto_model = protocol.get("model") if isinstance(protocol.get("model"), dict) else {}
        if proto_model.get("name") != model_name:
            reader.fail(f"{file_name}: the protocol record names model {proto_model.get('name')!r}, not {model_name!r}")
        proto_data = protocol.get("data") if isinstance(protocol.get("data"), dict) else {}
        if proto_data.get("dataset", key) != key:
            reader.fail(f"{file_name}: the protocol record is for dataset {proto_data.get('dataset')!r}, not {key!r}")
    for field_name in ("dataset_revision", "mteb_version"):
        if not isinstance(data.get(field_name), str):
            reader.fail(f"{file_name}: {field_name} must be a string")
    if len(reader.problems) > problems_before:
        return None
    return {
        "hit_at_1": hit,
        "num_queries": int(n),  # type: ignore[arg-type]
        "chance_at_1": chance,
        "below_chance_guard": bool(guard),
        "metrics": metrics,
        "dataset_revision": data["dataset_revision"],
        "mteb_version": data["mteb_version"],
        "evaluation_time": data.get("evaluation_time") if is_number(data.get("evaluation_time")) else None,
        "date": _date(data.get("date")),
        "timestamp": data["date"] if _date(data.get("date")) else None,
        "protocol": protocol,
    }


def _check_aggregate(
    reader: _Reader, data: Any, file_name: str, stem: str, table: BenchmarkTable, group: str,
    scores: Mapping[str, float],
) -> None:
    entry = _first_scores(reader, data, file_name, stem)
    if entry is None:
        return
    members = aggregate_members(table, group)
    missing = [k for k in members if k not in scores]
    if missing:
        reader.fail(f"{file_name} aggregates datasets that have no valid result file here: {', '.join(missing)}")
        return
    expected = subset_means(scores, members, table)
    expected["mmeb_hit_at_1"] = expected["main_score"]
    for name, value in entry.items():
        if name not in expected:
            continue
        if not is_number(value) or not math.isfinite(value):
            reader.fail(f"{file_name}: {name} must be a finite number, got {value!r}")
        elif abs(value - expected[name]) > AGGREGATE_TOLERANCE:
            reader.fail(
                f"{file_name}: aggregate {name} = {value} disagrees with the mean of the per-dataset scores "
                f"({expected[name]:.6f}); aggregates are recomputed, never trusted"
            )


def read_submission(
    folder: str | Path,
    *,
    partial: bool = False,
    benchmark: str | None = None,
    architecture: str | None = None,
    source: str = "Self-Reported",
    url: str = "",
    submitted: str | None = None,
) -> dict[str, Any]:
    """Validate ``folder`` and return the normalised record (raises :class:`SubmissionError` listing problems).

    ``partial`` allows a subset of the benchmark's datasets; ``benchmark`` picks MMEB or MMEB-mini when a folder
    holds both; ``architecture`` overrides the inferred one; ``submitted`` is the submission date (default today).
    """
    root = Path(folder)
    if not root.is_dir():
        raise SubmissionError([f"{root} is not a folder; pass the --output-folder of `mteb run`"], root)
    if root.is_symlink():
        raise SubmissionError([f"{root} is a symbolic link; pass the real folder"], root)
    runs = find_run_folders(root)
    if not runs:
        raise SubmissionError(
            [f"no model_meta.json under {root}: not an mteb output folder (expected results/<org>__<model>/<rev>/)"],
            root,
        )
    if len(runs) > 1:
        listing = ", ".join(str(r) for r in runs[:10])
        raise SubmissionError([f"{len(runs)} runs found ({listing}); pass the one run folder to submit"], root)
    run = runs[0]
    reader = _Reader(run)
    problems = reader.problems
    if benchmark is not None and benchmark not in BOARDS:
        problems.append(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BOARDS)}")
    if architecture is not None and architecture not in ARCHITECTURES:
        problems.append(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    reason = plain_text_reason(source, "source")
    if reason or not source.strip():
        problems.append(reason or "source must not be empty")
    if url and not URL_RE.fullmatch(url):
        problems.append(f"url {url!r} must be an https:// address without spaces or quotes")
    meta = _read_meta(reader, run)
    if meta is not None:
        _check_layout(reader, run, meta)
    model_name = meta.get("name") if meta else None

    files = sorted(p for p in run.iterdir() if p.name != "model_meta.json" and p.suffix == ".json")
    for path in sorted(run.iterdir()):
        if path.is_symlink():
            problems.append(f"{path.name} is a symbolic link; copy the real file into the folder")
    by_board: dict[str, list[tuple[Path, str, str]]] = {}
    for path in files:
        kind = classify(path.stem)
        if kind is None:
            problems.append(f"{path.name} is not an MMEB result (only MMEB-<key>.json files can be submitted)")
            continue
        board, what, name = kind
        if what == "unknown":
            keys = ", ".join(d.key for d in load_table(board).datasets)
            problems.append(f"{path.name}: unknown {board} dataset key {name!r}; known keys: {keys}")
            continue
        by_board.setdefault(board, []).append((path, what, name))
    boards = [benchmark] if benchmark in BOARDS else sorted(by_board)
    if not by_board:
        problems.append(f"no MMEB result files (MMEB-<key>.json) in {run}")
        raise SubmissionError(problems, root)
    if len(boards) > 1:
        problems.append(f"the folder holds results of {' and '.join(boards)}; pass --benchmark to choose one")
        raise SubmissionError(problems, root)
    board = boards[0]  # with --benchmark, result files of the other benchmark are left aside
    table = load_table(board)

    datasets: dict[str, dict[str, Any]] = {}
    aggregates: list[tuple[Path, Any, str]] = []
    for path, what, name in by_board.get(board, []):
        data = reader.json(path)
        if data is None:
            continue
        if what == "aggregate":
            aggregates.append((path, data, name))
            continue
        parsed = _read_dataset(reader, data, path.name, path.stem, table, name, model_name)
        if parsed is not None:
            datasets[name] = parsed
    scores = {k: v["hit_at_1"] for k, v in datasets.items()}
    for path, data, group in aggregates:
        _check_aggregate(reader, data, path.name, path.stem, table, group, scores)

    present = {name for _, what, name in by_board.get(board, []) if what == "dataset"}
    missing = [d.key for d in table.datasets if d.key not in present]
    if missing and not partial:
        problems.append(
            f"missing {len(missing)} of {len(table.datasets)} {board} datasets: {', '.join(missing)}; "
            "run the whole benchmark or pass --partial"
        )
    if not present:
        problems.append(f"no {board} dataset results in {run}")

    recipe, recipe_key, packages, backbone_class = _recipe(reader, datasets, meta)
    if problems:
        raise SubmissionError(problems, root)
    assert meta is not None

    size = meta.get("n_parameters")
    dates = sorted(v["date"] for v in datasets.values() if v["date"])
    record: dict[str, Any] = {
        "format": SUBMISSION_FORMAT,
        "benchmark": board,
        "partial": bool(missing),
        "model": {
            "name": meta["name"],
            "revision": meta["revision"],
            "architecture": architecture or infer_architecture(meta["name"], recipe, backbone_class),
            "size_b": round(size / 1e9, 6) if size else None,
            "embed_dim": meta.get("embed_dim"),
            "max_tokens": meta.get("max_tokens"),
            "release_date": meta.get("release_date"),
        },
        "model_meta": _json_safe({k: meta[k] for k in META_FIELDS if k in meta}, "model_meta", problems),
        "recipe": recipe,
        "recipe_key": recipe_key,
        "source": source,
        "url": url,
        "run_date": dates[-1] if dates else "",
        "submitted": submitted or datetime.date.today().isoformat(),
        "packages": packages,
        "datasets": {d.key: datasets[d.key] for d in table.datasets if d.key in datasets},
    }
    for key, value in record["datasets"].items():
        if value["protocol"] is not None:
            value["protocol"] = _json_safe(_strip_protocol(value["protocol"]), f"{key}: mmeb_protocol", problems)
    if problems:
        raise SubmissionError(problems, root)
    record["result_hash"] = result_hash(record)
    record["content_hash"] = content_hash(record)
    return record


def _strip_protocol(protocol: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol record minus what is stored once per submission (packages, recipe) and local paths."""
    out = {k: v for k, v in protocol.items() if k not in {"packages", "model"}}
    model = protocol.get("model")
    if isinstance(model, dict):
        out["backbone"] = model.get("backbone")
    data = protocol.get("data")
    if isinstance(data, dict):
        out["data"] = {k: v for k, v in data.items() if k != "source"}
    return out


def _recipe(
    reader: _Reader, datasets: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any] | None
) -> tuple[dict[str, Any], str, dict[str, Any], str]:
    """The embedding recipe shared by every dataset (protocol records first, else model_meta loader kwargs)."""
    protocols = {k: v["protocol"] for k, v in datasets.items() if v.get("protocol") is not None}
    recipes = {}
    packages: dict[str, Any] = {}
    backbone_class = ""
    for key, protocol in protocols.items():
        model = protocol.get("model") if isinstance(protocol.get("model"), dict) else {}
        recipes[key] = (json.dumps(model.get("recipe"), sort_keys=True), model.get("recipe_key"))
        if isinstance(protocol.get("packages"), dict):
            packages = protocol["packages"]
        backbone = model.get("backbone")
        if isinstance(backbone, dict) and isinstance(backbone.get("class"), str):
            backbone_class = backbone["class"]
    if protocols and len(protocols) != len(datasets):
        without = sorted(set(datasets) - set(protocols))
        reader.fail(f"datasets without a protocol record (mixed runs?): {', '.join(without)}")
    if len(set(recipes.values())) > 1:
        by_recipe: dict[tuple, list[str]] = {}
        for key, value in recipes.items():
            by_recipe.setdefault(value, []).append(key)
        groups = "; ".join(", ".join(keys) for keys in by_recipe.values())
        reader.fail(f"the datasets were embedded with different recipes (mixed runs): {groups}")
    recipe: Any = None
    recipe_key = ""
    if recipes:
        first = next(iter(protocols.values()))["model"]
        recipe, recipe_key = first.get("recipe"), first.get("recipe_key") or ""
    if not recipe and meta is not None:
        kwargs = {**(meta.get("loader_kwargs") or {}), **(meta.get("experiment_kwargs") or {})}
        recipe = {k: v for k, v in kwargs.items() if k != "device"}
    if not isinstance(recipe, dict) or not recipe:
        reader.fail(
            "no embedding recipe: the results carry no mmeb_protocol recipe and model_meta.json has no "
            "loader_kwargs/experiment_kwargs; rerun with mmeb-dllm's models (they record it)"
        )
        return {}, "", {}, backbone_class
    recipe = _json_safe(recipe, "recipe", reader.problems)
    if not isinstance(recipe_key, str) or not re.fullmatch(r"[0-9a-f]{0,64}", recipe_key):
        reader.fail(f"recipe_key {recipe_key!r} must be a hex digest")
        recipe_key = ""
    if not recipe_key:
        recipe_key = hashlib.sha256(canonical(recipe)).hexdigest()[:20]
    packages = _json_safe(packages, "packages", reader.problems) if packages else {}
    return recipe, recipe_key, packages, backbone_class


def check_record(record: Any, where: str) -> list[str]:
    """Problems of a stored normalised record (schema, names, scores, hashes); empty when it is intact."""
    if not isinstance(record, dict):
        return [f"{where}: not a JSON object"]
    problems = []
    if record.get("format") != SUBMISSION_FORMAT:
        problems.append(f"{where}: format is {record.get('format')!r}, expected {SUBMISSION_FORMAT!r}")
    board = record.get("benchmark")
    if board not in BOARDS:
        return [*problems, f"{where}: unknown benchmark {board!r}"]
    model = record.get("model")
    if not isinstance(model, dict):
        return [*problems, f"{where}: model must be an object"]
    for reason in (unsafe_name_reason(model.get("name")), unsafe_revision_reason(model.get("revision"))):
        if reason:
            problems.append(f"{where}: {reason}")
    if model.get("architecture") not in ARCHITECTURES:
        problems.append(f"{where}: unknown architecture {model.get('architecture')!r}")
    if not isinstance(record.get("recipe"), dict) or not record["recipe"]:
        problems.append(f"{where}: recipe missing")
    keys = {d.key for d in load_table(board).datasets}
    datasets = record.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        return [*problems, f"{where}: datasets missing"]
    for key, value in datasets.items():
        if key not in keys:
            problems.append(f"{where}: unknown {board} dataset key {key!r}")
            continue
        if not isinstance(value, dict):
            problems.append(f"{where}: {key} must be an object")
            continue
        reason = fraction_reason(value.get("hit_at_1"), f"{where}: {key} hit_at_1")
        if reason:
            problems.append(reason)
    if record.get("partial") is not (len(set(datasets) & keys) < len(keys)):
        problems.append(f"{where}: the partial flag does not match the datasets present")
    if problems:
        return problems
    if record.get("result_hash") != result_hash(record) or record.get("content_hash") != content_hash(record):
        problems.append(
            f"{where}: content hash mismatch: the stored file was edited after submission; restore it "
            "(git checkout) or resubmit the original mteb results"
        )
    return problems
