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
import os
import re
import warnings

from peft.tuners.tuners_utils import BaseTunerLayer

from sdxl_ros.engine.lora_files import LoraError, LoraTarget, name_list

import torch

LOG = logging.getLogger(__name__)
_COMPONENTS = ('unet', 'text_encoder', 'text_encoder_2')
# A converted (diffusers-named) LoRA key: component, module path, low-rank part; the
# attention-processor form (`attn1.processor.to_q_lora.down.weight`) names `attn1.to_q`.
_CONVERTED_KEY = re.compile(r'^(unet|text_encoder|text_encoder_2)\.(.+?)\.(?:lora_linear_layer|'
                            r'lora|lora_A|lora_B)(?:\.(?:down|up))?\.weight$')
_PROCESSOR_KEY = re.compile(r'^(unet)\.(.+)\.processor\.(to_[qkv]|to_out)_lora\.(?:down|up)'
                            r'\.weight$')
#: How long a library's error text may get in a refusal before the rest is counted.
REASON_CHARS = 1500


def error_text(error, limit=REASON_CHARS):
    """Return an exception's whole message on one line; past `limit`, say how much is left."""
    text = ' '.join(str(error).split())
    if len(text) > limit:
        return f'{text[:limit]} … ({len(text) - limit} more characters)'
    return text


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
        """
        Add one LoRA file as adapter `name`, every module of it or none (LoraError).

        The file is loaded by path (local only, nothing is fetched), so diffusers reads its
        `lora_adapter_metadata` (PEFT's lora_alpha: the strength of diffusers/PEFT files).
        The modules that got the adapter are then counted against the file's: a key that
        diffusers converted to a module the model lacks, or dropped, refuses the LoRA.
        """
        directory, filename = os.path.split(lora_file.path)
        options = {'weight_name': filename, 'use_safetensors': True, 'local_files_only': True}
        try:
            converted = self.base.lora_state_dict(
                directory, unet_config=self.base.unet.config, **options)[0]
            with warnings.catch_warnings():
                # Adapters beside adapters is diffusers' multi-LoRA path (set_adapters picks
                # the active ones); PEFT warns about a second adapter all the same.
                warnings.filterwarnings('ignore', message='Already found a `peft_config`')
                self.base.load_lora_weights(directory, adapter_name=name, **options)
            self._check_applied(name, lora_file, converted)
        except Exception as error:  # noqa: BLE001 - diffusers/PEFT raise many kinds
            self._forget(name)
            if isinstance(error, LoraError):
                raise
            raise LoraError(f'LoRA {lora_file.name!r} cannot be applied to the base model: '
                            f'{error_text(error)}') from error

    def _forget(self, name):
        """Delete adapter `name` where a failed load left part of it."""
        try:
            self.base.delete_adapters([name])
        except Exception:  # noqa: BLE001 - nothing was added
            pass

    def _check_applied(self, name, lora_file, converted):
        """Raise LoraError unless adapter `name` sits on every module the file names."""
        wanted = {}
        for key in converted:
            match = _PROCESSOR_KEY.match(key)
            if match:
                layer = 'to_out.0' if match.group(3) == 'to_out' else match.group(3)
                wanted[f'unet.{match.group(2)}.{layer}'] = key
                continue
            match = _CONVERTED_KEY.match(key)
            if match:
                wanted[_plain_module_name(match.group(1), match.group(2))] = key
        applied = set(adapter_modules(self.base, name))
        missing = sorted(module for module in wanted if module not in applied)
        present = max(lora_file.modules, len(wanted))
        if missing or len(applied) < present:
            raise LoraError(
                f'LoRA {lora_file.name!r} would be applied only in part: {len(applied)} of its '
                f'{present} modules found in the base model'
                + (f'; not found: {name_list(missing)}' if missing else '')
                + '. Is it a LoRA for another SDXL variant or architecture?')
        LOG.info('LoRA %s: %d of %d modules applied', lora_file.name, len(applied), present)

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


def _plain_module_name(component, path):
    """Return 'component.path' with transformers' optional `text_model.` level dropped."""
    if path.startswith('text_model.'):
        path = path[len('text_model.'):]
    return f'{component}.{path}'


def adapter_modules(base, name):
    """Yield the module names ('unet.…', 'text_encoder.…') that carry PEFT adapter `name`."""
    for component in _COMPONENTS:
        module = getattr(base, component, None)
        if module is None:
            continue
        for path, sub in module.named_modules():
            if isinstance(sub, BaseTunerLayer) and name in getattr(sub, 'lora_A', {}):
                yield _plain_module_name(component, path)


def _keep_storage(storages):
    """Where fusing swapped a weight's storage, copy the values back into the old one."""
    for weight, storage in storages:
        if weight.data.data_ptr() != storage.data_ptr():
            storage.copy_(weight.data)
            weight.data = storage
