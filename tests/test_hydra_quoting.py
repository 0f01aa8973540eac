"""What the README's Troubleshooting section says about quoting paths, checked against Hydra 1.3's own parser
(the one ``perf_runner.py`` uses); the command-line run with such a path is ``quoted_odd_path`` in test_bad_input."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationKeyError

PARSER = OverridesParser.create()


def _value(override: str):
    return PARSER.parse_overrides([override])[0].value()


@pytest.mark.parametrize("override,expected", [
    ("dataset.image_path='/data/my pano é=1/pano (2).jpg'", "/data/my pano é=1/pano (2).jpg"),
    ("dataset.image_path=/data/my pano/pano.jpg", "/data/my pano/pano.jpg"),
    ("dataset.image_path='/data/a,b/[x]/{y}/#1/~z.jpg'", "/data/a,b/[x]/{y}/#1/~z.jpg"),
    ('dataset.image_path="/data/it\'s/pano.jpg"', "/data/it's/pano.jpg"),
    ("exp_name='true'", "true"),
])
def test_quoted_values_arrive_verbatim(override, expected):
    assert _value(override) == expected


@pytest.mark.parametrize("override,words", [
    ("dataset.image_path=/data/été/pano.jpg", "LexerNoViableAltException"),
    ("dataset.image_path=/data/a=b/pano.jpg", "mismatched input '='"),
])
def test_unquoted_special_characters_fail_to_parse(override, words):
    with pytest.raises(OverrideParseException, match=words):
        _value(override)


def test_unquoted_comma_is_a_sweep():
    value = _value("dataset.image_path=/data/a,b/pano.jpg")
    assert not isinstance(value, str) and list(value.list) == ["/data/a", "b/pano.jpg"]


def test_bare_true_is_a_boolean():
    assert _value("exp_name=true") is True


def test_interpolation_even_in_quotes_and_its_escape():
    quoted = _value("dataset.image_path='/data/${x}/pano.jpg'")
    with pytest.raises(InterpolationKeyError, match="'x' not found"):
        _ = OmegaConf.create({"v": quoted}).v
    escaped = _value("dataset.image_path='/data/\\${x}/pano.jpg'")
    assert OmegaConf.create({"v": escaped}).v == "/data/${x}/pano.jpg"
