# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
LoRAs of a goal applied to the base pipeline through diffusers' PEFT integration.

Plain path (CPU, fast path off): each LoRA is a PEFT adapter (`load_lora_weights`), the goal's
weights are set with `set_adapters`; the base weights are never written. A LoRA the next goal
uses again stays loaded, the others are deleted (`delete_adapters`), and a goal without LoRAs
removes the PEFT layers altogether (`unload_lora_weights`), so its UNet is the stock one.

Fast path (see `fused_mode_needed`): the CUDA graphs captured at load replay the kernels of
the modules that existed then, so PEFT layers added later would be bypassed without a word
(and the fused QKV projections the fast path installs never read `to_q`/`to_k`/`to_v`).
There the LoRAs are fused into the weights in place (`fuse_lora`, then `unload_lora_weights`
drops the PEFT layers): the tensors the graphs read keep their storage and get the new
values, the fused QKV weights are rebuilt from `to_q`/`to_k`/`to_v` the same way. The original
weights are kept on the CPU and copied back when the LoRA set changes, so after a goal the
base is bit-identical to before (unfusing by subtraction would not be).
"""

import logging
import warnings

from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file

from sdxl_ros.engine.lora_files import LoraError, LoraTarget

import torch

LOG = logging.getLogger(__name__)
_COMPONENTS = ('unet', 'text_encoder', 'text_encoder_2')


def lora_target(base, refiner):
    """Return the LoraTarget (plain widths) of a loaded base + refiner pair."""
    def width(encoder):
        return encoder.config.hidden_size if encoder is not None else None
    return LoraTarget(
        cross_attention_dim=int(base.unet.config.cross_attention_dim),
        text_encoder_width=width(base.text_encoder),
        text_encoder_2_width=width(base.text_encoder_2),
        refiner_cross_attention_dim=(int(refiner.unet.config.cross_attention_dim)
                                     if refiner is not None else None))


def _adapter_name(lora_file):
    """Return a PEFT-safe adapter name (module-dict keys take no dots) for a LoraFile."""
    stem = ''.join(c if c.isalnum() else '_' for c in lora_file.name)
    return f'{stem}_{lora_file.short_hash}'


def _attention_modules(module):
    """Yield the diffusers Attention modules whose QKV projections are fused."""
    for sub in module.modules():
        if getattr(sub, 'fused_projections', False) and (
                hasattr(sub, 'to_qkv') or hasattr(sub, 'to_kv')):
            yield sub


def fused_mode_needed(base, accelerator):
    """Whether LoRAs must be fused into the weights (CUDA graphs or fused QKV present)."""
    graphs = accelerator is not None and bool(getattr(accelerator, 'graphed', None))
    return graphs or any(True for _ in _attention_modules(base.unet))


class LoraSet:
    """The LoRAs applied to one base pipeline, changed goal by goal with `apply`."""

    def __init__(self, base):
        """Start with no LoRA."""
        self.base = base
        self._loaded = {}      # adapter name -> LoraFile (plain path)
        self._fused = ()       # ((adapter name, weight), ...) fused now (fast path)
        self._backup = {}      # id(parameter) -> (parameter, CPU copy of its original value)

    @property
    def active(self):
        """Return the adapter names in use (either path)."""
        return [name for name, _ in self._fused] or list(self._loaded)

    def apply(self, loras, fused):
        """Make exactly `loras` ([(LoraFile, weight)]) active; raises LoraError on a bad file."""
        wanted = [(_adapter_name(f), f, float(w)) for f, w in loras]
        if fused:
            self._apply_fused(wanted)
        else:
            self._restore()
            self._apply_plain(wanted)

    # ------------------------------------------------------------------ plain path
    def _apply_plain(self, wanted):
        """Load/delete PEFT adapters so exactly `wanted` are set, with their weights."""
        names = [name for name, _, _ in wanted]
        stale = [name for name in self._loaded if name not in names]
        if stale and len(stale) == len(self._loaded) and not wanted:
            self.base.unload_lora_weights()
            self._loaded.clear()
            return
        if stale:
            self.base.delete_adapters(stale)
            for name in stale:
                del self._loaded[name]
        for name, lora_file, _ in wanted:
            if name not in self._loaded:
                self._load(name, lora_file)
                self._loaded[name] = lora_file
        if wanted:
            self.base.set_adapters(names, adapter_weights=[w for _, _, w in wanted])

    def _load(self, name, lora_file):
        """Read one LoRA file and add it as adapter `name` (nothing is fetched)."""
        try:
            state = load_file(lora_file.path, device='cpu')
            with warnings.catch_warnings():
                # Adapters beside adapters is diffusers' multi-LoRA path (set_adapters picks
                # the active ones); PEFT warns about a second adapter all the same.
                warnings.filterwarnings('ignore', message='Already found a `peft_config`')
                self.base.load_lora_weights(state, adapter_name=name)
        except Exception as error:  # noqa: BLE001 - diffusers/PEFT raise many kinds
            try:
                self.base.delete_adapters([name])
            except Exception:  # noqa: BLE001 - nothing was added
                pass
            raise LoraError(f'LoRA {lora_file.name!r} cannot be applied to the base model: '
                            f'{str(error).splitlines()[0]}') from error

    # ------------------------------------------------------------------ fast path hook
    def _apply_fused(self, wanted):
        """FAST PATH HOOK: fuse `wanted` into the weights in place (graphs stay valid)."""
        key = tuple((name, weight) for name, _, weight in wanted)
        if key == self._fused:
            return
        if self._loaded:
            self.base.unload_lora_weights()
            self._loaded.clear()
        self._restore()
        if not wanted:
            return
        names = [name for name, _, _ in wanted]
        with torch.no_grad():
            try:
                for name, lora_file, _ in wanted:
                    self._load(name, lora_file)
                self.base.set_adapters(names, adapter_weights=[w for _, _, w in wanted])
                storages = self._back_up_wrapped()
                self.base.fuse_lora(components=list(_COMPONENTS), lora_scale=1.0,
                                    adapter_names=names)
            finally:
                self.base.unload_lora_weights()
            _keep_storage(storages)
            self._refresh_fused_qkv()
        self._fused = key

    def _back_up_wrapped(self):
        """Keep a CPU copy of every weight a PEFT layer wraps; return (param, storage) pairs."""
        storages = []
        for component in _COMPONENTS:
            module = getattr(self.base, component, None)
            if module is None:
                continue
            for sub in module.modules():
                if not isinstance(sub, BaseTunerLayer):
                    continue
                weight = sub.get_base_layer().weight
                if id(weight) not in self._backup:
                    self._backup[id(weight)] = (weight, weight.detach().to('cpu', copy=True))
                storages.append((weight, weight.data))
        return storages

    def _restore(self):
        """Copy the original weights back in place and rebuild the fused QKV weights."""
        if not self._backup:
            self._fused = ()
            return
        with torch.no_grad():
            for weight, original in self._backup.values():
                weight.copy_(original)
            self._refresh_fused_qkv()
        self._backup.clear()
        self._fused = ()

    def _refresh_fused_qkv(self):
        """Rebuild fused QKV/KV weights from to_q/to_k/to_v, in place."""
        with torch.no_grad():
            for attn in _attention_modules(self.base.unet):
                if getattr(attn, 'to_qkv', None) is not None:
                    parts = (attn.to_q, attn.to_k, attn.to_v)
                    fused = attn.to_qkv
                else:
                    parts = (attn.to_k, attn.to_v)
                    fused = attn.to_kv
                fused.weight.copy_(torch.cat([p.weight for p in parts]))
                if fused.bias is not None and all(p.bias is not None for p in parts):
                    fused.bias.copy_(torch.cat([p.bias for p in parts]))


def _keep_storage(storages):
    """Where fusing swapped a weight's storage, copy the values back into the old one."""
    for weight, storage in storages:
        if weight.data.data_ptr() != storage.data_ptr():
            storage.copy_(weight.data)
            weight.data = storage
