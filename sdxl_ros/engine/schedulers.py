# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Sampler names A1111 users know, mapped onto diffusers schedulers.

The table is plain data so that `sdxl_ros.engine.request` can validate names without importing
torch; `make_scheduler` imports diffusers only when a scheduler is actually built.

Equivalences follow the diffusers documentation's A1111 table, with one deliberate change:
A1111's "DPM++ SDE" maps to diffusers' `DPMSolverSDEScheduler`, which needs the `torchsde`
package (and scipy). We use diffusers' singlestep DPM-Solver++ in its SDE variant instead
(`DPMSolverSinglestepScheduler(algorithm_type='sde-dpmsolver++')`): the same family (a
singlestep, second-order, stochastic DPM++ sampler) with no extra dependency.
"""

import inspect

# name -> (diffusers class name, config overrides). Every entry states use_karras_sigmas so a
# base config that enables it does not leak into a non-Karras sampler.
_TABLE = {
    'DPM++ 2M': ('DPMSolverMultistepScheduler', {'use_karras_sigmas': False}),
    'DPM++ 2M Karras': ('DPMSolverMultistepScheduler', {'use_karras_sigmas': True}),
    'DPM++ 2M SDE': ('DPMSolverMultistepScheduler',
                     {'algorithm_type': 'sde-dpmsolver++', 'use_karras_sigmas': False}),
    'DPM++ 2M SDE Karras': ('DPMSolverMultistepScheduler',
                            {'algorithm_type': 'sde-dpmsolver++', 'use_karras_sigmas': True}),
    'DPM++ SDE': ('DPMSolverSinglestepScheduler',
                  {'algorithm_type': 'sde-dpmsolver++', 'use_karras_sigmas': False,
                   'lower_order_final': True}),
    'DPM++ SDE Karras': ('DPMSolverSinglestepScheduler',
                         {'algorithm_type': 'sde-dpmsolver++', 'use_karras_sigmas': True,
                          'lower_order_final': True}),
    'DPM2': ('KDPM2DiscreteScheduler', {'use_karras_sigmas': False}),
    'DPM2 Karras': ('KDPM2DiscreteScheduler', {'use_karras_sigmas': True}),
    'DPM2 a': ('KDPM2AncestralDiscreteScheduler', {'use_karras_sigmas': False}),
    'Euler': ('EulerDiscreteScheduler', {'use_karras_sigmas': False}),
    'Euler a': ('EulerAncestralDiscreteScheduler', {}),
    'Heun': ('HeunDiscreteScheduler', {'use_karras_sigmas': False}),
    'LMS': ('ExactLMSDiscreteScheduler', {'use_karras_sigmas': False}),
    'LMS Karras': ('ExactLMSDiscreteScheduler', {'use_karras_sigmas': True}),
    'DDIM': ('DDIMScheduler', {}),
    'UniPC': ('UniPCMultistepScheduler', {'use_karras_sigmas': False}),
    'DEIS': ('DEISMultistepScheduler', {'use_karras_sigmas': False}),
}

#: Canonical sampler names, in a stable order for messages and `ListModels`.
SCHEDULER_NAMES = tuple(_TABLE)

_BY_LOWER = {name.lower(): name for name in SCHEDULER_NAMES}


def canonical_scheduler_name(name):
    """Return the canonical spelling of a sampler name (case/space-insensitive), or None."""
    if not isinstance(name, str):
        return None
    return _BY_LOWER.get(' '.join(name.split()).lower())


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

    _EXACT_LMS = ExactLMSDiscreteScheduler
    return _EXACT_LMS


_EXACT_LMS = None


def make_scheduler(name, base_scheduler_config):
    """
    Build the diffusers scheduler for an A1111 sampler name from a model's scheduler config.

    The model's config supplies the noise schedule (betas, prediction type, ...); the table
    supplies the sampler. Raises ValueError for an unknown name.
    """
    canonical = canonical_scheduler_name(name)
    if canonical is None:
        raise ValueError(
            f'unknown scheduler {name!r}: use one of ' + ', '.join(SCHEDULER_NAMES))
    class_name, overrides = _TABLE[canonical]
    if class_name == 'ExactLMSDiscreteScheduler':
        cls = _exact_lms_class()
    else:
        import diffusers
        cls = getattr(diffusers, class_name)
    accepted = inspect.signature(cls.__init__).parameters
    config = {key: value for key, value in dict(base_scheduler_config).items()
              if key in accepted}
    config.update(overrides)
    return cls.from_config(config)
