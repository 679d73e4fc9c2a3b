# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
A1111's prompt schedules: `AND` parts, prompt editing and alternation, step by step.

Pure Python (no torch): turns a prompt (comments and extra-network tags already removed)
into the text each denoising step conditions on, as AUTOMATIC1111 does (DESIGN.md "A1111
prompt semantics"; its modules/prompt_parser.py and the CFG denoiser read for the facts):

- `a cat AND a dog :1.2` (composable diffusion): the prompt is cut at each `AND` word; a
  trailing `:number` is that part's weight (also without AND: `a cat :0.5` is one part at
  weight 0.5). Each part is scheduled and encoded on its own; the guidance combines them
  as uncond + sum_i weight_i * cfg * (cond_i - uncond). The negative prompt has no parts.
- `[from:to:when]`, `[to:when]` (from nothing), `[from::when]` (to nothing): `when` with a
  `.` is a fraction of the steps (`0.5`, `.5`, `1.0`), without one a step number; it is
  cut to the schedule's length; `from` is used while the step index <= when. Nesting works.
- `[a|b|c]` alternates per step; `[a|]` alternates with nothing.
- Step indices count the sampler's model calls from 0 over the whole run, base and refiner
  together (A1111 swaps in the refiner mid-run and keeps counting); the schedule's length
  is the requested steps, doubled for second-order samplers (A1111's `total_steps`).

A1111 parses this grammar with `lark`; `lark` is not among this project's locked
dependencies, so this is a small hand-written recursive-descent parser of the same grammar:
a bracket group becomes structure when it parses completely (its inner groups too), else
its bracket is plain text; a `|` outside an alternation, or a backslash at the very end or
before a line break, leaves the whole prompt unscheduled (where lark fails to parse it).
"""

from dataclasses import dataclass
import math
import re
from typing import Optional, Tuple

# A1111's `AND` separator (a whole word, upper case) and a part's trailing `:weight`.
_AND = re.compile(r'\bAND\b')
_PART_WEIGHT = re.compile(r'(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*', re.S)
# `when` of [from:to:when]: lark's SIGNED_NUMBER between optional whitespace, then `]`.
_WHEN = re.compile(
    r'\s*([+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))\s*\]')
# Plain text inside the grammar: anything but `\[]():|`, or a backslash and the next
# character (not a line break).
_PLAIN = re.compile(r'(?:[^\\\[\]():|]|\\.)+')
_STRAY = '[]():'


class _Unparsable(Exception):
    """The prompt has no parse at all (lark fails): it is used unscheduled."""


@dataclass(frozen=True)
class _Emphasis:
    """`(...)`, `(...:...)` or `[...]`: kept verbatim, inner schedules evaluated."""

    opener: str
    inner: tuple
    weight: Optional[tuple]
    close: str


@dataclass(frozen=True)
class _Edit:
    """`[before:after:when]`; `before` None for `[after:when]`."""

    before: Optional[tuple]
    after: tuple
    when: str


@dataclass(frozen=True)
class _Alternation:
    """`[a|b|...]`."""

    options: tuple


class _Parser:
    """Recursive descent over A1111's schedule grammar; `parse()` returns a node tuple."""

    def __init__(self, text):
        """Parse `text`."""
        self.text = text

    def parse(self):
        """Return the top-level nodes; stray brackets and colons are text there."""
        text, nodes, position = self.text, [], 0
        while position < len(text):
            char = text[position]
            if char in '([':
                group = self._group(position)
                if group is not None:
                    nodes.append(group[0])
                    position = group[1]
                    continue
            if char in _STRAY:
                nodes.append(char)
                position += 1
            else:
                text_run, position = self._plain(position)
                nodes.append(text_run)
        return tuple(nodes)

    def _plain(self, position):
        """Return (plain text, end) at `position`; raise _Unparsable where nothing matches."""
        match = _PLAIN.match(self.text, position)
        if match is None:  # `|` outside an alternation, or a lone trailing backslash
            raise _Unparsable()
        return match.group(0), match.end()

    def _prompt(self, position):
        """Return (nodes, end) of a prompt inside a group, or None if a group in it fails."""
        text, nodes = self.text, []
        while position < len(text) and text[position] not in ')]:|':
            if text[position] in '([':
                group = self._group(position)
                if group is None:
                    return None
                nodes.append(group[0])
                position = group[1]
            else:
                text_run, position = self._plain(position)
                nodes.append(text_run)
        return tuple(nodes), position

    def _group(self, start):
        """Return (node, end) of the bracket group at `start`, or None if it fails."""
        text = self.text
        first = self._prompt(start + 1)
        if first is None or first[1] >= len(text):
            return None
        inner, position = first
        char = text[position]
        if text[start] == '(':
            if char == ')':
                return _Emphasis('(', inner, None, ')'), position + 1
            second = self._prompt(position + 1) if char == ':' else None
            if second is None or second[1] >= len(text) or text[second[1]] != ')':
                return None
            return _Emphasis('(', inner, second[0], ')'), second[1] + 1
        if char == ']':
            return _Emphasis('[', inner, None, ']'), position + 1
        if char == '|':
            return self._alternation(inner, position)
        if char != ':':
            return None
        when = _WHEN.match(text, position + 1)
        if when is not None:
            return _Edit(None, inner, when.group(1)), when.end()
        second = self._prompt(position + 1)
        if second is None or second[1] >= len(text) or text[second[1]] != ':':
            return None
        when = _WHEN.match(text, second[1] + 1)
        if when is None:
            return None
        return _Edit(inner, second[0], when.group(1)), when.end()

    def _alternation(self, first, position):
        """Return (node, end) of `[a|b|...]` whose first option ended at `position` (`|`)."""
        options = [first]
        while self.text[position] == '|':
            option = self._prompt(position + 1)
            if option is None or option[1] >= len(self.text):
                return None
            options.append(option[0])
            position = option[1]
        if self.text[position] != ']':
            return None
        return _Alternation(tuple(options)), position + 1


def _walk(nodes):
    """Yield every group node of a node tuple, nested ones included."""
    for node in nodes:
        if isinstance(node, str):
            continue
        yield node
        if isinstance(node, _Emphasis):
            yield from _walk(node.inner + (node.weight or ()))
        elif isinstance(node, _Edit):
            yield from _walk((node.before or ()) + node.after)
        else:
            for option in node.options:
                yield from _walk(option)


def edit_step(when, steps):
    """
    Return the last step index of `from` in [from:to:when], as A1111 computes it.

    With a `.` the number is a fraction of `steps`, without one a step; the result is
    truncated toward zero and cut to `steps`. At or below 0 `to` is used from the start.
    """
    value = float(when)
    if '.' in when:
        value *= steps
    if math.isinf(value):
        return steps if value > 0 else -1
    return min(steps, int(value))


def _render(nodes, step, steps):
    """Return the text of `nodes` at schedule point `step`."""
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Emphasis):
            out.append(node.opener + _render(node.inner, step, steps))
            if node.weight is not None:
                out.append(':' + _render(node.weight, step, steps))
            out.append(node.close)
        elif isinstance(node, _Edit):
            if step <= edit_step(node.when, steps):
                out.append(_render(node.before or (), step, steps))
            else:
                out.append(_render(node.after, step, steps))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step, steps))
    return ''.join(out)


def prompt_schedule(text, steps):
    """
    Return ((end step, text), ...): `text` is used up to and including step index `end`.

    As A1111's `get_learned_conditioning_prompt_schedules` (no hires pass): one entry per
    step where an edit switches (when >= 1) or, with an alternation, per step, plus `steps`.
    """
    try:
        nodes = _Parser(text).parse()
    except _Unparsable:
        return ((steps, text),)
    ends = {steps}
    for node in _walk(nodes):
        if isinstance(node, _Edit):
            when = edit_step(node.when, steps)
            if when >= 1:
                ends.add(when)
        elif isinstance(node, _Alternation):
            ends.update(range(1, steps + 1))
    return tuple((end, _render(nodes, end, steps)) for end in sorted(ends))


def text_at(schedule, step):
    """Return the text of `schedule` at step index `step` (past the end: the first, as A1111)."""
    for end, text in schedule:
        if step <= end:
            return text
    return schedule[0][1]


def split_and(text):
    """Return ((text, weight), ...) of the `AND` parts of a prompt, as A1111 splits them."""
    parts = []
    for part in _AND.split(text):
        match = _PART_WEIGHT.fullmatch(part)
        parts.append((match.group(1), float(match.group(2)) if match.group(2) else 1.0))
    return tuple(parts)


@dataclass(frozen=True)
class PromptPlan:
    """
    What every step conditions on: weighted positive parts and the negative prompt.

    `parts` are ((weight, schedule), ...); `negative` is one schedule; a schedule is
    ((end step, text), ...) as `prompt_schedule` returns it.
    """

    parts: Tuple
    negative: Tuple
    steps: int

    def at(self, step):
        """Return (((text, weight), ...), negative text) at step index `step`."""
        return (tuple((text_at(schedule, step), weight) for weight, schedule in self.parts),
                text_at(self.negative, step))

    @property
    def static(self):
        """Whether every step conditions on the same texts (no edit or alternation acts)."""
        schedules = [schedule for _, schedule in self.parts] + [self.negative]
        return all(len({text for _, text in schedule}) == 1 for schedule in schedules)

    @property
    def plain(self):
        """Whether the positive side is one part at weight 1 (plain classifier-free guidance)."""
        return len(self.parts) == 1 and self.parts[0][0] == 1.0

    def texts(self):
        """Return (positive texts, negative texts) that some step uses, each once, in order."""
        positive = dict.fromkeys(t for _, s in self.parts for _, t in s)
        return tuple(positive), tuple(dict.fromkeys(t for _, t in self.negative))


def plan_prompts(prompt, negative, steps):
    """
    Return the PromptPlan of `prompt` and `negative` over a schedule of `steps` steps.

    Zero-weight parts are dropped when another part remains: they add nothing to the
    guidance (weight 0 x a finite difference), so `a AND b :0` runs exactly as `a`.
    """
    parts = split_and(prompt)
    kept = [(text, weight) for text, weight in parts if weight != 0] or list(parts)
    return PromptPlan(tuple((weight, prompt_schedule(text, steps)) for text, weight in kept),
                      prompt_schedule(negative, steps), steps)


def schedule_length(steps, order=1):
    """Return the steps a schedule spans: A1111 doubles them for second-order samplers."""
    return steps * 2 if order == 2 else steps


def stage_conditioning(plan, first, count):
    """Return `plan.at(step)` for the `count` step indices from `first` (one stage's steps)."""
    return tuple(plan.at(step) for step in range(first, first + count))
