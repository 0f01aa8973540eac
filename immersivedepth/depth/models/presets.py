"""Preset names -> official checkpoint files and where to get them (pure data, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Preset", "PRESETS", "preset_for_variant"]


@dataclass(frozen=True)
class Preset:
    """One supported official checkpoint.

    Attributes:
        name: our preset name (``depth.models=[dav2_vitl]``).
        family: ``"dav2"`` or ``"midas"``.
        variant: ``vits``/``vitb``/``vitl``/``vitg`` or the MiDaS ``model_type`` (``dpt_beit_large_512``...).
        filename: the file name as distributed.
        url: where the user downloads it (the official release / Hugging Face repository).
        note: anything the user should know about availability or licence.
    """

    name: str
    family: str
    variant: str
    filename: str
    url: str
    note: str = ""


_DAV2_HF = "https://huggingface.co/depth-anything/Depth-Anything-V2-{repo}/resolve/main/depth_anything_v2_{v}.pth"
_MIDAS_GH = "https://github.com/isl-org/MiDaS/releases/download/{tag}/{f}"


def _dav2(v: str, repo: str, note: str = "") -> Preset:
    return Preset(f"dav2_{v}", "dav2", v, f"depth_anything_v2_{v}.pth", _DAV2_HF.format(repo=repo, v=v), note)


def _midas(name: str, variant: str, tag: str = "v3_1") -> Preset:
    f = f"{variant}.pt"
    return Preset(name, "midas", variant, f, _MIDAS_GH.format(tag=tag, f=f))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _dav2("vits", "Small", "Apache-2.0"),
        _dav2("vitb", "Base", "CC-BY-NC-4.0"),
        _dav2("vitl", "Large", "CC-BY-NC-4.0"),
        _dav2("vitg", "Giant", "not publicly released at the time of writing (the official README lists it as "
                               "'coming soon'); the loader accepts the file when you have it"),
        _midas("midas_beit_l512", "dpt_beit_large_512"),
        _midas("midas_beit_l384", "dpt_beit_large_384"),
        _midas("midas_beit_b384", "dpt_beit_base_384"),
        _midas("midas_swin2_l384", "dpt_swin2_large_384"),
        _midas("midas_swin2_b384", "dpt_swin2_base_384"),
        _midas("midas_swin2_t256", "dpt_swin2_tiny_256"),
        _midas("midas_dpt_l384", "dpt_large_384", tag="v3"),
        _midas("midas_dpt_hybrid384", "dpt_hybrid_384", tag="v3"),
    )
}


def preset_for_variant(family: str, variant: str) -> Preset:
    """The preset of an architecture (``("midas", "dpt_swin2_tiny_256")`` -> ``midas_swin2_t256``)."""
    for p in PRESETS.values():
        if p.family == family and p.variant == variant:
            return p
    raise KeyError(f"no preset for {family} {variant}")
