"""Pydantic models of every Vigil message, model card and the configuration (no Kafka, no torch)."""

from schemas.common import SCHEMA_VERSION, Evidence, Message, ModelRef
from schemas.messages import (
    Alert,
    AlertTimestamps,
    DeadLetter,
    FrameRef,
    InferenceResult,
    RegionOfInterest,
    SampleBlock,
    SensorReading,
)
from schemas.model_card import ModelCard
from schemas.settings import VigilSettings, load_settings

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "AlertTimestamps",
    "DeadLetter",
    "Evidence",
    "FrameRef",
    "InferenceResult",
    "Message",
    "ModelCard",
    "ModelRef",
    "RegionOfInterest",
    "SampleBlock",
    "SensorReading",
    "VigilSettings",
    "load_settings",
]
