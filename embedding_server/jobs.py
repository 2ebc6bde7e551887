"""``POST /embeddings`` as a background job: BentoML's task routes under ``/jobs/embeddings``,
guarded as the app's own routes are.

BentoML serves a ``@bentoml.task`` method's routes itself, beside (and before) the mounted
app, so none of the app's middleware sees them. :class:`JobRoutes` is a BentoML service
middleware that gives them the app's rules: CORS, the API keys, the body cap and deadline, a
per-worker limit on jobs in flight (``EMBEDDING_MAX_JOBS``), and the ``/embeddings`` validation
at submit, so that a bad body is refused then with the synchronous route's status and detail.
It also answers ``cancel`` itself: BentoML 1.4's local server marks the task's row "canceled"
but lets the task run on and overwrite it, answering 400 whatever happened.

A job's answer (:func:`run_job`) is the response ``/embeddings`` gives, which BentoML stores
and ``get`` returns as it is: status and body, vectors or ``{"detail": ...}``.

Ending a job is a race between its work and a cancel, settled in the row itself: ``cancel``
ends the row (status "canceled", the :func:`canceled` answer, ``completed_at``) only while it
is "in_progress", and a job whose work is done ends it likewise (:meth:`JobStore.finish`)
before BentoML writes the same result again. Whichever comes first wins; the loser sees the
row ended (a late cancel answers 409, a job that lost raises :class:`JobCancelled`), so a
cancel answered 200 is never overwritten, and every ended row has the ``completed_at`` that
BentoML's clean-up (24 hours after it) goes by.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.message
import logging
import math
import sqlite3
from typing import Any
from urllib.parse import parse_qsl

import bentoml
import orjson
from bentoml._internal.container import BentoMLContainer
from _bentoml_impl.tasks.serde import JSONSerde
from pydantic import ValidationError
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from embedding_server.http_api.api_keys import ApiKeyMiddleware
from embedding_server.http_api.body_limit import ASGIApp, BodyLimitMiddleware, Receive, Scope, Send, receive_body, replaying
from embedding_server.http_api.concurrency_limit import ConcurrencyLimitMiddleware
from embedding_server.http_api.cors import cors_options
from embedding_server.http_api.encoding import embedding_body
from embedding_server.http_api.error_bodies import error_response
from embedding_server.http_api.errors import ApiError, InvalidInput
from embedding_server.http_api.metrics import count_request
from embedding_server.http_api.schemas import EmbeddingRequest
from embedding_server.pipeline import EmbeddingPipeline
from embedding_server.routes import answered
from embedding_server.settings import Settings
from embedding_server.validation_errors import MAX_REPORTED_ERRORS, describe_errors, location

logger = logging.getLogger(__name__)

JOB_ROUTE = "/jobs/embeddings"  # the task method's ``route``: BentoML adds /submit, /status, ...
SUBMIT, RETRY, CANCEL = f"{JOB_ROUTE}/submit", f"{JOB_ROUTE}/retry", f"{JOB_ROUTE}/cancel"
ANSWERED_AS = "/embeddings"  # jobs answer, and refuse, in this route's shape
CANCELED = "canceled"  # BentoML's ResultStatus values
IN_PROGRESS = "in_progress"
COMPLETED, FAILED = "completed", "failed"
CANCELED_STATUS = 409  # what ``get`` answers for a canceled job, and its metrics status
UNVALIDATED = "invalid"  # the metrics input type of a job whose stored body no longer validates
CANCEL_CHECK_S = 0.5  # how often a running job looks at its row for a cancel


class JobCancelled(BaseException):
    """Ends a job whose row was canceled. A ``BaseException``: BentoML's task runner stores a
    500 result for every ``Exception``, which would overwrite "canceled"; :class:`JobRoutes`
    absorbs it once it has passed."""


def _declares_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this ``Content-Type`` as JSON (it reads any other,
    and a missing one, as bytes, which fail the model)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def validated(body: bytes, content_type: str | None = "application/json") -> EmbeddingRequest:
    """``body`` as ``POST /embeddings`` reads it, refused with that route's 422 detail."""
    try:
        if not body:
            raise InvalidInput("body: Field required")
        data = orjson.loads(body) if _declares_json(content_type) else body
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"malformed JSON body ({error.msg})") from None
    return validated_fields(data)


def validated_fields(data: Any) -> EmbeddingRequest:
    """The parsed body ``data`` as an :class:`EmbeddingRequest`, refused as :func:`validated`
    does. Validation keeps ``data``'s strings (a base64 video's text is shared, not copied)."""
    try:
        return EmbeddingRequest.model_validate(data, from_attributes=True)
    except ValidationError as error:
        errors = error.errors()
    message = describe_errors(errors, lambda item: location(item, "body"), MAX_REPORTED_ERRORS)
    fields = [str(part) for part in errors[0].get("loc", ())] if errors else []
    raise InvalidInput(message or "invalid request", param=fields[0] if fields else None)


class JobStore:
    """The task rows of BentoML's result store (an SQLite file in ``BENTOML_HOME``, shared by
    the entry workers), read and marked here for cancellation. Each call opens the file in a
    worker thread: no connection (and no thread) outlives it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _connected(self) -> contextlib.closing[sqlite3.Connection]:
        return contextlib.closing(sqlite3.connect(self.path, timeout=30.0))

    def _status(self, task_id: str) -> str | None:
        with self._connected() as db:
            row = db.execute("SELECT status FROM result WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else str(row[0])

    def _end(self, task_id: str, status: str, result: bytes) -> bool:
        """Write the ended row BentoML's ``set_result`` writes, if the row is in progress."""
        now = datetime.datetime.now(tz=datetime.timezone.utc)  # stored as BentoML stores it
        with self._connected() as db, db:  # the inner ``db`` commits
            cursor = db.execute(
                "UPDATE result SET status = ?, result = ?, completed_at = ? WHERE task_id = ? AND status = ?",
                (status, result, now, task_id, IN_PROGRESS))
            return cursor.rowcount == 1

    async def status(self, task_id: str) -> str | None:
        """The job's status, ``None`` for an unknown id."""
        return await asyncio.to_thread(self._status, task_id)

    async def cancel(self, task_id: str) -> bool:
        """End the job as canceled, answer :func:`canceled` and all, if it is still in
        progress; whether it was. Its running work stops at its next look at the row."""
        result = await JSONSerde().serialize_response(canceled(task_id))
        return await asyncio.to_thread(self._end, task_id, CANCELED, result)

    async def finish(self, task_id: str, response: Response) -> bool:
        """End the job with ``response`` (as BentoML will, just after) unless a cancel ended it
        first: ``False`` only then. A store that fails here is logged and left to BentoML."""
        status = COMPLETED if response.status_code < 400 else FAILED
        try:
            result = await JSONSerde().serialize_response(response)
            if await asyncio.to_thread(self._end, task_id, status, result):
                return True
            return await self.status(task_id) != CANCELED
        except sqlite3.Error as error:
            logger.warning("job %s: could not end its row (%s); BentoML stores its answer", task_id, error)
            return True

    async def wait_cancelled(self, task_id: str) -> None:
        while await self.status(task_id) != CANCELED:
            await asyncio.sleep(CANCEL_CHECK_S)


_stores: dict[str, JobStore] = {}


def job_store() -> JobStore:
    """This process's view of BentoML's result store."""
    path = BentoMLContainer.result_store_file.get()
    return _stores.setdefault(path, JobStore(path))


async def run_job(pipeline: EmbeddingPipeline, fields: dict[str, Any], ctx: bentoml.Context) -> Response:
    """:func:`answer` for the task BentoML runs with ``ctx``. BentoML replaces the status of a
    context-taking method's response with the context's (200 unless set), so the answer's is
    copied there: a failed job's row must say "failed" and ``get`` give the route's status."""
    response = await answer(pipeline, fields, getattr(ctx.request.state, "task_id", None))
    ctx.response.status_code = response.status_code
    return response


async def answer(pipeline: EmbeddingPipeline, fields: dict[str, Any], task_id: str | None) -> Response:
    """What ``POST /embeddings`` answers for the body ``fields``, with no request time-out;
    the pipeline's own bounds (downloads, decoding, Encoder calls) still apply. With a
    ``task_id``, the job's row is ended with the answer (:meth:`JobStore.finish`), and
    :class:`JobCancelled` is raised once a cancel has ended it instead, cancelling the
    pipeline (a video's decoding process is killed). The job is counted in the request
    metrics once, as it ends: route :data:`JOB_ROUTE`, its input type, the status of its
    answer (:data:`CANCELED_STATUS` when canceled)."""
    input_type = UNVALIDATED
    try:
        try:
            request = validated_fields(fields)
        except ApiError as error:
            response = error_response(ANSWERED_AS, error)
        else:
            input_type = request.input.type
            response = await _embedded(pipeline, request, task_id)
            del request
        if task_id is not None and not await job_store().finish(task_id, response):
            raise JobCancelled(task_id)  # the cancel ended the row before the work did
    except JobCancelled:
        count_request(JOB_ROUTE, input_type, CANCELED_STATUS)
        raise
    except Exception:
        count_request(JOB_ROUTE, input_type, 500)  # BentoML stores a 500 for it
        raise
    count_request(JOB_ROUTE, input_type, response.status_code)
    return response


async def _embedded(pipeline: EmbeddingPipeline, request: EmbeddingRequest, task_id: str | None) -> Response:
    """The route's answer for ``request``; :class:`JobCancelled` once the row is canceled."""
    work = asyncio.ensure_future(answered(pipeline.embed(request)))
    watch = asyncio.ensure_future(job_store().wait_cancelled(task_id)) if task_id else None
    try:
        await asyncio.wait([task for task in (work, watch) if task], return_when=asyncio.FIRST_COMPLETED)
        if watch is not None and watch.done() and not work.done():
            if watch.exception() is None:
                raise JobCancelled(task_id)
            logger.warning("job %s: cancel check failed (%s); running on", task_id, watch.exception())
        embedding = await work
    except ApiError as error:
        return error_response(ANSWERED_AS, error)
    finally:
        for task in (work, watch):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(task for task in (work, watch) if task), return_exceptions=True)
    return Response(embedding_body(embedding), media_type="application/json")


def canceled(task_id: str) -> Response:
    """A canceled job's answer, stored for ``get``."""
    return _json(CANCELED_STATUS, {"detail": f"Job {task_id} was canceled"})


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _without_credentials(scope: Scope) -> Scope:
    """``scope`` less its ``Authorization`` header: BentoML stores a job's request, headers
    included, in its result store for ``retry``."""
    headers = [(name, value) for name, value in scope.get("headers") or [] if name.lower() != b"authorization"]
    return {**scope, "headers": headers}


class JobRoutes:
    """The app's rules for the job routes (paths under :data:`JOB_ROUTE`); every other path
    passes untouched. Outermost first, as in the app (embedding_server/app.py): CORS with the
    app's settings (when origins are allowed: every answer, refusals included, carries its
    headers, and a preflight needs no key), the API keys, the body cap and deadline, the limit
    of jobs in flight (``submit`` and ``retry`` hold a slot until their job ends: each entry
    worker runs at most its share of ``EMBEDDING_MAX_JOBS``, apart from the app's own count),
    then validation at submit and ``cancel``."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_jobs = math.ceil(settings.max_jobs / settings.entry_workers)  # this worker's share
        guarded: ASGIApp = ConcurrencyLimitMiddleware(self._admitted, max_concurrency=self.max_jobs,
                                                      paths=(SUBMIT, RETRY))
        guarded = BodyLimitMiddleware(guarded, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
        if settings.api_keys:
            guarded = ApiKeyMiddleware(guarded, keys=settings.api_keys, open_paths=())
        if (cors := cors_options(settings)) is not None:
            guarded = CORSMiddleware(guarded, **cors)
        self.guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == JOB_ROUTE or path.startswith(f"{JOB_ROUTE}/")):
            await self.guarded(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = _without_credentials(scope)
        path, method = scope["path"], scope.get("method")
        if path == JOB_ROUTE:  # BentoML's synchronous call of the task: POST /embeddings is that
            await _json(404, {"detail": "Not Found"})(scope, receive, send)
            return
        if path == CANCEL and method == "PUT":
            await (await self._cancel(scope))(scope, receive, send)
            return
        if path == SUBMIT and method == "POST":
            replay = await self._validated_body(scope, receive, send)
            if replay is None:
                return
            receive = replay
        try:
            await self.app(scope, receive, send)
        except JobCancelled as cancelled:
            logger.info("job %s cancelled", cancelled)

    @staticmethod
    async def _validated_body(scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """A ``receive`` replaying the submit's body once it validates; ``None`` once it was
        refused. The body's chunk list and the validated request go with this call: the
        running job (which holds this frame's caller for its whole run) keeps neither."""
        chunks = await receive_body(receive)
        if chunks is None:  # the client has gone
            return None
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
        try:
            request = validated(b"".join(chunks), content_type)
            bentoml.get_current_service().pipeline.check_model(request.model)
        except ApiError as error:
            await error_response(ANSWERED_AS, error)(scope, receive, send)
            return None
        return replaying(chunks, receive)

    async def _cancel(self, scope: Scope) -> Response:
        task_id = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("task_id")
        if not task_id:
            return _json(400, {"detail": "task_id is required"})
        store = job_store()
        if await store.cancel(task_id):
            return _json(200, {"task_id": task_id, "status": CANCELED})
        status = await store.status(task_id)
        if status is None:
            return _json(404, {"detail": f"Job not found: {task_id}"})
        return _json(409, {"detail": f"Job {task_id} has already ended: {status}"})

