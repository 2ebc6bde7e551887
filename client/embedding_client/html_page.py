"""Search results as one self-contained HTML file: thumbnails are inline ``data:`` URIs."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Sequence

from embedding_client.folder import VIDEO
from embedding_client.search import time_label
from embedding_client.store import Match
from embedding_client.thumbnails import THUMBNAIL_PX, thumbnail_uri

STYLE = f"""
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; }}
.results {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; width: {THUMBNAIL_PX}px; background: #fff; padding: .5rem; border-radius: 6px;
          box-shadow: 0 1px 3px #0002; }}
figure img, .missing {{ width: {THUMBNAIL_PX}px; height: {THUMBNAIL_PX}px; object-fit: contain; }}
.missing {{ display: flex; align-items: center; justify-content: center; background: #eee; color: #777; }}
figcaption {{ font-size: .8rem; word-break: break-all; }}
"""


def _link(match: Match) -> str:
    """The file's URI; a video's opens at the frame (a media fragment)."""
    uri = Path(match.path).as_uri()
    return f"{uri}#t={match.timestamp:.3f}" if match.kind == VIDEO and match.timestamp is not None else uri


def _figure(match: Match) -> str:
    thumbnail = thumbnail_uri(match)
    preview = (f'<img src="{thumbnail}" alt="">' if thumbnail is not None
               else '<div class="missing">no preview</div>')
    time = time_label(match)
    return (f'<figure>{preview}<figcaption><b>{match.score:.4f}</b>'
            f'{" &middot; " + escape(time) if time else ""}<br>'
            f'<a href="{escape(_link(match))}">{escape(match.path)}</a></figcaption></figure>')


def results_page(query: str, matches: Sequence[Match]) -> str:
    """The page for ``matches`` of ``query`` (a text, or the path of the query image)."""
    figures = "\n".join(_figure(match) for match in matches)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>Search: {escape(query)}</title><style>{STYLE}</style></head>\n'
            f'<body><h1>{escape(query)}</h1><p>{len(matches)} results</p>\n'
            f'<div class="results">\n{figures}\n</div></body></html>\n')
