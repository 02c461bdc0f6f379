"""One-step restorers' releases + their base SD 2.1 → one jaxir checkpoint of kind ``onestep``
(:mod:`jaxir.models.onestep`), the LoRAs kept as dense deltas (:mod:`checkpoints_conversion.lora`).

* HYPIR ``HYPIR_sd2.pth`` (XPixelGroup/HYPIR ``enhancer/sd2.py``): a flat state dict of the UNet's LoRA tensors,
  adapter ``default``, ``lora_alpha = r`` (scale 1); ``configs/sd2_gradio.yaml``: model_t = coeff_t = 200.
* OSEDiff ``osediff.pkl`` (cswry/OSEDiff ``OSEDiff_gen.save_model`` / ``OSEDiff_test.load_ckpt``): module lists
  ``unet_lora_{encoder,decoder,others}_modules``, ``vae_lora_encoder_modules``, ranks ``rank_unet``/``rank_vae``,
  ``state_dict_unet`` (adapters ``default_encoder``/``_decoder``/``_others`` and the fine-tuned
  ``conv_in.base_layer.*``, which replaces the base ``conv_in``) and ``state_dict_vae`` (``default_encoder``).
  ``lora_alpha`` is peft's default 8 (not stored): scale 8 / rank.
* PiSA-SR ``pisa_sr.pkl`` (csslc/PiSA-SR ``PiSASR.save_model`` / ``PiSASR_eval``): module lists
  ``unet_lora_{encoder,decoder,others}_modules_{pix,sem}``, ranks ``lora_rank_unet_{pix,sem}``, ``state_dict_unet``
  with adapters ``default_{encoder,decoder,others}_{pix,sem}``; scale 8 / rank; no VAE LoRA.

Strict: every tensor of the file is used, every listed module has its LoRA and every LoRA its module, each delta
lands on a parameter of its shape.
"""

from __future__ import annotations

from pathlib import Path

from checkpoints_conversion import lora
from checkpoints_conversion.errors import ConversionError, naming
from checkpoints_conversion.keymap import apply_rules
from checkpoints_conversion.sd_base import Base, read_base
from checkpoints_conversion.sources import read_state_dict, read_torch_dict
from checkpoints_conversion.unet_keys import diffusers_unet_rules
from checkpoints_conversion.vae_keys import diffusers_rules as diffusers_vae_rules
from jaxir.models import unet as unet_model
from jaxir.models import vae as vae_model
from jaxir.models.onestep import OneStepConfig

PEFT_DEFAULT_ALPHA = 8.0   # peft ``LoraConfig.lora_alpha``; OSEDiff and PiSA-SR never set it
# (method, UNet timestep, x0 rule, x0 timestep): HYPIR sd2_gradio.yaml, OSEDiff_test.timesteps, PiSASR_eval.timesteps1
METHODS = {"hypir": (200, "ddpm", 200), "osediff": (999, "ddpm", 999), "pisa_sr": (1, "residual", 1)}
OSEDIFF_KEYS = ("unet_lora_encoder_modules", "unet_lora_decoder_modules", "unet_lora_others_modules",
                "vae_lora_encoder_modules", "rank_unet", "rank_vae", "state_dict_unet", "state_dict_vae")
GROUPS = ("encoder", "decoder", "others")
CONV_IN = "conv_in.base_layer."


def _unet_delta(base: Base, deltas: dict, what: str) -> dict:
    return lora.delta_tree(deltas, diffusers_unet_rules(base.unet), unet_model.param_shapes(base.unet), what)


def _vae_delta(base: Base, deltas: dict, what: str) -> dict:
    return lora.delta_tree(deltas, diffusers_vae_rules(base.vae), vae_model.param_shapes(base.vae), what)


def _rank(pairs: dict, rank: int | None, what: str) -> int:
    ranks = {a.shape[0] for a, _ in pairs.values()}
    if len(ranks) != 1 or (rank is not None and ranks != {rank}):
        raise ConversionError(f"{what}: LoRA ranks {sorted(ranks)}, the file says {rank}")
    return ranks.pop()


def _check_modules(pairs: dict, listed, adapter: str, what: str) -> None:
    """The adapter's modules are exactly the listed targets (peft matches the full paths the releases list)."""
    have, want = set(pairs), set(listed)
    if have != want:
        problems = [f"listed without LoRA tensors: {', '.join(sorted(want - have)[:4])}" if want - have else "",
                    f"LoRA tensors on unlisted modules: {', '.join(sorted(have - want)[:4])}" if have - want else ""]
        raise ConversionError(f"{what}: adapter {adapter}: " + "; ".join(p for p in problems if p))


def _adapter(adapters: dict, name: str, what: str) -> dict:
    if name not in adapters:
        raise ConversionError(f"{what}: no LoRA adapter {name!r} (found {', '.join(sorted(adapters)) or 'none'})")
    return adapters[name]


def _config(base: Base, method: str, unet_adapters: dict, vae_adapters: dict | None = None) -> OneStepConfig:
    model_t, rule, coeff_t = METHODS[method]
    return OneStepConfig(unet=base.unet, vae=base.vae, process=base.process, method=method, model_t=model_t,
                         x0_rule=rule, coeff_t=coeff_t, text=base.text,
                         unet_adapters=tuple((n, lora.flat_paths(t)) for n, t in unet_adapters.items()),
                         vae_adapters=tuple((n, lora.flat_paths(t)) for n, t in (vae_adapters or {}).items()))


def _params(base: Base, unet_adapters: dict, vae_adapters: dict | None = None) -> dict:
    trees = {"unet": unet_adapters, **({"vae": vae_adapters} if vae_adapters else {})}
    return {**base.params, "lora": trees}


def hypir_from_state(base: Base, state: dict) -> tuple[OneStepConfig, dict, dict]:
    """(config, params, notes) of HYPIR's LoRA state dict (``HYPIR_sd2.pth``'s tensors) on a read base model."""
    adapters = lora.read_adapters(state, "HYPIR LoRA")
    if set(adapters) != {lora.DEFAULT_ADAPTER}:
        raise ConversionError(f"HYPIR LoRA: expected one adapter 'default', found {', '.join(sorted(adapters))}")
    pairs = adapters[lora.DEFAULT_ADAPTER]
    rank = _rank(pairs, None, "HYPIR LoRA")
    tree = _unet_delta(base, lora.dense_deltas(pairs, 1.0), "HYPIR LoRA")   # lora_alpha = r
    notes = {"lora": {"rank": rank, "alpha": rank, "modules": len(pairs)}}
    return _config(base, "hypir", {"lora": tree}), _params(base, {"lora": tree}), notes


def convert_hypir(base_path, weights_path) -> tuple[OneStepConfig, dict, dict]:
    """(config, params, notes) from a base model and ``HYPIR_sd2.pth``."""
    with naming(base_path, "--base"):
        base = read_base(base_path)
    with naming(weights_path, "--weights"):
        return hypir_from_state(base, read_state_dict(weights_path))


def _group_deltas(state_dict: dict, listed: dict, suffix: str, rank: int, what: str) -> dict:
    """The summed dense deltas of the adapters ``default_{group}{suffix}`` (each checked against its module
    list) at scale ``8 / rank``."""
    adapters = lora.read_adapters(state_dict, what)
    names = {f"default_{g}{suffix}" for g in GROUPS}
    unknown = set(adapters) - names
    if unknown:
        raise ConversionError(f"{what}: unexpected LoRA adapters {', '.join(sorted(unknown))}")
    deltas = []
    for group in GROUPS:
        name = f"default_{group}{suffix}"
        pairs = adapters.get(name, {})
        _check_modules(pairs, listed[group], name, what)
        if pairs:
            _rank(pairs, rank, what)
            deltas.append(lora.dense_deltas(pairs, PEFT_DEFAULT_ALPHA / rank))
    return lora.summed(deltas)


def _require(data: dict, keys, what: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ConversionError(f"not {what} (missing {', '.join(missing)}; found {', '.join(sorted(data)[:6])})")


def convert_osediff(base_path, weights_path) -> tuple[OneStepConfig, dict, dict]:
    """(config, params, notes) from a base model and ``osediff.pkl``."""
    with naming(base_path, "--base"):
        base = read_base(base_path)
    with naming(weights_path, "--weights"):
        data = read_torch_dict(weights_path)
        _require(data, OSEDIFF_KEYS, "an OSEDiff checkpoint (OSEDiff_gen.save_model format)")
        unet_state = dict(data["state_dict_unet"])
        conv_in = {f"conv_in.{k[len(CONV_IN):]}": unet_state.pop(k) for k in list(unet_state) if k.startswith(CONV_IN)}
        if set(conv_in) != {"conv_in.weight", "conv_in.bias"}:
            raise ConversionError("state_dict_unet: no fine-tuned conv_in.base_layer.weight/bias")
        listed = {g: data[f"unet_lora_{g}_modules"] for g in GROUPS}
        rank_unet, rank_vae = int(data["rank_unet"]), int(data["rank_vae"])
        unet_tree = _unet_delta(base, _group_deltas(unet_state, listed, "", rank_unet, "state_dict_unet"),
                                "OSEDiff UNet LoRA")
        vae_pairs = _adapter(lora.read_adapters(data["state_dict_vae"], "state_dict_vae"), "default_encoder",
                             "state_dict_vae")
        _check_modules(vae_pairs, data["vae_lora_encoder_modules"], "default_encoder", "state_dict_vae")
        _rank(vae_pairs, rank_vae, "state_dict_vae")
        vae_tree = _vae_delta(base, lora.dense_deltas(vae_pairs, PEFT_DEFAULT_ALPHA / rank_vae), "OSEDiff VAE LoRA")
        conv_in_tree = apply_rules(conv_in, diffusers_unet_rules(base.unet), unet_model.param_shapes(base.unet),
                                   what="OSEDiff conv_in", partial=True)
    unet = {**base.params["unet"], **conv_in_tree}   # the fine-tuned first conv replaces the base one
    params = {**_params(base, {"lora": unet_tree}, {"lora": vae_tree}), "unet": unet}
    notes = {"lora": {"rank_unet": rank_unet, "rank_vae": rank_vae, "alpha": PEFT_DEFAULT_ALPHA,
                      "fine_tuned": "unet conv_in (input_blocks_0_0)"}}
    return _config(base, "osediff", {"lora": unet_tree}, {"lora": vae_tree}), params, notes


def pisa_keys() -> tuple[str, ...]:
    return ("state_dict_unet", *(f"lora_rank_unet_{kind}" for kind in ("pix", "sem")),
            *(f"unet_lora_{g}_modules_{kind}" for kind in ("pix", "sem") for g in GROUPS))


def convert_pisa_sr(base_path, weights_path) -> tuple[OneStepConfig, dict, dict]:
    """(config, params, notes) from a base model and PiSA-SR's ``pisa_sr.pkl``: adapters ``pix`` and ``sem``."""
    with naming(base_path, "--base"):
        base = read_base(base_path)
    with naming(weights_path, "--weights"):
        data = read_torch_dict(weights_path)
        _require(data, pisa_keys(), "a PiSA-SR checkpoint (PiSASR.save_model format)")
        state = data["state_dict_unet"]
        trees, ranks = {}, {}
        for kind in ("pix", "sem"):
            part = {k: v for k, v in state.items() if k.split(".")[-2].endswith(f"_{kind}")}
            ranks[kind] = int(data[f"lora_rank_unet_{kind}"])
            listed = {g: data[f"unet_lora_{g}_modules_{kind}"] for g in GROUPS}
            trees[kind] = _unet_delta(base, _group_deltas(part, listed, f"_{kind}", ranks[kind], "state_dict_unet"),
                                      f"PiSA-SR {kind} LoRA")
        stray = [k for k in state if not k.split(".")[-2].endswith(("_pix", "_sem"))]
        if stray:
            raise ConversionError(f"state_dict_unet: tensors of neither adapter: {', '.join(stray[:4])}")
    notes = {"lora": {"rank_pix": ranks["pix"], "rank_sem": ranks["sem"], "alpha": PEFT_DEFAULT_ALPHA}}
    return _config(base, "pisa_sr", trees), _params(base, trees), notes


def base_sources(path) -> dict[str, Path]:
    """The files of a base model to record in the provenance (a diffusers folder: its weights and configs)."""
    path = Path(path)
    if not path.is_dir():
        return {"base": path}
    files = {}
    for sub in ("unet", "vae", "scheduler", "text_encoder"):
        for file in sorted((path / sub).glob("*")) if (path / sub).is_dir() else ():
            if file.suffix in (".json", ".safetensors", ".bin"):
                files[f"base_{sub}_{file.name}"] = file
    return files


CONVERTERS = {"hypir": convert_hypir, "osediff": convert_osediff, "pisa_sr": convert_pisa_sr}


def convert(method: str, base_path, weights_path):
    """``(config, params, sources, notes)`` of ``method``'s release on the base model."""
    config, params, notes = CONVERTERS[method](base_path, weights_path)
    return config, params, {**base_sources(base_path), "weights": Path(weights_path)}, notes

