"""The worker's web endpoints: liveness, readiness, Prometheus metrics, the
customer lookup and scoring on demand, and the work-list pages.

Plain aiohttp handlers, whichever engine consumes: `routes` builds them, the Faust
worker adds them to Faust's own aiohttp application (`stream_app.worker`), another
engine serves them with `serve`. What readiness needs from the engine is the `Engine`
protocol: the partitions it owns and whether it is consuming.

- `/health`: liveness. Answers from the process alone, so an outage of Redis or
  Kafka does not get a live worker restarted.
- `/ready`: readiness. Kafka, Redis, the model and the consumer (check `agent`), each
  checked; 503 names what failed.
- `/metrics`: Prometheus, open like any scrape target (nothing per customer).
- `/customers/{id}`: a customer's published category with the score behind it, and
  their score as of the partition's event time (`scoring.predict_contract.Lookup`). Off
  unless CHURN_WEB_TOKEN is set, and then only for `Authorization: Bearer <token>`.
- `POST /customers/{id}/score`: the stored customer scored as of a given instant
  (what-if); the same access control.
- `POST /predict`: a score on demand from the base columns in the body
  (`scoring.predict_contract`); the same access control.
- `/openapi.json`: the API's description.
- `/worklist`, `/worklist/customers/{id}`: the work-list pages
  (`stream_app.worklist_page`), behind the same token or a session cookie from
  `POST /worklist/login`.

Blocking calls (Redis, Kafka metadata, the model) run in a thread pool of their own with a
timeout: the event loop also drives the consumer and its heartbeats, and a hung
Redis must not stall it, nor take the threads the worker's own Kafka reads use.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs

import msgspec
from aiohttp.web import (
    Application,
    AppRunner,
    Request,
    Response,
    RouteDef,
    TCPSite,
    get,
    post,
)
from confluent_kafka.admin import AdminClient
from prometheus_client import generate_latest

from feature_store.online import CustomerState
from feature_store.redis_store import RedisStateStore
from schemas import topics
from scoring import predict as on_demand
from scoring import worklist
from scoring.artifact import ServedModel
from scoring.model import Model
from scoring.predict_contract import (
    MAX_BODY_BYTES,
    ChurnPrediction,
    Lookup,
    Prediction,
    Problem,
)
from scoring.risk import RiskPolicy
from scoring.worklist import LISTED, WorkItem
from stream_app import metrics, openapi, worklist_page
from stream_app.partitioning import partition_of
from stream_app.settings import Settings

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
MODEL_TIMEOUT = 5.0  # seconds one on-demand score may take
REDIS_TIMEOUT = 2.0  # seconds a lookup or a readiness PING may take
KAFKA_TIMEOUT = 2.0  # seconds the readiness metadata request may take
# Ids of the simulated shop and of typical systems; anything else is refused before
# it reaches Redis (no key built from arbitrary bytes, no oversized requests).
CUSTOMER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
CUSTOMER_ID_RULE = "1 to 128 characters from A-Z a-z 0-9 _ . : @ -"
LOOKUP_OFF = (
    "the customer lookup is off: set CHURN_WEB_TOKEN to a secret and send it as "
    "'Authorization: Bearer <token>'"
)

T = TypeVar("T")
Answer = Prediction | ChurnPrediction | Lookup
OffLoop = Callable[..., Awaitable[Any]]  # off_loop(timeout, call, *args)


class Engine(Protocol):
    """What /ready asks of the engine that consumes the input topics."""

    def owned_partitions(self) -> set[int] | None:
        """The input partitions the group assigned here (None: not assigned yet)."""
        ...

    def consuming(self) -> tuple[bool, str]:
        """Whether the consumer runs, and a word on it for /ready."""
        ...


def routes(
    settings: Settings,
    store: RedisStateStore,
    served: ServedModel,
    policy: Callable[[Model], RiskPolicy],
    partitions: int,
    engine: Engine,
    kafka_config: dict[str, Any],
) -> list[RouteDef]:
    """Every endpoint, for the engine to serve. `policy`: the scorer's, so an answer
    here has the categories and actions the stream publishes."""
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="churn-web")

    async def off_loop(within: float, call: Callable[..., T], *args: Any) -> T:
        future = asyncio.get_running_loop().run_in_executor(pool, call, *args)
        # On timeout the thread may still wait (up to the client's socket timeout),
        # but the request is answered.
        return await asyncio.wait_for(future, within)

    def lookup(state: CustomerState, stream_time: float | None) -> Lookup:
        model = served()
        return on_demand.lookup(model, policy(model), state, stream_time)

    return [
        *probe_routes(settings, store, served, engine, kafka_config, off_loop),
        *api_routes(settings, store, served, policy, partitions, off_loop),
        *worklist_routes(settings, store, partitions, lookup, off_loop),
    ]


async def serve(routes: Iterable[RouteDef], bind: str, port: int) -> AppRunner:
    """A web server of its own with `routes` on bind:port, for an engine without one;
    `await runner.cleanup()` stops it."""
    app = Application()
    app.add_routes(routes)
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    await TCPSite(runner, bind, port).start()
    return runner


def probe_routes(
    settings: Settings,
    store: RedisStateStore,
    served: ServedModel,
    engine: Engine,
    kafka_config: dict[str, Any],
    off_loop: OffLoop,
) -> list[RouteDef]:
    """/health, /ready, /metrics and /openapi.json: open to anyone, nothing per customer."""
    api_document = json.dumps(openapi.document(), indent=1).encode()
    admin = AdminClient(kafka_config)
    probe_topic = topics.qualified(topics.CHURN_RISK, settings.topic_prefix)

    async def check_redis() -> dict[str, Any]:
        try:
            await off_loop(REDIS_TIMEOUT, store.client.ping)
        except TimeoutError:
            return {"ok": False, "detail": f"no answer to PING within {REDIS_TIMEOUT:g} s"}
        except Exception as err:  # any failure means not ready; say which
            return {"ok": False, "detail": f"PING failed: {type(err).__name__}: {err}"}
        return {"ok": True, "detail": "PING answered"}

    async def check_kafka() -> dict[str, Any]:
        owned = engine.owned_partitions()
        if owned is None:
            return {"ok": False, "detail": "the consumer group has not assigned partitions yet"}
        try:
            metadata = await off_loop(
                KAFKA_TIMEOUT + 1,
                functools.partial(admin.list_topics, probe_topic, timeout=KAFKA_TIMEOUT),
            )
        except TimeoutError:
            return {"ok": False, "detail": f"no metadata from the brokers in {KAFKA_TIMEOUT:g} s"}
        except Exception as err:
            return {"ok": False, "detail": f"brokers unreachable: {err}"}
        return {
            "ok": True,
            "detail": f"{len(metadata.brokers)} broker(s) answered",
            "partitions": sorted(owned),
        }

    def check_model() -> dict[str, Any]:
        model = served()
        return {"ok": True, "detail": "loaded", "version": model.version}

    def check_consumer() -> dict[str, Any]:
        ok, detail = engine.consuming()
        return {"ok": ok, "detail": detail}

    async def health(request: Request) -> Response:
        # Liveness only: no Redis, no Kafka (those are /ready's).
        return _json({"status": "ok", "model_version": served().version})

    async def ready(request: Request) -> Response:
        kafka, redis_ = await asyncio.gather(check_kafka(), check_redis())
        checks = {
            "kafka": kafka,
            "redis": redis_,
            "model": check_model(),
            "agent": check_consumer(),  # the name from when only Faust's agent consumed
        }
        failed = [name for name, check in checks.items() if not check["ok"]]
        body = {"status": "not ready" if failed else "ready", "failed": failed, **checks}
        return _json(body, status=503 if failed else 200)

    async def prometheus(request: Request) -> Response:
        # aiohttp rejects a charset inside content_type; Prometheus needs none.
        return Response(body=generate_latest(), content_type=PROMETHEUS_CONTENT_TYPE)

    async def api_description(request: Request) -> Response:
        return Response(body=api_document, content_type="application/json")

    return [
        get("/health", health),
        get("/ready", ready),
        get("/metrics", prometheus),
        get("/openapi.json", api_description),
    ]


def api_routes(
    settings: Settings,
    store: RedisStateStore,
    served: ServedModel,
    policy: Callable[[Model], RiskPolicy],
    partitions: int,
    off_loop: OffLoop,
) -> list[RouteDef]:
    """The customer lookup, the what-if score and /predict: behind the web token."""
    # Hashed so that the comparison takes the same time whatever the lengths.
    expected = _digest(settings.web_token) if settings.web_token else None

    def unauthorised(request: Request) -> Response | None:
        """The refusal of a request without the token (None: it may go on)."""
        if expected is None:
            return refuse(LOOKUP_OFF, status=403)
        presented = _bearer(request.headers.get("Authorization", ""))
        if presented is None or not hmac.compare_digest(_digest(presented), expected):
            challenge = 'Bearer realm="churn-risk"'
            if presented is not None:
                challenge += ', error="invalid_token"'
            return refuse(
                "a valid 'Authorization: Bearer <token>' header is required",
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        return None

    async def stored(request: Request) -> tuple[CustomerState, float | None] | Response:
        """The customer's state and their partition's stream time, or the refusal."""
        refusal = unauthorised(request)
        if refusal is not None:
            return refusal
        customer_id = request.match_info["customer_id"]
        if not CUSTOMER_ID.fullmatch(customer_id):
            return refuse(f"a customer id is {CUSTOMER_ID_RULE}", status=400)
        partition = partition_of(customer_id, partitions)

        try:
            states, stream_time = await off_loop(
                REDIS_TIMEOUT, store.snapshot, partition, [customer_id]
            )
        except TimeoutError:
            return refuse("Redis did not answer in time", status=503)
        except Exception as err:
            return refuse(f"Redis failed: {type(err).__name__}", status=503)
        state = states.get(customer_id)
        if state is None or state.seen is None:
            return refuse(f"unknown customer {customer_id}", status=404)
        return state, stream_time

    async def answer(endpoint: str, call: Callable[..., Answer], *args: Any) -> Response:
        """`call(model, policy, *args)` off the loop (LightGBM holds the GIL for a while
        on larger models), as JSON, or its refusal; counted and timed by `endpoint`."""
        model = served()
        started = time.perf_counter()
        try:
            result = await off_loop(MODEL_TIMEOUT, call, model, policy(model), *args)
        except on_demand.Refused as err:
            return refuse(str(err), status=err.status)
        except TimeoutError:
            return refuse("the model did not answer in time", status=503)
        metrics.ML_PREDICTION_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        metrics.ML_PREDICTIONS.labels(endpoint, _risk(result)).inc()
        return Response(body=msgspec.json.encode(result), content_type="application/json")

    async def customer(request: Request) -> Response:
        found = await stored(request)
        if not isinstance(found, tuple):
            return found  # the refusal
        return await answer("lookup", on_demand.lookup, *found)

    async def score(request: Request) -> Response:
        found = await stored(request)
        if not isinstance(found, tuple):
            return found  # the refusal
        state, stream_time = found
        try:
            parsed = on_demand.parse_score(await _read_at_most(request, MAX_BODY_BYTES))
        except on_demand.Refused as err:
            return refuse(str(err), status=err.status)
        if parsed.as_of is not None:
            as_of = parsed.as_of.timestamp()
        else:
            as_of = on_demand.now(state, stream_time)
        return await answer("score", on_demand.score_state, state, as_of)

    async def predict(request: Request) -> Response:
        refusal = unauthorised(request)
        if refusal is not None:
            return refusal
        try:
            parsed = on_demand.parse(await _read_at_most(request, MAX_BODY_BYTES))
        except on_demand.Refused as err:
            return refuse(str(err), status=err.status)
        now = datetime.now(UTC)
        return await answer("predict", on_demand.answer, parsed, now)

    return [
        get("/customers/{customer_id}", customer),
        post("/customers/{customer_id}/score", score),
        post("/predict", predict),
    ]


def _json(value: Any, status: int = 200) -> Response:
    """`value` as compact UTF-8 JSON, as Faust's views answered before these handlers."""
    body = msgspec.json.encode(value)
    return Response(body=body, content_type="application/json", charset="utf-8", status=status)


def refuse(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """A refusal: `status` with a Problem body saying why."""
    body = msgspec.json.encode(Problem(message))
    return Response(body=body, content_type="application/json", status=status, headers=headers)


def _risk(result: Answer) -> str:
    """The risk category an on-demand answer gives."""
    if isinstance(result, ChurnPrediction):
        return result.risk_category
    return result.current.risk if isinstance(result, Lookup) else result.risk


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


async def _read_at_most(request: Request, limit: int) -> bytes:
    """The body, read no further than `limit` + 1 bytes (more: on_demand.parse refuses
    it), so an endless body costs no memory."""
    body = b""
    while len(body) <= limit:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return body


def _bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None: not that form)."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


WORKLIST_PAGE = 200  # customers one page shows
SESSION_COOKIE = "churn_worklist"
SESSION_SECONDS = 12 * 3600
# The pages load nothing, run no script and may not be framed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def worklist_routes(
    settings: Settings,
    store: RedisStateStore,
    partitions: int,
    lookup: Callable[[CustomerState, float | None], Lookup],
    off_loop: OffLoop,
) -> list[RouteDef]:
    """The work-list pages (`stream_app.worklist_page`): behind the web token, sent as
    a bearer header or, from a browser, once through a form that sets an HttpOnly
    session cookie (an HMAC of the token, so rotating the token ends every session)."""
    token = settings.web_token
    session = hmac.new(_digest(token), b"worklist", "sha256").hexdigest() if token else None
    all_partitions = range(partitions)

    def gate(request: Request) -> Response | None:
        """The refusal of a request that is not signed in (None: go on)."""
        if session is None:
            return _html(worklist_page.page("Work-list", LOOKUP_OFF), 403)
        presented = _bearer(request.headers.get("Authorization", ""))
        if presented is not None and hmac.compare_digest(_digest(presented), _digest(token)):
            return None
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if hmac.compare_digest(cookie.encode(), session.encode()):
            return None
        return _html(worklist_page.login(), 401)

    def read_list(risk: str, query: str) -> tuple[list[tuple[str, WorkItem]], dict[str, int]]:
        lowest, highest = worklist.bounds(risk)
        limit = settings.worklist_size if query else WORKLIST_PAGE
        listed = sorted(
            store.listed(all_partitions, lowest, highest, limit), key=lambda found: -found[2]
        )
        rows = [(customer, worklist.decode(entry)) for _, customer, _, entry, _ in listed]
        if query:
            rows = [row for row in rows if worklist_page.matches(*row, query)]
        counts = {r: store.count_listed(all_partitions, *worklist.bounds(r)) for r in LISTED}
        return rows[:WORKLIST_PAGE], counts

    def read_customer(customer: str) -> str:
        partition = partition_of(customer, partitions)
        listed = store.listing(partition, customer)
        states, stream_time = store.snapshot(partition, [customer])
        state = states.get(customer)
        found = lookup(state, stream_time) if state and state.seen is not None else None
        item = None if listed is None else worklist.decode(listed[3])
        path = [] if listed is None else worklist.decode_path(listed[4])
        return worklist_page.customer_page(customer, item, path, found)

    async def work_list(request: Request) -> Response:
        refusal = gate(request)
        if refusal is not None:
            return refusal
        risk = request.query.get("risk", "HIGH")
        risk = risk if risk in LISTED else "HIGH"
        query = request.query.get("q", "").strip()[:100]
        try:
            rows, counts = await off_loop(REDIS_TIMEOUT, read_list, risk, query)
        except Exception as err:  # a timeout or Redis down: say so, stay up
            return _html(worklist_page.page("Work-list", f"Redis: {err!r}"), 503)
        return _html(worklist_page.work_list(rows, risk, query, counts))

    async def work_list_customer(request: Request) -> Response:
        refusal = gate(request)
        if refusal is not None:
            return refusal
        customer_id = request.match_info["customer_id"]
        if not CUSTOMER_ID.fullmatch(customer_id):
            return _html(worklist_page.page("Work-list", CUSTOMER_ID_RULE), 400)
        try:
            text = await off_loop(REDIS_TIMEOUT + MODEL_TIMEOUT, read_customer, customer_id)
        except Exception as err:
            return _html(worklist_page.page("Work-list", f"Redis: {err!r}"), 503)
        return _html(text)

    async def sign_in(request: Request) -> Response:
        form = parse_qs((await _read_at_most(request, 4096)).decode("utf-8", "replace"))
        presented = (form.get("token") or [""])[0]
        if session is None or not hmac.compare_digest(_digest(presented), _digest(token)):
            return _html(worklist_page.login("That is not the token."), 401)
        cookie = (
            f"{SESSION_COOKIE}={session}; Path=/worklist; Max-Age={SESSION_SECONDS}; "
            "HttpOnly; SameSite=Strict"
        )
        return _html("", 303, Location="/worklist", **{"Set-Cookie": cookie})

    return [
        get("/worklist", work_list),
        post("/worklist/login", sign_in),
        get("/worklist/customers/{customer_id}", work_list_customer),
    ]


def _html(text: str, status: int = 200, **headers: str) -> Response:
    """A work-list page, with the headers that keep it inert."""
    return Response(
        body=text.encode(),
        content_type="text/html",  # aiohttp refuses a charset here: the page says utf-8
        status=status,
        headers={**PAGE_HEADERS, **headers},
    )
