"""``python -m models`` (or ``python -m importer``): list the catalogue and import models into
the BentoML model store.

    python -m models list
    python -m models import CLIP/clip-vit-b-32                   # download upstream weights (says how much first)
    python -m models import CLIP/clip-vit-b-32 --from-dir DIR    # already-downloaded files
    python -m models import CLIP/clip-vit-b-32 --random-weights [--tiny]
    python -m models import CLIP/clip-vit-b-32 --if-missing       # no-op when already imported
    python -m models import CLIP/clip-vit-b-32 --openvino         # also store OpenVINO IR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.catalogue import CATALOGUE, UnknownModel, find_model
from runners.contract import WeightSource, WeightsUnavailable


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="show the catalogue")
    importer = commands.add_parser("import", help="write a model-store entry")
    importer.add_argument("model", help="Family/name or bare name, as in GET /models")
    origin = importer.add_mutually_exclusive_group()
    origin.add_argument("--from-dir", type=Path, metavar="DIR",
                        help="import already-downloaded upstream files from DIR (offline)")
    origin.add_argument("--random-weights", action="store_true",
                        help="same architecture and files, random weights (tests, benchmarks)")
    importer.add_argument("--tiny", action="store_true",
                          help="with --random-weights: a few-layer variant for fast tests")
    importer.add_argument("--if-missing", action="store_true",
                          help="do nothing when the store already has an entry for the model")
    importer.add_argument("--openvino", action="store_true",
                          help="also convert the encoders to OpenVINO IR, stored in the entry "
                               "(EMBEDDING_USE_OV=true then starts without converting)")
    return parser


def _source(args: argparse.Namespace) -> WeightSource:
    if args.tiny and not args.random_weights:
        raise SystemExit("--tiny only applies to --random-weights")
    if args.from_dir is not None:
        if not args.from_dir.is_dir():
            raise SystemExit(f"--from-dir {args.from_dir}: not a directory")
        return WeightSource("dir", path=args.from_dir.resolve())
    if args.random_weights:
        return WeightSource("random", tiny=args.tiny)
    return WeightSource("upstream")


def _list() -> None:
    for model in CATALOGUE:
        print(f"{model.id:40} dim={model.dimension:<5} implemented=yes")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        _list()
        return 0
    source = _source(args)
    try:
        model = find_model(args.model)
        from importer.store import (ModelNotImported, download_plans, find_entry,  # bentoml: not for `list`
                                    import_model)

        if args.if_missing:
            try:
                print(f"{model.id} is already in the model store as {find_entry(model).tag}")
                return 0
            except ModelNotImported:
                pass
        if source.kind == "upstream":
            for plan in download_plans(model):
                print(plan.announcement(), flush=True)  # before the libraries' progress bars
        entry = import_model(model, source, openvino=args.openvino)
    except WeightsUnavailable as error:
        print(f"error: {error}. Import files you have downloaded with --from-dir DIR, or the same "
              "architecture with random weights with --random-weights.", file=sys.stderr)
        return 2
    except (UnknownModel, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Imported {model.id} as {entry.tag} ({entry.info.labels['weights']} weights, "
          f"{entry.info.labels['variant']}) at {entry.path}")
    return 0


