"""Modalities: the kinds of image a model generates besides RGB (near infrared, panchromatic,
colour infrared; SAR when you have data), each a LoRA adapter on the same denoiser.

Text2Earth generates other modalities by fine-tuning its RGB model with LoRA on images of
that modality. geot2e does the same through one registry: a :class:`Modality` names the
band roles it generates (``("nir",)``, ``("pan",)``, ``("nir", "red", "green")``), how
those bands feed the VAE's three image channels (a single band feeds all three, so the
RGB VAE encodes a grey image), the value range of a generated raster without a template,
and where its adapter lives in a model folder (``<model>/modality/<name>/``).
:func:`geot2e.models.load_model` (``modality="nir"``) merges the adapter and gives a model
whose ``config.band_names`` are the modality's bands: the engine and the public functions
then treat it like any model with those bands. ``geot2e train`` trains one from a config
with ``modality: <name>`` beside a ``lora:`` section (``configs/modality_*.yaml``).

A user adds a modality with :func:`register_modality` (e.g. SAR backscatter in dB, two
polarisations feeding the three channels as VV, VH, VV) and trains its adapter on their own
rasters with the same command; nothing else in the package changes.

>>> get_modality("nir").bands, get_modality("nir").channels
(('nir',), (0, 0, 0))
>>> get_modality("cir").channels          # the VAE's channels: red, NIR, green
(1, 0, 2)
>>> sorted(MODALITIES)
['cir', 'nir', 'pan', 'rgb']
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, ParameterError

__all__ = ["Modality", "MODALITIES", "MODALITY_DIR", "register_modality", "get_modality", "modality_from_spec",
           "modality_from_adapter", "modality_view", "apply_modality"]

#: the sub-folder of a model folder that holds its modality adapters (one folder per modality)
MODALITY_DIR = "modality"


@dataclass(frozen=True)
class Modality:
    """One kind of image a model can generate.

    name : registry key (``generate(..., modality=name)``).
    bands : band names of the output, in order (roles of :mod:`geot2e.geo.bands` where they
        exist: "nir", "pan", "red" ...; other names, e.g. "vv", are matched by position).
    channels : for each of the VAE's image channels, the index of the band that feeds it;
        every band feeds at least one channel, and a band's output is the mean of its channels.
    value_range : (low, high) that :func:`geot2e.generate` without ``like`` maps the model's
        [0, 1] to (reflectance 0..1 for the optical modalities; e.g. (-30, 5) dB for SAR).
    adapter : whether the modality needs an adapter (False only for the base model's RGB).
    description : one line for docs and errors.
    """

    name: str
    bands: tuple[str, ...]
    channels: tuple[int, ...]
    value_range: tuple[float, float] = (0.0, 1.0)
    adapter: bool = True
    description: str = ""

    def __post_init__(self):
        if not self.name or not str(self.name).isidentifier():
            raise ParameterError(f"a modality name must be a plain identifier (letters, digits, _), got {self.name!r}.")
        nb = len(self.bands)
        if nb < 1 or len(set(self.bands)) != nb:
            raise ParameterError(f"modality {self.name!r}: bands must name at least one band, each once; "
                                 f"got {self.bands!r}.")
        ch = tuple(self.channels)
        if not ch or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < nb for c in ch) \
                or set(ch) != set(range(nb)):
            raise ParameterError(f"modality {self.name!r}: channels must give, for each VAE channel, the index "
                                 f"(0..{nb - 1}) of the band that feeds it, using every band; got {self.channels!r}.")
        lo, hi = self.value_range
        if not float(lo) < float(hi):
            raise ParameterError(f"modality {self.name!r}: value_range must be (low, high) with low < high.")

    @property
    def folder(self) -> str:
        """Where its adapter lives inside a model folder."""
        return f"{MODALITY_DIR}/{self.name}"


MODALITIES: dict[str, Modality] = {}


def register_modality(modality: Modality, *, replace: bool = False) -> Modality:
    """Add ``modality`` to the registry (``replace=True`` to redefine a name)."""
    if not isinstance(modality, Modality):
        raise ParameterError(f"register_modality takes a Modality, got {type(modality).__name__}.")
    if modality.name in MODALITIES and not replace:
        raise ParameterError(f"modality {modality.name!r} is already registered; pass replace=True to redefine it.")
    MODALITIES[modality.name] = modality
    return modality


for _m in (
    Modality("rgb", ("red", "green", "blue"), (0, 1, 2), adapter=False,
             description="true colour: the base model itself"),
    Modality("nir", ("nir",), (0, 0, 0),
             description="near infrared (Landsat 8 B5, Sentinel-2 B08), one band"),
    Modality("pan", ("pan",), (0, 0, 0),
             description="panchromatic (Landsat 8 B8, 15 m), one band"),
    # the VAE sees red, NIR, green: vegetation lands in the channel where the RGB model has it
    # (green), so the adapter starts from a prior that already separates it
    Modality("cir", ("nir", "red", "green"), (1, 0, 2),
             description="colour infrared (NIR, red, green): NDVI from one generated image"),
):
    register_modality(_m)


def get_modality(name: "str | Modality") -> Modality:
    """The registered modality ``name`` (a :class:`Modality` passes through)."""
    if isinstance(name, Modality):
        return name
    if not isinstance(name, str) or name not in MODALITIES:
        raise ParameterError(f"unknown modality {name!r}; choose from {sorted(MODALITIES)}, or add one with "
                             "geot2e.models.modality.register_modality(Modality(...)).")
    return MODALITIES[name]


def modality_from_spec(spec: "str | dict | Modality") -> Modality:
    """A training config's ``modality:``: a registered name, or a mapping that defines a new one
    (``{name: sar, bands: [vv, vh], channels: [0, 1, 0], value_range: [-25, 5]}``), registered
    here (a name already registered must be defined the same way)."""
    if isinstance(spec, (str, Modality)):
        return get_modality(spec)
    if not isinstance(spec, dict):
        raise ParameterError(f"modality must be a name or a mapping (name, bands, channels, value_range), got {spec!r}.")
    unknown = set(spec) - {"name", "bands", "channels", "value_range", "description"}
    if unknown or not {"name", "bands", "channels"} <= set(spec):
        raise ParameterError(f"modality: give name, bands, channels (and optionally value_range, description); "
                             f"got keys {sorted(spec)}.")
    m = Modality(name=str(spec["name"]), bands=tuple(str(b) for b in spec["bands"]),
                 channels=tuple(int(c) for c in spec["channels"]),
                 value_range=tuple(float(v) for v in spec.get("value_range", (0.0, 1.0))),
                 description=str(spec.get("description", "")))
    if m.name in MODALITIES and MODALITIES[m.name] != m:
        raise ParameterError(f"modality {m.name!r} is already registered with other bands or channels; choose "
                             "another name.")
    return register_modality(m, replace=True)


def modality_from_adapter(folder: "str | os.PathLike") -> Modality | None:
    """The modality an adapter folder was trained for, registered from its ``geot2e_lora.json``
    when this process does not know it yet (a user's modality, e.g. SAR, after ``geot2e train``);
    None when the folder holds no modality adapter."""
    meta = Path(folder) / "geot2e_lora.json"
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text())
    if info.get("kind") != "modality" or not info.get("modality"):
        return None
    if info["modality"] in MODALITIES:
        return MODALITIES[info["modality"]]
    return modality_from_spec({"name": info["modality"], "bands": info["bands"], "channels": info["channels"],
                               "value_range": info.get("value_range", (0.0, 1.0))})


def modality_view(model, modality: "str | Modality"):
    """Make ``model`` generate ``modality``'s bands (in place): its config's ``bands``,
    ``band_names`` and ``channels`` become the modality's, the weights stay as they are (the
    adapter is added or merged separately). Refused when the VAE's channels differ."""
    m = get_modality(modality)
    cfg = model.config
    if getattr(model, "modality", None) not in (None, "rgb") and model.modality != m.name:
        raise ParameterError(f"the model already generates {model.modality!r}; load the base model again for "
                             f"{m.name!r}.")
    if len(m.channels) != cfg.vae_channels:
        raise ParameterError(f"modality {m.name!r} feeds {len(m.channels)} image channels but the model's VAE has "
                             f"{cfg.vae_channels}; it needs a model with a {len(m.channels)}-channel VAE.")
    if m.adapter:
        model.config = dataclasses.replace(cfg, bands=len(m.bands), band_names=list(m.bands),
                                           channels=list(m.channels))
        model.config.validate(source=f"modality {m.name!r}")
    model.modality = m.name
    return model


def apply_modality(model, modality: "str | Modality", folder: "str | os.PathLike"):
    """Merge ``modality``'s adapter (its ``folder``, e.g. ``<model>/modality/<name>``) into
    ``model`` and make it generate the modality's bands (in place); "rgb" leaves the weights as
    they are. The model id and checkpoint hash name base and adapter, for provenance.
    :func:`geot2e.models.load_model` (``modality=``) calls it with the model folder's adapter."""
    from .adapter import ADAPTER_WEIGHTS, load_lora, merge_lora

    m = get_modality(modality)
    if not m.adapter:
        return modality_view(model, m)
    if getattr(model, "controlnet", None) is not None or getattr(model, "student_steps", None) is not None:
        raise ParameterError(f"modality {m.name!r} is an adapter of the base model; it cannot be combined with "
                             "the few-step student or the translation ControlNet (load it without those).")
    folder = Path(folder)
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise CheckpointError(f"{folder}: no {m.name!r} adapter there; train one with "
                              f"`geot2e train configs/modality_{m.name}.yaml`.")
    base_id = model.config.model_id
    load_lora(model, folder)
    merge_lora(model)
    modality_view(model, m)
    model.config.model_id = f"{base_id}+{m.name}"
    h = hashlib.sha256((folder / ADAPTER_WEIGHTS).read_bytes()).hexdigest()[:8]
    model.checkpoint_hash = f"{model.checkpoint_hash}+{h}"
    meta = folder / "geot2e_lora.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("gsd_range"):
            model.config.trained_gsd_range = [float(v) for v in info["gsd_range"]]
    return model
