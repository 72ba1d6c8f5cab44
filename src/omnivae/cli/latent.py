"""Latent-space verbs: interpolate (the path between the codes of two inputs) and traverse (one
code dimension at a time). Each writes a figure, the decoded outputs and OUT/outputs.json."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from omnivae.cli.app import app, console, reporting
from omnivae.cli.tasks import DATA_HELP, SET_HELP, SPLIT_HELP, _check_split
from omnivae.errors import ConfigError, InputError, OmniVAEError

TO_HELP = "Modality to decode along the path (default: the first image modality)."


def write_summary(out: Path, summary: dict) -> None:
    import json

    from omnivae.atomic import write_text

    write_text(out / "outputs.json", json.dumps(summary, indent=2, allow_nan=False))


def read_inputs(model, source: str, values: list[str]):
    """Command-line values of modality `source`, read by the modality (unknown words warn)."""
    from omnivae.tasks.generate import parse_inputs, warn_unknown_words

    read = parse_inputs(model, source, values)
    warn_unknown_words(model, source, read)
    return read


def parse_dims(text: Optional[str]) -> Optional[list[int]]:
    """--dims 0,3,5 -> [0, 3, 5]; None stays None (the default dimensions)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise InputError(f"--dims takes comma-separated dimension numbers (e.g. 0,3), got {text!r}")
    return [int(p) for p in parts]


@app.command()
def interpolate(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder (run_dir/model)."),
    source: str = typer.Option(..., "--from", help="Modality of the two inputs, e.g. text."),
    value: list[str] = typer.Argument(..., help="The two inputs: captions, labels, image files, .npy arrays or "
                                                "comma-separated numbers."),
    to: Optional[str] = typer.Option(None, "--to", help=TO_HELP),
    steps: int = typer.Option(8, help="Points on the path, both ends included (2 or more)."),
    path: str = typer.Option("auto", help="spherical, linear, or auto (linear for deterministic autoencoders, "
                                          "spherical for VAEs)."),
    out: Path = typer.Option(Path("interpolation"), help="Folder for interpolation.png, the outputs and outputs.json."),
):
    """Decode the path between the codes of two inputs, e.g. `omnivae interpolate --model runs/demo/model --from text "a red circle" "a blue square" --to image`.

    Writes OUT/interpolation.png (the strip), each step's output as the target modality writes
    it (one PNG per image, values for captions and labels) and OUT/outputs.json."""
    from omnivae.cli.outputs import out_folder, removed_on_failure

    with reporting():
        from omnivae.io import load_model
        from omnivae.report.latent_paths import interpolation_strip
        from omnivae.tasks.latent import PATHS, check_steps, interpolate_values

        check_steps(steps, "--steps")
        if path not in PATHS:
            raise InputError(f"--path must be one of {', '.join(PATHS)}, got {path!r}")
        if len(value) != 2:
            raise InputError(f"interpolate joins two inputs; got {len(value)}: {value[:4]}")
        out_folder(out, "outputs.json", "interpolate")
        loaded = load_model(model)
        inputs = read_inputs(loaded, source, value)
        with removed_on_failure(out):
            found = interpolate_values(loaded, {source: inputs}, to, steps, path)
            mod = loaded.modalities[found.target]
            out.mkdir(parents=True, exist_ok=True)
            figure = interpolation_strip([found], out / "interpolation.png", mod.figure_items,
                                         [f"{value[0]} → {value[1]}"])
            summary = {"from": source, "inputs": list(value), "target": found.target, "path": found.path,
                       "steps": steps, "t": found.t, "figure": figure.name,
                       "outputs": mod.write_items(found.outputs, out, found.target),
                       "codes": found.codes.cpu().tolist()}
            write_summary(out, summary)
    console.print(f"{steps} {found.target} outputs on the {found.path} path; strip in {out / figure.name}, "
                  f"everything listed in {out / 'outputs.json'}", highlight=False)


@app.command()
def traverse(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder (default: RUN_DIR/model)."),
    source: Optional[str] = typer.Option(None, "--from", help="Modality of the input to start from (default: "
                                                              "start from the prior mean)."),
    value: Optional[list[str]] = typer.Argument(None, help="One input to start from (with --from)."),
    to: Optional[str] = typer.Option(None, "--to", help=TO_HELP),
    dims: Optional[str] = typer.Option(None, help="Code dimensions, comma-separated, e.g. 0,3 (default: the 8 "
                                                  "most active on the data of --data/--run, else the first 8)."),
    low: float = typer.Option(-3.0, help="First value of each dimension."),
    high: float = typer.Option(3.0, help="Last value of each dimension."),
    steps: int = typer.Option(7, help="Values per dimension (2 or more)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Run folder: its model and its test split "
                                                           "(for the most active dimensions)."),
    data: Optional[str] = typer.Option(None, help=DATA_HELP + " Picks the most active dimensions."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    split: str = typer.Option("auto", help=SPLIT_HELP),
    out: Path = typer.Option(Path("traversal"), help="Folder for traversals.png, the outputs and outputs.json."),
):
    """Vary one code dimension at a time and decode, e.g. `omnivae traverse --model runs/demo/model --to image --dims 0,3`.

    Each dimension takes --steps values from --low to --high while the others stay at the code
    of the input (--from MODALITY VALUE) or at the prior mean. Writes OUT/traversals.png (one
    row per dimension), each row's outputs as the target modality writes them, and OUT/outputs.json."""
    from omnivae.cli.outputs import out_folder, removed_on_failure

    with reporting():
        from omnivae.cli.tasks import load_model_and_data
        from omnivae.report.latent_paths import traversal_grid
        from omnivae.tasks.latent import check_range, check_steps, traverse_grid

        check_steps(steps, "--steps")
        check_range(low, high)
        _check_split(split)
        chosen = parse_dims(dims)
        values = list(value or [])
        if values and source is None:
            raise InputError(f"the input {values[0]!r} needs --from MODALITY")
        if source is not None and len(values) != 1:
            raise InputError(f"a traversal starts from one input; --from {source} got {len(values)}")
        if model is None and run is None:
            raise ConfigError("give --model DIR (a saved model folder) or --run RUN_DIR")
        out_folder(out, "outputs.json", "traverse")
        loaded = load_model_and_data(model, run, data, list(sets or []), need_data=False)
        net = loaded.model
        inputs = {source: read_inputs(net, source, values)} if source is not None else None
        raw = loaded.get(split) if loaded.parts else None
        with removed_on_failure(out):
            rows = traverse_grid(net, chosen, to, inputs, data=raw, low=low, high=high, steps=steps)
            target = rows[0].target
            mod = net.modalities[target]
            out.mkdir(parents=True, exist_ok=True)
            figure = traversal_grid(rows, out / "traversals.png", mod.figure_items)
            written = [{"dim": r.dim, **mod.write_items(r.outputs, out, f"{target}_dim{r.dim:03d}")}
                       for r in rows]
            summary = {"from": source, "inputs": values, "target": target, "dims": [r.dim for r in rows],
                       "chosen_by": "--dims" if chosen is not None else
                       ("most active on the data" if raw is not None else "first dimensions"),
                       "values": rows[0].t, "figure": figure.name, "rows": written}
            write_summary(out, summary)
    console.print(f"{len(rows)} dimensions ({', '.join(str(r.dim) for r in rows)}) of {target}; grid in "
                  f"{out / figure.name}, everything listed in {out / 'outputs.json'}", highlight=False)
