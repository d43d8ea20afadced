"""`recsys serve`: the REST top-k endpoint, answered in this process (FastAPI + uvicorn).

It speaks MLflow's scoring protocol (POST /invocations with `dataframe_records`, `dataframe_split`,
`inputs` or `instances`, plus `params`; GET /ping, /health, /version) and answers exactly what the
logged pyfunc answers (both call `pyfunc.answer`). It exists instead of `mlflow models serve`
because a served model faces callers that make mistakes, and MLflow's scoring server answers some
of them with a Python stack trace and server paths in the body, a 500 for a missing Content-Type or
deeply nested JSON, no limit on the size of an answer, and worker children that outlive a
SIGTERM to the parent. Here:

* every error is a JSON body `{"error_code": ..., "message": <one line>}`, never a trace or a path
  (the traceback of an unexpected error goes to the server log only);
* k is checked: an integer from 1 to the number of items, else 400;
* a request may ask for at most `max_results` = rows x k recommendations (default 100,000) and send
  at most `max_body_bytes` (1 MiB) of JSON nested at most MAX_JSON_DEPTH deep: 413 / 400 beyond;
* a missing Content-Type is read as JSON; another type is 415;
* one process, no children: SIGTERM or SIGINT ends the server.

The OpenAPI schema at /openapi.json describes every request form; the tests fuzz the running
server against it (schemathesis).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Request  # at module level: FastAPI resolves the endpoint's annotation here
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from recsys.tracking.pyfunc import DEFAULT_K, BadRequest, UnknownItem, answer_records

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi import FastAPI

    from recsys.tracking.pyfunc import ServingIndex

log = logging.getLogger(__name__)

MAX_RESULTS = 100_000
"""Default limit on rows x k of one request (413 beyond): ~4 MB of JSON, well under a second."""
MAX_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
INPUT_KEYS = ("dataframe_records", "dataframe_split", "inputs", "instances")
COLUMNS = ("user_id", "k", "history")



def _integral(value: Any) -> Any:
    """57.0 read as 57: JSON Schema calls a number with a zero fraction an integer, so a client (or
    a JSON encoder that writes every number as a float) that sends one sent a valid request.
    Anything else is left to the strict check (57.5, "57" and true stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[StrictInt, BeforeValidator(_integral)]
Id = StrictStr | Integer


def request_models(n_items: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """(request, record) pydantic models for a catalogue of `n_items` (k is bounded by it)."""
    K = Annotated[StrictInt, Field(ge=1, le=n_items, description=f"list length, 1..{n_items}"), BeforeValidator(_integral)]

    class Record(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_id: Id = Field(description="raw user id (an integer is read as its decimal string)")
        k: K | None = Field(None, description="this row's k (default: params.k, else 10)")
        history: list[Id] | None = Field(
            None, description="item ids the user interacted with: fold-in for users unseen at training"
        )

    class Columns(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_id: Id | list[Id]
        k: K | list[K] | None = None
        history: list[list[Id]] | None = Field(None, description="one list of item ids per user_id")

    class SplitFrame(BaseModel):
        model_config = ConfigDict(extra="forbid")
        columns: list[Literal["user_id", "k", "history"]]
        data: list[list[Any]]
        index: list[Any] | None = None

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        k: K | None = None

    class InvocationRequest(BaseModel):
        """Exactly one of dataframe_records, dataframe_split, inputs, instances; optional params."""

        # The schema says "exactly one" too (each branch: that key present and not null), so a
        # request the schema calls valid is one the server answers (`{}` used to be schema-valid
        # and refused; schemathesis' positive_data_acceptance).
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "oneOf": [{"required": [key], "properties": {key: {"not": {"type": "null"}}}} for key in INPUT_KEYS]
            },
        )
        dataframe_records: list[Record] | None = None
        dataframe_split: SplitFrame | None = None
        inputs: Columns | list[Record] | None = None
        instances: list[Record] | None = None
        params: Params | None = None

        @model_validator(mode="after")
        def _one_input(self) -> InvocationRequest:
            given = [key for key in INPUT_KEYS if getattr(self, key) is not None]
            if len(given) != 1:
                raise ValueError(f"send exactly one of {', '.join(INPUT_KEYS)} (got {len(given)})")
            return self

    return InvocationRequest, Record


def similar_request_model(n_items: int) -> type[BaseModel]:
    """The body of POST /similar: one item id or a list of them, and k (1..n_items - 1)."""
    limit = max(1, n_items - 1)
    K = Annotated[StrictInt, Field(ge=1, le=limit, description=f"neighbours per item, 1..{limit}"), BeforeValidator(_integral)]

    class SimilarRequest(BaseModel):
        """Items most similar to each given item (cosine of the model's item vectors; a blend weighs its
        members'), never itself."""

        model_config = ConfigDict(extra="forbid")
        item_id: Id | list[Id] = Field(description="raw item id(s) (an integer is read as its decimal string)")
        k: K | None = Field(None, description="neighbours per item (default 10)")

    return SimilarRequest


class Neighbours(BaseModel):
    item_id: str
    item_ids: list[str]
    scores: list[float]


class SimilarItems(BaseModel):
    similar: list[Neighbours]


class Prediction(BaseModel):
    user_id: str
    item_ids: list[str]
    scores: list[float]
    source: Literal["model", "fold_in", "popularity"]
    unknown_history: list[str] | None = Field(
        None,
        description="only when the row's history held item ids the model does not know: those ids, which "
        "were ignored (a history of such ids only is answered from popularity)",
    )


class Predictions(BaseModel):
    predictions: list[Prediction]


class ErrorBody(BaseModel):
    error_code: str
    message: str


class RequestError(Exception):
    """An HTTP error with a one-line message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def code(self) -> str:
        return {404: "NOT_FOUND", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(self.status, "BAD_REQUEST")


def _depth(value: Any, limit: int) -> bool:
    """True when `value` nests deeper than `limit` (iterative: a deep body cannot blow the stack)."""
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            if level > limit:
                return True
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def _one_line(error: ValidationError) -> str:
    """The first problems of a validation error, without the input values (they may be huge)."""
    problems = []
    for err in error.errors(include_url=False, include_input=False)[:3]:
        # a validator's own label (`function-before[_integral(), ...]`) says nothing to a caller
        where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or "body"
        problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")  # pydantic's label, not the reason
    return "; ".join(problems)[:500]


def parse_body(
    body: bytes, content_type: str | None, request_model: type[BaseModel], record_model: type[BaseModel]
) -> tuple[list[dict[str, Any]], int | None]:
    """Raw body -> (records with user_id / k / history, params.k). Raises RequestError."""
    payload = parse_json(body, content_type)
    if not isinstance(payload, dict):
        raise RequestError(400, f"the body must be a JSON object with one of {', '.join(INPUT_KEYS)}")
    if payload and not set(payload) & {*INPUT_KEYS, "params"}:
        # a bare record ({"user_id": "u1"}) was told "user_id: Extra inputs are not permitted"
        got = ", ".join(sorted(map(str, payload)))[:100]
        raise RequestError(
            400, f"the body has no {', '.join(INPUT_KEYS)} (got {got}): wrap the rows, e.g. "
            '{"dataframe_records": [{"user_id": "u1"}]}',
        )
    if _asks_similar(payload):
        # the pyfunc answers these rows at /invocations (`mlflow models serve` does); here they were
        # told "user_id: Field required; item_id: Extra inputs are not permitted", with no way on
        raise RequestError(
            400, "rows with item_id and no user_id ask for similar items, which this server answers at "
            'POST /similar: {"item_id": "i1", "k": 10} (or a list of ids)',
        )  # fmt: skip
    try:
        request = request_model.model_validate(payload)
    except ValidationError as exc:
        raise RequestError(400, _one_line(exc)) from None
    return _records(request, record_model)


def _asks_similar(payload: dict[str, Any]) -> bool:
    """Whether the input holds the pyfunc's similar-items rows (item_id and no user_id in every row)."""
    for key in INPUT_KEYS:
        value = payload.get(key)
        if key == "dataframe_split" and isinstance(value, dict) and isinstance(value.get("columns"), list):
            rows = [{c for c in value["columns"] if isinstance(c, str)}]
        elif isinstance(value, dict):
            rows = [set(value)]
        elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            rows = [set(r) for r in value]
        else:
            continue
        if all("item_id" in row and "user_id" not in row for row in rows):
            return True
    return False


def parse_json(body: bytes, content_type: str | None) -> Any:
    """A JSON body (Content-Type JSON or none, UTF-8, nested at most MAX_JSON_DEPTH). Raises RequestError."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media not in ("application/json", "text/json", ""):
        raise RequestError(415, f"send JSON with Content-Type: application/json (got {media[:60]!r})")
    if not body.strip():  # `curl -d ''` or a client that sent nothing: json's "Expecting value" hid that
        raise RequestError(400, 'the body is empty: send a JSON object, e.g. {"dataframe_records": [{"user_id": "u1"}]}')
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not UTF-8 JSON") from None
    except RecursionError:
        raise RequestError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if _depth(payload, MAX_JSON_DEPTH):
        raise RequestError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return payload


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body, refused with 413 past `max_body_bytes` (declared or streamed)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise RequestError(413, f"the body has {int(length):,} bytes; the limit is {max_body_bytes:,}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise RequestError(413, f"the body is over the limit of {max_body_bytes:,} bytes")
    return body


def _records(request: BaseModel, record_model: type[BaseModel]) -> tuple[list[dict[str, Any]], int | None]:
    """The validated request as records with user_id / k / history, and params.k."""
    params_k = request.params.k if request.params is not None else None
    if request.dataframe_split is not None:
        frame = request.dataframe_split
        if any(len(row) != len(frame.columns) for row in frame.data):
            raise RequestError(400, f"dataframe_split: every row of data needs {len(frame.columns)} values")
        rows = [dict(zip(frame.columns, row, strict=True)) for row in frame.data]
        try:
            records = [record_model.model_validate(row).model_dump(exclude_none=True) for row in rows]
        except ValidationError as exc:
            raise RequestError(400, "dataframe_split: " + _one_line(exc)) from None
        return records, params_k
    inputs = request.inputs
    if inputs is not None and not isinstance(inputs, list):
        columns = inputs.model_dump(exclude_none=True)
        try:  # the pyfunc's own reading of a dict of columns (scalar k and user_id broadcast)
            from recsys.tracking.pyfunc import _columns_frame

            frame = _columns_frame(columns)
        except BadRequest as exc:
            raise RequestError(400, f"inputs: {exc}") from None
        return frame.to_dict("records"), params_k
    listed = request.dataframe_records or request.instances or inputs or []
    return [record.model_dump(exclude_none=True) for record in listed], params_k


def build_app(
    index: ServingIndex,
    *,
    name: str = "recsys",
    version: str | None = None,
    max_results: int = MAX_RESULTS,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The FastAPI app answering top-k requests from `index` (see the module docstring)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    n_items = index.n_items
    request_model, record_model = request_models(n_items)
    similar_model = similar_request_model(n_items)
    app = FastAPI(
        title=f"recsys top-k: {name}", version=str(version or "-"),
        description=(f"Top-k recommendations from {name}. Limits: k in 1..{n_items}, rows x k <= {max_results:,} "
                     f"per request (413 beyond), body <= {max_body_bytes:,} bytes."),
    )  # fmt: skip

    def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error_code": code, "message": message}, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, "BAD_REQUEST", "invalid request")

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own headers kept: a 405 names the allowed methods (`Allow`, RFC 9110 15.5.6)
        code = "NOT_FOUND" if exc.status_code == 404 else "HTTP_ERROR"
        return error(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while answering a request")  # the trace stays in the server log
        return error(500, "INTERNAL_ERROR", f"internal error ({type(exc).__name__}); see the server log")

    @app.get("/ping", summary="Liveness")
    @app.get("/health", summary="Liveness")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/version", summary="What is served")
    async def served() -> dict[str, Any]:
        return {"model": name, "version": version, "n_items": n_items, "max_results": max_results}

    def json_body_schema(model: type) -> dict[str, Any]:
        """The OpenAPI request body of an endpoint that reads raw JSON (own parsing, own errors)."""
        schema = {"$ref": f"#/components/schemas/{model.__name__}"}
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

    error_responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": text}
        for status, text in ((400, "bad request: one-line reason"), (413, "rows x k or the body is over the limit"),
                             (415, "not JSON"))
    }  # fmt: skip
    similar_responses = {**error_responses, 404: {"model": ErrorBody, "description": "an item id the model does not know, or one without training data"}}

    @app.post(
        "/invocations", response_model=Predictions, responses=error_responses,
        summary="Top-k items for each requested user",
        openapi_extra=json_body_schema(request_model),
    )  # fmt: skip
    async def invocations(request: Request) -> JSONResponse:
        body = await read_body(request, max_body_bytes)
        records, params_k = parse_body(body, request.headers.get("content-type"), request_model, record_model)
        default_k = params_k or min(DEFAULT_K, n_items)
        asked = sum(int(r.get("k") or default_k) for r in records)
        if asked > max_results:
            raise RequestError(
                413, f"the request asks for {asked:,} recommendations (rows x k); the limit is {max_results:,}: "
                "send fewer users or a smaller k",
            )  # fmt: skip
        try:
            predictions = answer_records(index, records, {"k": params_k} if params_k else None) if records else []
        except BadRequest as exc:
            raise RequestError(400, str(exc)) from None
        return JSONResponse({"predictions": predictions})

    @app.post(
        "/similar", response_model=SimilarItems, responses=similar_responses,
        summary="Items most similar to each given item (cosine of the item vectors, a blend's weighted; never the item itself)",
        openapi_extra=json_body_schema(similar_model),
    )  # fmt: skip
    async def similar(request: Request) -> JSONResponse:
        body = await read_body(request, max_body_bytes)
        payload = parse_json(body, request.headers.get("content-type"))
        try:
            asked = similar_model.model_validate(payload)
        except ValidationError as exc:
            raise RequestError(400, _one_line(exc)) from None
        items = asked.item_id if isinstance(asked.item_id, list) else [asked.item_id]
        k = asked.k or min(DEFAULT_K, max(1, n_items - 1))
        if len(items) * k > max_results:
            raise RequestError(413, f"the request asks for {len(items) * k:,} items (ids x k); the limit is {max_results:,}")
        if not items:
            return JSONResponse({"similar": []})
        try:
            frame = index.similar([str(i) for i in items], k)
        except UnknownItem as exc:
            raise RequestError(404, str(exc)) from None
        except BadRequest as exc:
            raise RequestError(400, str(exc)) from None
        return JSONResponse({"similar": frame.drop(columns=["source"]).to_dict("records")})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)  # fmt: skip
            body = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components[request_model.__name__] = body
            similar_body = similar_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(similar_body.pop("$defs", {}))
            components[similar_model.__name__] = similar_body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _missing_local_artifacts(model_uri: str) -> Path | None:
    """The local folder `model_uri`'s artifacts should be in, where it does not exist; else None.

    Why: a store copied or moved without its `artifacts/` folder (or that folder deleted) made
    `recsys serve` say 'Could not find an "MLmodel" configuration file at "$TMPDIR/recsys-serve-.../MLmodel"',
    naming its own download folder rather than where the model's files should be."""
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    try:
        if model_uri.startswith("models:"):
            from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

            underlying = ModelsArtifactRepository.get_underlying_uri(model_uri)
        elif model_uri.startswith("runs:"):
            from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

            underlying = RunsArtifactRepository.get_underlying_uri(model_uri)
        else:
            underlying = model_uri
    except Exception:  # the registry or run itself is the problem: MLflow's own error says it
        return None
    parsed = urlparse(underlying)
    if parsed.scheme not in ("", "file"):
        return None
    folder = Path(unquote(parsed.path))
    return None if folder.exists() else folder


def load_index(model_uri: str, tracking_uri: str | None = None) -> ServingIndex:
    """The serving index of a logged recsys pyfunc (`models:/name@alias`, `runs:/id/model`).

    The artifacts are downloaded to `$TMPDIR/recsys-serve-<pid>-*`, kept while the index lives (the
    saved model is read on the first fold-in) and removed with it or at exit; one a killed server
    left is removed by the next start. MLflow's own default (no `dst_path`) is a temporary directory
    it never removes: a copy of the model per `recsys serve` start."""
    import shutil
    import weakref

    import mlflow.pyfunc

    from recsys.errors import TrackingError, first_line
    from recsys.files import process_temp_dir

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    directory = process_temp_dir(SERVE_DOWNLOADS)
    try:
        # its INFO "No artifacts found to download at ..." was a second line before the error's one
        quiet = logging.getLogger("mlflow.store.artifact.artifact_repo")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            loaded = mlflow.pyfunc.load_model(model_uri, dst_path=str(directory))
        finally:
            quiet.setLevel(level)
        index = loaded.unwrap_python_model().index
    except Exception as exc:
        shutil.rmtree(directory, ignore_errors=True)
        if (missing := _missing_local_artifacts(model_uri)) is not None:
            raise TrackingError(
                f"cannot load {model_uri}: its files are not at {missing} (the store's artifacts folder was moved "
                "or deleted?): put that folder back where the store expects it, or train the model again (`recsys run`)"
            ) from None
        raise TrackingError(f"cannot load {model_uri} ({type(exc).__name__}: {first_line(exc)})") from None
    _DOWNLOADS.append(weakref.finalize(index, shutil.rmtree, directory, True))
    return index


_DOWNLOADS: list[Any] = []
"""The removals of served models' downloads (`weakref.finalize`): run when the index goes, at a
normal exit, and by `serve` on SIGTERM, whose default action ends the process without exit hooks."""


SERVE_DOWNLOADS = "recsys-serve"
"""`$TMPDIR/recsys-serve-<pid>-*`: a served model's downloaded artifacts (`load_index`)."""


def serve(app: FastAPI, port: int, host: str = "127.0.0.1") -> None:
    """Run the app until SIGTERM or SIGINT (uvicorn handles both and shuts down cleanly).

    uvicorn re-raises the signal after its shutdown with the handler it found; for SIGTERM that
    one first removes the served model's download (`_DOWNLOADS`), then acts as before."""
    import signal

    import uvicorn

    previous = signal.getsignal(signal.SIGTERM)

    def remove_downloads_then_stop(signum: int, frame: Any) -> None:
        for remove in _DOWNLOADS:
            remove()
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, remove_downloads_then_stop)

    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
