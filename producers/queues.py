"""Looking at a model's queues on RabbitMQ: depth per level, and purging (bench clean-up)."""

from __future__ import annotations

import pika
import pika.exceptions

from genq import names
from genq.settings import FleetSettings
from genq.tls import pika_parameters

__all__ = ["purge_model", "queue_depths"]


def queue_depths(settings: FleetSettings, model: str) -> dict[int, int]:
    """Messages ready in each level's queue (0 for a queue not declared yet)."""
    levels = settings.levels
    conn = pika.BlockingConnection(pika_parameters(settings.broker_url, settings))
    depths = {}
    try:
        for level in range(levels):
            channel = conn.channel()
            try:
                ok = channel.queue_declare(names.level_queue(model, level), passive=True)
                depths[level] = ok.method.message_count
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:  # 404: nobody declared it yet
                depths[level] = 0
    finally:
        conn.close()
    return depths


def purge_model(settings: FleetSettings, model: str, *, delete: bool = False) -> None:
    levels = settings.levels
    conn = pika.BlockingConnection(pika_parameters(settings.broker_url, settings))
    channel = conn.channel()
    queues = [names.level_queue(model, p) for p in range(levels)] + [names.dead_queue(model)]
    for queue in queues:
        if delete:
            channel.queue_delete(queue)
        else:
            channel.queue_purge(queue)
    conn.close()
