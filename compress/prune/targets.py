"""Which layers are pruned, and to what keep ratio.

A prunable layer is any ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.Linear`` submodule, named as in
``named_modules()`` (for a CaffeNet: the Caffe layer names). Targets are per-layer keep ratios (the
fraction of weights, or of groups in channel mode, that survive the hard prune), given as a YAML/JSON
file, a preset shipped in ``zoo/presets/<model>.json``, ``--keep layer=ratio`` pairs, or the seed's
global ``--pcen`` (percent of weights to *prune* in every prunable layer).

Preset file format: ``{"<preset>": {"description": "...", "keep": {"<layer>": ratio, ...}}, ...}``.
A targets file is either ``{"keep": {...}}`` or the bare ``{layer: ratio}`` mapping.

No silent layer deaths: a layer keeps ``round(ratio * n)`` of its ``n`` weights (elem) or groups
(channel) but never 0, unless its own target is exactly 0 in a per-layer source (a targets file or
``--keep LAYER=0``); a global ``--pcen`` (100 included) leaves every layer at least one weight or group.
In channel mode with ``--group out`` the last prunable layer (the classifier: its output filters are the
classes) is excluded unless ``--keep`` names it. Both are reported (``Targets.adjustments``,
``render_adjustments``), as is a layer that a method's thresholds emptied and whose largest weight or
group was kept (``Method.adjustments``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

from compress.errors import CompressError
from compress.layers import PrunableLayer
from compress.prune import ops

SPARSITY_MODES = ("elem", "channel")
GROUP_MODES = ("in", "out")


@dataclass(frozen=True)
class Adjustment:
    """A layer pruned otherwise than its ratio alone says: ``excluded`` (not pruned), ``clamped`` (its
    ratio rounds to 0 kept: 1 is kept) or ``rescued`` (a method's threshold zeroed it; its largest
    weight or group was kept). ``kept``/``total`` count ``unit`` (weights or groups)."""

    layer: str
    action: str
    reason: str
    kept: int | None = None
    total: int | None = None
    unit: str = ""

    def line(self) -> str:
        """One line for stderr: ``conv1: clamped, keeps 1 of 1 groups (...)``."""
        count = f", keeps {self.kept} of {self.total} {self.unit}" if self.kept is not None else ""
        return f"{self.layer}: {self.action}{count} ({self.reason})"

    def as_dict(self) -> dict:
        return asdict(self)


def render_adjustments(adjustments: Iterable[Adjustment]) -> str:
    """One line per adjusted layer (empty string when none), for stderr."""
    return "\n".join(a.line() for a in adjustments)


@dataclass(frozen=True)
class Targets:
    """Per-layer keep ratios, validated at construction (ratios in [0, 1], known modes).

    ``allow_empty``: a ratio of exactly 0 is the user's own per-layer request to empty that layer (a
    targets file, ``--keep``); False for a global ratio (``--pcen``), which never empties a layer.
    ``excluded``: layers left unpruned on purpose, with the reason (reported, see ``adjustments``).
    """

    keep: Mapping[str, float]
    sparsity: str = "elem"
    group: str = "in"
    source: str = field(default="", compare=False)
    allow_empty: bool = True
    excluded: Mapping[str, str] = field(default_factory=dict)

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
        both = sorted(set(clean) & set(self.excluded))
        if both:
            raise CompressError(f"layer(s) {', '.join(both)} both targeted and excluded")
        object.__setattr__(self, "keep", MappingProxyType(clean))
        object.__setattr__(self, "excluded", MappingProxyType(dict(self.excluded)))

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

    # --- counts ------------------------------------------------------------------------------
    @property
    def unit(self) -> str:
        return "groups" if self.sparsity == "channel" else "weights"

    def units(self, layer: PrunableLayer) -> int:
        """What the ratio counts in ``layer``: its weights (elem) or its groups (channel)."""
        shape = layer.weight.shape
        if self.sparsity == "channel":
            return ops.num_groups(shape, *layer.group_args(self.group))
        return math.prod(shape)

    def asks_empty(self, name: str) -> bool:
        """Whether the user asked for ``name`` to be emptied: its own ratio is exactly 0."""
        return self.allow_empty and self.keep.get(name) == 0.0

    def count(self, layer: PrunableLayer) -> int:
        """Weights or groups ``layer`` keeps: ``round(ratio * n)``, at least 1 unless asked for 0."""
        n = self.units(layer)
        k = ops.keep_count(self.keep[layer.name], n)
        return 1 if k == 0 < n and not self.asks_empty(layer.name) else k

    def adjustments(self, layers: Mapping[str, PrunableLayer]) -> list[Adjustment]:
        """The excluded layers, then the targeted layers whose ratio rounds to 0 kept (clamped to 1)."""
        out = [Adjustment(n, "excluded", why) for n, why in self.excluded.items()]
        for name, ratio in self.keep.items():
            n, k = self.units(layers[name]), self.count(layers[name])
            if k != ops.keep_count(ratio, n):
                why = (f"{self.source or 'its target'} keeps {ratio:.4g} x {n} {self.unit}, which rounds "
                       "to 0; a layer is emptied only when its own target is 0")
                out.append(Adjustment(name, "clamped", why, k, n, self.unit))
        return out


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
    pruned) applies to every prunable layer and cannot be combined with the other two. ``layers`` are
    the prunable layers in module order: in channel mode with ``group="out"`` the last one (the
    classifier, whose output filters are the classes) is excluded unless ``--keep`` names it.
    """
    layers = list(layers)
    keep = list(keep)
    if pcen is not None and (targets or keep):
        raise CompressError("give either --pcen or --targets/--keep, not both")
    if pcen is not None:
        if not (math.isfinite(pcen) and 0 <= pcen <= 100):
            raise CompressError(f"--pcen is a percentage of weights to prune in [0, 100], got {pcen}")
        mapping = {n: 1 - pcen / 100 for n in layers}
        source, named = f"--pcen {pcen:g}", {}
    elif not targets and not keep:
        return None
    else:
        mapping, sources, named = {}, [], {}
        if targets:
            mapping, src = _read_mapping(targets, model_name)
            sources.append(src)
        if keep:
            named = parse_keep(keep)
            mapping.update(named)
            sources.append("--keep")
        source = " + ".join(sources)
        Targets(mapping, source=source).check_layers(layers)
    excluded = {}
    last = layers[-1] if layers else None
    if sparsity == "channel" and group == "out" and last in mapping and last not in named:
        del mapping[last]
        excluded[last] = ("the last layer: pruning its output filters with --group out removes whole "
                          f"classes; name it with --keep {last}=RATIO to prune it anyway")
    return Targets(mapping, sparsity, group, source=source, allow_empty=pcen is None, excluded=excluded)
