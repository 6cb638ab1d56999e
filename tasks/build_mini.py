"""Build MMEB-mini: a small, deterministic sample benchmark in the MMEB on-disk layout.

MMEB-mini has 10 datasets that cover the four MMEB meta-tasks (CLS, VQA, RET, VG).
It uses only image data that ships inside installed packages (scikit-learn digits and
sample images, scikit-image sample photos) plus scenes drawn with PIL.

Running ``python tasks/build_mini.py`` deletes and rewrites ``tasks/mini/`` and
``tasks/mmeb_mini.toml``. The output is byte-identical from run to run (fixed seeds, PNGs
without metadata, parquet files written by pyarrow without timestamps), given the same
numpy / Pillow / pyarrow / scikit-image / scikit-learn versions.

Layout (the same as the real MMEB-eval / MMEB-train)::

    mini/<Key>/test-00000-of-00001.parquet          qry_text, qry_img_path, tgt_text, tgt_img_path
    mini/eval_images/<Key>/<name>.png               paths relative to mini/eval_images/
    mini/train/<Key>/original-00000-of-00001.parquet  qry, qry_image_path, pos_text,
                                                    pos_image_path (+ neg_text, neg_image_path)
    mini/train_images/<Key>/<name>.png              paths relative to mini/train_images/

Candidate index 0 is always the ground truth, as in MMEB-eval.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import skimage.data
from PIL import Image, ImageDraw
from sklearn.datasets import load_digits, load_sample_image

T = TypeVar("T")

TASKS_DIR = Path(__file__).resolve().parent
DATA_DIR_NAME = "mini"
OUT_DIR = TASKS_DIR / DATA_DIR_NAME
TOML_PATH = TASKS_DIR / "mmeb_mini.toml"

IMG = "<|image_1|>\n"
IMAGE_TARGET = f"{IMG}Represent the given image."
CROP_TARGET = f"{IMG}Represent the given cropped image of the object"
VQA_QUERY = f"{IMG}Represent the given image with the following question:"

SUPERSAMPLE = 4  # scenes are drawn at 4x and box-filtered down (anti-aliasing)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 150, 55),
    "blue": (40, 75, 215),
    "yellow": (240, 205, 25),
    "orange": (245, 130, 25),
    "purple": (125, 50, 165),
    "pink": (245, 125, 180),
    "brown": (125, 80, 35),
    "black": (20, 20, 20),
    "cyan": (25, 185, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "beige": (235, 222, 192),
    "light blue": (205, 225, 245),
    "light green": (210, 235, 205),
}
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "pentagon",
    "hexagon",
    "diamond",
)
PLURALS: dict[str, str] = {s: ("crosses" if s == "cross" else f"{s}s") for s in SHAPES}
DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
# (label, package, image name): photos bundled with scikit-image / scikit-learn.
PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "skimage", "astronaut"),
    ("coffee cup", "skimage", "coffee"),
    ("cat", "skimage", "chelsea"),
    ("photographer", "skimage", "camera"),
    ("rocket", "skimage", "rocket"),
    ("coins", "skimage", "coins"),
    ("galaxies", "skimage", "hubble_deep_field"),
    ("brick wall", "skimage", "brick"),
    ("pagoda", "sklearn", "china.jpg"),
    ("flower", "sklearn", "flower.jpg"),
)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Spec:
    """One dataset's row in mmeb_mini.toml (num_queries / num_candidates come from data)."""

    key: str
    meta_task: str
    split: str
    query_modality: str
    target_modality: str
    query_instruction: str
    target_instruction: str
    notes: str

    @property
    def train_config(self) -> str:
        """IND datasets ship a train set under the same key; OOD ones have none."""
        return self.key if self.split == "IND" else ""

    def query(self, row_text: str = "") -> str:
        """Eval query string: instruction, then a space and the per-row text if any."""
        return f"{self.query_instruction} {row_text}" if row_text else self.query_instruction


@dataclass
class EvalRow:
    """One MMEB-eval row; candidate 0 is the ground truth."""

    qry_text: str
    qry_img_path: str
    tgt_text: list[str]
    tgt_img_path: list[str]


@dataclass
class TrainRow:
    """One MMEB-train row (neg_* only used by VQA sets)."""

    qry: str
    qry_image_path: str
    pos_text: str
    pos_image_path: str
    neg_text: str | None = None
    neg_image_path: str | None = None


@dataclass
class Built:
    """A dataset's spec, eval rows and (for IND sets) train rows."""

    spec: Spec
    eval_rows: list[EvalRow]
    train_rows: list[TrainRow] = field(default_factory=list)


Candidate = tuple[str, str]  # (text, image path relative to the image root; "" = none)


class ImageSink:
    """Saves PNGs under ``root/<key>/`` and returns paths relative to ``root``."""

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.key = key

    def save(self, name: str, img: Image.Image) -> str:
        """Write ``<root>/<key>/<name>.png`` and return ``<key>/<name>.png``."""
        rel = f"{self.key}/{name}.png"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format="PNG", optimize=True)  # no pnginfo => no metadata chunks
        return rel


def sinks(key: str) -> tuple[ImageSink, ImageSink]:
    """Eval and train image sinks for one dataset."""
    return ImageSink(OUT_DIR / "eval_images", key), ImageSink(OUT_DIR / "train_images", key)


# --------------------------------------------------------------------------- rng helpers


def pick(rng: np.random.Generator, seq: Sequence[T]) -> T:
    """Return one random element."""
    return seq[int(rng.integers(len(seq)))]


def sample(rng: np.random.Generator, seq: Sequence[T], k: int) -> list[T]:
    """Return ``k`` distinct random elements."""
    return [seq[int(i)] for i in rng.choice(len(seq), size=k, replace=False)]


def shuffled(rng: np.random.Generator, seq: Sequence[T]) -> list[T]:
    """Return the elements in a random order."""
    return [seq[int(i)] for i in rng.permutation(len(seq))]


def with_article(phrase: str) -> str:
    """Prefix 'a' or 'an'."""
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"


def label_candidates(rng: np.random.Generator, answer: str, labels: Sequence[str]) -> list[Candidate]:
    """Text candidates: the answer first, then every other label in a seeded order."""
    others = shuffled(rng, [lab for lab in labels if lab != answer])
    return [(answer, "")] + [(lab, "") for lab in others]


def eval_row(qry_text: str, qry_img: str, cands: Sequence[Candidate]) -> EvalRow:
    """Build an eval row from (text, image) candidates, ground truth first."""
    return EvalRow(qry_text, qry_img, [c[0] for c in cands], [c[1] for c in cands])


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Obj:
    """A filled shape: centre and radius in output pixels, rotation in degrees."""

    kind: str
    colour: str
    cx: float
    cy: float
    r: float
    angle: float = 0.0

    @property
    def label(self) -> str:
        """Return the '<colour> <shape>' label."""
        return f"{self.colour} {self.kind}"

    def points(self, scale: float = 1.0) -> list[tuple[float, float]]:
        """Polygon outline (a 48-gon for circles), scaled by ``scale``."""
        unit = UNIT_OUTLINES[self.kind]
        theta = math.radians(self.angle)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        return [
            (scale * (self.cx + self.r * (x * cos_t - y * sin_t)), scale * (self.cy + self.r * (x * sin_t + y * cos_t)))
            for x, y in unit
        ]

    def bbox(self, pad: float, size: int) -> tuple[int, int, int, int]:
        """Return the padded integer bounding box, clipped to a ``size`` x ``size`` image."""
        xs, ys = zip(*self.points(), strict=True)
        return (
            max(0, math.floor(min(xs) - pad)),
            max(0, math.floor(min(ys) - pad)),
            min(size, math.ceil(max(xs) + pad)),
            min(size, math.ceil(max(ys) + pad)),
        )


def _ring(n: int, radius: float, start_deg: float) -> list[tuple[float, float]]:
    step = 2 * math.pi / n
    start = math.radians(start_deg)
    return [(radius * math.cos(start + i * step), radius * math.sin(start + i * step)) for i in range(n)]


def _star(outer: float = 1.2, inner: float = 0.5) -> list[tuple[float, float]]:
    points = zip(_ring(5, outer, -90), _ring(5, inner, -54), strict=True)
    return [p for pair in points for p in pair]


def _cross(w: float = 0.36) -> list[tuple[float, float]]:
    """Plus sign of arm half-width ``w``: one arm's corners rotated by 0, 90, 180, 270 degrees."""
    arm = [(w, -1.0), (w, -w), (1.0, -w)]
    turns = [(1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0)]  # (a, b, c, d) of x' = ax+by
    return [(a * x + b * y, c * x + d * y) for a, b, c, d in turns for x, y in arm]


# Outlines of nominal radius 1 centred on the origin (y points down).
UNIT_OUTLINES: dict[str, list[tuple[float, float]]] = {
    "circle": _ring(48, 1.0, 0),
    "square": _ring(4, 1.2, 45),
    "triangle": [(x, y + 0.15) for x, y in _ring(3, 1.25, -90)],
    "star": _star(),
    "cross": _cross(),
    "pentagon": _ring(5, 1.1, -90),
    "hexagon": _ring(6, 1.05, 0),
    "diamond": [(0.0, -1.2), (0.75, 0.0), (0.0, 1.2), (-0.75, 0.0)],
}


EXTENT = 1.25  # no outline reaches further than EXTENT * r from the centre


def render(size: int, background: str, objs: Sequence[Obj]) -> Image.Image:
    """Draw ``objs`` on a flat background, anti-aliased by supersampling."""
    canvas = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), BACKGROUNDS[background])
    draw = ImageDraw.Draw(canvas)
    for obj in objs:
        draw.polygon(obj.points(SUPERSAMPLE), fill=COLOURS[obj.colour])
    return canvas.reduce(SUPERSAMPLE)


def crop(img: Image.Image, obj: Obj, pad: float = 3.0) -> Image.Image:
    """Crop the padded bounding box of ``obj``."""
    return img.crop(obj.bbox(pad, img.width))


def random_angle(rng: np.random.Generator, kind: str, spread: float = 15.0) -> float:
    """Return a small random rotation (0 for circles)."""
    return 0.0 if kind == "circle" else float(rng.uniform(-spread, spread))


def place(rng: np.random.Generator, radii: Sequence[float], size: int, gap: float = 2.0) -> list[tuple[float, float]]:
    """Non-overlapping centres for shapes with the given radii (rejection sampling)."""
    while True:
        centres: list[tuple[float, float]] = []
        for r in radii:
            reach = EXTENT * r + 1
            for _ in range(200):
                c = (float(rng.uniform(reach, size - reach)), float(rng.uniform(reach, size - reach)))
                if all(math.dist(c, o) > EXTENT * (r + ro) + gap for o, ro in zip(centres, radii, strict=False)):
                    centres.append(c)
                    break
            else:
                break
        if len(centres) == len(radii):
            return centres


def scatter(
    rng: np.random.Generator, labels: Sequence[tuple[str, str]], size: int, r_range: tuple[float, float]
) -> list[Obj]:
    """Place (kind, colour) shapes at random non-overlapping positions."""
    radii = [float(rng.uniform(*r_range)) for _ in labels]
    centres = place(rng, radii, size)
    return [Obj(k, c, x, y, r, random_angle(rng, k)) for (k, c), (x, y), r in zip(labels, centres, radii, strict=True)]


def distinct_labels(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """``n`` (kind, colour) pairs, all different as pairs."""
    pairs = [(k, c) for k in SHAPES for c in COLOURS]
    return sample(rng, pairs, n)


# --------------------------------------------------------------------------- photo helpers


def load_photo(package: str, name: str) -> Image.Image:
    """Load a bundled photo as an RGB PIL image (no network access)."""
    arr = getattr(skimage.data, name)() if package == "skimage" else load_sample_image(name)
    return Image.fromarray(np.asarray(arr, dtype=np.uint8)).convert("RGB")


def crop_box(rng: np.random.Generator, w: int, h: int, frac: tuple[float, float]) -> tuple[int, int, int, int]:
    """Return a random square box whose side is ``frac`` of the shorter image side."""
    side = int(min(w, h) * rng.uniform(*frac))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    return x0, y0, x0 + side, y0 + side


def jitter_colour(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    """Random brightness / contrast change."""
    arr = np.asarray(img, dtype=np.float32)
    contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    out = (arr - 128.0) * contrast + 128.0 + brightness
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def thumb(img: Image.Image, box: tuple[int, int, int, int], px: int) -> Image.Image:
    """Crop ``box`` and resize it to ``px`` x ``px``."""
    return img.crop(box).resize((px, px), Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------- CLS


DIGITS = Spec(
    "Digits",
    "CLS",
    "IND",
    "image",
    "text",
    f"{IMG}Represent the given image for classification",
    "",
    "sklearn load_digits (UCI optdigits, 8x8) upscaled to 32 px; modelled on ImageNet-1K.",
)
SHAPES_CLS = Spec(
    "Shapes",
    "CLS",
    "IND",
    "image",
    "text",
    f"{IMG}Identify the shape shown in the image.",
    "",
    "One generated shape per 48 px image, 8 classes; modelled on VOC2007.",
)
PHOTOS_CLS = Spec(
    "Photos",
    "CLS",
    "OOD",
    "image",
    "text",
    f"{IMG}Identify the object shown in the image.",
    "",
    "Random crops/flips of 10 bundled photos, 48 px; modelled on ObjectNet.",
)


def build_digits() -> Built:
    """CLS, IND: 30 eval digits (3 per class), 800 train digits (80 per class), disjoint."""
    rng = np.random.default_rng(101)
    ev, tr = sinks(DIGITS.key)
    digits = load_digits()
    built = Built(DIGITS, [])
    for cls, word in enumerate(DIGIT_WORDS):
        idx = rng.permutation(np.flatnonzero(digits.target == cls))
        for j, i in enumerate(idx[:3]):
            path = ev.save(f"{cls}_{j}", digit_image(digits.images[i]))
            cands = label_candidates(rng, word, DIGIT_WORDS)
            built.eval_rows.append(eval_row(DIGITS.query(), path, cands))
        for j, i in enumerate(idx[3:83]):
            path = tr.save(f"{cls}_{j:02d}", digit_image(digits.images[i]))
            built.train_rows.append(TrainRow(DIGITS.query() + "\n", path, word, ""))
    return built


def digit_image(pixels: np.ndarray) -> Image.Image:
    """Turn an 8x8 digit (values 0-16) into a 32 px greyscale image."""
    arr = np.rint(pixels * (255 / 16)).astype(np.uint8)
    return Image.fromarray(arr).resize((32, 32), Image.Resampling.BICUBIC)


def shape_image(rng: np.random.Generator, kind: str, px: int = 48) -> Image.Image:
    """Draw one shape of random colour, size, offset and rotation."""
    r = float(rng.uniform(0.24, 0.34)) * px
    cx, cy = (px / 2 + float(rng.uniform(-4, 4)) for _ in range(2))
    obj = Obj(kind, pick(rng, list(COLOURS)), cx, cy, r, random_angle(rng, kind))
    return render(px, pick(rng, list(BACKGROUNDS)), [obj])


def build_shapes() -> Built:
    """CLS, IND: 32 eval images (4 per class), 200 train images (25 per class)."""
    built = Built(SHAPES_CLS, [])
    ev, tr = sinks(SHAPES_CLS.key)
    rng = np.random.default_rng(102)
    for kind in SHAPES:
        for j in range(4):
            path = ev.save(f"{kind}_{j}", shape_image(rng, kind))
            cands = label_candidates(rng, kind, SHAPES)
            built.eval_rows.append(eval_row(SHAPES_CLS.query(), path, cands))
    rng = np.random.default_rng(202)
    for kind in SHAPES:
        for j in range(25):
            path = tr.save(f"{kind}_{j:02d}", shape_image(rng, kind))
            built.train_rows.append(TrainRow(SHAPES_CLS.query() + "\n", path, kind, ""))
    return built


def build_photos() -> Built:
    """CLS, OOD: 3 random crops (some flipped) of each of the 10 photos."""
    rng = np.random.default_rng(103)
    ev, _ = sinks(PHOTOS_CLS.key)
    labels = [p[0] for p in PHOTOS]
    built = Built(PHOTOS_CLS, [])
    for label, package, name in PHOTOS:
        photo = load_photo(package, name)
        for j in range(3):
            img = thumb(photo, crop_box(rng, *photo.size, frac=(0.6, 0.95)), 48)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            path = ev.save(f"{name.split('.')[0]}_{j}", img)
            built.eval_rows.append(eval_row(PHOTOS_CLS.query(), path, label_candidates(rng, label, labels)))
    return built


# --------------------------------------------------------------------------- VQA


COLOR_VQA = Spec(
    "ShapeColorVQA",
    "VQA",
    "IND",
    "image+text",
    "text",
    VQA_QUERY,
    "",
    "64 px scenes with 2-4 shapes; 'What color is the <shape>?'; candidates = 10 colour "
    "names. Train rows carry a hard negative (another colour in the scene).",
)
COUNT_VQA = Spec(
    "CountVQA",
    "VQA",
    "OOD",
    "image+text",
    "text",
    VQA_QUERY,
    "",
    "80 px scenes; 'How many <shape>s are in the image?'; candidates = '0'..'9'.",
)
COUNT_ANSWERS: tuple[str, ...] = tuple(str(i) for i in range(10))


def colour_scene(rng: np.random.Generator) -> tuple[Image.Image, list[Obj]]:
    """Draw 2-4 shapes with distinct kinds and distinct colours."""
    n = int(rng.integers(2, 5))
    labels = list(zip(sample(rng, SHAPES, n), sample(rng, list(COLOURS), n), strict=True))
    objs = scatter(rng, labels, 64, (7.0, 11.0))
    return render(64, pick(rng, list(BACKGROUNDS)), objs), objs


def build_colour_vqa() -> Built:
    """VQA, IND: 15 eval scenes x 2 questions; 100 train scenes x 2 questions."""
    built = Built(COLOR_VQA, [])
    ev, tr = sinks(COLOR_VQA.key)
    rng = np.random.default_rng(104)
    for s in range(15):
        img, objs = colour_scene(rng)
        path = ev.save(f"scene_{s:02d}", img)
        for obj in sample(rng, objs, 2):
            query = COLOR_VQA.query(f"What color is the {obj.kind}?")
            built.eval_rows.append(eval_row(query, path, label_candidates(rng, obj.colour, list(COLOURS))))
    rng = np.random.default_rng(204)
    for s in range(100):
        img, objs = colour_scene(rng)
        path = tr.save(f"scene_{s:03d}", img)
        for obj in sample(rng, objs, 2):
            neg = pick(rng, [o.colour for o in objs if o is not obj])
            query = COLOR_VQA.query(f"What color is the {obj.kind}?") + "\n"
            built.train_rows.append(TrainRow(query, path, obj.colour, "", neg, ""))
    return built


def build_count_vqa() -> Built:
    """VQA, OOD: 30 scenes with 0-6 copies of one shape plus 1-3 other shapes."""
    rng = np.random.default_rng(105)
    ev, _ = sinks(COUNT_VQA.key)
    built = Built(COUNT_VQA, [])
    for s in range(30):
        kind = pick(rng, SHAPES)
        count = 0 if rng.random() < 0.1 else int(rng.integers(1, 7))
        others = [k for k in SHAPES if k != kind]
        labels = [(kind, pick(rng, list(COLOURS))) for _ in range(count)]
        labels += [(pick(rng, others), pick(rng, list(COLOURS))) for _ in range(int(rng.integers(1, 4)))]
        objs = scatter(rng, shuffled(rng, labels), 80, (5.0, 8.0))
        path = ev.save(f"scene_{s:02d}", render(80, pick(rng, list(BACKGROUNDS)), objs))
        query = COUNT_VQA.query(f"How many {PLURALS[kind]} are in the image?")
        built.eval_rows.append(eval_row(query, path, label_candidates(rng, str(count), COUNT_ANSWERS)))
    return built


# --------------------------------------------------------------------------- RET


SCENES_T2I = Spec(
    "Scenes_t2i",
    "RET",
    "IND",
    "text",
    "image",
    "Find me an image that matches the given caption:",
    IMAGE_TARGET,
    "Caption -> 64 px scene; 40-scene shared pool incl. near-duplicate twins "
    "(swapped order, one attribute changed); modelled on MSCOCO_t2i.",
)
SCENES_I2T = Spec(
    "Scenes_i2t",
    "RET",
    "IND",
    "image",
    "text",
    f"{IMG}Find an image caption describing the given image.",
    "",
    "64 px scene -> caption; 40-caption shared pool incl. near-duplicate twins; modelled on MSCOCO_i2t.",
)
PHOTOS_I2I = Spec(
    "Photos_i2i",
    "RET",
    "OOD",
    "image",
    "image",
    f"{IMG}Find a day-to-day image that looks similar to the provided image.",
    IMAGE_TARGET,
    "Re-cropped, colour-jittered view of a photo region -> the original region; pool of 40 "
    "crops (4 regions x 10 photos); modelled on NIGHTS.",
)
RET_CANDIDATES = 12


@dataclass(frozen=True)
class Scene:
    """A captioned scene: 1-2 shapes; with two, the first is left of / above the second."""

    background: str
    labels: tuple[tuple[str, str], ...]  # (kind, colour)
    layout: str  # "h" (left/right) or "v" (above/below)

    def caption(self) -> str:
        """Return the unique caption of the scene."""
        names = [f"{c} {k}" for k, c in self.labels]
        bg = f"on {with_article(self.background)} background."
        if len(names) == 1:
            return f"A single {names[0]} {bg}"
        rel = "to the left of" if self.layout == "h" else "above"
        return f"{with_article(names[0]).capitalize()} {rel} {with_article(names[1])} {bg}"


def random_scene(rng: np.random.Generator) -> Scene:
    """Return a scene with 1 (30 %) or 2 shapes of distinct kinds and colours."""
    n = 1 if rng.random() < 0.3 else 2
    labels = tuple(zip(sample(rng, SHAPES, n), sample(rng, list(COLOURS), n), strict=True))
    return Scene(pick(rng, list(BACKGROUNDS)), labels, pick(rng, ("h", "v")))


def twin_scene(rng: np.random.Generator, scene: Scene) -> Scene:
    """Return a near-duplicate: swapped order, or one colour / shape / background changed."""
    moves = ["colour", "kind", "background"] + (["swap"] if len(scene.labels) == 2 else [])
    move = pick(rng, moves)
    labels = list(scene.labels)
    i = int(rng.integers(len(labels)))
    if move == "swap":
        return replace(scene, labels=(labels[1], labels[0]))
    if move == "background":
        return replace(scene, background=pick(rng, [b for b in BACKGROUNDS if b != scene.background]))
    kind, colour = labels[i]
    if move == "colour":
        labels[i] = (kind, pick(rng, [c for c in COLOURS if c not in {lab[1] for lab in labels}]))
    else:
        labels[i] = (pick(rng, [k for k in SHAPES if k not in {lab[0] for lab in labels}]), colour)
    return replace(scene, labels=tuple(labels))


def draw_scene(rng: np.random.Generator, scene: Scene, px: int = 64) -> Image.Image:
    """Draw a scene; with two shapes the first sits in the left (top) half."""
    radii = [float(rng.uniform(8, 12)) for _ in scene.labels]
    if len(radii) == 1:
        centres = place(rng, radii, px)
    else:
        lo, hi = (EXTENT * max(radii) + 1, px - EXTENT * max(radii) - 1)
        main = [float(rng.uniform(lo, px / 2 - 6)), float(rng.uniform(px / 2 + 6, hi))]
        cross = [float(rng.uniform(lo, hi)) for _ in range(2)]
        pairs = zip(main, cross, strict=True)
        centres = [(m, c) if scene.layout == "h" else (c, m) for m, c in pairs]
    objs = [
        Obj(k, c, x, y, r, random_angle(rng, k)) for (k, c), (x, y), r in zip(scene.labels, centres, radii, strict=True)
    ]
    return render(px, scene.background, objs)


def scene_pool(rng: np.random.Generator, n: int, banned: set[str]) -> list[tuple[Scene, int]]:
    """``n`` scenes with unique captions (not in ``banned``), as (scene, group id) pairs.

    About half of the base scenes get a near-duplicate twin in the same group.
    """
    pool: list[tuple[Scene, int]] = []
    seen = set(banned)
    group = 0
    while len(pool) < n:
        base = random_scene(rng)
        family = [base] + ([twin_scene(rng, base)] if rng.random() < 0.5 else [])
        for scene in family:
            if len(pool) < n and scene.caption() not in seen:
                seen.add(scene.caption())
                pool.append((scene, group))
        group += 1
    return pool


def pool_candidates(rng: np.random.Generator, pos: int, groups: Sequence[int], k: int = RET_CANDIDATES) -> list[int]:
    """Return pool indices: ``pos`` first, then its group mates and a random fill, shuffled."""
    mates = [i for i, g in enumerate(groups) if g == groups[pos] and i != pos]
    rest = [i for i in range(len(groups)) if i != pos and i not in mates]
    return [pos, *shuffled(rng, mates + sample(rng, rest, k - 1 - len(mates)))]


def build_scene_retrieval() -> tuple[Built, Built]:
    """Scenes_t2i and Scenes_i2t: separate pools, separate images, shared generator."""
    t2i, i2t = Built(SCENES_T2I, []), Built(SCENES_I2T, [])
    banned: set[str] = set()
    for built, seed in ((t2i, 106), (i2t, 107)):
        rng = np.random.default_rng(seed)
        pool = scene_pool(rng, 40, banned)
        banned |= {s.caption() for s, _ in pool}
        ev, _ = sinks(built.spec.key)
        paths = [ev.save(f"scene_{i:02d}", draw_scene(rng, s)) for i, (s, _) in enumerate(pool)]
        captions = [s.caption() for s, _ in pool]
        groups = [g for _, g in pool]
        for q in sorted(int(i) for i in rng.choice(len(pool), 30, replace=False)):
            idx = pool_candidates(rng, q, groups)
            if built is t2i:
                cands = [(IMAGE_TARGET, paths[i]) for i in idx]
                built.eval_rows.append(eval_row(SCENES_T2I.query(captions[q]), "", cands))
            else:
                cands = [(captions[i], "") for i in idx]
                built.eval_rows.append(eval_row(SCENES_I2T.query(), paths[q], cands))
    for built, seed in ((t2i, 206), (i2t, 207)):
        built.train_rows = scene_train_rows(np.random.default_rng(seed), built.spec, banned)
    return t2i, i2t


def scene_train_rows(rng: np.random.Generator, spec: Spec, banned: set[str]) -> list[TrainRow]:
    """200 caption/scene pairs whose captions never occur in any eval pool."""
    _, tr = sinks(spec.key)
    rows = []
    for i, (scene, _) in enumerate(scene_pool(rng, 200, banned)):
        path = tr.save(f"scene_{i:03d}", draw_scene(rng, scene))
        if spec.query_modality == "text":
            rows.append(TrainRow(spec.query(scene.caption()) + "\n", "", IMAGE_TARGET + "\n", path))
        else:
            rows.append(TrainRow(spec.query() + "\n", path, scene.caption(), ""))
    return rows


def region_boxes(rng: np.random.Generator, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """Four square regions of a photo, one in each corner, nudged inwards by <= 8 %.

    Regions of one photo overlap little, so they are distinct hard negatives for each other.
    """
    side = int(min(w, h) * 0.5)
    nudge = int(side * 0.08)
    boxes = []
    for qx, qy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        dx, dy = (int(rng.integers(0, nudge + 1)) for _ in range(2))
        x0 = dx if qx == 0 else w - side - dx
        y0 = dy if qy == 0 else h - side - dy
        boxes.append((x0, y0, x0 + side, y0 + side))
    return boxes


def perturb_box(rng: np.random.Generator, box: tuple[int, int, int, int], w: int, h: int) -> tuple[int, int, int, int]:
    """Shift by up to 6 % and rescale by up to +-8 %, staying inside the photo."""
    side = box[2] - box[0]
    new = min(int(side * rng.uniform(0.92, 1.08)), w, h)
    cx = box[0] + side / 2 + side * rng.uniform(-0.06, 0.06)
    cy = box[1] + side / 2 + side * rng.uniform(-0.06, 0.06)
    x0 = int(np.clip(cx - new / 2, 0, w - new))
    y0 = int(np.clip(cy - new / 2, 0, h - new))
    return x0, y0, x0 + new, y0 + new


def build_photos_i2i() -> Built:
    """RET, OOD: 40 reference crops, 30 queries that are perturbed views of them."""
    rng = np.random.default_rng(108)
    ev, _ = sinks(PHOTOS_I2I.key)
    built = Built(PHOTOS_I2I, [])
    photos = [load_photo(package, name) for _, package, name in PHOTOS]
    regions = [(p, b) for p, photo in enumerate(photos) for b in region_boxes(rng, *photo.size)]
    paths = [ev.save(f"ref_{i:02d}", thumb(photos[p], box, 48)) for i, (p, box) in enumerate(regions)]
    groups = [p for p, _ in regions]
    for n, q in enumerate(sorted(int(i) for i in rng.choice(len(regions), 30, replace=False))):
        p, box = regions[q]
        view = thumb(photos[p], perturb_box(rng, box, *photos[p].size), 48)
        qpath = ev.save(f"query_{n:02d}", jitter_colour(rng, view))
        cands = [(IMAGE_TARGET, paths[i]) for i in pool_candidates(rng, q, groups)]
        built.eval_rows.append(eval_row(PHOTOS_I2I.query(), qpath, cands))
    return built


# --------------------------------------------------------------------------- VG


GROUNDING = Spec(
    "ShapeGrounding",
    "VG",
    "IND",
    "image+text",
    "image",
    f"{IMG}Select the portion of the image that isolates the object labeled as",
    CROP_TARGET,
    "96 px scenes with 4 shapes; per-row text is the quoted label ' \"<colour> <shape>\"'; "
    "candidates = crops: same-scene objects, then look-alikes from other scenes; "
    "modelled on MSCOCO (VG).",
)
REF_SHAPES = Spec(
    "RefShapes",
    "VG",
    "OOD",
    "image+text",
    "image",
    f"{IMG}Select the portion of the image that follows the language expressions.",
    CROP_TARGET,
    "96 px scenes with 3 shapes in a row; expressions like 'the shape just left of the "
    "red circle'; modelled on RefCOCO.",
)
VG_CANDIDATES = 12


@dataclass
class CropItem:
    """A saved object crop and the label of the object it shows."""

    label: str
    kind: str
    colour: str
    path: str
    scene: int


def grounding_scene(rng: np.random.Generator) -> tuple[Image.Image, list[Obj]]:
    """Draw 4 shapes with distinct labels on a 96 px scene."""
    objs = scatter(rng, distinct_labels(rng, 4), 96, (10.0, 15.0))
    return render(96, pick(rng, list(BACKGROUNDS)), objs), objs


def row_scene(rng: np.random.Generator) -> tuple[Image.Image, list[Obj]]:
    """Three shapes with left-to-right order 0, 1, 2 (well separated in x)."""
    labels = distinct_labels(rng, 3)
    objs = [
        Obj(
            k,
            c,
            16 + 32 * i + float(rng.uniform(-3, 3)),
            float(rng.uniform(18, 78)),
            float(rng.uniform(9, 12)),
            random_angle(rng, k),
        )
        for i, (k, c) in enumerate(labels)
    ]
    return render(96, pick(rng, list(BACKGROUNDS)), objs), objs


def save_crops(sink: ImageSink, img: Image.Image, objs: Sequence[Obj], scene: int) -> list[CropItem]:
    """Save the crop of every object in a scene."""
    return [
        CropItem(o.label, o.kind, o.colour, sink.save(f"crop_{scene:02d}_{j}", crop(img, o)), scene)
        for j, o in enumerate(objs)
    ]


def crop_candidates(rng: np.random.Generator, target: CropItem, pool: Sequence[CropItem]) -> list[Candidate]:
    """Target crop, then (shuffled) same-scene crops, up to 4 look-alikes, random fill.

    Crops from other scenes with the target's exact label are excluded (ambiguous).
    """
    same = [c for c in pool if c.scene == target.scene and c is not target]
    other = [c for c in pool if c.scene != target.scene and c.label != target.label]
    alike = [c for c in other if c.kind == target.kind or c.colour == target.colour]
    hard = sample(rng, alike, min(4, len(alike)))
    rest = [c for c in other if c not in hard]
    fill = sample(rng, rest, VG_CANDIDATES - 1 - len(same) - len(hard))
    return [(CROP_TARGET, c.path) for c in [target, *shuffled(rng, same + hard + fill)]]


def build_grounding() -> Built:
    """VG, IND: 10 eval scenes x 3 labels; 70 train scenes x 3 labels."""
    rng = np.random.default_rng(109)
    ev, tr = sinks(GROUNDING.key)
    built = Built(GROUNDING, [])
    scenes: list[tuple[str, list[CropItem]]] = []
    for s in range(10):
        img, objs = grounding_scene(rng)
        scenes.append((ev.save(f"scene_{s:02d}", img), save_crops(ev, img, objs, s)))
    pool = [c for _, crops in scenes for c in crops]
    for path, crops in scenes:
        for target in sample(rng, crops, 3):
            query = GROUNDING.query(f'"{target.label}"')
            built.eval_rows.append(eval_row(query, path, crop_candidates(rng, target, pool)))
    rng = np.random.default_rng(209)
    for s in range(70):
        img, objs = grounding_scene(rng)
        path = tr.save(f"scene_{s:02d}", img)
        for j, obj in enumerate(sample(rng, objs, 3)):
            cpath = tr.save(f"crop_{s:02d}_{j}", crop(img, obj))
            query = GROUNDING.query(f'"{obj.label}"') + "\n"
            built.train_rows.append(TrainRow(query, path, CROP_TARGET + "\n", cpath))
    return built


def referring_expression(rng: np.random.Generator, objs: Sequence[Obj], i: int) -> str:
    """Return an expression that singles out ``objs[i]`` in a left-to-right row of three."""
    options = [("the leftmost shape", "the shape in the middle", "the rightmost shape")[i]]
    if i > 0:
        options.append(f"the shape just right of the {objs[i - 1].label}")
    if i < len(objs) - 1:
        options.append(f"the shape just left of the {objs[i + 1].label}")
    if i == 1:
        options.append(f"the shape between the {objs[0].label} and the {objs[2].label}")
    return pick(rng, options)


def build_ref_shapes() -> Built:
    """VG, OOD: 10 scenes x 3 referring expressions (one per shape)."""
    rng = np.random.default_rng(110)
    ev, _ = sinks(REF_SHAPES.key)
    built = Built(REF_SHAPES, [])
    scenes = []
    for s in range(10):
        img, objs = row_scene(rng)
        scenes.append((ev.save(f"scene_{s:02d}", img), objs, save_crops(ev, img, objs, s)))
    pool = [c for _, _, crops in scenes for c in crops]
    for path, objs, crops in scenes:
        for i in range(3):
            query = REF_SHAPES.query(referring_expression(rng, objs, i))
            built.eval_rows.append(eval_row(query, path, crop_candidates(rng, crops[i], pool)))
    return built


# --------------------------------------------------------------------------- writing


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write a parquet file (zstd); pyarrow writes no timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def eval_table(rows: Sequence[EvalRow]) -> pa.Table:
    """Build the MMEB-eval arrow table."""
    schema = pa.schema(
        [
            ("qry_text", pa.string()),
            ("qry_img_path", pa.string()),
            ("tgt_text", pa.list_(pa.string())),
            ("tgt_img_path", pa.list_(pa.string())),
        ]
    )
    cols = {name: [getattr(r, name) for r in rows] for name in schema.names}
    return pa.table(cols, schema=schema)


def train_table(rows: Sequence[TrainRow]) -> pa.Table:
    """Build the MMEB-train arrow table (neg_* columns only if the rows have them)."""
    names = ["qry", "qry_image_path", "pos_text", "pos_image_path"]
    if rows[0].neg_text is not None:
        names += ["neg_text", "neg_image_path"]
    schema = pa.schema([(n, pa.string()) for n in names])
    return pa.table({n: [getattr(r, n) for r in rows] for n in names}, schema=schema)


def toml_value(value: str | int) -> str:
    """Format a TOML scalar; JSON string escapes are valid TOML basic-string escapes."""
    return str(value) if isinstance(value, int) else json.dumps(value, ensure_ascii=False)


TOML_HEADER = """\
# MMEB-mini: a small, generated sample benchmark in the real MMEB layout.
# GENERATED by tasks/build_mini.py -- do not edit by hand; rerun the script instead.
# Same schema as tasks/mmeb.toml (see the field documentation there), except:
#   data_dir              folder relative to tasks/ holding <Key>/test-00000-of-00001.parquet,
#                         eval_images/, train/<Key>/original-00000-of-00001.parquet, train_images/
#   query_instruction /   byte-exact prefixes of the strings in the parquet files
#   target_instruction    (qry_text = query_instruction [+ " " + per-row text])
#   instruction_evidence  "data" = byte-identical to the bundled data (no external evidence)
#   train_config          key of the bundled train set (tasks/mini/train/<Key>), "" for OOD
"""


def render_toml(built: Sequence[Built]) -> str:
    """Render mmeb_mini.toml (same schema as mmeb.toml)."""
    bench: dict[str, str | int] = {
        "name": "MMEB-mini",
        "data_dir": DATA_DIR_NAME,
        "hub_id": "",
        "hub_revision": "",
        "images_file": "",
        "train_hub_id": "",
    }
    lines = [TOML_HEADER, "[benchmark]"] + [f"{k} = {toml_value(v)}" for k, v in bench.items()]
    for b in built:
        n_cands = {len(r.tgt_text) for r in b.eval_rows}
        assert len(n_cands) == 1, b.spec.key
        s = b.spec
        entry: dict[str, str | int] = {
            "key": s.key,
            "meta_task": s.meta_task,
            "split": s.split,
            "query_modality": s.query_modality,
            "target_modality": s.target_modality,
            "query_instruction": s.query_instruction,
            "target_instruction": s.target_instruction,
            "num_queries": len(b.eval_rows),
            "num_candidates": n_cands.pop(),
            "train_config": s.train_config,
            "instruction_evidence": "data",
            "notes": s.notes,
        }
        lines += ["", "[[dataset]]"] + [f"{k} = {toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def write_all(built: Sequence[Built]) -> None:
    """Write every eval / train parquet file and mmeb_mini.toml."""
    for b in built:
        write_parquet(OUT_DIR / b.spec.key / "test-00000-of-00001.parquet", eval_table(b.eval_rows))
        if b.train_rows:
            path = OUT_DIR / "train" / b.spec.key / "original-00000-of-00001.parquet"
            write_parquet(path, train_table(b.train_rows))
    TOML_PATH.write_text(render_toml(built), encoding="utf-8")


def summary(b: Built) -> str:
    """One report line: counts of queries, candidates, unique candidates, train rows."""
    rows = b.eval_rows
    unique = {(t, p) for r in rows for t, p in zip(r.tgt_text, r.tgt_img_path, strict=True)}
    return (
        f"{b.spec.key:15s} {b.spec.meta_task:4s} {b.spec.split:4s} queries={len(rows):3d} "
        f"cands={len(rows[0].tgt_text):3d} unique_cands={len(unique):3d} "
        f"train_rows={len(b.train_rows)}"
    )


BUILDERS: tuple[Callable[[], Built | tuple[Built, ...]], ...] = (
    build_digits,
    build_shapes,
    build_photos,
    build_colour_vqa,
    build_count_vqa,
    build_scene_retrieval,
    build_photos_i2i,
    build_grounding,
    build_ref_shapes,
)


def main() -> None:
    """Rebuild tasks/mini/ and tasks/mmeb_mini.toml from scratch."""
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    built: list[Built] = []
    for builder in BUILDERS:
        result = builder()
        built.extend(result if isinstance(result, tuple) else (result,))
    write_all(built)
    for b in built:
        print(summary(b))


if __name__ == "__main__":
    main()
