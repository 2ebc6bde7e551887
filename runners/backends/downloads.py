"""Why fetching upstream files failed, in one line: the Hugging Face Hub's errors (and the
libraries' wrappers around them: open_clip's ``RuntimeError``, transformers' ``OSError``)
mapped to what the user can do about them."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from huggingface_hub import errors as hub

from runners.contract import WeightsUnavailable


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
