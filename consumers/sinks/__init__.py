"""Where outputs leave Vigil: the Kafka topic sink, and the seam other sinks plug into."""

from consumers.sinks.base import Acknowledgement, Sink, SinkDelivery
from consumers.sinks.kafka import KafkaTopicSink

__all__ = ["Acknowledgement", "KafkaTopicSink", "Sink", "SinkDelivery"]
