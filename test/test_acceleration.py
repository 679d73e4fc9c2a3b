# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The GPU fast path on a CPU: its decisions, its fallbacks and its scheduling.

The fast path itself needs CUDA; here `AccelerationConfig(simulate_cuda=True)` applies it to a
CPU engine (fused QKV, channels_last, regional compile with a test backend, the graph wrappers
without graphs), so that deciding, serving eagerly while unprepared, preparing, failing and
falling back all run for real. Bit-exactness with fast_path=False is the contract after a
fallback: the models must be plain diffusers modules again.
"""

import logging
import os
import re
import subprocess
import sys
import threading
import time

from engine_fixtures import assert_images_close, tiny_engine, tiny_request
import numpy as np
import pytest

from sdxl_ros.engine import AccelerationConfig, EngineConfig, ModelLoadError
from sdxl_ros.engine.config import parse_size, STANDARD_SIZES
from sdxl_ros.engine.fast_path.accelerator import Yielded
from sdxl_ros.engine.fast_path.applying import accelerate_pipelines
from sdxl_ros.engine.fast_path.compiling import compile_regions, uncompile_regions
from sdxl_ros.engine.fast_path.decision import decide, Facts, precision_problem
from sdxl_ros.engine.fast_path.graphs import GraphedEncoder, GraphedUNet, unet_key
from sdxl_ros.engine.fast_path.preparation import BackgroundPreparer, GoalGate
import torch

GPU = Facts(device_type='cuda', capability=(9, 0))
SIZES_64 = ((64, 64),)
# The fast path needs torch.compiler.set_stance (torch >= 2.6). On older torch (JetPack 6.0 and
# 6.1's builds) it stays off with one line (test_old_torch_keeps_the_fast_path_off) and the
# tests that need it on are skipped.
needs_set_stance = pytest.mark.skipif(
    not hasattr(torch.compiler, 'set_stance'),
    reason='the fast path needs torch.compiler.set_stance (torch >= 2.6); here it stays off')


@pytest.fixture(scope='module')
def plain_image():
    """Render the fast_path=False image every fallback must reproduce exactly."""
    return tiny_engine(fast_path=False).generate(tiny_request(seed=11)).images[0]


class CountingBackend:
    """A torch.compile backend that compiles nothing (runs the traced graph) and counts."""

    def __init__(self):
        """Start at zero graphs."""
        self.graphs = 0

    def __call__(self, graph_module, _inputs):
        """Count one compiled graph and return it unchanged."""
        self.graphs += 1
        return graph_module.forward


def failing_backend(_graph_module, _inputs):
    """Break like a torch.compile backend whose compiler fails."""
    raise RuntimeError('compiler exploded (test backend)')


def simulated(**fields):
    """Return an AccelerationConfig that applies the fast path to a CPU engine."""
    values = {'simulate_cuda': True, 'background_prepare': False, 'prepare_sizes': SIZES_64,
              'compile_backend': CountingBackend()}
    values.update(fields)
    return AccelerationConfig(**values)


def off_lines(caplog):
    """Return the log lines that say the fast path went off."""
    return [r.getMessage() for r in caplog.records if 'fast path off' in r.getMessage()]


def assert_plain_modules(engine):
    """After a fallback nothing of the fast path is left on the models."""
    for pipe in (engine.base_pipeline, engine.refiner_pipeline):
        unet = pipe.unet
        assert 'forward' not in unet.__dict__
        assert not any(getattr(m, '_compiled_call_impl', None) is not None
                       for m in unet.modules())
        assert not any('Fused' in type(p).__name__ for p in unet.attn_processors.values())
        assert not unet._forward_pre_hooks and all(
            not m._forward_pre_hooks for m in unet.modules())


# ------------------------------------------------------------------- decisions
def test_decide_from_facts():
    """The fast path runs only on a resident CUDA device with every feature it needs."""
    accel = AccelerationConfig()
    assert decide(GPU, True, 'resident', accel) == (True, '')
    assert decide(GPU, False, 'resident', accel) == (False, 'fast_path false')
    assert decide(Facts('cpu'), True, 'resident', accel) == (False, 'not a CUDA device')
    for mode in ('model_offload', 'sequential_offload'):
        assert not decide(GPU, True, mode, accel)[0]
    triton = Facts('cuda', (9, 0), triton='triton not importable (ModuleNotFoundError)')
    assert decide(triton, True, 'resident', accel) == (False, triton.triton)
    # Triton is Inductor's GPU code generator: another backend, or no compile, needs none.
    assert decide(triton, True, 'resident', AccelerationConfig(compile='none'))[0]
    assert decide(triton, True, 'resident', AccelerationConfig(compile_backend='eager'))[0]
    old = Facts('cuda', (9, 0), set_stance=False)
    assert 'set_stance' in decide(old, True, 'resident', accel)[1]
    assert 'torch.compile' in decide(Facts('cuda', (9, 0), torch_compile=False), True,
                                     'resident', accel)[1]
    assert 'graphs' in decide(Facts('cuda', (9, 0), cuda_graphs=False), True, 'resident',
                              accel)[1]


def test_precision_fp8_refused_with_a_reason():
    """fp8 needs fast_path, a GPU of compute capability >= 8.9 and torchao; fp16 always works."""
    fp8 = AccelerationConfig(precision='fp8')
    assert precision_problem(Facts('cpu'), True, AccelerationConfig()) == ''
    assert precision_problem(GPU, True, fp8) == ''
    assert '8.9' in precision_problem(Facts('cuda', (8, 0)), True, fp8)
    assert 'CUDA' in precision_problem(Facts('cpu'), True, fp8)
    assert 'fast_path' in precision_problem(GPU, False, fp8)
    assert 'bfloat16' in precision_problem(GPU, True, fp8, 'float16')
    assert 'torchao' in precision_problem(Facts('cuda', (9, 0), torchao_float8='gone'), True,
                                          fp8)


def test_fp8_on_this_cpu_is_refused_at_load():
    """A CPU engine asked for fp8 refuses to load, says why, and loads nothing."""
    from sdxl_ros.engine import SdxlEngine
    engine = SdxlEngine(EngineConfig(base_model='tiny', refiner_model='tiny', device='cpu',
                                     acceleration=AccelerationConfig(precision='fp8')))
    with pytest.raises(ModelLoadError, match='fp8 needs a CUDA GPU.*use precision fp16'):
        engine.load()
    assert not engine.is_loaded


def test_acceleration_config_checks_its_choices():
    """Unknown choices are refused with the allowed values; sizes parse from WxH."""
    with pytest.raises(ValueError, match='fp16, fp8'):
        AccelerationConfig(precision='int4')
    assert AccelerationConfig(prepare_sizes=('1152x896', (64, 32))).prepare_sizes == \
        ((1152, 896), (64, 32))
    assert parse_size('832X1216') == (832, 1216)
    with pytest.raises(ValueError, match='WIDTHxHEIGHT'):
        parse_size('1024')
    assert AccelerationConfig().prepare_sizes == STANDARD_SIZES and len(STANDARD_SIZES) == 9


def test_cpu_engine_is_untouched_and_gives_the_same_image(plain_image):
    """fast_path on a CPU applies nothing (quietly) and renders the same image exactly."""
    fast = tiny_engine(fast_path=True)
    accel = fast.accelerator
    assert accel is not None and not accel.enabled and accel.applied == []
    assert 'CUDA' in accel.reason
    assert_plain_modules(fast)
    image = fast.generate(tiny_request(seed=11)).images[0]
    assert image.dtype == np.uint8 and np.array_equal(image, plain_image)


# ------------------------------------------------------------------- degrading
_HIDDEN_TRITON = """
import importlib.abc, logging, sys
class RefuseTriton(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'triton' or name.startswith('triton.'):
            raise ModuleNotFoundError('No module named ' + repr(name) + ' (hidden by the test)')
        return None
sys.meta_path.insert(0, RefuseTriton())
for name in [m for m in sys.modules if m == 'triton' or m.startswith('triton.')]:
    del sys.modules[name]
sys.path.insert(0, {test_dir!r})
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger('sdxl_ros').addHandler(Keep())
logging.getLogger('sdxl_ros').setLevel(logging.INFO)
import numpy as np
from engine_fixtures import tiny_engine, tiny_request
from sdxl_ros.engine import AccelerationConfig
fast = tiny_engine(fast_path=True, acceleration=AccelerationConfig(simulate_cuda=True))
accel = fast.accelerator
image = fast.generate(tiny_request(seed=11)).images[0]
np.save({out!r}, image)
print('ENABLED', accel.enabled)
print('REASON', accel.reason)
print('OFF_LINES', sum('fast path off' in r for r in records))
print('LINE', [r for r in records if 'fast path off' in r])
"""


@needs_set_stance
def test_triton_hidden_turns_the_fast_path_off_with_one_line(tmp_path, plain_image):
    """With Triton refused by the import system a (simulated) GPU serves plainly and says why."""
    out = tmp_path / 'image.npy'
    script = _HIDDEN_TRITON.format(test_dir=os.path.dirname(__file__), out=str(out))
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(' ', 1) for line in proc.stdout.splitlines()
                 if line.split(' ', 1)[0] in ('ENABLED', 'REASON', 'OFF_LINES', 'LINE'))
    assert lines['ENABLED'] == 'False'
    assert lines['REASON'].startswith('triton not importable')
    assert lines['OFF_LINES'] == '1'
    assert 'images ~2x slower' in lines['LINE']
    assert np.array_equal(np.load(out), plain_image)


@needs_set_stance
def test_compile_failure_while_preparing_falls_back_bit_exactly(caplog, plain_image):
    """A compiler that raises switches the fast path off (one line); images are plain again."""
    engine = tiny_engine(fast_path=True, acceleration=simulated(
        compile_backend=failing_backend))
    accel = engine.accelerator
    assert accel.enabled and 'compile_regional:default' in accel.applied
    with caplog.at_level(logging.WARNING, logger='sdxl_ros'):
        engine.prepare_fast_path()
    assert not accel.enabled and accel.reason.startswith('preparing failed')
    assert 'compiler exploded' in accel.reason
    assert len(off_lines(caplog)) == 1
    assert_plain_modules(engine)
    assert np.array_equal(engine.generate(tiny_request(seed=11)).images[0], plain_image)


@needs_set_stance
def test_failure_while_applying_falls_back_bit_exactly(caplog, plain_image):
    """A failure half-way through applying undoes what was applied."""
    with caplog.at_level(logging.WARNING, logger='sdxl_ros'):
        engine = tiny_engine(fast_path=True, acceleration=simulated(fault_at='apply'))
    assert not engine.accelerator.enabled
    assert 'applying failed' in engine.accelerator.reason
    assert len(off_lines(caplog)) == 1
    assert_plain_modules(engine)
    assert np.array_equal(engine.generate(tiny_request(seed=11)).images[0], plain_image)


@needs_set_stance
def test_failure_inside_a_goal_is_served_plainly(caplog, plain_image):
    """A fast-path UNet call raising mid-goal: the goal is redone plainly and succeeds."""
    engine = tiny_engine(fast_path=True, acceleration=simulated(fault_at='goal'))
    assert engine.accelerator.enabled
    with caplog.at_level(logging.WARNING, logger='sdxl_ros'):
        image = engine.generate(tiny_request(seed=11)).images[0]
    assert np.array_equal(image, plain_image)
    assert not engine.accelerator.enabled and 'failed during a goal' in engine.accelerator.reason
    assert len(off_lines(caplog)) == 1
    assert_plain_modules(engine)


@needs_set_stance
def test_a_goal_run_again_without_the_fast_path_says_so_with_its_cost(caplog):
    """The retry is explicit: one 'retrying' progress event first, one log line with the cost."""
    engine = tiny_engine(fast_path=True, acceleration=simulated(fault_at='goal'))
    events = []
    with caplog.at_level(logging.WARNING, logger='sdxl_ros'):
        engine.generate(tiny_request(seed=11), on_progress=events.append)
    stages = [event.stage for event in events]
    # The injected fault fires in the first UNet call, before any step was reported.
    assert stages[0] == 'retrying' and stages.count('retrying') == 1
    assert events[0].elapsed_sec >= 0 and stages[-1] == 'decoding'
    lost = [r.getMessage() for r in caplog.records
            if 'runs again without the fast path' in r.getMessage()]
    assert len(lost) == 1 and re.search(r'; \d+\.\d\d s of its work was lost$', lost[0])


@needs_set_stance
def test_out_of_memory_in_a_goal_is_not_mistaken_for_a_fast_path_failure():
    """OOM stays OutOfMemory (the node's refusal), and the fast path stays on."""
    from sdxl_ros.engine import OutOfMemory
    engine = tiny_engine(fast_path=True, fault_oom_at_step=2, acceleration=simulated())
    with pytest.raises(OutOfMemory):
        engine.generate(tiny_request(seed=11))
    assert engine.accelerator.enabled


# ------------------------------------------------------------------- no goal waits
@needs_set_stance
def test_unprepared_goal_compiles_nothing_then_preparing_compiles(plain_image):
    """A goal before preparation runs eagerly (no compile in the goal); preparing compiles."""
    backend = CountingBackend()
    engine = tiny_engine(fast_path=True, acceleration=simulated(compile_backend=backend))
    accel = engine.accelerator
    image = engine.generate(tiny_request(seed=11)).images[0]
    assert backend.graphs == 0
    assert_images_close(image, plain_image)
    assert accel.has_work()
    engine.prepare_fast_path()
    assert backend.graphs > 0 and not accel.has_work()
    assert accel.prepared_sizes == [(64, 64)] and (1, 4, 8, 8) in accel.vae_ready
    after = backend.graphs
    assert_images_close(engine.generate(tiny_request(seed=11)).images[0], plain_image)
    assert backend.graphs == after and accel.enabled


@needs_set_stance
def test_a_goal_queues_what_it_met_unprepared(plain_image):
    """With nothing to prepare configured, a goal's own size is queued for preparation."""
    engine = tiny_engine(fast_path=True, acceleration=simulated(prepare_sizes=()))
    accel = engine.accelerator
    assert not accel.has_work()
    assert_images_close(engine.generate(tiny_request(seed=11)).images[0], plain_image)
    assert ('vae', (1, 4, 8, 8)) in accel._pending  # the decode it ran eagerly
    engine.prepare_fast_path()
    assert (1, 4, 8, 8) in accel.vae_ready and not accel.has_work()


@needs_set_stance
def test_background_preparation_runs_after_load_and_goals_still_succeed(plain_image):
    """The preparer thread prepares the configured sizes while the engine serves goals."""
    backend = CountingBackend()
    engine = tiny_engine(fast_path=True, acceleration=simulated(
        compile_backend=backend, background_prepare=True))
    image = engine.generate(tiny_request(seed=11)).images[0]  # right after load
    assert_images_close(image, plain_image)
    deadline = time.monotonic() + 240
    while engine.accelerator.has_work() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engine.accelerator.prepared_sizes == [(64, 64)] and backend.graphs > 0
    assert engine.accelerator.enabled
    engine.unload()
    assert engine._preparer is None


class FakeSource:
    """Work made of units of `stages` stages of `stage_sec` each, yielding like the real one."""

    def __init__(self, units, stages, stage_sec):
        """Queue `units` units."""
        self.pending = list(range(units))
        self.stages, self.stage_sec = stages, stage_sec
        self.done, self.started = [], threading.Event()

    def has_work(self):
        """Whether units are pending."""
        return bool(self.pending)

    def prepare_next(self, should_yield):
        """Do the first unit stage by stage, yielding (unit kept) when asked."""
        self.started.set()
        for _ in range(self.stages):
            if should_yield():
                raise Yielded()
            time.sleep(self.stage_sec)
        self.done.append(self.pending.pop(0))


def test_a_goal_waits_for_one_stage_of_preparation_at_most():
    """A goal arriving mid-unit gets the engine after one stage; the unit resumes afterwards."""
    source = FakeSource(units=3, stages=20, stage_sec=0.05)  # 1 s per unit
    lock, gate = threading.Lock(), GoalGate()
    failures = []
    preparer = BackgroundPreparer(source, lock, gate, Yielded, failures.append).start()
    try:
        assert source.started.wait(10)
        time.sleep(0.2)  # well inside the first unit
        start = time.monotonic()
        with gate.goal(), lock:
            waited = time.monotonic() - start
            assert not source.done  # the unit in progress gave way
            time.sleep(0.3)  # the goal's own work; preparation must not resume meanwhile
            assert not source.done
        assert waited < 0.5, f'goal waited {waited:.2f} s for preparation'
        deadline = time.monotonic() + 20
        while source.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.done == [0, 1, 2] and preparer.yields >= 1 and not failures
    finally:
        preparer.stop(timeout=10)
    assert not preparer.alive


def test_preparer_failure_is_reported_and_stops():
    """A unit that fails for a reason other than yielding ends preparation via on_failure."""
    class Broken(FakeSource):
        def prepare_next(self, should_yield):
            raise RuntimeError('capture failed')
    failures = []
    preparer = BackgroundPreparer(Broken(1, 1, 0), threading.Lock(), GoalGate(), Yielded,
                                  failures.append).start()
    deadline = time.monotonic() + 10
    while preparer.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not preparer.alive and [str(e) for e in failures] == ['capture failed']


# ------------------------------------------------------------------- pieces
def _unet_inputs(unet, batch=2):
    """CFG-shaped inputs for the tiny UNet."""
    config = unet.config
    gen = torch.Generator().manual_seed(3)
    text_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    sample = torch.randn(batch, config.in_channels, 8, 8, generator=gen)
    hidden = torch.randn(batch, 77, config.cross_attention_dim, generator=gen)
    cond = {'text_embeds': torch.randn(batch, text_dim, generator=gen),
            'time_ids': torch.ones(batch, 6)}
    return sample, torch.tensor(500.0), hidden, cond


def test_unet_key_matches_the_pipelines_shapes():
    """The signature prepared for a size is the one the base and refiner calls produce."""
    engine = tiny_engine(fast_path=False)
    pooled = engine.base_pipeline.text_encoder_2.config.projection_dim
    for pipe, ids in ((engine.base_pipeline, 6), (engine.refiner_pipeline, 5)):
        key = unet_key(pipe.unet, 96, 64, pooled)
        assert key[0][0] == (2, pipe.unet.config.in_channels, 8, 12)
        assert key[1] == ((), torch.float32)
        assert key[2][0] == (2, 77, pipe.unet.config.cross_attention_dim)
        assert key[3][0] == (2, pooled) and key[4][0] == (2, ids) and key[5] is False


@needs_set_stance
def test_graphed_unet_serves_cpu_calls_eagerly():
    """CPU tensors cannot be graphed: the wrapper calls the module's own forward, same result."""
    engine = tiny_engine(fast_path=False)
    unet = engine.base_pipeline.unet
    sample, t, hidden, cond = _unet_inputs(unet)
    with torch.no_grad():
        expected = unet(sample, t, encoder_hidden_states=hidden, added_cond_kwargs=cond,
                        return_dict=False)[0]
        graphed = GraphedUNet(unet)
        graphed.install()
        try:
            got = unet(sample, t, encoder_hidden_states=hidden, added_cond_kwargs=cond,
                       return_dict=False)[0]
            wrapped = unet(sample, t, encoder_hidden_states=hidden, added_cond_kwargs=cond)
        finally:
            graphed.uninstall()
    assert torch.equal(expected, got) and torch.equal(expected, wrapped.sample)
    assert graphed.fallbacks == 2 and graphed.replays == 0 and not graphed.graphs
    assert 'forward' not in unet.__dict__


def test_graphed_encoder_falls_back_to_the_plain_forward_on_cpu():
    """A text encoder wrapped for graphs gives the same outputs through its own forward."""
    pipe = tiny_engine(fast_path=False).base_pipeline
    ids = pipe.tokenizer_2('a robot', padding='max_length', max_length=77,
                           return_tensors='pt').input_ids
    encoder = pipe.text_encoder_2
    with torch.no_grad():
        expected = encoder(ids, output_hidden_states=True)
        graphed = GraphedEncoder(encoder)
        graphed.install()
        try:
            got = encoder(ids, output_hidden_states=True)
        finally:
            graphed.uninstall()
    assert type(got) is type(expected)
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got.hidden_states[-2], expected.hidden_states[-2])
    assert graphed.replays == 0 and not graphed.graphs
    assert 'forward' not in encoder.__dict__


def test_graph_signature_refuses_what_a_graph_cannot_serve():
    """No signature (so no graph) for CPU tensors, gradients or missing conditioning."""
    sample, t, hidden, cond = _unet_inputs(tiny_engine(fast_path=False).base_pipeline.unet)
    with torch.no_grad():
        assert GraphedUNet.signature_of(sample, t, hidden, cond, False) is None
        assert GraphedUNet.signature_of(sample, t, hidden, None, False) is None
        assert GraphedUNet.signature_of(sample, 500, hidden, cond, False) is None


def test_compile_regions_uses_the_given_blocks_and_can_be_undone():
    """Regional compile wraps each listed block (lazily) and uncompile restores them."""
    unet = tiny_engine(fast_path=False).base_pipeline.unet
    classes = ('ResnetBlock2D', 'Transformer2DModel')
    count = compile_regions(unet, classes)
    names = {type(m).__name__ for m in unet.modules()
             if getattr(m, '_compiled_call_impl', None) is not None}
    assert count > 0 and names == set(classes)
    assert '_repeated_blocks' not in unet.__dict__  # diffusers' class list is left alone
    uncompile_regions(unet)
    assert all(getattr(m, '_compiled_call_impl', None) is None for m in unet.modules())


@needs_set_stance
def test_compile_cache_folder_comes_from_the_config(tmp_path, monkeypatch):
    """Inductor's cache goes to compile_cache_dir, whatever the environment said before."""
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'elsewhere'))
    folder = tmp_path / 'inductor'
    engine = tiny_engine(fast_path=False)
    config = EngineConfig(base_model='tiny', refiner_model='tiny', device='cpu',
                          acceleration=simulated(compile_cache_dir=str(folder)))
    accel = accelerate_pipelines(engine.base_pipeline, engine.refiner_pipeline, config,
                                 torch.device('cpu'), torch.float32)
    assert accel.enabled and accel.cache_dir == str(folder) and folder.is_dir()
    assert os.environ['TORCHINDUCTOR_CACHE_DIR'] == str(folder)
    accel.disable('test over')


@pytest.mark.skipif(hasattr(torch.compiler, 'set_stance'),
                    reason='this torch has torch.compiler.set_stance: the fast path can run')
def test_old_torch_keeps_the_fast_path_off(caplog, plain_image):
    """Without set_stance (torch < 2.6) a (simulated) GPU serves plainly and says why, once."""
    with caplog.at_level(logging.INFO, logger='sdxl_ros'):
        engine = tiny_engine(fast_path=True, acceleration=simulated())
        image = engine.generate(tiny_request(seed=11)).images[0]
    assert not engine.accelerator.enabled
    assert engine.accelerator.reason == 'torch.compiler.set_stance missing (torch older than 2.6)'
    assert len(off_lines(caplog)) == 1
    assert_plain_modules(engine)
    assert np.array_equal(image, plain_image)
