"""The HTTP listener (`[listen] http`): calendar feeds, /health and /metrics, on aiohttp.

    /calendar/…​.ics?token=…   calendar feeds (`mailgated/reporting/feeds.py` says which)
    /health                   200 when the database answers and the daemon runs, else 503
    /metrics                  Prometheus text format (prometheus-client), see monitor.py

aiohttp parses HTTP for us (keep-alive, HEAD, limits, slow clients), which the
hand-written server before it did only in part. /health answers within a second even
when the database hangs: the check runs in its own thread with a deadline, and a
check still hanging is waited for again rather than stacked. Requests are logged at
DEBUG (`mailgated.http`), so a monitoring system polling every few seconds does not
fill the log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from mailgated.config import Config, parse_listen
from mailgated.db import Database
from mailgated.reporting.feeds import feed_token, render_feed

if TYPE_CHECKING:
    from mailgated.monitor import Monitor

log = logging.getLogger("mailgated.http")

HEALTH_DEADLINE = 0.8  # seconds: /health answers 503 rather than wait longer on the database
SCRAPE_DEADLINE = 5.0  # seconds for the database part of /metrics


class AccessLog(AbstractAccessLogger):
    """One DEBUG line per request."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "%s %s %s %d %.3f s",
            request.remote,
            request.method,
            request.path,
            response.status,
            time,
        )


class HttpServer:
    """The HTTP listener; a daemon service."""

    def __init__(
        self,
        db: Database,
        config: Config,
        secret: bytes,
        monitor: Monitor | None = None,
    ) -> None:
        self.name = f"http {config.listen.http}"
        self.db = db
        self.config = config
        self.secret = secret
        self.monitor = monitor
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._check: asyncio.Future[None] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/calendar/{tail:.+}", self.feed)
        return app

    async def start(self) -> None:
        host, port = parse_listen(self.config.listen.http)
        self._stopping = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="health")
        self._check = None
        self._runner = web.AppRunner(
            self.app(), access_log_class=AccessLog, access_log=log, handle_signals=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, int(port))
        await site.start()
        bound = self._runner.addresses
        self.port = int(bound[0][1]) if bound else int(port)
        if self.monitor is not None:
            self.monitor.listening("http", f"{host}:{self.port}")
        base = f"http://{host}:{self.port}"
        log.info("calendar feeds on %s/calendar/; %s/health, %s/metrics", base, base, base)

    async def stop(self) -> None:
        self._stopping = True  # /health says 503 to whoever still gets an answer
        if self._runner is not None:
            await self._runner.cleanup()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- /health ------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        database = await self._database_answers()
        # the event loop is alive: it is the loop that runs this handler
        ok = database == "ok" and not self._stopping
        body = {
            "status": "ok" if ok else "unavailable",
            "database": database,
            "daemon": "stopping" if self._stopping else "running",
        }
        return web.json_response(body, status=200 if ok else 503)

    async def _database_answers(self) -> str:
        if self._check is None or self._check.done():
            assert self._pool is not None
            loop = asyncio.get_running_loop()
            self._check = loop.run_in_executor(self._pool, self._ping)
            self._check.add_done_callback(_retrieve)  # a late failure is not "never retrieved"
        try:
            await asyncio.wait_for(asyncio.shield(self._check), HEALTH_DEADLINE)
        except TimeoutError:
            return f"no answer within {HEALTH_DEADLINE} s"
        except Exception as exc:
            return _first_line(exc)
        return "ok"

    def _ping(self) -> None:
        from sqlalchemy import text

        with self.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- /metrics -----------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        try:
            state = await asyncio.wait_for(asyncio.to_thread(self._state), SCRAPE_DEADLINE)
        except Exception as exc:  # the database is away: the counters still answer
            log.debug("metrics without database figures: %s", _first_line(exc))
            state = None
        body = await asyncio.to_thread(self._render, state)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _state(self) -> dict[str, Any]:
        import datetime as dt

        from mailgated.status import outbox_counts, rules_summary

        now = dt.datetime.now(dt.UTC)
        with self.db.session() as session:
            return {
                "outbox": outbox_counts(session, now),
                "rules": rules_summary(session, now),
            }

    def _render(self, state: dict[str, Any] | None) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        from mailgated.intake.spool import Spool
        from mailgated.monitor import multiprocess_active

        spool = Spool(self.config.spool.path).counts()
        ours = CollectorRegistry(auto_describe=False)
        ours.register(_StateCollector(spool, state, self.monitor))
        if multiprocess_active():
            from prometheus_client import multiprocess

            counted = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(counted)  # type: ignore[no-untyped-call]
            return generate_latest(counted) + generate_latest(ours)
        if self.monitor is not None:
            return generate_latest(self.monitor.metrics.registry) + generate_latest(ours)
        return generate_latest(ours)

    # -- calendar feeds -------------------------------------------------------------
    async def feed(self, request: web.Request) -> web.Response:
        path = request.path
        token = request.query.get("token", "")
        if not hmac.compare_digest(token, feed_token(self.secret, path)):
            return web.Response(status=404, text="not found\n")
        body = await asyncio.to_thread(render_feed, self.db, self.config, path)
        if body is None:
            return web.Response(status=404, text="not found\n")
        log.debug("served %s (%d bytes)", path, len(body))
        return web.Response(
            body=body,
            content_type="text/calendar",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )


class _StateCollector:
    """Figures read at scrape time from the spool and the database (see monitor.py)."""

    def __init__(
        self, spool: dict[str, int], state: dict[str, Any] | None, monitor: Monitor | None
    ) -> None:
        self.spool = spool
        self.state = state
        self.monitor = monitor

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        depth = GaugeMetricFamily(
            "mailgated_spool_messages", "Messages in the spool, by state", labels=["state"]
        )
        for state, count in sorted(self.spool.items()):
            depth.add_metric([state], count)
        yield depth
        up = GaugeMetricFamily("mailgated_database_up", "1 when the database answered")
        up.add_metric([], 0 if self.state is None else 1)
        yield up
        if self.monitor is not None:
            started = GaugeMetricFamily(
                "mailgated_start_time_seconds", "When this daemon started (Unix time)"
            )
            started.add_metric([], self.monitor.started_at.timestamp())
            yield started
        if self.state is None:
            return
        outbox = self.state["outbox"]
        by_state = GaugeMetricFamily(
            "mailgated_outbox_messages",
            "Outbound mail by state (queued, sent, failed, …)",
            labels=["state"],
        )
        for state in ("queued", "sent", "failed", "held"):
            by_state.add_metric([state], outbox[state])
        yield by_state
        oldest = GaugeMetricFamily(
            "mailgated_outbox_oldest_queued_seconds", "Age of the oldest queued outbound mail"
        )
        oldest.add_metric([], outbox["oldest_queued_seconds"] or 0)
        yield oldest
        firings = CounterMetricFamily("mailgated_rule_firings", "Rule firings recorded")
        firings.add_metric([], self.state["rules"]["firings"])
        yield firings


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(exc).__name__])[0]
