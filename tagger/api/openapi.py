"""The OpenAPI 3 document served at ``/openapi.json``.

Limits in it (page sizes, ids) are the ones the handlers enforce, imported
from the same constants; the fuzz test (tests/test_serve_schema.py) checks
every response against it.
"""
from __future__ import annotations

from typing import Any

from tagger import __version__

MAX_PER_PAGE = 200
MAX_PAGE = 1_000_000
MAX_SCAN_PATHS = 100
MAX_ID = 2**63 - 1

_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required}


def _err(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, ref: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _page_params() -> list[dict]:
    return [
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                                                   "default": 1}},
        {"name": "per_page", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": 50}},
    ]


def _schemas() -> dict[str, Any]:
    top = {"type": "array", "items": _obj({"genre": _STR, "probability": {**_NUM, "minimum": 0, "maximum": 1}})}
    scan_props = {
        "scan_id": _INT, "status": {"type": "string", "enum": ["running", "done", "interrupted"]},
        "roots": {"type": "array", "items": _STR}, "options": {"type": "object"},
        "started_at": _nullable(_STR), "finished_at": _nullable(_STR), "seconds": _NUM,
        "found": _nullable(_INT), "unchanged": _nullable(_INT), "queued": _nullable(_INT),
        "tagged": _INT, "low_confidence": _INT, "kept_user_genre": _INT, "dry_run": _INT, "failed": _INT, "interrupted": _INT,
        "pending": _INT, "files_per_second": _nullable(_NUM),
        "genres": {"type": "object", "additionalProperties": _INT},
    }
    scan_detail = {
        **scan_props,
        "failures": {"type": "array", "items": _obj({"path": _STR, "kind": _nullable(_STR),
                                                     "reason": _nullable(_STR)})},
        "problems": {"type": "array", "items": _obj({"path": _STR, "reason": _STR})},
    }
    file_props = {
        "id": _INT, "path": _STR, "format": _STR, "genre": _STR,
        "confidence": {**_NUM, "minimum": 0, "maximum": 1}, "top": top, "model": _STR, "version": _STR,
        "decided_by": _STR, "predicted_at": _nullable(_STR), "written_genre": _nullable(_STR),
    }

    def page_of(ref: str) -> dict:
        return _obj({"page": _INT, "per_page": _INT, "total": _INT, "pages": _INT,
                     "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}}})

    return {
        "Error": {**_obj({"error": _STR}), "additionalProperties": False},
        "Health": _obj({"status": {"type": "string", "enum": ["ok", "starting", "degraded"]},
                        "version": _STR, "model_ready": {"type": "boolean"}}),
        "Prediction": _obj({
            "genre": _STR, "confidence": {**_NUM, "minimum": 0, "maximum": 1},
            "genres": {"type": "array", "items": _STR}, "top": top, "model": _STR, "version": _STR,
            "decided_by": _STR, "format": _STR, "duration_s": _NUM, "windows": _INT,
            "reason": {**_nullable(_STR), "description": "why no genre would be written whatever the confidence "
                                                        "(\"does not sound like music (a steady tone)\"); null "
                                                        "when the confidence alone decides"},
            "source": {"type": "string", "enum": ["upload", "path"]},
            "timings_ms": _obj({"decode": _NUM, "predict": _NUM, "total": _NUM}),
        }),
        "ScanSummary": _obj(scan_props),
        "Scan": _obj(scan_detail),
        "ScanStarted": _obj({"scan_id": _INT, "status": {"type": "string", "enum": ["running"]}, "url": _STR}),
        "ScanRequest": {
            "type": "object", "required": ["paths"], "additionalProperties": False,
            "properties": {
                "paths": {"type": "array", "minItems": 1, "maxItems": MAX_SCAN_PATHS, "items": _STR,
                          "description": "absolute paths (folders or files) under the library roots"},
                "dry_run": {"type": "boolean", "default": False,
                            "description": "predict and record, write no tags"},
                "force": {"type": "boolean", "default": False,
                          "description": "analyse files even when unchanged since their last analysis"},
            },
        },
        "File": _obj(file_props),
        "ScanPage": page_of("ScanSummary"),
        "FilePage": page_of("File"),
    }


def document(token_required: bool) -> dict[str, Any]:
    """The document for a server that does (or does not) require a bearer token."""
    auth_errors = {"401": _err("missing or wrong bearer token")} if token_required else {}
    common = {**auth_errors, "421": _err("a Host header naming another server (allowed_hosts)"),
              "500": _err("internal error (details only in the server log)")}
    audio_body = {"schema": {"type": "string", "format": "binary"}}
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "tagger", "version": __version__,
                 "description": "Genre predictions for audio files, and the results database of tagger's scans."},
        "paths": {
            "/v1/health": {"get": {
                "operationId": "health", "summary": "Liveness and whether the model is loaded (no token needed)",
                "security": [],
                "responses": {"200": _ok("the server answers", "Health"), "421": common["421"],
                              "500": common["500"]},
            }},
            "/v1/predict": {"post": {
                "operationId": "predict",
                "summary": "Predict the genre of an uploaded audio file, or of ?path= under the library roots",
                "description": "Send the audio as the raw body (any content type but multipart), or as the "
                               "'file' field of multipart/form-data; or send no body and name a file with ?path=. "
                               "The format is taken from the content, not the name.",
                "parameters": [
                    {"name": "path", "in": "query", "schema": {"type": "string"},
                     "description": "absolute path of a file under the library roots"},
                    {"name": "filename", "in": "query", "schema": {"type": "string"},
                     "description": "the upload's original name (a hint when its content is not recognised)"},
                ],
                "requestBody": {"required": False, "content": {
                    "application/octet-stream": audio_body,
                    "audio/*": audio_body,
                    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                        "file": {"type": "string", "format": "binary"}}}},
                }},
                "responses": {
                    "200": _ok("the prediction", "Prediction"),
                    "400": _err("malformed request (no audio, both a body and a path, bad multipart, bad path)"),
                    "403": _err("path outside the library roots, or no roots configured"),
                    "404": _err("no such file under the library roots"),
                    "408": _err("an upload that stopped arriving, or arrived too slowly"),
                    "411": _err("an upload without Content-Length"),
                    "413": _err("upload larger than max_upload_mb, or audio longer than max_duration_s"),
                    "415": _err("not a supported audio format"),
                    "422": _err("audio that cannot be analysed: truncated, too short, silent, corrupt"),
                    "503": _err("no usable model"),
                    **common,
                },
            }},
            "/v1/scans": {
                "get": {
                    "operationId": "listScans", "summary": "Scans, newest first",
                    "parameters": _page_params(),
                    "responses": {"200": _ok("a page of scans", "ScanPage"), "400": _err("bad query"), **common},
                },
                "post": {
                    "operationId": "startScan",
                    "summary": "Start a scan of paths under the library roots; returns at once with its id",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ScanRequest"}}}},
                    "responses": {
                        "202": {**_ok("the scan started", "ScanStarted"),
                                "headers": {"Location": {"schema": _STR}}},
                        "400": _err("malformed request"),
                        "403": _err("a path outside the library roots, or no roots configured"),
                        "404": _err("a path that does not exist"),
                        "408": _err("a body that stopped arriving, or arrived too slowly"),
                        "411": _err("a body without Content-Length"),
                        "413": _err("body too large"),
                        "415": _err("not application/json"),
                        **common,
                    },
                },
            },
            "/v1/scans/{scan_id}": {"get": {
                "operationId": "getScan", "summary": "One scan: counts, genres, failures",
                "parameters": [{"name": "scan_id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}],
                "responses": {"200": _ok("the scan", "Scan"), "404": _err("no such scan"), **common},
            }},
            "/v1/files": {"get": {
                "operationId": "listFiles", "summary": "Files with their latest prediction, ordered by path",
                "parameters": [
                    {"name": "genre", "in": "query", "schema": {"type": "string"},
                     "description": "predicted genre (case-insensitive)"},
                    {"name": "min_confidence", "in": "query",
                     "schema": {"type": "number", "minimum": 0, "maximum": 1}},
                    {"name": "q", "in": "query", "schema": {"type": "string"},
                     "description": "substring of the path (case-insensitive)"},
                    *_page_params(),
                ],
                "responses": {"200": _ok("a page of files", "FilePage"), "400": _err("bad query"), **common},
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "the OpenAPI document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              **common},
            }},
        },
        "components": {"schemas": _schemas()},
    }
    if token_required:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
