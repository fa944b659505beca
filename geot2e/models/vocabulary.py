"""What a model knows of language: the words of the captions it was trained on.

A text-conditioned model learns only the words that occur in its training captions. The
default model's captions were written by the automatic captioner
(:func:`geot2e.train.captions.caption_tile`), which uses a few dozen words: content
("water", "green vegetation", "bare soil", "built-up area"), amounts ("mostly", "some",
"a little"), brightness and texture. A prompt such as "a lake among forests" uses none of
them except "a" ("among" is a function word, not counted): the text encoder still turns it into a vector, but one the model never
learned to follow.

The vocabulary is recorded next to the weights, in ``vocabulary.json`` of the checkpoint
folder (``{"source": ..., "words": [...]}``; not part of the checkpoint hash), and shown by
``geot2e info``. :func:`unknown_words` lists the words of a prompt that are not in it, and
:func:`check_prompt` warns (:class:`~geot2e.errors.VocabularyWarning`), naming the words the
model does know. A model without the file (official Text2Earth weights, trained on open
captions; older geot2e checkpoints) has no recorded vocabulary and is never warned about.

>>> from geot2e.models.vocabulary import CAPTIONER_VOCABULARY, unknown_words
>>> unknown_words("a lake among forests", CAPTIONER_VOCABULARY)
['lake', 'forests']
>>> unknown_words("mostly water, dark, smooth texture", CAPTIONER_VOCABULARY)
[]
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Iterable

from ..errors import CheckpointError, VocabularyWarning

__all__ = ["CAPTIONER_VOCABULARY", "FUNCTION_WORDS", "VOCABULARY_FILE", "prompt_words", "unknown_words", "save_vocabulary",
           "load_vocabulary", "model_vocabulary", "check_prompt", "check_model_prompts", "describe"]

VOCABULARY_FILE = "vocabulary.json"

#: Every word :func:`geot2e.train.captions.caption_tile` can write (a test checks it against
#: the captioner's output), including the scale words of ``gsd=`` captions.
CAPTIONER_VOCABULARY = frozenset("""
satellite image mostly some a little green vegetation bare soil water built-up area mixed land cover
bright dark medium brightness rough smooth fine texture field landscape regional scale
""".split())

#: Words that carry no content of their own; never reported as unknown.
FUNCTION_WORDS = frozenset("""
a an the of with without and or in on at by for to from near among around between into over under
along beside its their is are there this that these those
""".split())

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def prompt_words(prompt: str) -> list[str]:
    """The words of ``prompt``, lower case, in order, without duplicates (hyphenated words kept whole)."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(str(prompt).lower()):
        seen.setdefault(w, None)
    return list(seen)


def unknown_words(prompt: str, vocabulary: Iterable[str]) -> list[str]:
    """Content words of ``prompt`` that are not in ``vocabulary`` (in the prompt's order;
    :data:`FUNCTION_WORDS` such as "of" or "with" are not reported)."""
    vocab = {str(w).lower() for w in vocabulary}
    return [w for w in prompt_words(prompt) if w not in vocab and w not in FUNCTION_WORDS]


def save_vocabulary(folder: str | os.PathLike, words: Iterable[str], *, source: str) -> Path:
    """Write ``folder/vocabulary.json``: the sorted words and where they came from.

    ``source`` says how the captions were made, e.g. ``"geot2e.train.captions.caption_tile"``
    or ``"caption table captions.gpkg"``.
    """
    words = sorted({w for text in words for w in prompt_words(text)})
    path = Path(folder) / VOCABULARY_FILE
    path.write_text(json.dumps({"source": str(source), "words": words}, indent=1) + "\n")
    return path


def load_vocabulary(folder: str | os.PathLike) -> frozenset[str] | None:
    """The words recorded in ``folder/vocabulary.json``, or None when the folder has no such file."""
    path = Path(folder) / VOCABULARY_FILE
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        words = d["words"]
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise TypeError("'words' must be a list of strings")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a vocabulary file ({e}); delete it or write it again with "
                              "geot2e.models.vocabulary.save_vocabulary.") from e
    return frozenset(w.lower() for w in words)


def model_vocabulary(model) -> frozenset[str] | None:
    """The recorded vocabulary of a loaded model (from its checkpoint folder), or None."""
    source = getattr(model, "source", None)
    return load_vocabulary(source) if source else None


def describe(vocabulary: Iterable[str] | None, *, limit: int | None = None) -> str:
    """The vocabulary as one line, sorted (``"(not recorded)"`` for None)."""
    if vocabulary is None:
        return "(not recorded)"
    words = sorted(vocabulary)
    if limit is not None and len(words) > limit:
        return ", ".join(words[:limit]) + f", ... ({len(words)} words)"
    return ", ".join(words)


def check_prompt(prompt: str, vocabulary: Iterable[str] | None, *, stacklevel: int = 2) -> list[str]:
    """Warn when ``prompt`` uses words outside ``vocabulary``; return those words.

    Nothing happens for an empty prompt or a None vocabulary (not recorded).
    """
    if vocabulary is None or not str(prompt).strip():
        return []
    unknown = unknown_words(prompt, vocabulary)
    if unknown:
        warnings.warn(
            f"prompt {str(prompt)[:60]!r}: the model never saw {', '.join(repr(w) for w in unknown)} in a "
            f"training caption, so it cannot follow {'them' if len(unknown) > 1 else 'it'}. "
            f"Words it knows: {describe(vocabulary)}.", VocabularyWarning, stacklevel=stacklevel + 1)
    return unknown


def check_model_prompts(model, prompts, *, stacklevel: int = 2) -> dict[str, list[str]]:
    """:func:`check_prompt` for every distinct prompt (a string or a sequence of them, e.g. a
    prompt map's) against ``model``'s recorded vocabulary; one warning per prompt with unknown
    words. Returns prompt -> unknown words (prompts without any are left out)."""
    vocab = model_vocabulary(model)
    if vocab is None:
        return {}
    out = {}
    for p in dict.fromkeys([prompts] if isinstance(prompts, str) else list(prompts)):
        unknown = check_prompt(p, vocab, stacklevel=stacklevel + 1)
        if unknown:
            out[p] = unknown
    return out
