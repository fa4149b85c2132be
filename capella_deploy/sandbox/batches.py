"""Files and batches of the Model Service API (``/v1/files``, ``/v1/batches``), shaped like the documented examples.

The documentation lists files and batches grouped by model name (``{"<model>": [...]}``) and reports a batch's
``completion_window`` as ``"immediate"`` although a request must say ``"168h"``; the sandbox answers the same.

ASSUMED timeline, in sandbox seconds: a batch is ``validating`` when created, ``in_progress`` one second later,
and ``completed`` after one more second per request line; a cancelled batch is ``cancelling`` for one second,
then ``cancelled``. Output and error files are computed from the input when read, once the batch completed.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from capella_deploy.sandbox import catalog, completions
from capella_deploy.sandbox.errors import ServiceError
from capella_deploy.sandbox.modelservice import answers_to, embed, open_call, service_json
from capella_deploy.sandbox.state import BatchRecord, FileRecord, ModelRecord, World

ENDPOINT_KINDS = {
    "/v1/chat/completions": catalog.TEXT_GENERATION,
    "/v1/completions": catalog.TEXT_GENERATION,
    "/v1/embeddings": catalog.EMBEDDING_GENERATION,
}
COMPLETION_WINDOW = "168h"
FILE_EXPIRY_DAYS = 30
BATCH_EXPIRY_DAYS = 7
MAX_FILE_BYTES = 10 * 1024 * 1024
DAY = 86400.0


def _not_found(what: str, ident: str) -> ServiceError:
    return ServiceError(404, f"No {what} with id {ident!r}.", f"{what}_not_found")


def _parse_form(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    if not content_type.startswith("multipart/form-data"):
        raise completions.bad("upload the file as multipart/form-data with fields file and purpose")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


def _check_jsonl(text: str) -> list[dict[str, Any]]:
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            raise completions.bad(f"line {number} of the file is not a JSON object", "file")
        lines.append(item)
    if not lines:
        raise completions.bad("the file holds no requests", "file")
    return lines


def file_object(record: FileRecord, *, active: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": record.id,
        "object": "file",
        "bytes": len(record.content.encode()),
        "created_at": int(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
    }
    if active:
        body["active"] = True
    return body


async def upload_file(request: Request) -> Response:
    call = open_call(request)
    raw = await request.body()
    if len(raw) > MAX_FILE_BYTES:
        raise ServiceError(413, f"The file is larger than {MAX_FILE_BYTES} bytes.", "file_too_large")
    fields = _parse_form(request.headers.get("content-type", ""), raw)
    if "file" not in fields:
        raise completions.bad("the form has no file field", "file")
    purpose = fields.get("purpose", (None, b""))[1].decode(errors="replace")
    if purpose != "batch":
        raise completions.bad(f"purpose must be 'batch'; got {purpose!r}", "purpose")
    filename, payload = fields["file"]
    try:
        content = payload.decode()
    except UnicodeDecodeError as exc:
        raise completions.bad("the file must be UTF-8 JSONL", "file") from exc
    _check_jsonl(content)
    days = call.cb.file_expiry_days or FILE_EXPIRY_DAYS
    record = FileRecord(
        id=f"file-{uuid.uuid4()}",
        model_id=call.model.id,
        filename=filename or "upload.jsonl",
        purpose=purpose,
        content=content,
        created_at=call.now,
        expires_at=call.now + days * DAY,
    )
    with call.sandbox.mutate() as world:
        world.files[record.id] = record
    return JSONResponse(file_object(record), headers=call.headers())


def _live_file(world: World, model_id: str, file_id: str, now: float) -> FileRecord | None:
    record = world.files.get(file_id)
    if record is None or record.model_id != model_id or now >= record.expires_at:
        return None
    return record


async def list_files(request: Request) -> Response:
    call = open_call(request, ready=False)
    params = request.query_params
    limit = _limit(params.get("limit"), 10_000, 10_000)
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise completions.bad("order must be asc or desc", "order")
    world = call.sandbox.world()
    records = [f for f in world.files.values() if _live_file(world, call.model.id, f.id, call.now)]
    records.sort(key=lambda f: f.created_at, reverse=order == "desc")
    records = _after(records, params.get("after"))[:limit]
    listing = {call.model.catalog_model_name: [file_object(f) for f in records]}
    return JSONResponse(listing, headers=call.headers())


async def get_file(request: Request) -> Response:
    call = open_call(request, ready=False)
    file_id = request.path_params["file_id"]
    record = _live_file(call.sandbox.world(), call.model.id, file_id, call.now)
    if record is None:
        raise _not_found("file", file_id)
    return JSONResponse(file_object(record, active=True), headers=call.headers())


async def delete_file(request: Request) -> Response:
    call = open_call(request, ready=False)
    file_id = request.path_params["file_id"]
    with call.sandbox.mutate() as world:
        if _live_file(world, call.model.id, file_id, call.now) is None:
            raise _not_found("file", file_id)
        del world.files[file_id]
    return JSONResponse({"id": file_id, "object": "file", "deleted": True}, headers=call.headers())


async def file_content(request: Request) -> Response:
    call = open_call(request, ready=False)
    file_id = request.path_params["file_id"]
    world = call.sandbox.world()
    record = _live_file(world, call.model.id, file_id, call.now)
    if record is None:
        content = _batch_output(world, call.model, file_id, call.salt, call.now)
        return Response(content, media_type="application/jsonl", headers=call.headers())
    return Response(record.content, media_type="application/jsonl", headers=call.headers())


def _batch_ids(batch_id: str) -> tuple[str, str]:
    """The ids of a batch's output and error files."""
    return completions.response_id("file-o", batch_id), completions.response_id("file-e", batch_id)


def _timeline(batch: BatchRecord) -> tuple[float, float]:
    """When the batch starts and when it completes, unless cancelled first."""
    started = batch.created_at + 1
    return started, started + batch.request_total


def _status(batch: BatchRecord, now: float) -> str:
    started, done = _timeline(batch)
    if batch.cancelled_at is not None and batch.cancelled_at < done:
        return "cancelled" if now >= batch.cancelled_at + 1 else "cancelling"
    if now >= done:
        return "completed"
    return "in_progress" if now >= started else "validating"


def _results(world: World, model: ModelRecord, batch: BatchRecord, salt: str) -> tuple[list[str], list[str]]:
    """Output and error lines for every request of the batch, computed from the input file."""
    output: list[str] = []
    errors: list[str] = []
    source = world.files.get(batch.input_file_id)
    lines = _check_jsonl(source.content) if source is not None else []
    created = int(_timeline(batch)[1])
    for number, line in enumerate(lines):
        custom_id = line.get("custom_id")
        request_id = completions.response_id("batch_req_", batch.id, number)
        try:
            body = _line_body(batch, line, model)
            response = _run(batch.endpoint, body, model, salt, created)
        except ServiceError as exc:
            error = {"code": exc.code or "invalid_request", "message": exc.message}
            errors.append(json.dumps({"id": request_id, "custom_id": custom_id, "response": None, "error": error}))
            continue
        result = {"status_code": 200, "request_id": request_id, "body": response}
        output.append(json.dumps({"id": request_id, "custom_id": custom_id, "response": result, "error": None}))
    return output, errors


def _line_body(batch: BatchRecord, line: dict[str, Any], model: ModelRecord) -> dict[str, Any]:
    if line.get("url") != batch.endpoint or str(line.get("method", "")).upper() != "POST":
        raise completions.bad(f"each request must be POST {batch.endpoint}")
    body = line.get("body")
    if not isinstance(body, dict):
        raise completions.bad("each request needs a JSON object body")
    if not answers_to(model, completions.requested_model(body)):
        raise ServiceError(404, f"The model {body['model']!r} is not served here.", "model_not_found")
    return body


def _run(endpoint: str, body: dict[str, Any], model: ModelRecord, salt: str, created: int) -> dict[str, Any]:
    name = model.catalog_model_name
    if endpoint == "/v1/embeddings":
        return embed(salt, model, body, created)
    if endpoint == "/v1/chat/completions":
        gen = completions.parse_chat(body)
        rid = completions.response_id("chatcmpl-", salt, name, gen, created)
        return completions.chat_response(rid, name, created, gen, completions.choices(salt, name, gen))
    gen = completions.parse_completion(body)
    rid = completions.response_id("cmpl-", salt, name, gen, created)
    picked = completions.choices(salt, name, gen)
    return completions.completion_response(rid, name, created, gen, picked, bool(body.get("echo")))


def _batch_output(world: World, model: ModelRecord, file_id: str, salt: str, now: float) -> str:
    for batch in world.batches.values():
        if batch.model_id != model.id or file_id not in _batch_ids(batch.id):
            continue
        if _status(batch, now) != "completed":
            raise ServiceError(404, f"The batch {batch.id} has not completed yet.", "file_not_ready")
        output, errors = _results(world, model, batch, salt)
        lines = output if file_id == _batch_ids(batch.id)[0] else errors
        return "".join(line + "\n" for line in lines)
    raise _not_found("file", file_id)


def batch_object(world: World, model: ModelRecord, batch: BatchRecord, salt: str, now: float) -> dict[str, Any]:
    status = _status(batch, now)
    started, done = _timeline(batch)
    output_id, error_id = _batch_ids(batch.id)
    total = batch.request_total
    finished = 0 if now < started else min(total, int(now - started))
    failed = 0
    if status == "completed":
        failed = len(_results(world, model, batch, salt)[1])
        finished = total - failed
    cancel_start = batch.cancelled_at if status in ("cancelling", "cancelled") else None

    def at(moment: float | None, reached: bool) -> int | None:
        return int(moment) if moment is not None and reached else None

    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "input_file_id": batch.input_file_id,
        "completion_window": "immediate",
        "status": status,
        "output_file_id": output_id,
        "error_file_id": error_id,
        "created_at": int(batch.created_at),
        "in_progress_at": at(started, now >= started),
        "expires_at": int(batch.expires_at),
        "finalizing_at": at(done, status == "completed"),
        "completed_at": at(done, status == "completed"),
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": at(cancel_start, cancel_start is not None),
        "cancelled_at": at(None if cancel_start is None else cancel_start + 1, status == "cancelled"),
        "request_counts": {"total": total, "completed": finished, "failed": failed},
        "metadata": None,
    }


async def create_batch(request: Request) -> Response:
    body = await service_json(request)
    call = open_call(request)
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINT_KINDS:
        raise completions.bad(f"endpoint must be one of {', '.join(ENDPOINT_KINDS)}", "endpoint")
    if body.get("completion_window") != COMPLETION_WINDOW:
        raise completions.bad(f"completion_window must be {COMPLETION_WINDOW!r}", "completion_window")
    kind = catalog.CATALOG[call.model.catalog_model_name].kind
    if ENDPOINT_KINDS[endpoint] != kind:
        raise completions.bad(f"{endpoint} does not apply to a {kind} model", "endpoint")
    file_id = str(body.get("input_file_id", ""))
    with call.sandbox.mutate() as world:
        source = _live_file(world, call.model.id, file_id, call.now)
        if source is None:
            raise _not_found("file", file_id)
        days = call.cb.batch_expiry_days or BATCH_EXPIRY_DAYS
        batch = BatchRecord(
            id=f"batch-{uuid.uuid4().hex}",
            model_id=call.model.id,
            endpoint=endpoint,
            input_file_id=file_id,
            created_at=call.now,
            expires_at=call.now + days * DAY,
            request_total=len(_check_jsonl(source.content)),
        )
        world.batches[batch.id] = batch
        shown = batch_object(world, call.model, batch, call.salt, call.now)
    return JSONResponse(shown, headers=call.headers())


def _live_batch(world: World, model_id: str, batch_id: str, now: float) -> BatchRecord:
    batch = world.batches.get(batch_id)
    if batch is None or batch.model_id != model_id or now >= batch.expires_at:
        raise _not_found("batch", batch_id)
    return batch


async def list_batches(request: Request) -> Response:
    call = open_call(request, ready=False)
    limit = _limit(request.query_params.get("limit"), 100, 20)
    world = call.sandbox.world()
    batches = sorted(
        (b for b in world.batches.values() if b.model_id == call.model.id and call.now < b.expires_at),
        key=lambda b: b.created_at,
    )
    batches = _after(batches, request.query_params.get("after"))[:limit]
    shown = [batch_object(world, call.model, b, call.salt, call.now) for b in batches]
    return JSONResponse({call.model.catalog_model_name: shown}, headers=call.headers())


async def get_batch(request: Request) -> Response:
    call = open_call(request, ready=False)
    world = call.sandbox.world()
    batch = _live_batch(world, call.model.id, request.path_params["batch_id"], call.now)
    return JSONResponse(batch_object(world, call.model, batch, call.salt, call.now), headers=call.headers())


async def cancel_batch(request: Request) -> Response:
    call = open_call(request, ready=False)
    with call.sandbox.mutate() as world:
        batch = _live_batch(world, call.model.id, request.path_params["batch_id"], call.now)
        if _status(batch, call.now) in ("completed", "cancelling", "cancelled"):
            raise ServiceError(409, f"The batch is {_status(batch, call.now)}; it cannot be cancelled.", "conflict")
        batch.cancelled_at = call.now
        shown = batch_object(world, call.model, batch, call.salt, call.now)
    return JSONResponse(shown, headers=call.headers())


def _limit(raw: str | None, maximum: int, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise completions.bad(f"limit must be a whole number from 1 to {maximum}", "limit")
    return int(raw)


def _after(items: list[Any], after: str | None) -> list[Any]:
    if after is None:
        return items
    ids = [item.id for item in items]
    return items[ids.index(after) + 1 :] if after in ids else []


def routes(prefix: str) -> list[Route]:
    return [
        Route(prefix + "/files", upload_file, methods=["POST"]),
        Route(prefix + "/files", list_files, methods=["GET"]),
        Route(prefix + "/files/{file_id}", get_file, methods=["GET"]),
        Route(prefix + "/files/{file_id}", delete_file, methods=["DELETE"]),
        Route(prefix + "/files/{file_id}/content", file_content, methods=["GET"]),
        Route(prefix + "/batches", create_batch, methods=["POST"]),
        Route(prefix + "/batches", list_batches, methods=["GET"]),
        Route(prefix + "/batches/{batch_id}", get_batch, methods=["GET"]),
        Route(prefix + "/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    ]
