"""A remote runtime: runs a model the platform cannot host itself behind any Open Inference Protocol (KServe V2)
endpoint (KServe, Triton, Azure ML online endpoints), as a Predictor the batch pipeline uses like a local one.

The card says where and how (`runtime: "remote-oip"`):

    {"name": ..., "version": ..., "handler": "tabular-classifier", "runtime": "remote-oip",
     "endpoint": "https://host/v2/models/<model>[/versions/<v>]",
     "inputTypes": [".jsonl", ".csv"], "features": [...], "labels": [...],       # tabular; or text:
     "oip": {"inputName": "input", "datatype": "FP32", "probabilitiesOutput": "probabilities",
             "timeoutSeconds": 30, "maxRetries": 3, "headers": {"azureml-model-deployment": "blue"}},
     "auth": {"type": "none" | "bearer" | "header", "headerName": "api-key"}}

The card never holds the credential: the registry's loader reads it from the SecretStore (Key Vault in Azure; see
loading.py) and hands the ready headers to the predictor. A card with `features` is tabular (records are objects of
numbers, sent as one FP32 tensor [n, features]); any other is text (records are strings or {"text": ...}, sent as a
BYTES tensor [n]). Outputs come back per record: `{"label", "probabilities"}` when the card has labels and the
endpoint returns the probabilities, else `{output name: value}` for every output tensor.

Failures: timeouts, connection errors, 5xx and 429 are retried with exponential back-off (honouring Retry-After);
a 4xx is the endpoint refusing the input, raised as InvalidRecord so the shard isolates the record(s) at fault.
Every call goes through the egress policy (shared.adapters.egress: public addresses only, pinned connections, no
redirects); the card's timeout and retries are clamped to the platform's ceilings, the answer's size is capped,
and what is recorded on records and jobs is generic (the details of a failure go to the server-side log).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any

import httpcore
import httpx
import orjson

from shared.adapters.egress import EgressPolicy, Timeouts, default_policy, send_bounded
from shared.domain.egress import redact_url
from shared.domain.errors import InvalidRecord
from shared.domain.models import ModelCard
from shared.inference.features import feature_values

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_RETRIES = 3
MAX_RETRIES = 3  # no card raises it: each retry is another call to the tenant's endpoint
MAX_BACKOFF_SECONDS = 30.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # an answer for one batch of records; larger is refused, not read
MAX_TEXT_CHARS = 100_000
_RESERVED_HEADERS = frozenset({"authorization", "api-key", "host", "content-length", "content-type"})


class RemoteEndpointUnavailable(RuntimeError):
    """The endpoint kept failing (timeouts, 5xx, 429) through every retry."""


class RemoteOipPredictor:
    """A Predictor over a V2 `infer` endpoint (JSON tensors), with timeouts and retries."""

    def __init__(
        self,
        card: ModelCard,
        *,
        headers: dict[str, str] | None = None,
        egress: EgressPolicy | None = None,
        connector: httpcore.NetworkBackend | None = None,
        backoff_seconds: float = 0.2,
    ) -> None:
        self.card = card
        oip = dict(card.raw.get("oip") or {})
        self._url = str(card.raw["endpoint"]).rstrip("/") + "/infer"
        self._log_url = redact_url(self._url)
        self._features: list[str] | None = list(card.raw["features"]) if "features" in card.raw else None
        self._labels: list[str] = [str(label) for label in card.raw.get("labels") or []]
        self._text_field = str(oip.get("textField", "text"))
        self._input = str(oip.get("inputName") or ("input" if self._features else "text"))
        self._datatype = str(oip.get("datatype") or ("FP32" if self._features else "BYTES"))
        self._requested: list[str] = [str(name) for name in oip.get("outputs") or []]
        self._probabilities = oip.get("probabilitiesOutput")
        self._max_retries = min(max(int(oip.get("maxRetries", DEFAULT_MAX_RETRIES)), 0), MAX_RETRIES)
        self._backoff = backoff_seconds
        extra = {str(k): str(v) for k, v in (oip.get("headers") or {}).items() if k.lower() not in _RESERVED_HEADERS}
        self._headers = {**extra, **(headers or {})}
        timeout = float(oip.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS))
        self._timeouts = Timeouts(connect=min(timeout, 10.0), read=timeout, total=timeout).clamped()
        self._client = (egress or default_policy()).client(self._timeouts, connector=connector)

    def close(self) -> None:
        self._client.close()

    def prepare(self, record: Any) -> Any:
        if self._features is not None:
            return self._prepare_features(record)
        text = record.get(self._text_field) if isinstance(record, dict) else record
        if not isinstance(text, str) or not text.strip():
            raise InvalidRecord(f"a record must be a non-empty text or an object with {self._text_field!r}")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidRecord(f"a text may have at most {MAX_TEXT_CHARS} characters", field=self._text_field)
        return text

    def _prepare_features(self, record: Any) -> list[float]:
        assert self._features is not None
        return feature_values(record, self._features)

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        if not prepared:
            return []
        count = len(prepared)
        if self._features is not None:
            tensor = {
                "name": self._input,
                "shape": [count, len(self._features)],
                "datatype": self._datatype,
                "data": [value for row in prepared for value in row],
            }
        else:
            tensor = {"name": self._input, "shape": [count], "datatype": self._datatype, "data": list(prepared)}
        body: dict[str, Any] = {"id": uuid.uuid4().hex, "inputs": [tensor]}
        if self._requested:
            body["outputs"] = [{"name": name} for name in self._requested]
        answer = self._post(body)
        return self._per_record(answer, count)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        problem, retry_after = "", None
        for attempt in range(self._max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            retry_after = None
            try:
                response = send_bounded(
                    self._client,
                    "POST",
                    self._url,
                    max_bytes=MAX_ANSWER_BYTES,
                    total_seconds=self._timeouts.total,
                    content=orjson.dumps(body),
                    headers={**self._headers, "content-type": "application/json"},
                )
            except httpx.TransportError as err:  # timeouts, connection failures, refused: the endpoint may come back
                problem = f"{type(err).__name__}: {err}"
                logger.warning("model endpoint %s: %s (attempt %d)", self._log_url, problem, attempt + 1)
                continue
            except httpx.HTTPError as err:  # an answer over the size cap: not the records' fault, not retried
                logger.warning("model endpoint %s: %s", self._log_url, err)
                raise RemoteEndpointUnavailable(
                    "the model endpoint answered with more than the platform reads"
                ) from err
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}"
                retry_after = response.headers.get("retry-after")
                logger.warning("model endpoint %s: %s (attempt %d)", self._log_url, problem, attempt + 1)
                continue
            if response.status_code >= 400:
                logger.info(
                    "model endpoint %s refused the input: HTTP %d: %s",
                    self._log_url,
                    response.status_code,
                    _error_text(response.content),
                )
                raise InvalidRecord("the model endpoint refused the input")
            if response.status_code != 200:  # a redirect (never followed) or an answer without a body
                logger.warning("model endpoint %s answered HTTP %d", self._log_url, response.status_code)
                raise RuntimeError("the model endpoint did not answer the inference request")
            try:
                answer = orjson.loads(response.content)
            except orjson.JSONDecodeError as err:
                raise RuntimeError("the model endpoint answered with something not JSON") from err
            if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
                raise RuntimeError("the model endpoint answered without an `outputs` list")
            return answer
        logger.warning("model endpoint %s failed %d times; last: %s", self._log_url, self._max_retries + 1, problem)
        raise RemoteEndpointUnavailable(f"the model endpoint failed {self._max_retries + 1} times")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), MAX_BACKOFF_SECONDS)
            except ValueError:  # an HTTP date: fall back to our own back-off
                pass
        return float(min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))

    def _per_record(self, answer: dict[str, Any], count: int) -> list[dict[str, Any]]:
        rows: dict[str, list[Any]] = {}
        for output in answer["outputs"]:
            if not isinstance(output, dict) or "name" not in output:
                raise RuntimeError("an output tensor without a name")
            rows[str(output["name"])] = _split_rows(output, count)
        probabilities = self._probabilities_output(rows)
        if probabilities is not None:
            labels = self._labels
            results = []
            for row in rows[probabilities]:
                scores = [float(p) for p in (row if isinstance(row, list) else [row])]
                if len(scores) != len(labels):
                    raise RuntimeError(f"output {probabilities!r} has {len(scores)} scores for {len(labels)} labels")
                best = max(range(len(scores)), key=scores.__getitem__)
                results.append(
                    {
                        "label": labels[best],
                        "probabilities": {label: round(p, 6) for label, p in zip(labels, scores, strict=True)},
                    }
                )
            return results
        return [{name: values[index] for name, values in rows.items()} for index in range(count)]

    def _probabilities_output(self, rows: dict[str, list[Any]]) -> str | None:
        if not self._labels:
            return None
        if self._probabilities:
            return str(self._probabilities) if self._probabilities in rows else None
        if len(rows) == 1:
            return next(iter(rows))
        return "probabilities" if "probabilities" in rows else None


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [item for part in data for item in _flatten(part)]
    return [data]


def _split_rows(output: dict[str, Any], count: int) -> list[Any]:
    """One value per record: a scalar for a [n] tensor, a flat list of the rest of the row otherwise."""
    shape = [int(dim) for dim in output.get("shape") or []]
    data = _flatten(output.get("data"))
    if not shape or shape[0] != count:
        raise RuntimeError(f"output {output['name']!r} has shape {shape}, not one row for each of {count} records")
    width = math.prod(shape[1:]) if len(shape) > 1 else 1
    if len(data) != count * width:
        raise RuntimeError(f"output {output['name']!r} has {len(data)} values for shape {shape}")
    if len(shape) == 1:
        return data
    return [data[index * width : (index + 1) * width] for index in range(count)]


def _error_text(content: bytes) -> str:
    """The gist of an endpoint's error answer, for the server-side log."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:300].decode("utf-8", "replace")
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        return str(error.get("message") if isinstance(error, dict) else error)[:300]
    return str(body)[:300]
