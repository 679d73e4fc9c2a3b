# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""A1111 samplers map onto diffusers schedulers that build offline and hold A1111's sigmas."""

import logging

import numpy as np
import pytest

from sdxl_ros.engine.schedule_types import (schedule_sigmas, SCHEDULE_TYPES, ScheduleError,
                                            training_sigmas)
from sdxl_ros.engine.schedulers import (canonical_scheduler_name, check_schedule,
                                        lcm_timesteps, make_scheduler, parse_sampler_name,
                                        resolve_schedule_type, SAMPLERS, schedule_problem,
                                        schedule_type_problem, SCHEDULER_NAMES)

SDXL_SCHEDULER_CONFIG = {
    '_class_name': 'EulerDiscreteScheduler', 'beta_start': 0.00085, 'beta_end': 0.012,
    'beta_schedule': 'scaled_linear', 'num_train_timesteps': 1000,
    'prediction_type': 'epsilon', 'steps_offset': 1, 'timestep_spacing': 'leading',
    'use_karras_sigmas': True,
}
TRAIN = training_sigmas(SDXL_SCHEDULER_CONFIG)

REQUIRED = ['Euler', 'Euler a', 'DPM++ 2M', 'DPM++ SDE', 'DDIM', 'UniPC', 'Heun', 'LMS',
            'DPM++ 2M SDE', 'LCM', 'DPM++ 2S a', 'DPM++ 3M SDE', 'DPM++ 2M SDE Heun']


def test_required_names_present():
    assert set(REQUIRED) <= set(SCHEDULER_NAMES)


def test_canonical_names():
    assert canonical_scheduler_name('euler a') == 'Euler a'
    assert canonical_scheduler_name('  DPM++   2M karras ') == 'DPM++ 2M Karras'
    assert canonical_scheduler_name('nope') is None
    assert canonical_scheduler_name(None) is None
    assert parse_sampler_name('dpm++ 2m sde heun exponential') == ('DPM++ 2M SDE Heun',
                                                                   'Exponential')


# A1111 1.9+'s default schedule type of each sampler (sd_samplers_kdiffusion's table).
@pytest.mark.parametrize('sampler, automatic', [
    ('DPM++ 2M', 'Karras'), ('DPM++ SDE', 'Karras'), ('DPM++ 2M SDE', 'Exponential'),
    ('DPM++ 2M SDE Heun', 'Exponential'), ('DPM++ 2S a', 'Karras'),
    ('DPM++ 3M SDE', 'Exponential'), ('DPM2', 'Karras'), ('DPM2 a', 'Karras'),
    ('Euler', 'Uniform'), ('Euler a', 'Uniform'), ('LMS', 'Uniform'), ('Heun', 'Uniform'),
    ('LCM', 'Uniform'), ('DDIM', ''), ('UniPC', ''), ('DEIS', ''),
])
def test_automatic_is_a1111s_default_for_the_sampler(sampler, automatic):
    assert resolve_schedule_type(sampler, '') == automatic
    assert resolve_schedule_type(sampler, 'Automatic') == automatic
    assert resolve_schedule_type(sampler, 'beta') == 'Beta'


def applicable():
    """Every (sampler, schedule type) the table allows, Automatic included."""
    return [(s, t) for s in SCHEDULER_NAMES for t in SCHEDULE_TYPES
            if schedule_type_problem(s, t) is None]


@pytest.mark.parametrize('name, schedule_type', applicable())
def test_every_combination_builds_and_holds_its_sigmas(name, schedule_type):
    logging.getLogger('diffusers').setLevel(logging.ERROR)
    for steps in (2, 5):
        try:
            schedule_problem(name, schedule_type, steps)
        except ScheduleError:
            continue
        scheduler = make_scheduler(name, SDXL_SCHEDULER_CONFIG, schedule_type)
        scheduler.set_timesteps(steps)
        assert len(scheduler.timesteps) >= steps
        check_schedule(scheduler, steps)
        resolved = resolve_schedule_type(name, schedule_type)
        if resolved and SAMPLERS[name].route in ('sigmas', 'ancestral'):
            wanted = schedule_sigmas(resolved, steps, TRAIN, SAMPLERS[name].discard_penultimate)
            have = np.asarray(scheduler.sigmas, dtype=np.float64)
            # float32 in diffusers: every sigma of the schedule is there to 1e-6 relative.
            assert all(np.isclose(have, s, rtol=1e-6).any() for s in wanted[:-1])


def test_karras_sigmas_equal_diffusers_own_karras_over_the_full_range():
    # Two independent implementations of Karras et al.: ours (A1111's) and diffusers'.
    # diffusers' DPM-Solver spans the model's whole sigma range as A1111 does; its Euler
    # with SDXL's 'leading' spacing would start at t=858 (sigma 6.57), not 999.
    import diffusers
    theirs = diffusers.DPMSolverMultistepScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    theirs.set_timesteps(7)
    ours = make_scheduler('Euler', SDXL_SCHEDULER_CONFIG, 'Karras')
    ours.set_timesteps(7)
    assert np.allclose(ours.sigmas.numpy(), theirs.sigmas.numpy(), rtol=1e-6)
    assert ours.sigmas[0] == pytest.approx(14.6146, abs=1e-4)


def test_old_karras_name_and_schedule_type_build_the_same_scheduler():
    old = make_scheduler('DPM++ 2M Karras', SDXL_SCHEDULER_CONFIG)
    new = make_scheduler('DPM++ 2M', SDXL_SCHEDULER_CONFIG, 'Karras')
    auto = make_scheduler('DPM++ 2M', SDXL_SCHEDULER_CONFIG)
    for scheduler in (old, new, auto):
        scheduler.set_timesteps(4)
    assert old.sigmas.tolist() == new.sigmas.tolist() == auto.sigmas.tolist()
    # diffusers' DPM-Solver rounds the timesteps of Karras sigmas to integers.
    assert old.timesteps.tolist() == [999, 687, 146, 0]


def test_sgm_uniform_is_a1111s_timesteps_on_euler_and_trailing_on_ddim():
    euler = make_scheduler('Euler a', SDXL_SCHEDULER_CONFIG, 'SGM Uniform')
    euler.set_timesteps(4)
    assert euler.timesteps.tolist() == [999.0, 749.25, 499.5, 249.75]
    ddim = make_scheduler('DDIM', SDXL_SCHEDULER_CONFIG, 'sgm uniform')
    ddim.set_timesteps(4)
    # diffusers' trailing spacing: A1111's timesteps rounded down to integers.
    assert ddim.timesteps.tolist() == [999, 749, 499, 249]
    default_ddim = make_scheduler('DDIM', SDXL_SCHEDULER_CONFIG)
    default_ddim.set_timesteps(4)
    assert default_ddim.timesteps.tolist() == [751, 501, 251, 1]  # leading + steps_offset


def test_lcm_follows_a1111s_lcm_grid():
    # A1111's LCM: 50 distilled timesteps 19, 39, ..., 999; Uniform picks grid indices
    # linspace(49, 0, n) rounded to the nearest: 49, 33, 16, 0 for 4 steps.
    assert lcm_timesteps('Uniform', 4, TRAIN) == [999, 679, 339, 19]
    assert lcm_timesteps('Uniform', 1, TRAIN) == [999]
    lcm = make_scheduler('LCM', SDXL_SCHEDULER_CONFIG)
    lcm.set_timesteps(4)
    assert lcm.timesteps.tolist() == [999, 679, 339, 19]
    sgm = make_scheduler('LCM', SDXL_SCHEDULER_CONFIG, 'SGM Uniform')
    sgm.set_timesteps(2)
    assert sgm.timesteps.tolist() == [999, 499]  # grid indices 49, 24.5 -> 24
    with pytest.raises(ScheduleError, match='two steps at the same timestep'):
        lcm_timesteps('Uniform', 51, TRAIN)


def test_ddim_refuses_types_it_cannot_take():
    assert 'cannot use schedule type Karras' in schedule_type_problem('DDIM', 'Karras')
    with pytest.raises(ValueError, match='DDIMScheduler takes no custom sigmas'):
        make_scheduler('DDIM', SDXL_SCHEDULER_CONFIG, 'Karras')


def test_check_schedule_catches_a_scheduler_that_ignored_the_sigmas():
    scheduler = make_scheduler('Euler', SDXL_SCHEDULER_CONFIG, 'Exponential')
    scheduler.set_timesteps(4)
    check_schedule(scheduler, 4)
    scheduler.sigmas = scheduler.sigmas * 1.01
    with pytest.raises(ValueError, match='did not take the Exponential sigmas'):
        check_schedule(scheduler, 4)


def test_unknown_name_raises():
    with pytest.raises(ValueError, match='unknown scheduler'):
        make_scheduler('DPM fast', SDXL_SCHEDULER_CONFIG)
    with pytest.raises(ValueError, match="'Restart': Restart .* no diffusers scheduler"):
        make_scheduler('Restart', SDXL_SCHEDULER_CONFIG)


def test_lms_needs_no_scipy_and_integrates_exactly():
    scheduler = make_scheduler('LMS', SDXL_SCHEDULER_CONFIG)
    scheduler.set_timesteps(10)
    # First-order coefficient is the plain step width sigma_{t+1} - sigma_t.
    sigmas = scheduler.sigmas
    assert scheduler.get_lms_coefficient(1, 0, 0) == pytest.approx(float(sigmas[1] - sigmas[0]))
    # Higher-order coefficients of one step sum to that width too (Lagrange basis sums to 1).
    total = sum(scheduler.get_lms_coefficient(3, 3, k) for k in range(3))
    assert total == pytest.approx(float(sigmas[4] - sigmas[3]), rel=1e-9)


@pytest.mark.parametrize('steps', [2, 4, 8])
def test_lcm_with_sgm_uniform_is_diffusers_own_lcm_schedule(steps):
    # What the LCM authors' scheduler picks by itself: the schedule to use for LCM-LoRA.
    import diffusers
    theirs = diffusers.LCMScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    theirs.set_timesteps(steps)
    assert lcm_timesteps('SGM Uniform', steps, TRAIN) == theirs.timesteps.tolist()
