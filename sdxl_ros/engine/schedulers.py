# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
A1111's samplers mapped onto diffusers schedulers, and A1111's schedule types applied to them.

The table is plain data so that `sdxl_ros.engine.request` can validate names without importing
torch; `make_scheduler` imports diffusers only when a scheduler is actually built.

Since A1111 1.9 a sampler ("DPM++ 2M") and a schedule type ("Karras") are chosen separately;
the older combined names ("DPM++ 2M Karras") are still accepted and split the way A1111 splits
them. "Automatic" is the sampler's own default as A1111 picks it (Karras for DPM++ 2M, ...;
none = A1111's Uniform for Euler, Euler a, LMS, Heun and LCM; the diffusers scheduler's own
timesteps for DDIM, UniPC and DEIS, which A1111 runs as timestep samplers).

A schedule type becomes the sigmas of `schedule_types.schedule_sigmas`, handed to the
diffusers scheduler through the hook its `use_karras_sigmas` path calls (`_convert_to_karras`):
then each scheduler turns sigmas into timesteps, interleaves them (Heun, DPM2) and appends
the final sigma its own way. In this diffusers release only EulerDiscreteScheduler takes a
`sigmas=` argument, so the hook is the one route that reaches them all; it is used behind a
feature check, and `make_scheduler`'s result is checked to hold exactly those sigmas.
Euler a (no Karras path in diffusers) gets them set after its own `set_timesteps`; LCM and
DDIM take timesteps instead (see `SAMPLERS`).

Equivalences follow the diffusers documentation's A1111 table, with one deliberate change:
A1111's "DPM++ SDE" maps to diffusers' `DPMSolverSDEScheduler`, which needs the `torchsde`
package (and scipy). We use diffusers' singlestep DPM-Solver++ in its SDE variant instead
(`DPMSolverSinglestepScheduler(algorithm_type='sde-dpmsolver++')`): the same family (a
singlestep, second-order, stochastic DPM++ sampler) with no extra dependency.
"""

from dataclasses import dataclass, field
import inspect

from sdxl_ros.engine.schedule_types import (canonical_schedule_type, schedule_type_suffix,
                                            SCHEDULE_TYPES)


@dataclass(frozen=True)
class Sampler:
    """One A1111 sampler: its diffusers scheduler and how schedule types reach it."""

    #: diffusers class name and the config overrides that make it this sampler.
    class_name: str
    overrides: dict = field(default_factory=dict)
    #: A1111's 'Automatic' schedule type for it ('' = Uniform, or the scheduler's own steps).
    default_type: str = ''
    #: A1111 computes one sigma more and drops the next-to-last (DPM2, DPM2 a, DPM++ 3M SDE).
    discard_penultimate: bool = False
    #: 'sigmas' (any schedule type, via the Karras hook), 'ancestral' (any, set after
    #: set_timesteps), 'lcm' (any, as timesteps on LCM's 50-step grid), 'spacing' (only
    #: Automatic and SGM Uniform = trailing timestep spacing).
    route: str = 'sigmas'
    #: Whether diffusers' scheduler is A1111's sampler (False: the nearest diffusers has).
    exact: bool = True


#: Canonical A1111 sampler names (Karras etc. are schedule types now, not part of the name).
SAMPLERS = {
    'DPM++ 2M': Sampler('DPMSolverMultistepScheduler', {}, 'Karras'),
    'DPM++ SDE': Sampler('DPMSolverSinglestepScheduler',
                         {'algorithm_type': 'sde-dpmsolver++', 'lower_order_final': True},
                         'Karras', exact=False),
    'DPM++ 2M SDE': Sampler('DPMSolverMultistepScheduler',
                            {'algorithm_type': 'sde-dpmsolver++'}, 'Exponential'),
    'DPM++ 2M SDE Heun': Sampler('DPMSolverMultistepScheduler',
                                 {'algorithm_type': 'sde-dpmsolver++', 'solver_type': 'heun'},
                                 'Exponential'),
    'DPM++ 2S a': Sampler('DPMSolverSinglestepScheduler',
                          {'algorithm_type': 'dpmsolver++', 'solver_order': 2,
                           'lower_order_final': True}, 'Karras', exact=False),
    'DPM++ 3M SDE': Sampler('DPMSolverMultistepScheduler',
                            {'algorithm_type': 'sde-dpmsolver++', 'solver_order': 3},
                            'Exponential', discard_penultimate=True),
    'Euler a': Sampler('EulerAncestralDiscreteScheduler', {}, route='ancestral'),
    'Euler': Sampler('EulerDiscreteScheduler'),
    'LMS': Sampler('ExactLMSDiscreteScheduler'),
    'Heun': Sampler('HeunDiscreteScheduler'),
    'DPM2': Sampler('KDPM2DiscreteScheduler', {}, 'Karras', discard_penultimate=True),
    'DPM2 a': Sampler('KDPM2AncestralDiscreteScheduler', {}, 'Karras',
                      discard_penultimate=True),
    'LCM': Sampler('LCMScheduler', {}, route='lcm', exact=False),
    'DDIM': Sampler('DDIMScheduler', {}, route='spacing'),
    'UniPC': Sampler('UniPCMultistepScheduler'),
    'DEIS': Sampler('DEISMultistepScheduler'),
}

#: A1111 samplers diffusers has no counterpart for, with the reason given when one is asked.
UNAVAILABLE = {
    'restart': 'Restart (Xu et al. 2023) has no diffusers scheduler',
    'dpm fast': 'DPM fast has no diffusers scheduler',
    'dpm adaptive': 'DPM adaptive (adaptive step size) has no diffusers scheduler',
    'plms': 'PLMS has no diffusers scheduler for SDXL (PNDM differs)',
}

#: Canonical sampler names, in a stable order for messages and `ListModels`.
SCHEDULER_NAMES = tuple(SAMPLERS)

_BY_LOWER = {name.lower(): name for name in SCHEDULER_NAMES}


def parse_sampler_name(name):
    """
    Return (canonical sampler, schedule type label or None) for a sampler name, or None.

    Case and extra spaces are ignored; an A1111 pre-1.9 name ending in a schedule type
    ("dpm++ 2m karras") is split into sampler and type, as A1111 reads old infotext.
    """
    if not isinstance(name, str):
        return None
    words = ' '.join(name.split())
    if words.lower() in _BY_LOWER:
        return _BY_LOWER[words.lower()], None
    stem, label = schedule_type_suffix(words)
    if label is not None and stem.lower() in _BY_LOWER:
        return _BY_LOWER[stem.lower()], label
    return None


def canonical_scheduler_name(name):
    """Return the canonical spelling of a sampler name (case/space-insensitive), or None."""
    parsed = parse_sampler_name(name)
    if parsed is None:
        return None
    return parsed[0] + (f' {parsed[1]}' if parsed[1] else '')


def unknown_sampler_message(name):
    """Return the refusal for a sampler name that `parse_sampler_name` does not know."""
    reason = UNAVAILABLE.get(' '.join(str(name).split()).lower())
    known = 'use one of ' + ', '.join(SCHEDULER_NAMES)
    if reason:
        return f'unknown scheduler {name!r}: {reason}; {known}'
    return f'unknown scheduler {name!r}: {known}'


def resolve_schedule_type(sampler, schedule_type):
    """
    Return the schedule type a sampler actually uses: 'Automatic' becomes its default.

    '' when the sampler keeps its own steps (Automatic on DDIM, UniPC, DEIS) and 'Uniform'
    when A1111's default for it is the model's uniform spacing.
    """
    label = canonical_schedule_type(schedule_type)
    entry = SAMPLERS[sampler]
    if label != 'Automatic':
        return label
    if entry.default_type:
        return entry.default_type
    return '' if entry.route == 'spacing' or entry.class_name in (
        'UniPCMultistepScheduler', 'DEISMultistepScheduler') else 'Uniform'


def schedule_type_problem(sampler, schedule_type):
    """Return why `sampler` cannot use `schedule_type` (a readable reason), or None."""
    label = canonical_schedule_type(schedule_type)
    if label is None:
        return (f'unknown schedule_type {schedule_type!r}: use one of '
                + ', '.join(SCHEDULE_TYPES) + ' (empty = Automatic)')
    if SAMPLERS[sampler].route == 'spacing' and label not in ('Automatic', 'SGM Uniform'):
        return (f"sampler {sampler} cannot use schedule type {label}: diffusers' "
                f'{SAMPLERS[sampler].class_name} takes no custom sigmas, only its own '
                'timestep spacing (schedule types Automatic and SGM Uniform = trailing '
                'spacing); use a k-diffusion sampler such as Euler or DPM++ 2M')
    return None


def _exact_lms_class():
    """
    Build (once) an LMS scheduler whose coefficients need no scipy.

    Hand-written on purpose: diffusers' LMSDiscreteScheduler integrates a Lagrange basis
    polynomial with `scipy.integrate.quad`; scipy is a large dependency for robots. The
    integrand is a polynomial, so numpy integrates it exactly (and reproducibly).
    """
    global _EXACT_LMS
    if _EXACT_LMS is not None:
        return _EXACT_LMS
    # The module imports without scipy; only the package-level name is a scipy-less dummy.
    from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler
    from numpy.polynomial import Polynomial

    class ExactLMSDiscreteScheduler(LMSDiscreteScheduler):
        """LMSDiscreteScheduler with exact polynomial integration of its coefficients."""

        def get_lms_coefficient(self, order, t, current_order):
            """Integrate the Lagrange basis polynomial over [sigma_t, sigma_t+1] exactly."""
            sigmas = [float(s) for s in self.sigmas]
            basis = Polynomial([1.0])
            for k in range(order):
                if k == current_order:
                    continue
                denom = sigmas[t - current_order] - sigmas[t - k]
                basis = basis * Polynomial([-sigmas[t - k] / denom, 1.0 / denom])
            antiderivative = basis.integ()
            return float(antiderivative(sigmas[t + 1]) - antiderivative(sigmas[t]))

    # Saved pipelines name diffusers' class (see _scheduled_class).
    ExactLMSDiscreteScheduler.__name__ = LMSDiscreteScheduler.__name__
    ExactLMSDiscreteScheduler.__qualname__ = LMSDiscreteScheduler.__qualname__
    ExactLMSDiscreteScheduler.__module__ = LMSDiscreteScheduler.__module__
    _EXACT_LMS = ExactLMSDiscreteScheduler
    return _EXACT_LMS


_EXACT_LMS = None


#: The noise schedule every SDXL checkpoint uses (base and refiner): requests are checked
#: against it before a model is at hand.
SDXL_NOISE_CONFIG = {'beta_start': 0.00085, 'beta_end': 0.012,
                     'beta_schedule': 'scaled_linear', 'num_train_timesteps': 1000}


def schedule_problem(sampler, schedule_type, steps, noise_config=None):
    """
    Return the label of `schedule_type` for `sampler` at `steps`, or raise ScheduleError.

    Refused with the reason: an unknown type, a type the sampler cannot use, and a step
    count the type cannot give (checked on SDXL's noise schedule unless `noise_config`).
    """
    from sdxl_ros.engine.schedule_types import schedule_sigmas, ScheduleError, training_sigmas
    problem = schedule_type_problem(sampler, schedule_type)
    if problem:
        raise ScheduleError(problem)
    label = canonical_schedule_type(schedule_type)
    resolved = resolve_schedule_type(sampler, label)
    if resolved:
        train = training_sigmas(noise_config or SDXL_NOISE_CONFIG)
        if SAMPLERS[sampler].route == 'lcm':
            lcm_timesteps(resolved, steps, train)
        elif resolved != 'SGM Uniform' or SAMPLERS[sampler].route != 'spacing':
            schedule_sigmas(resolved, steps, train, SAMPLERS[sampler].discard_penultimate)
    return label


def _train_sigmas(scheduler):
    """Return the training sigmas of a built scheduler's config (numpy, ascending)."""
    from sdxl_ros.engine.schedule_types import training_sigmas
    return training_sigmas(scheduler.config)


def _lcm_grid(train_sigmas):
    """
    Return LCM's 50 distilled timesteps (19, 39, ..., 999) and their sigmas.

    A1111's LCM sampler works on this grid: schedules span its sigmas and each step runs at
    the grid timestep nearest in log sigma.
    """
    import numpy as np
    timesteps = np.arange(19, len(train_sigmas), 20)
    return timesteps, train_sigmas[timesteps]


def lcm_timesteps(schedule_type, steps, train_sigmas):
    """Return the LCM timesteps of a schedule type (A1111's LCM rule); ScheduleError if not."""
    import numpy as np
    from sdxl_ros.engine.schedule_types import schedule_sigmas, ScheduleError
    grid, grid_sigmas = _lcm_grid(train_sigmas)
    sigmas = schedule_sigmas(schedule_type, steps, grid_sigmas)[:-1]
    nearest = np.abs(np.log(sigmas)[:, None] - np.log(grid_sigmas)[None, :]).argmin(axis=1)
    timesteps = [int(grid[i]) for i in nearest]
    if len(set(timesteps)) != len(timesteps):
        raise ScheduleError(
            f'LCM with schedule type {schedule_type} at {steps} steps runs two steps at the '
            f'same timestep ({timesteps}): LCM has 50 distilled timesteps; use fewer steps')
    return timesteps


def _schedule_sigmas(scheduler, steps):
    """Return the sigmas (numpy, with the final one) that `scheduler` was built to use."""
    from sdxl_ros.engine.schedule_types import schedule_sigmas
    label, discard = scheduler.sdxl_ros_schedule
    return schedule_sigmas(label, steps, _train_sigmas(scheduler), discard)


_SCHEDULED = {}


def _scheduled_class(cls, route):
    """Return (once per class) the subclass of `cls` that uses a schedule type's sigmas."""
    key = (cls, route)
    if key in _SCHEDULED:
        return _SCHEDULED[key]
    if route == 'sigmas':
        class Scheduled(cls):
            """`cls` whose Karras path yields the schedule type's sigmas."""

            sdxl_ros_schedule = None  # set after construction (__init__ sets timesteps too)

            def _convert_to_karras(self, in_sigmas, num_inference_steps=None):
                """Return the schedule's sigmas without the final one (the scheduler adds it)."""
                steps = num_inference_steps or self.num_inference_steps
                if self.sdxl_ros_schedule is None:
                    return in_sigmas
                return _schedule_sigmas(self, steps)[:-1]
    elif route == 'ancestral':
        class Scheduled(cls):
            """`cls` whose sigmas and timesteps are replaced by the schedule type's."""

            def set_timesteps(self, num_inference_steps, device=None, **kwargs):
                """Set the timesteps as diffusers does, then put the schedule's in their place."""
                import numpy as np
                import torch
                from sdxl_ros.engine.schedule_types import sigma_to_t
                super().set_timesteps(num_inference_steps, device=device, **kwargs)
                sigmas = _schedule_sigmas(self, num_inference_steps)
                timesteps = sigma_to_t(sigmas[:-1], _train_sigmas(self)).astype(np.float32)
                self.timesteps = torch.from_numpy(timesteps).to(device=device)
                self.sigmas = torch.from_numpy(sigmas.astype(np.float32))
    else:  # 'lcm'
        class Scheduled(cls):
            """LCMScheduler whose timesteps follow A1111's LCM sampler and the schedule type."""

            def set_timesteps(self, num_inference_steps=None, device=None, *args, **kwargs):
                """Turn a step count into the schedule's LCM timesteps, then set those."""
                if num_inference_steps is not None and kwargs.get('timesteps') is None:
                    label, _ = self.sdxl_ros_schedule
                    kwargs['timesteps'] = lcm_timesteps(label, num_inference_steps,
                                                        _train_sigmas(self))
                    num_inference_steps = None
                super().set_timesteps(num_inference_steps, device, *args, **kwargs)
    # Named as diffusers' own class, so a pipeline saved with it (save_pretrained records the
    # scheduler's module and class) is a plain diffusers pipeline that loads anywhere.
    Scheduled.__name__ = Scheduled.__qualname__ = cls.__name__
    Scheduled.__module__ = cls.__module__
    _SCHEDULED[key] = Scheduled
    return Scheduled


def make_scheduler(name, base_scheduler_config, schedule_type='Automatic'):
    """
    Build the diffusers scheduler for an A1111 sampler and schedule type from a model config.

    The model's config supplies the noise schedule (betas, prediction type, ...); the table
    supplies the sampler; the schedule type (or a legacy suffix such as "Karras" in `name`,
    used when `schedule_type` is Automatic) picks the sigmas. Raises ValueError for an
    unknown name or a type the sampler cannot use.
    """
    parsed = parse_sampler_name(name)
    if parsed is None:
        raise ValueError(unknown_sampler_message(name))
    sampler, suffix = parsed
    if canonical_schedule_type(schedule_type) == 'Automatic' and suffix:
        schedule_type = suffix
    problem = schedule_type_problem(sampler, schedule_type)
    if problem:
        raise ValueError(problem)
    entry = SAMPLERS[sampler]
    if entry.class_name == 'ExactLMSDiscreteScheduler':
        cls = _exact_lms_class()
    else:
        import diffusers
        cls = getattr(diffusers, entry.class_name)
    accepted = inspect.signature(cls.__init__).parameters
    config = {key: value for key, value in dict(base_scheduler_config).items()
              if key in accepted}
    config.update(entry.overrides)
    for flag in ('use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas',
                 'use_lu_lambdas'):
        if flag in accepted:
            config[flag] = False
    label = resolve_schedule_type(sampler, schedule_type)
    if entry.route == 'spacing' or not label:
        if label == 'SGM Uniform':
            config['timestep_spacing'] = 'trailing'
        return cls.from_config(config)
    if entry.route == 'sigmas':
        if 'use_karras_sigmas' not in accepted or not hasattr(cls, '_convert_to_karras'):
            raise ValueError(f'sampler {sampler} cannot use schedule type {label} with this '
                             f'diffusers version: its {entry.class_name} has no Karras path')
        config['use_karras_sigmas'] = True
        if label == 'KL Optimal' and 'final_sigmas_type' in accepted:
            config['final_sigmas_type'] = 'sigma_min'  # A1111's KL Optimal ends at sigma_min
    scheduler = _scheduled_class(cls, entry.route).from_config(config)
    scheduler.sdxl_ros_schedule = (label, entry.discard_penultimate)
    return scheduler


def check_schedule(scheduler, steps):
    """
    Raise ValueError unless a scheduler set to `steps` holds its schedule type's sigmas.

    The guard behind the Karras hook: a diffusers release that computes sigmas another way
    is caught here, before a goal runs with a schedule other than the one asked for.
    """
    schedule = getattr(scheduler, 'sdxl_ros_schedule', None)
    if schedule is None or getattr(scheduler, 'sigmas', None) is None:
        return
    import numpy as np
    wanted = _schedule_sigmas(scheduler, steps)[:-1]
    have = np.asarray(scheduler.sigmas, dtype=np.float64)
    missing = [float(s) for s in wanted
               if not np.isclose(have, s, rtol=1e-5, atol=0).any()]
    if missing:
        raise ValueError(f'{type(scheduler).__name__} did not take the {schedule[0]} sigmas '
                         f'(missing {missing[:3]}): this diffusers version cannot use that '
                         'schedule type with this sampler')
