"""What exists on RabbitMQ for a model, declared identically by producers and workers.

Declaring is idempotent, so whoever comes first creates it: a client may submit before any
worker for the model has started (workers can be scaled to zero) and nothing is lost."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genq import names

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel

__all__ = ["TOP_TURN", "declare_model"]

TOP_TURN = 7
"""Level queues have in-queue priorities 0..TOP_TURN, a job's turn (scheduler/turns.py).
Few, as RabbitMQ advises: each is a sub-queue in the broker. A message without a priority
counts as 0: whatever publishes to a level queue sets it."""


def declare_model(channel: BlockingChannel, model: str, levels: int) -> None:
    """Declare the exchanges, one durable queue per level (FIFO within a tenant turn), and the
    dead-letter queue."""
    channel.exchange_declare(names.EXCHANGE, exchange_type="direct", durable=True)
    channel.exchange_declare(names.DEAD_EXCHANGE, exchange_type="direct", durable=True)
    dead = names.dead_queue(model)
    channel.queue_declare(dead, durable=True)
    channel.queue_bind(dead, names.DEAD_EXCHANGE, routing_key=names.dead_routing_key(model))
    arguments = {
        # Tenant turns (scheduler/turns.py): in-queue priorities, FIFO within each.
        "x-max-priority": TOP_TURN,
        "x-dead-letter-exchange": names.DEAD_EXCHANGE,
        "x-dead-letter-routing-key": names.dead_routing_key(model),
    }
    for level in range(levels):
        queue = names.level_queue(model, level)
        channel.queue_declare(queue, durable=True, arguments=arguments)
        channel.queue_bind(queue, names.EXCHANGE, routing_key=names.level_routing_key(model, level))
