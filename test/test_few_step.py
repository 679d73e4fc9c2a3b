# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Few-step workflows on the tiny preset: the UNet's real calls counted with a forward hook.

What distilled SDXL models (Turbo, Lightning, Hyper-SD, LCM-LoRA, DMD2) need from the engine:
the step count and timesteps their schedule asks for, a LoRA applied on top, one step, and
CFG off (guidance_scale <= 1: one UNet pass per step on a batch of one).
"""

from engine_fixtures import tiny_engine, tiny_request
from lora_fixtures import sdxl_lora, write_lora
import pytest


class UnetCalls:
    """Records (batch size, timestep) of every forward call of a UNet (a pre-hook; no mock)."""

    def __init__(self, unet):
        """Install the hook."""
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        sample = args[0] if args else kwargs['sample']
        timestep = args[1] if len(args) > 1 else kwargs['timestep']
        self.calls.append((int(sample.shape[0]), round(float(timestep.reshape(-1)[0]), 4)))

    def close(self):
        """Remove the hook."""
        self.handle.remove()


@pytest.fixture(scope='module')
def engine(tmp_path_factory):
    """Load a tiny CPU engine whose lora_dir holds a LoRA made for it ('fewstep')."""
    folder = tmp_path_factory.mktemp('loras')
    loaded = tiny_engine(lora_dir=str(folder))
    write_lora(folder / 'fewstep.safetensors', sdxl_lora(loaded.base_pipeline, seed=3))
    return loaded


def run(engine, **fields):
    """Generate one image; return (result, [(batch, timestep)] of the base UNet, events)."""
    calls = UnetCalls(engine.base_pipeline.unet)
    events = []
    try:
        result = engine.generate(tiny_request(**fields), on_progress=events.append)
    finally:
        calls.close()
    return result, calls.calls, events


def steps_reported(events):
    """Return the denoising steps the progress events counted, and the total they announced."""
    denoising = [e for e in events if e.stage in ('base', 'refiner')]
    return len(denoising), {e.total_steps for e in denoising}


def test_lcm_lora_runs_a1111s_lcm_timesteps_one_pass_each(engine):
    result, calls, events = run(engine, prompt='a robot <lora:fewstep:1>', scheduler='LCM',
                                steps=4, guidance_scale=1.0, refiner_switch=1.0)
    # A1111's LCM sampler: grid timesteps 999, 679, 339, 19; CFG off: batch 1, one call each.
    assert calls == [(1, 999.0), (1, 679.0), (1, 339.0), (1, 19.0)]
    assert steps_reported(events) == (4, {4})
    assert result.images[0].shape == (64, 64, 3)
    assert 'Sampler: LCM, Schedule type: Automatic, CFG scale: 1' in result.infotexts[0]
    assert 'Lora hashes: "fewstep: ' in result.infotexts[0]


def test_lightning_style_euler_sgm_uniform_with_lora(engine):
    _, calls, events = run(engine, prompt='a robot <lora:fewstep:0.8>', scheduler='Euler',
                           schedule_type='SGM Uniform', steps=4, guidance_scale=1.0,
                           refiner_switch=1.0)
    # A1111's sgm_uniform: t = linspace(999, 0, 5)[:-1]; diffusers' Euler converts back from
    # float32 sigmas, so the timesteps agree to 1e-3.
    assert [b for b, _ in calls] == [1] * 4
    assert [t for _, t in calls] == pytest.approx([999.0, 749.25, 499.5, 249.75], abs=1e-3)
    assert steps_reported(events) == (4, {4})


def test_trailing_ddim_as_hyper_sd_uses_it(engine):
    _, calls, _ = run(engine, scheduler='DDIM', schedule_type='SGM Uniform', steps=2,
                      guidance_scale=0.0, refiner_switch=1.0)
    assert calls == [(1, 999.0), (1, 499.0)]  # diffusers' trailing spacing


def test_one_step_generation_works(engine):
    result, calls, events = run(engine, scheduler='Euler a', steps=1, guidance_scale=0.0,
                                refiner_switch=1.0, seed=11)
    assert calls == [(1, 999.0)]
    assert steps_reported(events) == (1, {1})
    image = result.images[0]
    assert image.shape == (64, 64, 3) and image.std() > 0
    assert result.seeds == [11]


@pytest.mark.parametrize('guidance, batch', [(0.0, 1), (0.5, 1), (1.0, 1), (1.01, 2),
                                             (7.0, 2)])
def test_guidance_at_most_one_runs_one_unet_pass_per_step(engine, guidance, batch):
    # diffusers' SDXL pipeline runs CFG only for guidance_scale > 1 (cond and uncond in one
    # batch of two); at or below 1 it is one pass on the prompt alone.
    _, calls, _ = run(engine, scheduler='Euler', steps=3, guidance_scale=guidance,
                      refiner_switch=1.0)
    assert [b for b, _ in calls] == [batch] * 3


def test_cfg_1_with_the_refiner_is_one_pass_per_step_there_too(engine):
    refiner_calls = UnetCalls(engine.refiner_pipeline.unet)
    try:
        _, calls, events = run(engine, scheduler='Euler', steps=5, guidance_scale=1.0,
                               refiner_switch=0.6)
    finally:
        refiner_calls.close()
    assert [b for b, _ in calls + refiner_calls.calls] == [1] * 5
    assert steps_reported(events) == (5, {5})


def passthrough_backend(graph_module, _inputs):
    """Compile nothing: a torch.compile backend that runs the traced graph as it is."""
    return graph_module.forward


@pytest.mark.skipif(not hasattr(__import__('torch').compiler, 'set_stance'),
                    reason='the fast path needs torch.compiler.set_stance (torch >= 2.6); '
                    'here it stays off')
def test_few_step_goals_through_the_fast_path_match_plain_diffusers(engine):
    """
    The fast path (simulated on the CPU) leaves CFG-off, few-step goals as plain diffusers.

    Fused QKV, channels_last and the compiled regions are applied and prepared; the graph
    wrappers serve CPU calls eagerly (graphs need CUDA tensors), so whether batch-1
    signatures are replayed from graphs is left to a GPU run.
    """
    from engine_fixtures import assert_images_close
    from sdxl_ros.engine import AccelerationConfig
    fast = tiny_engine(fast_path=True, acceleration=AccelerationConfig(
        simulate_cuda=True, background_prepare=False, prepare_sizes=((64, 64),),
        compile_backend=passthrough_backend))
    fast.prepare_fast_path()
    assert fast.accelerator.enabled
    for fields in ({'scheduler': 'LCM', 'steps': 4}, {'scheduler': 'Euler', 'steps': 4,
                                                      'schedule_type': 'SGM Uniform'}):
        request = tiny_request(guidance_scale=1.0, refiner_switch=1.0, seed=5, **fields)
        assert_images_close(fast.generate(request).images[0],
                            engine.generate(request).images[0])
    assert fast.accelerator.enabled
