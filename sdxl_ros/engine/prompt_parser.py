# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
r"""
A1111 prompt syntax, text side: `#` comments, `<type:args>` tags, emphasis `(x:1.2)` / `[x]`.

Pure Python (no torch, no ROS) so requests can be checked at admission. The rules are
AUTOMATIC1111's (DESIGN.md "A1111 prompt semantics"), checked against its sources: `#` hides
the rest of a line; every `<type:args>` tag is removed (`lora`/`lyco` apply a LoRA); `(x)`
multiplies by 1.1, `(x:w)` by w (negative w too), `[x]` divides by 1.1, nesting multiplies,
`\(` `\)` `\[` `\]` `\\` are literal characters and any other backslash is dropped, `BREAK`
(upper case, a word of its own, outside brackets) ends the current chunk. An opening bracket
that is never closed weights the rest of the prompt (the bracket itself is dropped); a
closing bracket with no opening one is plain text. Prompt editing, alternation and `AND`
are read before this, per step: `prompt_schedule.py`.
"""

from dataclasses import dataclass
import re

ROUND_UP = 1.1
SQUARE_DOWN = 1 / 1.1
#: The marker segment `parse_emphasis` returns for BREAK.
BREAK = ('BREAK', -1.0)
#: LoRA weights a tag may ask for (A1111 accepts any number; beyond this images are noise).
LORA_WEIGHT_LIMIT = 5.0

# A1111's extra-network tag: <type:arg[:arg...]>. Only `lora` (alias `lyco`) is applied here.
_EXTRA_NETWORK = re.compile(r'<(\w+):([^>]+)>')
#: Extra-network types that apply a LoRA (A1111's names; case-sensitive).
LORA_TYPES = ('lora', 'lyco')
# `#` comments: a whole line, then the rest of a line (A1111's two passes).
_LINE_COMMENT = re.compile(r'(?:^|\n)#[^\n]*(?:\n|$)')
_COMMENT = re.compile(r'#[^\n]*(?:\n|$)')
# A1111's emphasis tokens, in its order: escapes, a lone backslash, openers, `:weight)`,
# closers, runs of plain text, a lone colon.
_EMPHASIS_TOKEN = re.compile(
    r'\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:')
_BREAK_SPLIT = re.compile(r'\s*\bBREAK\b\s*', re.S)
# What a LoRA name may contain: a file stem in lora_dir, optionally in a subfolder.
_LORA_NAME = re.compile(r'^[\w .+\-()\[\]]+(/[\w .+\-()\[\]]+)*$')


class PromptSyntaxError(ValueError):
    """A prompt tag cannot be used; the message says why and what to write instead."""


@dataclass(frozen=True)
class LoraTag:
    """One `<lora:name:weight>` tag of a prompt (`kind`: its type, `lora` or `lyco`)."""

    name: str
    weight: float
    kind: str = 'lora'


def strip_comments(text):
    """
    Remove `#` comments as A1111 does (its "Enable comments" option, on by default).

    A `#` hides the rest of its line; the line break stays (a whole-line comment leaves an
    empty line). Runs before anything else reads the prompt, tags included.
    """
    return _COMMENT.sub('\n', _LINE_COMMENT.sub('\n', text))


@dataclass(frozen=True)
class ExtraNetworks:
    """What the `<type:args>` tags of one prompt asked for."""

    loras: tuple = ()
    #: The tags of other types, verbatim (`<hypernet:x:1>`, `<LORA:x>`): removed, not applied.
    ignored: tuple = ()


def extract_networks(text, field='prompt'):
    """
    Return (text without any `<type:args>` tag, ExtraNetworks) for `text`.

    Every tag is removed, as A1111 removes them before CLIP sees the prompt. Type names are
    case-sensitive as in A1111: `lora` and its alias `lyco` apply a LoRA (`<LORA:x>` does
    not); any other type is collected in `ignored`. Refuses a bad LoRA weight, an empty or
    path-escaping name, and the form with separate text-encoder/UNet weights
    (`<lora:x:0.8:0.5>`).
    """
    loras, ignored = [], []

    def take(match):
        if match.group(1) not in LORA_TYPES:
            ignored.append(match.group(0))
            return ''
        loras.append(_lora_tag(match, field))
        return ''

    return _EXTRA_NETWORK.sub(take, text), ExtraNetworks(tuple(loras), tuple(ignored))


def _lora_tag(match, field):
    """Read one `<lora:NAME:WEIGHT>` tag into a LoraTag, or raise PromptSyntaxError."""
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
        weight = _float_or_none(parts[1])
        if weight is None:
            raise PromptSyntaxError(
                f'{field}: LoRA tag {match.group(0)!r} has a weight that is not a number')
    if not -LORA_WEIGHT_LIMIT <= weight <= LORA_WEIGHT_LIMIT:
        raise PromptSyntaxError(
            f'{field}: LoRA {name!r} weight {weight:g} is out of range: use '
            f'{-LORA_WEIGHT_LIMIT:g}..{LORA_WEIGHT_LIMIT:g} (1 = as trained)')
    return LoraTag(name, weight, match.group(1))


def extract_loras(text, field='prompt'):
    """Return (text without any extra-network tag, [LoraTag, ...]): `extract_networks` short."""
    text, networks = extract_networks(text, field)
    return text, list(networks.loras)


def merge_loras(tags):
    """Return [(name, weight)] with one entry per name (repeated tags add up), in order."""
    merged = {}
    for tag in tags:
        merged[tag.name] = merged.get(tag.name, 0.0) + tag.weight
    return list(merged.items())


def parse_emphasis(text):
    """
    Split `text` into [(text, weight), ...] by A1111's emphasis rules; BREAK gives `BREAK`.

    Read token by token as A1111 reads it: an escaped bracket or backslash is that
    character, a backslash before anything else is dropped, a `:number)` closes the innermost
    round bracket with that weight. BREAK is split out of the plain text runs as a
    ('BREAK', -1) piece that enclosing brackets scale like any other piece, so only a BREAK
    outside brackets (weight exactly -1) breaks the chunk; inside brackets it is the word
    BREAK at the scaled (negative) weight, as in A1111. Adjacent pieces of equal weight are
    joined; an empty prompt gives [('', 1.0)].
    """
    pieces = []  # [text, weight] lists, weights multiplied in place as brackets close
    round_open, square_open = [], []
    for match in _EMPHASIS_TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token[0] == '\\':
            pieces.append([token[1:], 1.0])  # `\(` -> `(`; a lone backslash -> nothing
        elif token == '(':
            round_open.append(len(pieces))
        elif token == '[':
            square_open.append(len(pieces))
        elif weight is not None and round_open and _float_or_none(weight) is not None:
            _scale(pieces, round_open.pop(), float(weight))
        elif token == ')' and round_open:
            _scale(pieces, round_open.pop(), ROUND_UP)
        elif token == ']' and square_open:
            _scale(pieces, square_open.pop(), SQUARE_DOWN)
        elif weight is not None and round_open:
            # `(a:1.2.3)`: not a number (A1111 fails here); read as text and a bracket close.
            pieces.append([token[:-1], 1.0])
            _scale(pieces, round_open.pop(), ROUND_UP)
        else:
            for index, part in enumerate(_BREAK_SPLIT.split(token)):
                if index:
                    pieces.append(list(BREAK))
                pieces.append([part, 1.0])
    for start in round_open:
        _scale(pieces, start, ROUND_UP)
    for start in square_open:
        _scale(pieces, start, SQUARE_DOWN)
    return _join(pieces)


def _float_or_none(text):
    """Return float(text), or None where it is not a number (e.g. '1.2.3', '.')."""
    try:
        return float(text)
    except ValueError:
        return None


def _scale(pieces, start, factor):
    """Multiply the weights of the pieces from `start` to the end by `factor`."""
    for piece in pieces[start:]:
        piece[1] *= factor


def _join(pieces):
    """Join equal-weight neighbours (as A1111 does), then drop empty text pieces."""
    joined = []
    for text, weight in pieces:
        if joined and joined[-1][1] == weight:
            joined[-1][0] += text
        else:
            joined.append([text, weight])
    result = [(text, weight) for text, weight in joined if text]
    return result or [('', 1.0)]


def is_break(piece):
    """Whether an emphasis piece is a chunk break (A1111: the text BREAK at weight -1)."""
    return piece[0] == BREAK[0] and piece[1] == BREAK[1]


def literal(text):
    """Return the `emphasis none` parse: the whole text at weight 1, brackets as text."""
    return [(text, 1.0)]


def read_prompts(prompt, negative, comments=True):
    """
    Return (prompt text, negative text, [warning, ...]) as the text encoders will see them.

    Comments are stripped (`comments`), then every extra-network tag removed; each tag that
    is not applied is named in a warning (LoRA tags in the negative prompt are refused at
    validation, so none is applied from there).
    """
    warnings = []
    texts = []
    for field, text in (('prompt', prompt), ('negative_prompt', negative)):
        text, networks = extract_networks(strip_comments(text) if comments else text, field)
        warnings += [f'{field}: ignored {tag} (removed from the text; only <lora:...> and '
                     '<lyco:...> tags apply, case-sensitive)' for tag in networks.ignored]
        texts.append(text)
    return texts[0], texts[1], warnings
