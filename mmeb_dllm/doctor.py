"""``mmeb-dllm doctor -m <model> [-t <task>]``: quick self-checks of an embedding recipe on a few real rows.

Each check prints PASS or FAIL with a reason. They catch the silent misconfigurations behind chance-level MMEB
scores: an image that never reaches the model, an instruction that is dropped, pooling that reads a padding
position, unnormalised or non-finite vectors, dropout left on, and an image-token count that disagrees with the
backbone's own arithmetic. The exact rendered prompts of a sample query and target are printed for a human to read.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID, EmbeddedSample
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.prompts import user_content

TOLERANCE = 1e-5


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    reason: str

    def line(self) -> str:
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.name}: {self.reason}"


def _vectors(embedder: Embedder, items: list[Item]) -> np.ndarray:
    """Fresh vectors (no cache), one batch."""
    with torch.inference_mode():
        return embedder.forward_items(items).cpu().numpy()


def _one_by_one(embedder: Embedder, items: list[Item]) -> np.ndarray:
    return np.concatenate([_vectors(embedder, [item]) for item in items])


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def check_image_matters(embedder: Embedder, items: list[Item]) -> CheckResult:
    item = next((i for i in items if i.image is not None), None)
    if item is None:
        return CheckResult("image changes the embedding", True, "no image in the sample rows (skipped)")
    other = ImageOps.invert(item.image.convert("RGB")).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    delta = _changed(*_vectors(embedder, [item, Item(item.text, other)]))
    ok = delta > TOLERANCE
    return CheckResult("image changes the embedding", ok, f"max |delta| = {delta:.2e} for an inverted, flipped image"
                       + ("" if ok else ": the image does not reach the model"))


def check_text_matters(embedder: Embedder, items: list[Item]) -> CheckResult:
    item = items[0]
    delta = _changed(*_vectors(embedder, [item, Item(item.text + " zebra quartz", item.image)]))
    ok = delta > TOLERANCE
    return CheckResult("text changes the embedding", ok, f"max |delta| = {delta:.2e} after appending two words"
                       + ("" if ok else ": the text/instruction does not reach the model"))


def check_batch_equals_single(embedder: Embedder, items: list[Item]) -> CheckResult:
    delta = _changed(_vectors(embedder, items), _one_by_one(embedder, items))
    ok = delta <= TOLERANCE
    return CheckResult("batched equals one-by-one", ok, f"max |delta| = {delta:.2e} over {len(items)} items"
                       + ("" if ok else ": padding leaks into real positions or pooling reads a padded position"))


def check_finite_normalised(embedder: Embedder, items: list[Item]) -> CheckResult:
    vectors = _vectors(embedder, items)
    if not np.isfinite(vectors).all():
        return CheckResult("vectors finite and normalised", False, "non-finite values")
    norms = np.linalg.norm(vectors, axis=1)
    ok = bool(np.allclose(norms, 1.0, atol=1e-4))
    return CheckResult("vectors finite and normalised", ok, f"norms in [{norms.min():.4f}, {norms.max():.4f}]")


def check_deterministic(embedder: Embedder, items: list[Item]) -> CheckResult:
    delta = _changed(_vectors(embedder, items), _vectors(embedder, items))
    ok = delta == 0.0
    return CheckResult("two runs are identical", ok, f"max |delta| = {delta:.2e}"
                       + ("" if ok else ": dropout or another random op is active at inference"))


def check_image_token_count(embedder: Embedder, items: list[Item]) -> CheckResult:
    item = next((i for i in items if i.image is not None), None)
    if item is None:
        return CheckResult("image tokens per image", True, "no image in the sample rows (skipped)")
    backbone = embedder.backbone
    image = item.image.convert("RGB")
    ids = embedder.prompt_ids(Item(item.text, image))
    with torch.inference_mode():
        [sample] = backbone.embed([ids], [image])
    length = (sample.embeds if isinstance(sample, EmbeddedSample) else sample).shape[0]
    actual = length - (len(ids) - ids.count(IMAGE_PLACEHOLDER_ID))
    expected = backbone.num_image_tokens(image)
    ok = actual == expected
    return CheckResult("image tokens per image", ok, f"{actual} spliced, backbone expects {expected} for {image.size}")


CHECKS: tuple[Callable[[Embedder, list[Item]], CheckResult], ...] = (
    check_image_matters,
    check_text_matters,
    check_batch_equals_single,
    check_finite_normalised,
    check_deterministic,
    check_image_token_count,
)


def run_checks(embedder: Embedder, items: list[Item]) -> list[CheckResult]:
    results = []
    for check in CHECKS:
        try:
            results.append(check(embedder, items))
        except Exception as exc:
            results.append(CheckResult(check.__name__.removeprefix("check_").replace("_", " "), False, repr(exc)))
    return results


def rendered_prompt(embedder: Embedder, item: Item) -> str:
    backbone = embedder.backbone
    content = user_content(item.text, has_image=item.image is not None, image_token=backbone.image_token)
    return backbone.render_prompt(content)


def sample_items(task_name: str, rows: int) -> tuple[list[Item], list[Item]]:
    """Query items and ground-truth target items of the first ``rows`` rows of an MMEB task."""
    import mteb

    task = mteb.get_task(task_name)
    task.load_data()
    loaded = task.loaded

    def item(ref):
        path = loaded.image_file(ref)
        return Item(ref.text, Image.open(path).convert("RGB") if path else None)

    chosen = loaded.rows[:rows]
    return [item(r.query) for r in chosen], [item(r.candidates[0]) for r in chosen]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmeb-dllm doctor", description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", required=True, help="registered model name or alias")
    parser.add_argument("-t", "--task", default="MMEB-mini-ShapeColorVQA", help="MMEB task to take rows from")
    parser.add_argument("--rows", type=int, default=4, help="how many rows to check")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import mteb

    import mmeb_dllm

    mmeb_dllm.register()
    queries, targets = sample_items(args.task, args.rows)
    encoder = mteb.get_model(args.model, device=args.device)
    embedder = encoder.embedder
    print(f"doctor: {encoder.recipe.model} on {args.task} ({len(queries)} rows)")
    print(f"recipe: {encoder.recipe.to_dict()}")
    print(f"--- rendered query prompt ---\n{rendered_prompt(embedder, queries[0])}")
    print(f"--- rendered target prompt ---\n{rendered_prompt(embedder, targets[0])}\n---")
    results = run_checks(embedder, queries + targets)
    for result in results:
        print(result.line())
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0
