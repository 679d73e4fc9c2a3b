# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""A1111's schedule types give A1111's sigmas: checked against values worked out by hand."""

import math

import numpy as np
import pytest

from sdxl_ros.engine.schedule_types import (AYS_SDXL_SIGMAS, beta_cdf, beta_ppf,
                                            canonical_schedule_type, schedule_sigmas,
                                            schedule_type_suffix, SCHEDULE_TYPES,
                                            ScheduleError, sigma_to_t, t_to_sigma,
                                            training_sigmas)

SDXL = {'beta_start': 0.00085, 'beta_end': 0.012, 'beta_schedule': 'scaled_linear',
        'num_train_timesteps': 1000}
TRAIN = training_sigmas(SDXL)
LOW, HIGH = TRAIN[0], TRAIN[-1]
# Same-formula values are compared to float64 rounding; A1111 computes in float32.
EXACT = {'rel': 1e-9, 'abs': 1e-12}


def between(t):
    """Sigma halfway (in log sigma) between training steps floor(t) and floor(t) + 1."""
    return math.sqrt(TRAIN[int(t)] * TRAIN[int(t) + 1])


def test_training_sigmas_are_sdxls():
    assert len(TRAIN) == 1000 and np.all(np.diff(TRAIN) > 0)
    # sigma_0 = sqrt(beta_0 / (1 - beta_0)); sigma_999 is the 14.6146 A1111 and AYS use.
    # alphabar is kept in float32, as A1111 keeps it: 1 - 0.00085 loses ~1e-5 of sigma_0.
    assert LOW == pytest.approx(math.sqrt(0.00085 / 0.99915), rel=2e-5)
    assert HIGH == pytest.approx(14.6146, abs=1e-4)


def test_time_and_sigma_convert_by_log_interpolation():
    assert t_to_sigma(499.5, TRAIN) == pytest.approx(between(499), **EXACT)
    assert sigma_to_t(np.array([between(499)]), TRAIN)[0] == pytest.approx(499.5, rel=1e-9)
    assert sigma_to_t(np.array([HIGH * 2, LOW / 2]), TRAIN).tolist() == [999.0, 0.0]


def test_names_are_a1111s_case_insensitive_with_its_aliases():
    assert len(SCHEDULE_TYPES) == 12 and SCHEDULE_TYPES[0] == 'Automatic'
    assert canonical_schedule_type('') == 'Automatic'
    assert canonical_schedule_type(' sgm  UNIFORM ') == 'SGM Uniform'
    assert canonical_schedule_type('sgm_uniform') == 'SGM Uniform'
    assert canonical_schedule_type('SGMUniform') == 'SGM Uniform'
    assert canonical_schedule_type('align_your_steps') == 'Align Your Steps'
    assert canonical_schedule_type('kl optimal') == 'KL Optimal'
    assert canonical_schedule_type('Karras Exponential') is None
    assert canonical_schedule_type(None) is None


@pytest.mark.parametrize('name, split', [
    ('DPM++ 2M Karras', ('DPM++ 2M', 'Karras')),
    ('Euler  SGM Uniform', ('Euler', 'SGM Uniform')),
    ('Euler uniform', ('Euler', 'Uniform')),
    ('DPM++ 2M', ('DPM++ 2M', None)),
    ('Karras', ('Karras', None)),
])
def test_suffix_split_as_a1111_reads_old_names(name, split):
    assert schedule_type_suffix(name) == split


def test_uniform_and_normal():
    # k-diffusion get_sigmas(3): t = 999, 499.5, 0.
    for name in ('Uniform', 'Normal'):
        assert schedule_sigmas(name, 3, TRAIN) == pytest.approx(
            [HIGH, between(499), LOW, 0.0], **EXACT)


def test_sgm_uniform_drops_the_last_of_n_plus_one_timesteps():
    # t = 999, 666, 333 (linspace(999, 0, 4)[:-1]).
    assert schedule_sigmas('SGM Uniform', 3, TRAIN) == pytest.approx(
        [HIGH, TRAIN[666], TRAIN[333], 0.0], **EXACT)


def test_karras():
    ramp = [0, 1 / 3, 2 / 3, 1]
    expected = [(HIGH ** (1 / 7) + r * (LOW ** (1 / 7) - HIGH ** (1 / 7))) ** 7 for r in ramp]
    assert schedule_sigmas('Karras', 4, TRAIN) == pytest.approx(expected + [0.0], **EXACT)
    # The figures diffusers' own Karras code prints for SDXL at 4 steps.
    assert schedule_sigmas('Karras', 4, TRAIN)[:4] == pytest.approx(
        [14.6146, 3.1686, 0.4469, 0.0292], abs=1e-4)


def test_exponential_and_polyexponential():
    expected = [HIGH, math.sqrt(HIGH * LOW), LOW, 0.0]
    assert schedule_sigmas('Exponential', 3, TRAIN) == pytest.approx(expected, **EXACT)
    # rho 1 (A1111's default) is the exponential schedule.
    assert schedule_sigmas('Polyexponential', 3, TRAIN) == pytest.approx(expected, **EXACT)


def test_kl_optimal_ends_at_sigma_min_not_zero():
    middle = math.tan((math.atan(LOW) + math.atan(HIGH)) / 2)
    expected = [HIGH, middle, LOW]
    assert schedule_sigmas('KL Optimal', 2, TRAIN) == pytest.approx(expected, **EXACT)


def test_align_your_steps_published_and_interpolated():
    assert schedule_sigmas('Align Your Steps', 11, TRAIN) == pytest.approx(
        list(AYS_SDXL_SIGMAS) + [0.0], **EXACT)
    # 6 points on [0, 1] fall on every second published point: no interpolation needed.
    assert schedule_sigmas('Align Your Steps', 6, TRAIN) == pytest.approx(
        [14.615, 3.771, 1.342, 0.555, 0.234, 0.029, 0.0], **EXACT)
    # 5 points at 0, 1/4, ... 1 of the 10 published intervals: the 2nd and 4th lie halfway
    # (in log sigma) between two published values.
    assert schedule_sigmas('Align Your Steps', 5, TRAIN) == pytest.approx(
        [14.615, math.sqrt(3.771 * 2.181), 0.862, math.sqrt(0.380 * 0.234), 0.029, 0.0],
        **EXACT)


def test_simple_and_ddim_take_every_kth_training_sigma():
    assert schedule_sigmas('Simple', 4, TRAIN) == pytest.approx(
        [TRAIN[999], TRAIN[749], TRAIN[499], TRAIN[249], 0.0], **EXACT)
    assert schedule_sigmas('DDIM', 4, TRAIN) == pytest.approx(
        [TRAIN[751], TRAIN[501], TRAIN[251], TRAIN[1], 0.0], **EXACT)


def test_beta_uses_the_quantiles_of_beta_0_6_0_6():
    # Symmetric distribution: the median is 0.5, so the middle sigma is the mean of the ends.
    assert schedule_sigmas('Beta', 3, TRAIN) == pytest.approx(
        [HIGH, (LOW + HIGH) / 2, LOW, 0.0], **EXACT)


def test_beta_quantile_inverts_the_cdf_and_matches_known_cases():
    for q in (0.01, 0.1, 0.3, 0.77, 0.99):
        assert beta_cdf(beta_ppf(q, 0.6, 0.6), 0.6, 0.6) == pytest.approx(q, abs=1e-12)
        # Beta(1, 1) is uniform; Beta(2, 1) has CDF x^2.
        assert beta_ppf(q, 1.0, 1.0) == pytest.approx(q, abs=1e-12)
        assert beta_ppf(q, 2.0, 1.0) == pytest.approx(math.sqrt(q), abs=1e-12)
    mpmath = pytest.importorskip('mpmath')
    for x in (0.05, 0.4, 0.9):
        assert beta_cdf(x, 0.6, 0.6) == pytest.approx(
            float(mpmath.betainc(0.6, 0.6, 0, x, regularized=True)), abs=1e-12)


def test_discard_penultimate_computes_one_more_and_drops_the_next_to_last():
    five = schedule_sigmas('Karras', 5, TRAIN)
    assert schedule_sigmas('Karras', 4, TRAIN, discard_penultimate=True) == pytest.approx(
        np.append(five[:4], 0.0), **EXACT)


@pytest.mark.parametrize('name', SCHEDULE_TYPES[1:])
def test_one_step_where_a_type_can_and_a_reason_where_not(name):
    if name in ('Align Your Steps', 'DDIM'):
        with pytest.raises(ScheduleError, match='starts at sigma 0.0'):
            schedule_sigmas(name, 1, TRAIN)
        return
    sigmas = schedule_sigmas(name, 1, TRAIN)
    assert len(sigmas) == 2 and sigmas[0] == pytest.approx(HIGH, rel=1e-9)


def test_ddim_step_counts_it_cannot_give_are_refused_with_the_ones_it_can():
    # Strides 1000 // n from 1: 6 -> 166 gives 7 levels, 11..17 give n + 1; 1 starts too low.
    with pytest.raises(ScheduleError, match=r'gives 8 steps, not 7.*exactly: 2, 3, 4, 5, 8, '
                                            r'9, 10$'):
        schedule_sigmas('DDIM', 7, TRAIN)


def test_automatic_has_no_list_of_its_own():
    with pytest.raises(ScheduleError, match='no sigma list'):
        schedule_sigmas('Automatic', 4, TRAIN)


def test_module_does_not_import_torch():
    import subprocess
    import sys
    code = ('import sys, sdxl_ros.engine.schedule_types, sdxl_ros.engine.schedulers; '
            'sys.exit(1 if "torch" in sys.modules else 0)')
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0
