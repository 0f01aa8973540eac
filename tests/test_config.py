"""Typed configs (immersivedepth/config.py): defaults from the schema, partial sections, errors naming the key."""

from __future__ import annotations

import pytest

from immersivedepth.config import from_mapping
from immersivedepth.errors import ConfigError
from immersivedepth.render.config import RenderConfig
from immersivedepth.train.config import FieldConfig, resolve_config


def test_partial_section_overrides_the_fields_own_default_not_the_class_default():
    # the colour grid's default (16 levels up to 2048) differs from HashGridConfig's class defaults (12 / 512)
    cfg = resolve_config({"model": {"color_grid": {"log2_hashmap_size": 18}}})
    assert cfg["model"]["color_grid"] == {"n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 18,
                                          "base_resolution": 16, "finest_resolution": 2048}
    assert cfg["model"]["density_grid"]["finest_resolution"] == 512
    assert resolve_config({"optim": {"lr": 0.5}})["optim"]["steps"] == FieldConfig().optim.steps


def test_values_are_typed_and_errors_name_the_dotted_key():
    assert resolve_config({"optim": {"steps": "12", "lr": "0.5"}})["optim"] == {**resolve_config(None)["optim"],
                                                                              "steps": 12, "lr": 0.5}
    with pytest.raises(ConfigError, match=r"^field.optim.steps must be a whole number, got 2.5$"):
        resolve_config({"optim": {"steps": 2.5}})
    with pytest.raises(ConfigError, match=r"^field.optim.fused must be true or false, got 'yes'$"):
        resolve_config({"optim": {"fused": "yes"}})
    with pytest.raises(ConfigError, match=r"^field.grid.decay must be in \(0, 1\], got 1.5$"):
        resolve_config({"grid": {"decay": 1.5}})
    with pytest.raises(ConfigError, match=r"^field.model must be a mapping of FieldModelConfig keys"):
        resolve_config({"model": 3})


@pytest.mark.parametrize("section", ["density_grid", "color_grid", "density_mlp", "color_mlp"])
def test_shared_sections_name_their_exact_key(section):
    """HashGridConfig / MLPConfig sit under two keys each: a bad value names the one it was given under, not a
    wildcard like field.model.*_grid.n_levels."""
    key, value, words = (("n_levels", 0, "must be > 0, got 0") if section.endswith("grid") else
                         ("width", -1, "must be > 0, got -1"))
    with pytest.raises(ConfigError, match=rf"^field\.model\.{section}\.{key} {words}$"):
        resolve_config({"model": {section: {key: value}}})
    if section.endswith("grid"):
        with pytest.raises(ConfigError, match=rf"^field\.model\.{section}\.finest_resolution must be >= "):
            resolve_config({"model": {section: {"finest_resolution": 2}}})
    else:
        with pytest.raises(ConfigError, match=rf"^field\.model\.{section}\.depth must be >= 0, got -1$"):
            resolve_config({"model": {section: {"depth": -1}}})


def test_list_items_are_schemas_too():
    cfg = from_mapping(RenderConfig, {"paths": [{"kind": "circle", "n_frames": "8"}]}, "render")
    assert cfg.paths[0].name == "circle" and cfg.paths[0].n_frames == 8 and cfg.paths[0].width == 512
    with pytest.raises(ConfigError, match=r"^unknown key render.paths\[1\].n_frame; valid keys under render"):
        from_mapping(RenderConfig, {"paths": [{"kind": "tour"}, {"kind": "circle", "n_frame": 3}]}, "render")
    with pytest.raises(ConfigError, match=r"render.paths has several paths named \['tour'\]"):
        from_mapping(RenderConfig, {"paths": [{"kind": "tour"}, {"kind": "tour"}]}, "render")
