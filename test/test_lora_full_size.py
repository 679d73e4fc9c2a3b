# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
kohya SGM-layout LoRA and LoCon files on the full-size SDXL base architecture (sdxl-random).

One test, heavy (about 14 GiB resident in float32 on the CPU, minutes on two cores): the
block-numbering of real SDXL files (2 layers per block, 10 transformer blocks deep) is not
what the tiny preset has. Deselect with `-m "not full_size"`.
"""

from engine_fixtures import tiny_request
from lora_fixtures import diffusers_names_lora, sdxl_lora, write_lora
import numpy as np
import pytest

from sdxl_ros.engine.lora_files import module_count, read_header

# SDXL base: 70 transformer blocks x 10 linears + 11 x proj_in/proj_out = 722 UNet modules,
# CLIP-L 12 x 6 + bigG 32 x 6 text modules = 264; LoCon adds 17 resnets x 3 convs/linears,
# 11 shortcuts, 2 downsamplers, 2 upsamplers = 66.
LORA_MODULES = 986
LOCON_MODULES = 1052


@pytest.mark.full_size
def test_sgm_lora_and_locon_apply_whole_on_full_size_sdxl(tmp_path):
    """All 986 (LoCon: 1052) modules apply; SGM layout = diffusers names; base restored."""
    from sdxl_ros.engine import EngineConfig, SdxlEngine
    from sdxl_ros.engine.prompting.lora import adapter_modules
    from sdxl_ros.engine.request import Limits
    engine = SdxlEngine(EngineConfig(base_model='sdxl-random', refiner_model='', device='cpu',
                                     lora_dir=str(tmp_path), limits=Limits(min_side=64)))
    engine.load()
    base = engine.base_pipeline
    write_lora(tmp_path / 'sgm.safetensors', sdxl_lora(base, rank=1, scale=0.05))
    write_lora(tmp_path / 'names.safetensors', diffusers_names_lora(base, scale=0.05, rank=1))
    write_lora(tmp_path / 'locon.safetensors', sdxl_lora(base, rank=1, scale=0.05, conv=True))

    def run(prompt):
        result = engine.generate(tiny_request(prompt=prompt, steps=2, refiner_switch=1.0))
        adapters = base.get_list_adapters().get('unet', [])
        applied = len(list(adapter_modules(base, adapters[0]))) if adapters else 0
        return result.images[0], applied

    plain, _ = run('a robot')
    sgm, sgm_applied = run('a robot <lora:sgm:1>')
    names, _ = run('a robot <lora:names:1>')
    _, locon_applied = run('a robot <lora:locon:1>')
    again, _ = run('a robot')
    for name, expected in (('sgm', LORA_MODULES), ('locon', LOCON_MODULES)):
        shapes, _ = read_header(str(tmp_path / f'{name}.safetensors'))
        assert module_count(shapes) == expected
    assert sgm_applied == LORA_MODULES and locon_applied == LOCON_MODULES
    assert np.array_equal(sgm, names)
    assert not np.array_equal(sgm, plain)
    assert np.array_equal(again, plain)
