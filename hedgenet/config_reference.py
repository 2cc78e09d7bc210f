"""The configuration reference (docs/config_reference.md), generated from the config files themselves so that it
lists every command's config and every group's options with their keys, defaults and comments as they are.

    python -m hedgenet.config_reference > docs/config_reference.md

The test suite regenerates it and fails when the committed page differs (a changed config without the page).
"""

from __future__ import annotations

from pathlib import Path

PRIMARY = {"label": "hedgenet-label", "train": "hedgenet-train", "phonons": "hedgenet-phonons",
           "epi": "hedgenet-epi", "fermi_velocity": "hedgenet-fermi-velocity", "predict": "hedgenet-predict",
           "active": "hedgenet-active", "pipeline": "hedgenet-pipeline"}


def reference_markdown(conf_dir: Path | None = None) -> str:
    from hedgenet.config import config_dir

    root = Path(conf_dir or config_dir())
    out = ["# Configuration reference", "",
           "Generated from `conf/` (`python -m hedgenet.config_reference > docs/config_reference.md`): every "
           "command's config and every group's options, with their keys, defaults and comments. Any key is set on "
           "the command line as `key=value` (nested: `section.key=value`), a group option as `group=option`; "
           "`???` marks a value you must give. Lengths are in Å, energies in eV, frequencies in THz, temperatures "
           "in K unless a key's name or comment says otherwise.", "", "## Commands", ""]
    for name, prog in PRIMARY.items():
        text = (root / f"{name}.yaml").read_text()
        out += [f"### `{prog}` (conf/{name}.yaml)", "", "```yaml", text.rstrip(), "```", ""]
    out += ["## Groups", ""]
    for group in sorted(p for p in root.iterdir() if p.is_dir()):
        out += [f"### `{group.name}=…` (conf/{group.name}/)", ""]
        for option in sorted(group.glob("*.yaml")):
            text = option.read_text()
            out += [f"#### `{group.name}={option.stem}`", "", "```yaml", text.rstrip(), "```", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
