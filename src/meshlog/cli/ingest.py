"""``meshlog ingest``: workers that store the events arriving over a message bus (NATS JetStream).

A thin command over :class:`meshlog.ingest.nats.NatsIngest`; registered on the ``meshlog`` group when
:mod:`meshlog.cli` is imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from meshlog.cli import CliError, Console, _examples, _print_json, _Settings, main
from meshlog.errors import ConfigurationError

if TYPE_CHECKING:
    from meshlog.ingest.nats import IngestStats, NatsIngest

__all__ = ["ingest"]

NATS_URL_VARIABLE = "MESHLOG_NATS_URL"
"""The environment variable naming the NATS server(s) of ``meshlog ingest nats``."""


@main.group(
    short_help="Store events arriving over a message bus.",
    epilog=_examples(
        "meshlog ingest nats --stream MESHLOG --subjects 'meshlog.events.>'",
    ),
)
def ingest() -> None:
    """Run ingest workers: consume a message bus and store each message as events, exactly once."""


def _split(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _topics(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str | None]:
    topics: dict[str, str | None] = {}
    for spec in values:
        topic, sep, event_type = spec.partition("=")
        if not topic.strip() or (sep and not event_type.strip()):
            raise click.BadParameter(f"expected TOPIC or TOPIC=EVENT_TYPE, got {spec!r}")
        topics[topic.strip()] = event_type.strip() if sep else None
    return topics


@ingest.command(
    "nats",
    short_help="Store the messages of a NATS JetStream stream.",
    epilog=_examples(
        "meshlog ingest nats --stream MESHLOG --subjects 'meshlog.events.>' --store sqlite:///events.db",
        "meshlog ingest nats --url nats://n1:4222,nats://n2:4222 --stream MESHLOG --replicas 3 --dead-letter dead",
    ),
)
@click.option(
    "--url",
    "nats_url",
    envvar=NATS_URL_VARIABLE,
    metavar="NATS_URL",
    default="nats://127.0.0.1:4222",
    show_default=True,
    help=f"NATS server URL(s), comma-separated (or ${NATS_URL_VARIABLE}).",
)
@click.option("--stream", required=True, metavar="NAME", help="JetStream stream to consume.")
@click.option(
    "--subjects",
    multiple=True,
    metavar="SUBJECT",
    help="Subjects of the stream, created with them when missing; also filters the consumer (repeatable or "
    "comma-separated).",
)
@click.option(
    "--durable",
    default="meshlog-ingest",
    show_default=True,
    metavar="NAME",
    help="Durable consumer, shared by every worker of the stream.",
)
@click.option("--store", "store_url", metavar="URL", help="Store URL (overrides the group's --url).")
@click.option("--tenant", "ingest_tenant", metavar="NAME", help="Tenant to write (overrides the group's --tenant).")
@click.option("--dead-letter", metavar="SUBJECT", help="Publish malformed messages here before terminating them.")
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    metavar="N",
    help="Messages fetched and stored at once.",
)
@click.option(
    "--ack-wait",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Redeliver a message not acked within this time (a dead worker's).",
)
@click.option(
    "--nak-delay",
    type=click.FloatRange(0.01),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Delay before a message is redelivered after a store failure; doubles each time, up to 60 s.",
)
@click.option(
    "--max-deliver",
    type=click.IntRange(1),
    metavar="N",
    help="Give up on a message after N deliveries. Default: never.",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    metavar="N",
    help="Replicas of a stream created here (3 in a cluster).",
)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    metavar="TOPIC[=TYPE]",
    callback=_topics,
    help="Event type of a CloudEvent topic (repeatable). Default: dapr.TOPIC.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics.",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, metavar="HOST", help="Address of the metrics endpoint."
)
@click.option("--no-migrate", is_flag=True, help="Do not create or upgrade the schema.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON when stopping.")
@click.pass_context
def nats(
    ctx: click.Context,
    nats_url: str,
    stream: str,
    subjects: tuple[str, ...],
    durable: str,
    store_url: str | None,
    ingest_tenant: str | None,
    dead_letter: str | None,
    batch: int,
    ack_wait: float,
    nak_delay: float,
    max_deliver: int | None,
    replicas: int,
    topics: dict[str, str | None],
    metrics_port: int | None,
    metrics_host: str,
    no_migrate: bool,
    as_json: bool,
) -> None:
    """Store the messages of a NATS JetStream stream as events, until Ctrl-C or SIGTERM.

    Each message is a meshlog event as JSON (the body of POST /v1/events) or a CloudEvent as Dapr publishes
    it. Its Nats-Msg-Id (or the CloudEvent's source and id) is the idempotency key, and it is acked only once
    its events are committed: a redelivery writes nothing twice. A store failure naks it for a later
    redelivery; a malformed message is terminated (after publishing it to --dead-letter). Run several workers
    with the same --durable to share the load. On SIGTERM the messages in hand are finished, then the counts
    are printed (see docs/ingest.md).
    """
    try:
        from meshlog.ingest.nats import NatsIngest, serve_metrics
    except ImportError as exc:
        raise CliError(str(exc)) from None
    settings = ctx.find_object(_Settings) or _Settings(None, False, None)
    worker = NatsIngest(
        nats_url,
        stream=stream,
        subjects=_split(subjects),
        durable=durable,
        store=store_url or settings.url,
        tenant=ingest_tenant or settings.tenant or os.environ.get("MESHLOG_TENANT") or "default",
        migrate=not no_migrate,
        dead_letter=dead_letter,
        batch=batch,
        ack_wait=ack_wait,
        nak_delay=nak_delay,
        max_deliver=max_deliver,
        replicas=replicas,
        topics=topics or None,
    )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server: Any = None
    if metrics_port is not None:
        try:
            server = serve_metrics(worker.stats, metrics_port, metrics_host)
        except (OSError, ConfigurationError) as exc:
            raise CliError(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from None

    def announce() -> None:
        if not as_json:
            Console().print(
                f"meshlog ingesting JetStream stream {stream!r} (consumer {durable!r}) into tenant {worker.tenant!r}"
            )

    try:
        stats = asyncio.run(_run(worker, announce))
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if as_json:
        _print_json(stats.to_dict())
    else:
        Console().print(
            f"stopped: processed {stats.processed} ({stats.duplicates} duplicates), malformed {stats.malformed}, "
            f"failures {stats.failures}"
        )


async def _run(worker: NatsIngest, announce: Callable[[], None]) -> IngestStats:
    """Run ``worker`` until SIGTERM or SIGINT; ``announce`` once it consumes (not when NATS is unreachable)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)

    async def when_ready() -> None:
        await worker.ready.wait()
        announce()

    announcing = asyncio.create_task(when_ready())
    try:
        return await worker.run()
    finally:
        announcing.cancel()
