# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""The A1111 sampler names map onto diffusers schedulers that build offline."""

import pytest

from sdxl_ros.engine.schedulers import canonical_scheduler_name, make_scheduler, SCHEDULER_NAMES

SDXL_SCHEDULER_CONFIG = {
    '_class_name': 'EulerDiscreteScheduler', 'beta_start': 0.00085, 'beta_end': 0.012,
    'beta_schedule': 'scaled_linear', 'num_train_timesteps': 1000,
    'prediction_type': 'epsilon', 'steps_offset': 1, 'timestep_spacing': 'leading',
    'use_karras_sigmas': True,
}

REQUIRED = ['Euler', 'Euler a', 'DPM++ 2M', 'DPM++ 2M Karras', 'DPM++ SDE Karras', 'DDIM',
            'UniPC', 'Heun', 'LMS', 'LMS Karras', 'DPM++ 2M SDE Karras']


def test_required_names_present():
    assert set(REQUIRED) <= set(SCHEDULER_NAMES)


def test_canonical_names():
    assert canonical_scheduler_name('euler a') == 'Euler a'
    assert canonical_scheduler_name('  DPM++   2M karras ') == 'DPM++ 2M Karras'
    assert canonical_scheduler_name('nope') is None
    assert canonical_scheduler_name(None) is None


@pytest.mark.parametrize('name', SCHEDULER_NAMES)
def test_every_scheduler_builds_and_sets_timesteps(name):
    scheduler = make_scheduler(name, SDXL_SCHEDULER_CONFIG)
    scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) >= 10
    karras = getattr(scheduler.config, 'use_karras_sigmas', None)
    if karras is not None:
        # The base config enables Karras sigmas; only "Karras" names may keep them.
        assert karras == name.endswith('Karras')


def test_unknown_name_raises():
    with pytest.raises(ValueError, match='unknown scheduler'):
        make_scheduler('DPM fast', SDXL_SCHEDULER_CONFIG)


def test_lms_needs_no_scipy_and_integrates_exactly():
    scheduler = make_scheduler('LMS', SDXL_SCHEDULER_CONFIG)
    scheduler.set_timesteps(10)
    # First-order coefficient is the plain step width sigma_{t+1} - sigma_t.
    sigmas = scheduler.sigmas
    assert scheduler.get_lms_coefficient(1, 0, 0) == pytest.approx(float(sigmas[1] - sigmas[0]))
    # Higher-order coefficients of one step sum to that width too (Lagrange basis sums to 1).
    total = sum(scheduler.get_lms_coefficient(3, 3, k) for k in range(3))
    assert total == pytest.approx(float(sigmas[4] - sigmas[3]), rel=1e-9)
