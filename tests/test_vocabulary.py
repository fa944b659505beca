"""A model's vocabulary: the words of its training captions, recorded next to its weights,
and a warning for prompt words outside it."""
from __future__ import annotations

import inspect
import re
import shutil
import warnings

import numpy as np
import pytest

from geot2e.errors import CheckpointError, VocabularyWarning
from geot2e.models.vocabulary import (CAPTIONER_VOCABULARY, check_model_prompts, check_prompt, describe,
                                      load_vocabulary, model_vocabulary, prompt_words, save_vocabulary,
                                      unknown_words)


def _captions():
    from geot2e.train.captions import caption_tile

    rng = np.random.default_rng(0)
    tiles = [rng.uniform(0, 1, (3, 32, 32)) for _ in range(40)]
    yy, xx = np.mgrid[0:32, 0:32] / 32
    tiles += [np.stack([np.full((32, 32), r), np.full((32, 32), g), np.full((32, 32), b)])
              for r, g, b in [(0.1, 0.15, 0.3), (0.2, 0.5, 0.1), (0.6, 0.4, 0.3), (0.7, 0.7, 0.7), (0.4, 0.4, 0.4)]]
    tiles.append(np.stack([(xx * 8 % 1 > 0.5) * 0.5 + 0.45] * 3))           # bright, grey, rough: built-up
    tiles.append(np.stack([yy * 0.1 + 0.6, yy * 0.1 + 0.5, yy * 0.1 + 0.3]))  # smooth bare soil
    out = []
    for i, t in enumerate(tiles):
        out.append(caption_tile(t, gsd=[None, 30.0, 100.0, 400.0][i % 4]))
        out.append(caption_tile(t[:3], nir=t[1] * 0.9, gsd=None))
    return out


def test_the_captioner_writes_only_words_of_its_vocabulary():
    words = {w for c in _captions() for w in prompt_words(c)}
    assert words <= CAPTIONER_VOCABULARY, sorted(words - CAPTIONER_VOCABULARY)
    assert {"water", "vegetation", "bare", "soil", "mostly", "texture"} <= words


def test_every_vocabulary_word_occurs_in_the_captioner_source():
    from geot2e.train import captions

    literals = " ".join(re.findall(r'"([^"]*)"', inspect.getsource(captions.caption_tile)
                                   + inspect.getsource(captions._amount)))
    assert CAPTIONER_VOCABULARY <= set(prompt_words(literals))


def test_unknown_words_of_a_prompt():
    assert unknown_words("a lake among forests", CAPTIONER_VOCABULARY) == ["lake", "forests"]
    assert unknown_words("a harvested field of bare soil", CAPTIONER_VOCABULARY) == ["harvested"]
    assert unknown_words("Mostly WATER, dark; smooth texture", CAPTIONER_VOCABULARY) == []
    assert unknown_words("built-up area, built-up", CAPTIONER_VOCABULARY) == []
    assert prompt_words("a lake, a Lake") == ["a", "lake"]


def test_check_prompt_warns_naming_the_unknown_and_the_known_words():
    with pytest.warns(VocabularyWarning, match=r"'lake'.*Words it knows: a, area, bare"):
        assert check_prompt("a lake among forests", CAPTIONER_VOCABULARY) == ["lake", "forests"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_prompt("mostly green vegetation", CAPTIONER_VOCABULARY) == []
        assert check_prompt("", CAPTIONER_VOCABULARY) == []             # null text
        assert check_prompt("a lake", None) == []                        # vocabulary not recorded


def test_the_default_model_records_its_vocabulary_outside_the_checkpoint_hash(tmp_path):
    import geot2e
    from geot2e.models.checkpoint import DEFAULT_WEIGHTS, checkpoint_hash

    model = geot2e.load_model("default")
    assert model_vocabulary(model) == CAPTIONER_VOCABULARY
    assert "lake" not in model_vocabulary(model)
    copy = tmp_path / "copy"
    shutil.copytree(DEFAULT_WEIGHTS, copy)
    (copy / "vocabulary.json").unlink()
    assert checkpoint_hash(copy) == checkpoint_hash(DEFAULT_WEIGHTS)     # (the loaded model's hash adds its detail network's)
    assert model.checkpoint_hash.startswith(checkpoint_hash(copy))
    assert load_vocabulary(copy) is None


def test_save_and_load_vocabulary(tmp_path):
    path = save_vocabulary(tmp_path, ["a lake, dark", "Dark forest"], source="caption table test.gpkg")
    assert load_vocabulary(tmp_path) == {"a", "lake", "dark", "forest"}
    assert describe(load_vocabulary(tmp_path)) == "a, dark, forest, lake"
    assert describe(None) == "(not recorded)"
    path.write_text('{"words": "lake"}')
    with pytest.raises(CheckpointError, match="not a vocabulary file"):
        load_vocabulary(tmp_path)


def test_check_model_prompts_warns_once_per_prompt_with_unknown_words(tmp_path):
    class Model:
        source = str(tmp_path)

    assert check_model_prompts(Model(), ["a lake"]) == {}                 # no vocabulary.json: silent
    save_vocabulary(tmp_path, sorted(CAPTIONER_VOCABULARY), source="test")
    with pytest.warns(VocabularyWarning) as rec:
        found = check_model_prompts(Model(), ["a lake", "mostly water", "a lake", "", "dense forest"])
    assert found == {"a lake": ["lake"], "dense forest": ["dense", "forest"]}
    assert len(rec) == 2
