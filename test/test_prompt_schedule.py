# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""A1111 prompt schedules: editing, alternation, AND, step counting (hand-computed)."""

import pytest

from sdxl_ros.engine.prompt_schedule import (edit_step, plan_prompts, prompt_schedule,
                                             schedule_length, split_and, stage_conditioning,
                                             text_at)


@pytest.mark.parametrize('text, steps, expected', [
    # Prompt editing: `from` while the step index <= when.
    ('[cat:dog:10] in a hat', 20, ((10, 'cat in a hat'), (20, 'dog in a hat'))),
    ('a [b:3]', 10, ((3, 'a '), (10, 'a b'))),          # [to:when]: nothing, then `to`
    ('a [b::3]', 10, ((3, 'a b'), (10, 'a '))),         # [from::when]: `from`, then nothing
    ('a [b: 3 ]', 10, ((3, 'a '), (10, 'a b'))),
    # A `.` makes a fraction of the steps (truncated), an integer is a step.
    ('[cat:dog:0.5]', 20, ((10, 'cat'), (20, 'dog'))),
    ('[cat:dog:.25]', 10, ((2, 'cat'), (10, 'dog'))),
    ('[a:b:1]', 10, ((1, 'a'), (10, 'b'))),
    ('[a:b:1.0]', 10, ((10, 'a'),)),                    # 1.0 = the whole schedule
    # Cut to the schedule: 0 or less is `to` throughout, past the end `from` throughout.
    ('[cat:dog:0]', 20, ((20, 'dog'),)),
    ('[cat:dog:-3]', 20, ((20, 'dog'),)),
    ('[cat:dog:100]', 20, ((20, 'cat'),)),
    # Nesting, and emphasis around or inside a schedule.
    ('a[b:[c:d:2]:1]e', 10, ((1, 'abe'), (2, 'ace'), (10, 'ade'))),
    ('([cat:dog:2]:1.2)', 4, ((2, '(cat:1.2)'), (4, '(dog:1.2)'))),
    ('[(a:2):3]', 10, ((3, ''), (10, '(a:2)'))),
    ('a [[[b]]:2]', 10, ((2, 'a '), (10, 'a [[b]]'))),
    # Alternation: one entry per step, options in turn from step 1.
    ('[cat|dog]', 4, ((1, 'cat'), (2, 'dog'), (3, 'cat'), (4, 'dog'))),
    ('[a|b|c] x', 3, ((1, 'a x'), (2, 'b x'), (3, 'c x'))),
    ('[fe|]male', 3, ((1, 'female'), (2, 'male'), (3, 'female'))),
    # Not a schedule: the text as it is (emphasis reads its brackets later).
    ('a [unbalanced', 10, ((10, 'a [unbalanced'),)),
    ('[a:b:c]', 10, ((10, '[a:b:c]'),)),
    ('((a][:b:c [d:3]', 10, ((3, '((a][:b:c '), (10, '((a][:b:c d'))),
    # Where A1111's parser fails altogether nothing is scheduled: `|` outside [a|b], or
    # a trailing backslash.
    ('[a:b:3] x | y', 10, ((10, '[a:b:3] x | y'),)),
    ('[a:b:3] x\\', 10, ((10, '[a:b:3] x\\'),)),
    (r'\[a:b:3\]', 10, ((10, r'\[a:b:3\]'),)),
])
def test_schedule(text, steps, expected):
    assert prompt_schedule(text, steps) == expected


def test_step_indices_count_from_zero_with_from_up_to_when():
    schedule = prompt_schedule('[cat:dog:3]', 10)
    assert [text_at(schedule, i) for i in range(10)] == ['cat'] * 4 + ['dog'] * 6
    alternating = prompt_schedule('[cat|dog]', 4)
    # Step 0 and 1 both use the first option (entry `1`), then they alternate.
    assert [text_at(alternating, i) for i in range(4)] == ['cat', 'cat', 'dog', 'cat']


def test_edit_step():
    assert edit_step('10', 20) == 10
    assert edit_step('0.55', 20) == 11
    assert edit_step('5.', 20) == 20  # `5.` has a dot: 5 x steps, cut to 20
    assert edit_step('1e1', 20) == 10
    assert edit_step('1e999', 20) == 20


@pytest.mark.parametrize('text, expected', [
    ('a cat AND a dog :1.2', (('a cat', 1.0), (' a dog', 1.2))),
    ('a cat :0.5', (('a cat', 0.5),)),                 # a weight without AND
    ('a:1:2', (('a:1', 2.0),)),
    ('x AND', (('x', 1.0), ('', 1.0))),
    ('a ANDROID', (('a ANDROID', 1.0),)),              # a whole word only
    ('[cat:dog:5]', (('[cat:dog:5]', 1.0),)),
])
def test_and_parts(text, expected):
    assert split_and(text) == expected


def test_plan_drops_zero_weight_parts_and_keeps_schedules():
    assert plan_prompts('a AND b :0', '', 10).parts == ((1.0, ((10, 'a'),)),)
    assert plan_prompts('a :0', '', 10).parts == ((0.0, ((10, 'a'),)),)
    plan = plan_prompts('[cat:dog:4] AND sky :0.5', '[ugly:blurry:2]', 10)
    assert plan.parts == ((1.0, ((4, 'cat'), (10, 'dog'))), (0.5, ((10, ' sky'),)))
    assert plan.at(4) == ((('cat', 1.0), (' sky', 0.5)), 'blurry')
    assert plan.at(5) == ((('dog', 1.0), (' sky', 0.5)), 'blurry')
    assert not plan.static and not plan.plain
    assert plan.texts() == (('cat', 'dog', ' sky'), ('ugly', 'blurry'))
    assert plan_prompts('[cat:dog:100]', '', 10).static
    assert plan_prompts('[cat:dog:100]', '', 10).plain


def test_refiner_steps_continue_the_count():
    # 10 steps, base 8 (indices 0-7), refiner 2 (8-9): the edit at 0.7 lands in the base.
    plan = plan_prompts('[cat:dog:0.7]', '', 10)
    base, refiner = stage_conditioning(plan, 0, 8), stage_conditioning(plan, 8, 2)
    assert [parts[0][0] for parts, _ in base] == ['cat'] * 8
    assert [parts[0][0] for parts, _ in refiner] == ['dog', 'dog']
    # An edit late in the schedule switches inside the refiner's steps.
    plan = plan_prompts('[cat:dog:8]', '', 10)
    assert [p[0][0] for p, _ in stage_conditioning(plan, 8, 2)] == ['cat', 'dog']


def test_second_order_samplers_double_the_schedule():
    assert schedule_length(10) == 10
    assert schedule_length(10, order=2) == 20
