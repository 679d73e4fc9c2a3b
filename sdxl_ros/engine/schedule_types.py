# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
A1111's schedule types (since web UI 1.9): the noise levels (sigmas) a sampler steps through.

Pure numpy, no torch: the ROS layer validates names with it and tests check every schedule
against hand-computed values. Each function returns A1111's full list of `steps + 1` sigmas,
largest first, usually ending in 0. The formulas follow A1111's `modules/sd_schedulers.py` and
k-diffusion's `get_sigmas_*` and `DiscreteSchedule` (time <-> sigma by linear interpolation in
log sigma over the model's 1000 training sigmas).
"""

import functools
import math

import numpy as np

#: A1111's labels, in its menu order. 'Automatic' = the sampler's own default.
SCHEDULE_TYPES = ('Automatic', 'Uniform', 'Karras', 'Exponential', 'Polyexponential',
                  'SGM Uniform', 'KL Optimal', 'Align Your Steps', 'Simple', 'Normal', 'DDIM',
                  'Beta')

# A1111's internal names and aliases (what its infotext reader also accepts), lower case.
_ALIASES = {'sgm_uniform': 'SGM Uniform', 'sgmuniform': 'SGM Uniform',
            'kl_optimal': 'KL Optimal', 'align_your_steps': 'Align Your Steps'}
_BY_LOWER = {**{label.lower(): label for label in SCHEDULE_TYPES}, **_ALIASES}

#: NVIDIA's published Align Your Steps sigmas for SDXL (10 steps + the final sigma_min).
AYS_SDXL_SIGMAS = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113,
                   0.029)
#: A1111's defaults for Karras (rho 7), Polyexponential (rho 1) and Beta (alpha = beta = 0.6).
KARRAS_RHO = 7.0
POLYEXPONENTIAL_RHO = 1.0
BETA_ALPHA = BETA_BETA = 0.6


#: A schedule must start at least this noisy (sigma 1 = as much noise as picture); lower, a
#: text-to-image run starts from an almost clean, i.e. empty, picture.
MIN_START_SIGMA = 1.0


class ScheduleError(ValueError):
    """A schedule type cannot give the asked number of steps; the message says why."""


def canonical_schedule_type(name):
    """Return A1111's label for a schedule type name (case/space-insensitive), or None."""
    if not isinstance(name, str):
        return None
    key = ' '.join(name.split()).lower()
    return 'Automatic' if not key else _BY_LOWER.get(key)


def schedule_type_suffix(name):
    """
    Split a sampler name that ends in a schedule type ("DPM++ 2M Karras") as A1111 does.

    Returns (name without the suffix, label), or (name, None) when it ends in none.
    """
    words = ' '.join(name.split())
    for option in sorted(_BY_LOWER, key=len, reverse=True):
        if option != 'automatic' and words.lower().endswith(' ' + option):
            return words[:-len(option) - 1], _BY_LOWER[option]
    return words, None


# ------------------------------------------------------------------ the model's noise levels
def training_sigmas(config):
    """
    Return the model's 1000 training sigmas, ascending, from a diffusers scheduler config.

    sigma_t = sqrt((1 - alphabar_t) / alphabar_t). alphabar is computed in float64 and kept
    as float32, as A1111 stores it, so the values match its `model_wrap.sigmas`.
    """
    steps = int(config.get('num_train_timesteps', 1000))
    start, end = float(config.get('beta_start', 0.00085)), float(config.get('beta_end', 0.012))
    kind = config.get('beta_schedule', 'scaled_linear')
    if kind == 'scaled_linear':
        betas = np.linspace(start ** 0.5, end ** 0.5, steps, dtype=np.float64) ** 2
    elif kind == 'linear':
        betas = np.linspace(start, end, steps, dtype=np.float64)
    else:
        raise ScheduleError(f'beta_schedule {kind!r} is not supported by the schedule types '
                            '(scaled_linear and linear are)')
    alphas_cumprod = np.cumprod(1.0 - betas).astype(np.float32)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).astype(np.float64)


def sigma_to_t(sigma, train_sigmas):
    """Return the (fractional) training timestep of each sigma: interpolated in log sigma."""
    log_sigmas = np.log(train_sigmas)
    return np.interp(np.log(np.maximum(sigma, 1e-10)), log_sigmas,
                     np.arange(len(train_sigmas), dtype=np.float64))


def t_to_sigma(t, train_sigmas):
    """Return the sigma of (fractional) timesteps t: log sigma interpolated between neighbours."""
    return np.exp(np.interp(t, np.arange(len(train_sigmas), dtype=np.float64),
                            np.log(train_sigmas)))


# ----------------------------------------------------------------------------- the schedules
def _uniform(n, train):
    """k-diffusion's `get_sigmas(n)` (A1111 'Uniform', also 'Normal'): t evenly from 999 to 0."""
    return np.append(t_to_sigma(np.linspace(len(train) - 1, 0, n), train), 0.0)


def _sgm_uniform(n, train):
    """Space n + 1 timesteps evenly from sigma_max's to sigma_min's; drop the last (trailing)."""
    start, end = sigma_to_t(np.array([train[-1], train[0]]), train)
    return np.append(t_to_sigma(np.linspace(start, end, n + 1)[:-1], train), 0.0)


def _karras(n, train, rho=KARRAS_RHO):
    """Karras et al. (2022): evenly spaced in sigma^(1/rho)."""
    low, high = train[0] ** (1 / rho), train[-1] ** (1 / rho)
    return np.append((high + np.linspace(0, 1, n) * (low - high)) ** rho, 0.0)


def _exponential(n, train):
    """Evenly spaced in log sigma."""
    return np.append(np.exp(np.linspace(math.log(train[-1]), math.log(train[0]), n)), 0.0)


def _polyexponential(n, train, rho=POLYEXPONENTIAL_RHO):
    """Raise a ramp in log sigma to the power `rho` (rho 1 = Exponential)."""
    ramp = np.linspace(1, 0, n) ** rho
    low, high = math.log(train[0]), math.log(train[-1])
    return np.append(np.exp(ramp * (high - low) + low), 0.0)


def _kl_optimal(n, train):
    """Evenly spaced in arctan(sigma), n + 1 values ending at sigma_min (no final 0)."""
    low, high = math.atan(train[0]), math.atan(train[-1])
    share = np.arange(n + 1) / n
    return np.tan(share * low + (1.0 - share) * high)


def _align_your_steps(n, train):
    """Interpolate the published SDXL 10-step sigmas log-linearly to n values, then 0."""
    published = np.array(AYS_SDXL_SIGMAS)
    if n == len(published):
        return np.append(published, 0.0)
    rising = np.log(published[::-1])
    values = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(published)), rising)
    return np.append(np.exp(values)[::-1], 0.0)


def _simple(n, train):
    """Every (1000 / n)-th training sigma counted from the largest."""
    stride = len(train) / n
    return np.append([train[-(1 + int(x * stride))] for x in range(n)], 0.0)


def _ddim(n, train):
    """Training sigmas 1, 1 + 1000 // n, ... below 1000, largest first (may give more than n)."""
    stride = max(len(train) // n, 1)
    return np.append(train[1::stride][::-1], 0.0)


def _beta(n, train, alpha=BETA_ALPHA, beta=BETA_BETA):
    """Lee et al. (2024): sigmas at the quantiles of a Beta(alpha, beta) distribution."""
    points = [beta_ppf(float(q), alpha, beta) for q in 1 - np.linspace(0, 1, n)]
    return np.append(train[0] + np.array(points) * (train[-1] - train[0]), 0.0)


_SCHEDULES = {'Uniform': _uniform, 'Normal': _uniform, 'SGM Uniform': _sgm_uniform,
              'Karras': _karras, 'Exponential': _exponential,
              'Polyexponential': _polyexponential, 'KL Optimal': _kl_optimal,
              'Align Your Steps': _align_your_steps, 'Simple': _simple, 'DDIM': _ddim,
              'Beta': _beta}


def raw_sigmas(schedule_type, steps, train_sigmas):
    """Return A1111's sigma list for `steps` as its function computes it (no checks)."""
    return np.asarray(_SCHEDULES[schedule_type](int(steps), train_sigmas), dtype=np.float64)


def schedule_sigmas(schedule_type, steps, train_sigmas, discard_penultimate=False):
    """
    Return the `steps + 1` sigmas a sampler steps through, or raise ScheduleError.

    `discard_penultimate`: as A1111 does for DPM2, DPM2 a and DPM++ 3M SDE, compute one step
    more and drop the next-to-last sigma. Refused: a count the type cannot give (DDIM's
    stride gives 8 steps for 7), and a schedule that starts below MIN_START_SIGMA (Align
    Your Steps at 1 step would start from an almost clean picture).
    """
    label = canonical_schedule_type(schedule_type)
    if label is None or label == 'Automatic':
        raise ScheduleError(f'no sigma list for schedule type {schedule_type!r}')
    if steps < 1:
        raise ScheduleError(f'{label} needs at least 1 step, got {steps}')
    sigmas, problem = _checked(label, steps, train_sigmas, discard_penultimate)
    if problem == 'count':
        counts = [n for n in range(max(1, steps - 10), steps + 11)
                  if _checked(label, n, train_sigmas, discard_penultimate)[1] is None]
        raise ScheduleError(
            f'schedule type {label} gives {len(sigmas) - 1} steps, not {steps} (it takes every '
            f'({len(train_sigmas)} // steps)-th noise level); step counts near it that it gives '
            'exactly: ' + ', '.join(map(str, counts)))
    if problem == 'start':
        raise ScheduleError(
            f'schedule type {label} at {steps} step(s) starts at sigma {sigmas[0]:.3g} (full '
            f'noise is {train_sigmas[-1]:.4g}): too little noise to draw a picture from; use '
            'more steps or another schedule type')
    if problem == 'repeat':
        raise ScheduleError(f'schedule type {label} repeats a noise level at {steps} steps: '
                            'use fewer steps')
    return sigmas


def _checked(label, steps, train_sigmas, discard_penultimate):
    """Return (A1111's list for `steps`, None or which rule it breaks: count/start/repeat)."""
    if discard_penultimate:
        sigmas = raw_sigmas(label, steps + 1, train_sigmas)
        sigmas = np.append(sigmas[:-2], sigmas[-1])
    else:
        sigmas = raw_sigmas(label, steps, train_sigmas)
    if len(sigmas) != steps + 1:
        return sigmas, 'count'
    if sigmas[0] < MIN_START_SIGMA:
        return sigmas, 'start'
    if np.any(np.diff(sigmas[:-1]) >= 0):
        return sigmas, 'repeat'
    return sigmas, None


# ---------------------------------------------------------------- Beta distribution quantile
def _beta_continued_fraction(x, a, b):
    """Continued fraction of the incomplete beta function (modified Lentz, 200 terms)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 200):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def beta_cdf(x, a, b):
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(x, a, b) / a
    return 1.0 - front * _beta_continued_fraction(1.0 - x, b, a) / b


@functools.lru_cache(maxsize=4096)
def beta_ppf(q, a, b):
    """
    Return x with I_x(a, b) = q (the Beta distribution's quantile), by bisection.

    Hand-written on purpose, as the LMS coefficients are: scipy.stats.beta.ppf is what A1111
    calls, and scipy is a large dependency for a robot. The CDF is monotone, so 64 halvings
    pin x to float64 precision; results are cached (a goal asks for the same ones several
    times: plan, base, refiner).
    """
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(64):
        middle = 0.5 * (low + high)
        if beta_cdf(middle, a, b) < q:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)
