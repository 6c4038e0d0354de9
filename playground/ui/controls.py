"""The sampling sidebar: presets, one control per sampling field, the seed and stop strings.

Owns: the `Controls` dataclass of components, built from `sampling.SAMPLING_FIELDS` (labels and
help text come from the fields' metadata), the preset and random-seed handlers (the preset
always names the one its values match, "Custom" only when none does), and `read`, which
turns an event's component values into sampling values by name, and the stop-strings note each
generating tab shows: the sidebar's stop strings end every tab's runs (a Chat reply too), so
wherever they apply, the tab says so (issue 33), rather than one box per tab that a share link,
the API and the notebook would each have to learn.
Does not own: checking the values (`session.Playground.params`), the note's text (`display`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import gradio as gr

from playground import display
from playground.sampling import SAMPLING_NAMES, describe, label
from playground.settings import Settings

SEED_MODES = ("New seed each run", "Fixed seed")
CUSTOM = "Custom"


@dataclass
class Controls:
    preset: gr.Dropdown
    values: dict[str, gr.Slider | gr.Number]  # by sampling field name
    seed_mode: gr.Radio
    dice: gr.Button
    stop: gr.Textbox
    prompt_lookup: gr.Checkbox

    @property
    def inputs(self) -> set[gr.components.Component]:
        return {*self.values.values(), self.seed_mode, self.stop, self.prompt_lookup}

    def read(self, data: dict) -> tuple[dict[str, Any], str, bool]:
        """(sampling values by name, stop strings text, whether to draw a new seed)."""
        values = {name: data[component] for name, component in self.values.items()}
        values["prompt_lookup"] = bool(data[self.prompt_lookup])
        return values, data[self.stop] or "", data[self.seed_mode] == SEED_MODES[0]


def build_controls(settings: Settings, supports_lookup: bool) -> Controls:
    ranges = settings.ranges
    with gr.Sidebar(label="Sampling", open=True, elem_id="sampling"):
        preset = gr.Dropdown(
            [CUSTOM, *settings.presets],
            value=preset_name(settings, settings.defaults()),
            label="Preset",
            elem_id="preset",
        )
        values: dict[str, Any] = {
            name: gr.Slider(
                ranges[name].low,
                ranges[name].high,
                value=ranges[name].default,
                step=ranges[name].step,
                label=label(name),
                info=describe(name, dict(ranges)),
                elem_id=f"slider-{name}",
            )
            for name in SAMPLING_NAMES
            if name != "seed"
        }
        seed_mode = gr.Radio(
            list(SEED_MODES), value=SEED_MODES[1], label="Seed", elem_id="seed-mode"
        )
        with gr.Row():
            values["seed"] = gr.Number(
                value=ranges["seed"].default,
                precision=0,
                label=label("seed"),
                info=describe("seed", dict(ranges)),
                elem_id="seed",
            )
            dice = gr.Button("Random seed", scale=0, min_width=90, elem_id="dice")
        stop = gr.Textbox(
            label="Stop strings (one per line)",
            info=describe("stop"),
            lines=2,
            elem_id="stop-strings",
        )
        prompt_lookup = gr.Checkbox(
            label=label("prompt_lookup"),
            info=describe("prompt_lookup") + " Off by default.",
            visible=supports_lookup,  # only the genai engine drafts
            elem_id="prompt-lookup",
        )
    values = {n: values[n] for n in SAMPLING_NAMES}
    return Controls(preset, values, seed_mode, dice, stop, prompt_lookup)


def wire_controls(controls: Controls, settings: Settings) -> None:
    sliders = list(controls.values.values())

    def on_preset(name: str) -> list[Any]:
        preset = settings.presets.get(name, {})
        return [gr.update(value=preset[n]) if n in preset else gr.update() for n in controls.values]

    def on_control_input(*values: Any) -> str:
        # .input fires only on a visitor's own move, never on a preset's update: no loop.
        return preset_name(settings, dict(zip(controls.values, values, strict=True)))

    def on_dice() -> int:
        return random.randint(0, int(settings.ranges["seed"].high))

    controls.preset.input(on_preset, controls.preset, sliders, api_visibility="private")
    for component in sliders:
        component.input(on_control_input, sliders, controls.preset, api_visibility="private")
    controls.dice.click(on_dice, None, controls.values["seed"], api_visibility="private")


def preset_name(settings: Settings, values: dict[str, Any]) -> str:
    """The preset the sampling values are (`Settings.preset_of`), else "Custom"."""
    return settings.preset_of(values) or CUSTOM


def build_stop_note(tab: str) -> gr.HTML:
    """The note, in the tab `tab`, that the sidebar's stop strings apply there (hidden while
    there are none)."""
    return gr.HTML(visible=False, elem_id=f"{tab}-stop-note")


def wire_stop_notes(controls: Controls, notes: list[gr.HTML]) -> None:
    """Every note follows the stop strings: typed, loaded from a share link or cleared."""

    def on_stop_change(stop: str | None) -> list[dict]:
        note = display.stop_note(stop)
        return [gr.update(value=note, visible=bool(note)) for _ in notes]

    controls.stop.change(on_stop_change, controls.stop, notes, api_visibility="private")
