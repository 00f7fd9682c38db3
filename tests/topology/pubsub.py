"""Creates an emulator topic with one subscription, to check that a replay publishes nothing to it."""

from __future__ import annotations

from typing import NamedTuple

from google.cloud import pubsub_v1


class GuardTopic(NamedTuple):
    """Clients and full resource paths of a topic with one subscription."""

    publisher: pubsub_v1.PublisherClient
    subscriber: pubsub_v1.SubscriberClient
    topic: str
    subscription: str


def create_guard_topic(project: str, topic: str, subscription: str) -> GuardTopic:
    """Create ``topic`` and a ``subscription`` to it in ``project``.

    The clients reach the emulator only while PUBSUB_EMULATOR_HOST is set, as the
    ``pubsub_emulator`` fixture does.
    """
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    subscription_path = subscriber.subscription_path(project, subscription)
    publisher.create_topic(name=topic_path)
    subscriber.create_subscription(name=subscription_path, topic=topic_path)
    return GuardTopic(publisher, subscriber, topic_path, subscription_path)
