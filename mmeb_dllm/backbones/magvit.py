"""MAGVIT-v2 image tokenizer (Show-o / MMaDA ``showlab/magvitv2``): VQGAN encoder + look-up-free quantiser, plain torch.

Only the encoding half is rebuilt: ``pixels (B, 3, R, R) in [-1, 1]`` → :meth:`MagvitTokenizer.latents`
``(B, C, R/f, R/f)`` (``f = 2 ** (len(ch_mult) - 1)``) → :meth:`MagvitTokenizer.codes_from_latents` ``(B, (R/f)²)``
codes in ``[0, 2**C)``. Parameter names equal upstream's ``encoder.*`` keys, so the upstream weights load by name;
``decoder.*`` keys (image generation) are ignored and the quantiser's constant buffers (``quantize.embedding``,
``quantize.power_vals``) are only checked against the bit order used here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmeb_dllm.backbones.llada import KeyMap, check_unexpected, empty_modules, load_strict, read_json
from mmeb_dllm.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
# the diffusers file name upstream's ModelMixin looks for first, then other names a converted copy may use
WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
)
GROUPS = 32
NORM_EPS = 1e-6
ENCODER_PREFIX = "encoder."
QUANTIZER_PREFIX = "quantize."
IGNORED_PREFIXES = ("decoder.",)


@dataclass(frozen=True)
class MagvitConfig:
    """Encoder and quantiser hyper-parameters. Defaults are the ones upstream ``MAGVITv2()`` hard-codes (its
    ``config.json`` carries none); a config's ``encoder`` / ``quantize`` blocks override them."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4)
    num_res_blocks: tuple[int, ...] = (4, 3, 4, 3, 4)
    attn_resolutions: tuple[int, ...] = (5,)
    in_ch: int = 3
    resolution: int = 256  # only decides where attention blocks go (upstream's curr_res bookkeeping)
    z_channels: int = 13
    codebook_dim: int = 13

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], *, source: str = CONFIG_FILE) -> MagvitConfig:
        """Read upstream's ``config.json`` (plus optional ``encoder`` / ``quantize`` blocks); validate it."""
        encoder = dict(cfg.get("encoder") or {})
        quantize = dict(cfg.get("quantize") or {})
        if encoder.get("double_z"):
            raise ConfigError(f"{source}: encoder.double_z = true is not supported (upstream MAGVIT-v2 uses false)")
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {key: value for key, value in encoder.items() if key in known}
        if "codebook_dim" in quantize:
            values["codebook_dim"] = quantize["codebook_dim"]
        ch_mult = tuple(int(m) for m in values.get("ch_mult", cls.ch_mult))
        blocks = values.get("num_res_blocks", cls.num_res_blocks)
        values["ch_mult"] = ch_mult
        values["num_res_blocks"] = (int(blocks),) * len(ch_mult) if isinstance(blocks, int) else tuple(blocks)
        values["attn_resolutions"] = tuple(int(r) for r in values.get("attn_resolutions", cls.attn_resolutions))
        config = cls(**values)
        config.validate(source)
        return config

    def validate(self, source: str = CONFIG_FILE) -> None:
        """Raise :class:`ConfigError` for settings the upstream module could not build either."""
        if len(self.num_res_blocks) != len(self.ch_mult):
            raise ConfigError(
                f"{source}: num_res_blocks {list(self.num_res_blocks)} needs one entry per ch_mult level "
                f"({len(self.ch_mult)})"
            )
        widths = {self.ch, *(self.ch * m for m in self.ch_mult)}
        if any(width % GROUPS for width in widths):
            raise ConfigError(
                f"{source}: every channel width {sorted(widths)} must be divisible by {GROUPS} (GroupNorm)"
            )
        if self.codebook_dim != self.z_channels:
            raise ConfigError(
                f"{source}: quantize.codebook_dim {self.codebook_dim} must equal encoder.z_channels {self.z_channels} "
                f"(the look-up-free quantiser reads one bit per latent channel)"
            )

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent position along one side."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def codebook_size(self) -> int:
        return 2**self.codebook_dim


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=NORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv, twice, plus a (1×1 projected when widths differ) shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.nin_shortcut(x) if self.nin_shortcut is not None else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, 1×1-conv projections, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        batch, channels, height, width = h.shape
        q = self.q(h).reshape(batch, channels, height * width).transpose(1, 2)  # (B, HW, C)
        k = self.k(h).reshape(batch, channels, height * width)  # (B, C, HW)
        v = self.v(h).reshape(batch, channels, height * width)
        weights = torch.softmax(torch.bmm(q, k) * channels**-0.5, dim=2)  # (B, HW query, HW key)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(batch, channels, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero pad right and bottom by one, then a stride-2 3×3 conv: halves each side."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class DownLevel(nn.Module):
    """One resolution level: ResNet blocks (each optionally followed by attention), then maybe a downsample."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock], downsample: Downsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.block):
            x = block(x)
            if len(self.attn) > 0:
                x = self.attn[index](x)
        return self.downsample(x) if self.downsample is not None else x


class MidBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class VQGANEncoder(nn.Module):
    """``conv_in`` → down levels → mid (ResNet, attention, ResNet) → GroupNorm, SiLU, ``conv_out`` → ``quant_conv``."""

    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(config.in_ch, config.ch, 3, padding=1)
        in_mult = (1, *config.ch_mult)
        current_resolution = config.resolution
        levels = []
        block_in = config.ch
        for level, mult in enumerate(config.ch_mult):
            block_in = config.ch * in_mult[level]
            block_out = config.ch * mult
            blocks, attns = [], []
            for _ in range(config.num_res_blocks[level]):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if current_resolution in config.attn_resolutions:
                    attns.append(AttnBlock(block_in))
            downsample = None
            if level != len(config.ch_mult) - 1:
                downsample = Downsample(block_in)
                current_resolution //= 2
            levels.append(DownLevel(blocks, attns, downsample))
        self.down = nn.ModuleList(levels)
        self.mid = MidBlock(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(pixels)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(h))))


def lfq_power_values(codebook_dim: int) -> torch.Tensor:
    """``2 ** (C-1) … 1``: channel 0 is the most significant bit."""
    return 2 ** torch.arange(codebook_dim - 1, -1, -1, dtype=torch.long)


def lfq_codebook(codebook_dim: int) -> torch.Tensor:
    """``(2**C, C)`` ±1 table: row ``i`` holds the bits of ``i``, MSB first (upstream's ``quantize.embedding``)."""
    bits = (torch.arange(2**codebook_dim).unsqueeze(1) >> torch.arange(codebook_dim - 1, -1, -1)) & 1
    return bits.float() * 2 - 1


class MagvitTokenizer(nn.Module):
    """MAGVIT-v2 encoding: pixels → latents → look-up-free codes. Always computes in float32 (like upstream, which
    keeps the VQ model in float32 next to a bf16 LM): codes are sign bits, and bf16 would flip those near zero."""

    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VQGANEncoder(config)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> MagvitTokenizer:
        def keep_float32(tensor: torch.Tensor) -> torch.Tensor:
            out = fn(tensor)
            return out.float() if out.is_floating_point() else out

        return super()._apply(keep_float32, recurse)

    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, C, R/f, R/f)`` encoder output incl. ``quant_conv`` for ``(B, 3, R, R)`` pixels in [-1, 1]."""
        weight = self.encoder.conv_in.weight
        return self.encoder(pixels.to(device=weight.device, dtype=weight.dtype))

    def codes_from_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, H·W)`` int64 codes, row-major over the latent grid: Σ_k [z_k > 0] · 2^(C-1-k)."""
        if latents.shape[1] != self.config.codebook_dim:
            raise ValueError(f"latents have {latents.shape[1]} channels, the quantiser {self.config.codebook_dim}")
        powers = lfq_power_values(self.config.codebook_dim).to(latents.device).view(1, -1, 1, 1)
        return ((latents > 0).long() * powers).sum(dim=1).flatten(1)

    def codes(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, (R/f)²)`` codes of ``(B, 3, R, R)`` pixels (upstream ``MAGVITv2.get_code``)."""
        return self.codes_from_latents(self.latents(pixels))

    # --- loading -----------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, vq_dir: str | Path, *, device: str | torch.device = "cpu") -> MagvitTokenizer:
        """Load ``config.json`` + weights of an upstream MAGVIT-v2 folder (``encoder.*`` used, ``decoder.*`` ignored).

        Raises :class:`CheckpointError` naming the folder/file/keys when files or tensors are missing or of another
        architecture, and when the stored quantiser buffers use another bit order.
        """
        directory = Path(vq_dir)
        config = MagvitConfig.from_dict(
            read_json(directory / CONFIG_FILE, what="MAGVIT-v2 config"), source=str(directory / CONFIG_FILE)
        )
        weights = TensorFile.open(directory)
        with empty_modules(torch.float32, device):
            model = cls(config)
        what = f"MAGVIT-v2 weights {weights.path}"
        key_map = KeyMap({key: key for key in model.state_dict()})
        load_strict(model, key_map, weights, what=what)  # type: ignore[arg-type]  # duck-typed checkpoint
        check_quantizer_buffers(weights, config.codebook_dim, what=what)
        ours = {key for key in weights.names() if not key.startswith((*IGNORED_PREFIXES, QUANTIZER_PREFIX))}
        check_unexpected(weights, ours, key_map.checkpoint_keys(), what=what)  # type: ignore[arg-type]
        return model.eval()


def check_quantizer_buffers(weights: TensorFile, codebook_dim: int, *, what: str) -> None:
    """The stored constant buffers, when present, must be the MSB-first ones this module computes with."""
    expected = {
        f"{QUANTIZER_PREFIX}power_vals": lfq_power_values(codebook_dim),
        f"{QUANTIZER_PREFIX}embedding": lfq_codebook(codebook_dim),
    }
    for key, wanted in expected.items():
        if key not in weights.names():
            continue
        stored = weights.get(key)
        if tuple(stored.shape) != tuple(wanted.shape) or not torch.equal(stored.to(wanted.dtype), wanted):
            raise CheckpointError(
                f"{what}: {key!r} (shape {tuple(stored.shape)}) is not the MSB-first look-up-free codebook of "
                f"codebook_dim {codebook_dim}; the config's quantize.codebook_dim or the weights are of another model"
            )
    unknown = sorted(k for k in weights.names() if k.startswith(QUANTIZER_PREFIX) and k not in expected)
    if unknown:
        raise CheckpointError(f"{what}: unexpected quantiser tensors {unknown}: not a look-up-free quantiser")


class TensorFile:
    """The tensors of one weights file (safetensors read lazily, ``.bin`` read with ``weights_only``), with the
    read-side interface of :class:`~mmeb_dllm.backbones.llada.SafetensorsCheckpoint` that the strict loader uses."""

    def __init__(self, path: Path, names: Sequence[str], reader: Callable[[str], torch.Tensor]) -> None:
        self.path = path
        self.directory = path.parent
        self._names = sorted(names)
        self._reader = reader

    @classmethod
    def open(cls, directory: Path) -> TensorFile:
        """The first of :data:`WEIGHT_FILES` found in ``directory``."""
        for name in WEIGHT_FILES:
            path = directory / name
            if path.is_file():
                return cls._from_safetensors(path) if name.endswith(".safetensors") else cls._from_bin(path)
        raise CheckpointError(
            f"no MAGVIT-v2 weights in {directory}: expected one of {', '.join(WEIGHT_FILES)} "
            f"(the showlab/magvitv2 checkpoint files)"
        )

    @classmethod
    def _from_safetensors(cls, path: Path) -> TensorFile:
        from safetensors import safe_open

        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"weights file {path} cannot be read ({exc}); re-download it") from None
        return cls(path, list(handle.keys()), handle.get_tensor)

    @classmethod
    def _from_bin(cls, path: Path) -> TensorFile:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # pickle, zip and weights_only errors all mean the same thing here
            raise CheckpointError(f"weights file {path} cannot be read as a tensor state dict ({exc})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
        tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
        return cls(path, list(tensors), tensors.__getitem__)

    def names(self) -> list[str]:
        return list(self._names)

    def get(self, key: str) -> torch.Tensor:
        return self._reader(key)

    def file_of(self, key: str) -> Path:
        return self.path

    @property
    def files(self) -> list[Path]:
        return [self.path]
