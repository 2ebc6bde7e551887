"""Fetching upstream files from the Hugging Face Hub: how much an import will download, said
before it starts, and why a download failed, in one line.

* :func:`plan_download` chooses, from a repository's listing, the files a family fetches
  (:class:`UpstreamFiles`, which families give through :class:`FetchesUpstream`), with their
  sizes and whether the local Hub cache already holds them; :func:`upstream_plan` asks the Hub
  for the listing. Sizes are shown in decimal units (1 MB = 10^6 bytes), as the Hub's pages do.
* :func:`fetching_upstream` maps the Hub's errors (and the libraries' wrappers around them:
  open_clip's ``RuntimeError``, transformers' ``OSError``) to what the user can do about them.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Protocol, Sequence, runtime_checkable

import httpx2
from huggingface_hub import HfApi, try_to_load_from_cache
from huggingface_hub import errors as hub
from huggingface_hub.utils import filter_repo_objects

from runners.contract import ModelSpec, WeightsUnavailable

HUB = "huggingface.co"
LISTING_TIMEOUT_S = 10.0  # the listing only informs: it never holds an import up for long
SMALL_FILE_BYTES = 1_000_000  # files below this are counted, not named, in an announcement


@dataclass(frozen=True)
class UpstreamFiles:
    """The files an import fetches from one Hub repository, as glob patterns of their paths
    (``snapshot_download``'s ``allow_patterns``: ``*`` crosses folders): every file matching
    ``patterns``, and of ``weights``, the first pattern that some file of the repository
    matches (safetensors where the repository has them, else a pickle)."""

    repo: str
    patterns: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()


@runtime_checkable
class FetchesUpstream(Protocol):
    """A family adapter that says which Hub files importing a model's upstream weights fetches."""

    def upstream_files(self, model: ModelSpec) -> list[UpstreamFiles]: ...


@dataclass(frozen=True)
class PlannedFile:
    name: str
    size: int  # bytes
    cached: bool  # the local Hub cache holds it: not downloaded again


@dataclass(frozen=True)
class DownloadPlan:
    """What an import will fetch from one Hub repository."""

    repo: str
    files: tuple[PlannedFile, ...]

    @property
    def missing(self) -> list[PlannedFile]:
        return [file for file in self.files if not file.cached]

    def announcement(self) -> str:
        """One line: how much will be downloaded, from where, and which files."""
        origin = f"{HUB}/{self.repo}"
        missing = sorted(self.missing, key=lambda file: -file.size)
        if not missing:
            return f"nothing to download from {origin}: its {len(self.files)} file(s) are already cached"
        named = [f"{file.name} {human_size(file.size)}" for file in missing if file.size >= SMALL_FILE_BYTES]
        small = len(missing) - len(named)
        if small:
            named.append(f"{small} small file(s)" if named else f"{small} file(s)")
        cached = len(self.files) - len(missing)
        if cached:
            named.append(f"{cached} file(s) already cached")
        total = sum(file.size for file in missing)
        return f"downloading about {human_size(total)} from {origin} ({', '.join(named)})"


def human_size(size: int) -> str:
    """``size`` bytes in decimal units: ``605 MB``, ``1.2 GB``, ``4.4 kB``."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{size} B"


def in_hub_cache(repo: str, name: str) -> bool:
    """The local Hub cache holds file ``name`` of ``repo``'s main revision."""
    return isinstance(try_to_load_from_cache(repo, name), str)


def _matching(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    return list(filter_repo_objects(names, allow_patterns=list(patterns)))


def plan_download(wanted: UpstreamFiles, listing: Mapping[str, int]) -> DownloadPlan:
    """The files of ``wanted`` that ``listing`` (each file of the repository with its size in
    bytes) has, in listing order, each marked as the local Hub cache holds it or not."""
    names = list(listing)
    weights = next((found for pattern in wanted.weights if (found := _matching(names, [pattern]))), [])
    chosen = {*_matching(names, wanted.patterns), *weights}
    return DownloadPlan(wanted.repo, tuple(PlannedFile(name, listing[name], in_hub_cache(wanted.repo, name))
                                           for name in names if name in chosen))


def hub_listing(repo: str) -> dict[str, int] | None:
    """Each file of ``repo``'s main revision with its size in bytes; ``None`` when the Hub does
    not answer (offline, unreachable, a missing or private repository), for the download
    itself to fail with its reason."""
    try:
        info = HfApi().model_info(repo, files_metadata=True, timeout=LISTING_TIMEOUT_S)
    except (OSError, httpx2.HTTPError):  # the Hub's errors are OSErrors, its transport's not
        return None
    return {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or ()}


def upstream_plan(wanted: UpstreamFiles) -> DownloadPlan | None:
    """:func:`plan_download` of the Hub's listing of ``wanted.repo``; ``None`` without one."""
    listing = hub_listing(wanted.repo)
    return None if listing is None else plan_download(wanted, listing)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from or while handling, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _reason(error: BaseException) -> str | None:
    """What ``error`` says went wrong, where it is a Hub failure."""
    if isinstance(error, hub.GatedRepoError):
        return ("the repository is gated: accept its licence on huggingface.co, then log in "
                "(`hf auth login`, or set HF_TOKEN)")
    if isinstance(error, hub.RepositoryNotFoundError):
        return "the repository does not exist on the Hugging Face Hub, or is private (log in if you may read it)"
    if isinstance(error, (hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled)):
        return ("the Hugging Face Hub cannot be reached (no network, or HF_HUB_OFFLINE is set) and the files "
                "are not in its local cache")
    if isinstance(error, (hub.RevisionNotFoundError, hub.EntryNotFoundError)):
        return "the repository has no such revision or file"
    if isinstance(error, hub.HfHubHTTPError):
        status = getattr(error.response, "status_code", None)
        return f"the Hugging Face Hub answered HTTP {status}" if status else "the Hugging Face Hub request failed"
    return None


def download_failure(error: BaseException) -> str | None:
    """The first Hub failure in ``error``'s chain, described; ``None`` when it holds none."""
    return next((reason for reason in map(_reason, _chain(error)) if reason is not None), None)


@contextmanager
def fetching_upstream(what: str) -> Iterator[None]:
    """Inside, a failed download is raised as :class:`WeightsUnavailable` naming ``what`` and
    the reason; every other error passes unchanged."""
    try:
        yield
    except WeightsUnavailable:
        raise
    except Exception as error:
        reason = download_failure(error)
        if reason is None:
            raise
        raise WeightsUnavailable(f"cannot download {what}: {reason}") from error
