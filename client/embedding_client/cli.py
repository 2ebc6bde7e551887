"""``embedding-client`` (or ``python -m embedding_client``): embed, index a folder, search it.

    embedding-client embed --text "a cat" --out cat.npy
    embedding-client index ~/Pictures --db ./embedding-index
    embedding-client search "a dog on a beach" --db ./embedding-index --html results.html

Exit codes: 0 done; 1 the server failed or could not be reached; 2 bad arguments, a file or
folder that cannot be read, or an index that cannot be used (missing, or built with another
model); 3 ``index`` went through the folder but some files failed (each is reported); 130
interrupted (Ctrl-C; ``index`` keeps the files indexed so far). ``index``, ``search`` need the
``index`` extra; their modules are imported only when run, so ``embed`` needs the core only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import httpx
import numpy as np

from embedding_client.client import DEFAULT_URL, Client
from embedding_client.errors import EmbeddingServerError
from embedding_client.index_errors import StoreError
from embedding_client.results import Embeddings, VideoEmbeddings

DEFAULT_DB = "embedding-index"
INDEX_EXTRA = "pip install 'multimodal-embedding-client[index]'"
INDEX_MODULES = {"lancedb", "pyarrow", "PIL", "av"}
SOME_FILES_FAILED, INTERRUPTED = 3, 130


def make_client(server: str, api_key: str | None) -> Client:
    """The client every command uses."""
    return Client(server, api_key=api_key)


def embed(client: Client, args: argparse.Namespace) -> int:
    if args.video is not None:
        result: Embeddings = client.embed_video(args.video, num_frames=args.num_frames, extraction_fps=args.fps)
    elif args.text:
        result = client.embed_texts(args.text)
    else:
        result = client.embed_images(args.image)
    write_embeddings(result, args.out)
    return 0


def write_embeddings(result: Embeddings, out: str | None) -> None:
    """``.npy``: the float32 matrix; ``.json`` or no file (stdout): the model, the dimension,
    the vectors and, for a video, each row's frame number and time."""
    if out is not None and out.endswith(".npy"):
        np.save(out, result.vectors)
        return
    body: dict[str, Any] = {"model": result.model, "dimension": result.dimension,
                            "vectors": result.vectors.tolist()}
    if isinstance(result, VideoEmbeddings):
        body.update(frames=result.frames, timestamps=result.timestamps, fps=result.fps)
    text = json.dumps(body)
    if out is None:
        print(text)
    else:
        Path(out).write_text(text, encoding="utf-8")


def index(client: Client, args: argparse.Namespace) -> int:
    from embedding_client.indexing import index_folder
    from embedding_client.video_requests import MAX_UPLOAD_BYTES, MiB

    upload = MAX_UPLOAD_BYTES if args.max_upload_mib is None else int(args.max_upload_mib * MiB)
    summary = index_folder(client, args.folder, args.db, fps=args.fps, prune=args.prune, progress=not args.quiet,
                           server_dir=args.server_dir, max_upload_bytes=upload)
    for failure in summary.failed:
        print(f"failed: {failure.path}: {failure.detail}", file=sys.stderr)
    pruned = f", pruned {summary.pruned}" if args.prune else ""
    print(f"indexed {summary.indexed}, skipped {summary.unchanged} (unchanged), "
          f"failed {len(summary.failed)}{pruned}")
    return SOME_FILES_FAILED if summary.failed else 0


def search(client: Client, args: argparse.Namespace) -> int:
    from embedding_client.search import search as search_index, time_label

    matches = search_index(client, args.db, text=args.query, image=args.image, top_k=args.top_k)
    if args.html is not None:
        from embedding_client.html_page import results_page

        Path(args.html).write_text(results_page(args.query or args.image, matches), encoding="utf-8")
    if args.json:
        print(json.dumps([asdict(match) for match in matches]))
    else:
        for match in matches:
            print(f"{match.score:.4f}  {match.path}  {time_label(match)}".rstrip())
    return 0


def _positive(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"takes a number above 0, not {text!r}")
    return value


def _connection_options(parser: argparse.ArgumentParser, defaults: Mapping[str, Any]) -> None:
    """``--server`` and ``--api-key``, taken before or after the command: the subcommands'
    copies default to SUPPRESS so they override the main parser's only when given."""
    parser.add_argument("--server", default=defaults.get("server", argparse.SUPPRESS),
                        help=f"server URL (default: $EMBEDDING_SERVER_URL, else {DEFAULT_URL})")
    parser.add_argument("--api-key", default=defaults.get("api_key", argparse.SUPPRESS),
                        help="API key (default: $EMBEDDING_API_KEY)")


def _command(commands: Any, name: str, run: Callable[[Client, argparse.Namespace], int],
             summary: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=summary)
    _connection_options(parser, {})
    parser.set_defaults(run=run)
    return parser


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedding-client", description="Embed, index a folder, search it.")
    _connection_options(parser, {"server": environ.get("EMBEDDING_SERVER_URL", DEFAULT_URL),
                                 "api_key": environ.get("EMBEDDING_API_KEY")})
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    one_off = _command(commands, "embed", embed, "embed texts, images or a video; print or save the vectors")
    inputs = one_off.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--text", action="append", help="a text (repeatable)")
    inputs.add_argument("--image", action="append", help="an image path or URL (repeatable)")
    inputs.add_argument("--video", help="a video path or URL")
    one_off.add_argument("--num-frames", type=int, help="frames to sample from the video")
    one_off.add_argument("--fps", type=float, help="frames per second to sample from the video")
    one_off.add_argument("--out", help="FILE.npy (float32 matrix) or FILE.json; JSON on stdout without it")

    folder = _command(commands, "index", index, "embed a folder's images and videos into an index")
    folder.add_argument("folder", help="folder to index, recursively")
    folder.add_argument("--db", default=DEFAULT_DB, help="index directory (default: ./%(default)s)")
    folder.add_argument("--fps", type=_positive, default=1.0, help="video frames per second to index (default: 1)")
    folder.add_argument("--prune", action="store_true", help="drop indexed files under FOLDER that were deleted")
    folder.add_argument("--server-dir", metavar="DIR",
                        help="the server sees FOLDER at DIR (its video root, a shared volume): "
                             "videos are read by the server there, not uploaded")
    folder.add_argument("--max-upload-mib", type=_positive, metavar="MIB",
                        help="largest video to upload, in MiB of base64 (default: 24, under the server's "
                             "32 MiB body limit)")
    folder.add_argument("--quiet", action="store_true", help="no progress bar")

    lookup = _command(commands, "search", search, "search an index with a text or an image")
    lookup.add_argument("query", nargs="?", help="text query")
    lookup.add_argument("--image", help="query image (path or URL) instead of a text")
    lookup.add_argument("--db", default=DEFAULT_DB, help="index directory (default: ./%(default)s)")
    lookup.add_argument("--top-k", type=int, default=10, help="results to show (default: %(default)s)")
    lookup.add_argument("--html", help="also write the results as a self-contained HTML page")
    lookup.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Checks of what argparse cannot express; ``parser.error`` exits with code 2."""
    if args.command == "embed":
        if args.out is not None and not args.out.endswith((".npy", ".json")):
            parser.error("--out takes a .npy or a .json file")
        if args.video is None and (args.num_frames is not None or args.fps is not None):
            parser.error("--num-frames and --fps apply to --video")
    elif args.command == "search":
        if (args.query is None) == (args.image is None):
            parser.error("search takes a text query or --image, not both or neither")
        if args.top_k < 1:
            parser.error("--top-k must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(os.environ)
    try:
        args = _checked(parser, parser.parse_args(argv))
    except SystemExit as stop:  # argparse: 2 for usage errors, 0 for --help
        return int(stop.code or 0)
    try:
        with make_client(args.server, args.api_key) as client:
            return args.run(client, args)
    except (StoreError, OSError) as error:  # OSError: a path that is missing, a folder, unreadable
        print(f"error: {error}", file=sys.stderr)
        return 2
    except EmbeddingServerError as error:
        print(f"error: the server answered {error}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:
        print(f"error: cannot reach {args.server}: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        if error.name not in INDEX_MODULES:
            raise
        print(f"error: {error.name} is not installed: {INDEX_EXTRA}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = "; files indexed so far are kept" if args.command == "index" else ""
        print(f"interrupted{kept}", file=sys.stderr)
        return INTERRUPTED
