# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
r"""
A1111 prompt syntax, text side: `<lora:name:weight>` tags and emphasis `(x:1.2)` / `[x]`.

Pure Python (no torch, no ROS) so requests can be checked at admission. The rules are
AUTOMATIC1111's (DESIGN.md "A1111 prompt semantics"), written here from its documented
behaviour: `(x)` multiplies by 1.1, `(x:w)` by w, `[x]` divides by 1.1, nesting multiplies,
`\(` `\)` `\[` `\]` `\\` are literal characters, `BREAK` (upper case, a word of its own)
ends the current chunk. An opening bracket that is never closed weights the rest of the
prompt (the bracket itself is dropped); a closing bracket with no opening one is plain text.
"""

from dataclasses import dataclass
import re

ROUND_UP = 1.1
SQUARE_DOWN = 1 / 1.1
#: The marker segment `parse_emphasis` returns for BREAK.
BREAK = ('BREAK', -1.0)
#: LoRA weights a tag may ask for (A1111 accepts any number; beyond this images are noise).
LORA_WEIGHT_LIMIT = 5.0

# A1111's extra-network tag: <type:arg[:arg...]>. Only the `lora` type is understood here.
_EXTRA_NETWORK = re.compile(r'<(\w+):([^>]+)>')
# `:weight)` closing a round bracket, as A1111 recognises it.
_WEIGHT_CLOSE = re.compile(r':\s*([+-]?[.\d]+)\s*\)')
_BREAK_SPLIT = re.compile(r'\s*\bBREAK\b\s*')
# What a LoRA name may contain: a file stem in lora_dir, optionally in a subfolder.
_LORA_NAME = re.compile(r'^[\w .+\-()\[\]]+(/[\w .+\-()\[\]]+)*$')


class PromptSyntaxError(ValueError):
    """A prompt tag cannot be used; the message says why and what to write instead."""


@dataclass(frozen=True)
class LoraTag:
    """One `<lora:name:weight>` tag of a prompt."""

    name: str
    weight: float


def extract_loras(text, field='prompt'):
    """
    Return (text without the LoRA tags, [LoraTag, ...]) for `text`.

    Only `<lora:...>` tags are removed, as A1111 removes them before CLIP sees the prompt;
    other angle-bracket text stays. Refuses a bad weight, an empty or path-escaping name,
    and the A1111 form with separate text-encoder/UNet weights (`<lora:x:0.8:0.5>`).
    """
    tags = []

    def take(match):
        if match.group(1).lower() != 'lora':
            return match.group(0)
        parts = [p.strip() for p in match.group(2).split(':')]
        name = parts[0]
        if not name or not _LORA_NAME.match(name) or '..' in name.split('/'):
            raise PromptSyntaxError(
                f'{field}: LoRA tag {match.group(0)!r} has no usable name: write '
                '<lora:NAME:WEIGHT> with NAME the file name in lora_dir without .safetensors')
        if len(parts) > 2:
            raise PromptSyntaxError(
                f'{field}: LoRA tag {match.group(0)!r} has more than one weight; separate '
                'text-encoder and UNet weights are not supported: write <lora:NAME:WEIGHT>')
        weight = 1.0
        if len(parts) == 2:
            try:
                weight = float(parts[1])
            except ValueError:
                raise PromptSyntaxError(
                    f'{field}: LoRA tag {match.group(0)!r} has a weight that is not a '
                    'number') from None
        if not -LORA_WEIGHT_LIMIT <= weight <= LORA_WEIGHT_LIMIT:
            raise PromptSyntaxError(
                f'{field}: LoRA {name!r} weight {weight:g} is out of range: use '
                f'{-LORA_WEIGHT_LIMIT:g}..{LORA_WEIGHT_LIMIT:g} (1 = as trained)')
        tags.append(LoraTag(name, weight))
        return ''

    return _EXTRA_NETWORK.sub(take, text), tags


def merge_loras(tags):
    """Return [(name, weight)] with one entry per name (repeated tags add up), in order."""
    merged = {}
    for tag in tags:
        merged[tag.name] = merged.get(tag.name, 0.0) + tag.weight
    return list(merged.items())


def parse_emphasis(text):
    """
    Split `text` into [(text, weight), ...] by A1111's emphasis rules; BREAK gives `BREAK`.

    Adjacent pieces of equal weight are joined; an empty prompt gives [('', 1.0)].
    """
    pieces = []  # [text, weight] lists, weights multiplied in place as brackets close
    round_open, square_open = [], []
    position = 0
    while position < len(text):
        char = text[position]
        if char == '\\' and position + 1 < len(text) and text[position + 1] in '()[]\\':
            _add_text(pieces, text[position + 1])
            position += 2
            continue
        if char == '(':
            round_open.append(len(pieces))
        elif char == '[':
            square_open.append(len(pieces))
        elif char == ':' and round_open:
            match = _WEIGHT_CLOSE.match(text, position)
            weight = _float_or_none(match.group(1)) if match else None
            if weight is None:
                _add_text(pieces, char)
            else:
                _scale(pieces, round_open.pop(), weight)
                position = match.end()
                continue
        elif char == ')' and round_open:
            _scale(pieces, round_open.pop(), ROUND_UP)
        elif char == ']' and square_open:
            _scale(pieces, square_open.pop(), SQUARE_DOWN)
        else:
            _add_text(pieces, char)
        position += 1
    for start in round_open:
        _scale(pieces, start, ROUND_UP)
    for start in square_open:
        _scale(pieces, start, SQUARE_DOWN)
    return _split_breaks(pieces)


def _float_or_none(text):
    """Return float(text), or None where it is not a number (e.g. '1.2.3', '.')."""
    try:
        return float(text)
    except ValueError:
        return None


def _add_text(pieces, char):
    """Append one character as a new weight-1 piece (joined with its neighbours later)."""
    pieces.append([char, 1.0])


def _scale(pieces, start, factor):
    """Multiply the weights of the pieces from `start` to the end by `factor`."""
    for piece in pieces[start:]:
        piece[1] *= factor


def _split_breaks(pieces):
    """Join equal-weight neighbours, then cut the text at each BREAK word."""
    joined = []
    for char, weight in pieces:
        if joined and joined[-1][1] == weight:
            joined[-1][0] += char
        else:
            joined.append([char, weight])
    result = []
    for chunk_text, weight in joined:
        parts = _BREAK_SPLIT.split(chunk_text)
        for index, part in enumerate(parts):
            if index:
                result.append(BREAK)
            if part:
                result.append((part, weight))
    return result or [('', 1.0)]


def literal(text):
    """Return the `emphasis none` parse: the whole text at weight 1, brackets as text."""
    return [(text, 1.0)]
