"""Which layers are pruned, and to what keep ratio.

A prunable layer is any ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.Linear`` submodule, named as in
``named_modules()`` (for a CaffeNet: the Caffe layer names). Targets are per-layer keep ratios (the
fraction of weights, or of groups in channel mode, that survive the hard prune), given as a YAML/JSON
file, a preset shipped in ``zoo/presets/<model>.json``, ``--keep layer=ratio`` pairs, or the seed's
global ``--pcen`` (percent of weights to *prune* in every prunable layer).

Preset file format: ``{"<preset>": {"description": "...", "keep": {"<layer>": ratio, ...}}, ...}``.
A targets file is either ``{"keep": {...}}`` or the bare ``{layer: ratio}`` mapping.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from torch import nn

from compress.errors import CompressError

PRUNABLE_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
SPARSITY_MODES = ("elem", "channel")
GROUP_MODES = ("in", "out")


@dataclass(frozen=True)
class PrunableLayer:
    """A prunable submodule and how its weight splits into channel groups."""

    name: str
    module: nn.Module

    @property
    def weight(self):
        return self.module.weight

    def group_args(self, group: str) -> tuple[int, int]:
        """``(dim, conv_groups)`` for the ops' group functions: ``group`` is "in" or "out"."""
        g = getattr(self.module, "groups", 1) or 1
        transposed = isinstance(self.module, nn.ConvTranspose2d)  # weight (I, O/g, ...)
        if group == "in":
            return (0, 1) if transposed else (1, g)
        return (1, g) if transposed else (0, 1)


def prunable_layers(model: nn.Module) -> dict[str, PrunableLayer]:
    """Every Conv2d/ConvTranspose2d/Linear submodule with a weight, in module order."""
    return {name: PrunableLayer(name, m) for name, m in model.named_modules()
            if isinstance(m, PRUNABLE_TYPES) and getattr(m, "weight", None) is not None}


@dataclass(frozen=True)
class Targets:
    """Per-layer keep ratios, validated at construction (ratios in [0, 1], known modes)."""

    keep: Mapping[str, float]
    sparsity: str = "elem"
    group: str = "in"
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.sparsity not in SPARSITY_MODES:
            raise CompressError(f"sparsity must be one of {', '.join(SPARSITY_MODES)}, got {self.sparsity!r}")
        if self.group not in GROUP_MODES:
            raise CompressError(f"group must be one of {', '.join(GROUP_MODES)}, got {self.group!r}")
        clean: dict[str, float] = {}
        for name, ratio in self.keep.items():
            if not isinstance(name, str) or not name:
                raise CompressError(f"layer names must be non-empty strings, got {name!r}")
            try:
                r = float(ratio)
            except (TypeError, ValueError):
                raise CompressError(f"keep ratio of layer {name!r} must be a number, got {ratio!r}") from None
            if not (math.isfinite(r) and 0.0 <= r <= 1.0):
                raise CompressError(f"keep ratio of layer {name!r} must be in [0, 1], got {ratio!r}"
                                    + (f" (from {self.source})" if self.source else ""))
            clean[name] = r
        object.__setattr__(self, "keep", MappingProxyType(clean))

    def check_layers(self, layers: Iterable[str]) -> None:
        """Every targeted layer must exist and be prunable."""
        layers = list(layers)
        unknown = [n for n in self.keep if n not in layers]
        if unknown:
            raise CompressError(f"unknown layer(s) {', '.join(unknown)} in targets"
                                + (f" ({self.source})" if self.source else "")
                                + f"; prunable layers: {', '.join(layers)}")

    def as_dict(self) -> dict[str, float]:
        return dict(self.keep)


def presets_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "zoo" / "presets"


def load_presets(model_name: str | None = None) -> dict[str, dict]:
    """Presets by name, from ``zoo/presets/<model>.json`` (all models when ``model_name`` is None)."""
    d = presets_dir()
    files = [d / f"{model_name}.json"] if model_name else sorted(d.glob("*.json"))
    found: dict[str, dict] = {}
    for f in files:
        if f.is_file():
            for name, entry in json.loads(f.read_text(encoding="utf-8")).items():
                found.setdefault(name, {**entry, "model": f.stem})
    return found


def _read_mapping(spec: str, model_name: str | None) -> tuple[dict, str]:
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise CompressError(f"targets file not found: {spec}")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as e:  # json.JSONDecodeError (a ValueError) or yaml.YAMLError
            raise CompressError(f"cannot parse targets file {spec}: {' '.join(str(e).split())}") from None
        if isinstance(data, dict) and isinstance(data.get("keep"), dict):
            data = data["keep"]
        if not isinstance(data, dict):
            raise CompressError(f"targets file {spec} must map layer names to keep ratios")
        return data, spec
    presets = load_presets(model_name) or load_presets()
    if spec not in presets:
        presets = load_presets()
    if spec not in presets:
        raise CompressError(f"no targets file or preset named {spec!r}; "
                            f"presets: {', '.join(sorted(presets))}")
    return dict(presets[spec]["keep"]), f"preset {spec}"


def parse_keep(pairs: Iterable[str]) -> dict[str, float]:
    """``["conv1=0.2", "ip1=0.009"]`` -> ``{"conv1": 0.2, "ip1": 0.009}``."""
    out: dict[str, float] = {}
    for p in pairs:
        name, sep, value = p.partition("=")
        if not sep or not name.strip():
            raise CompressError(f"--keep expects LAYER=RATIO, got {p!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise CompressError(f"--keep {p!r}: ratio {value!r} is not a number") from None
    return out


def resolve_targets(layers: Iterable[str], *, targets: str | None = None, keep: Iterable[str] = (),
                    pcen: float | None = None, sparsity: str = "elem", group: str = "in",
                    model_name: str | None = None) -> Targets | None:
    """Build and check the targets from the command-line forms; None when none was given.

    ``--targets`` gives the base mapping, ``--keep`` adds or overrides layers; ``--pcen`` (percent
    pruned) applies to every prunable layer and cannot be combined with the other two.
    """
    layers = list(layers)
    keep = list(keep)
    if pcen is not None and (targets or keep):
        raise CompressError("give either --pcen or --targets/--keep, not both")
    if pcen is not None:
        if not (math.isfinite(pcen) and 0 <= pcen <= 100):
            raise CompressError(f"--pcen is a percentage of weights to prune in [0, 100], got {pcen}")
        return Targets({n: 1 - pcen / 100 for n in layers}, sparsity, group, source=f"--pcen {pcen:g}")
    if not targets and not keep:
        return None
    mapping: dict = {}
    sources = []
    if targets:
        mapping, src = _read_mapping(targets, model_name)
        sources.append(src)
    if keep:
        mapping.update(parse_keep(keep))
        sources.append("--keep")
    t = Targets(mapping, sparsity, group, source=" + ".join(sources))
    t.check_layers(layers)
    return t
