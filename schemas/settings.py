"""Vigil's configuration: one frozen, validated tree from a YAML file and ``VIGIL_`` variables.

Precedence, highest first: explicit arguments, environment (``VIGIL_KAFKA__GROUP_ID=...``,
nested with ``__``), the YAML file, defaults. Unsafe Kafka options (auto-commit,
``read_uncommitted``, ``acks`` below ``all``) are not settings at all: the runtime fixes them.
"""

from __future__ import annotations

import hashlib
import logging
from contextvars import ContextVar
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from schemas.common import ModelName, describe_errors

log = logging.getLogger(__name__)

TopicName = Annotated[str, StringConstraints(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")]
Positive = Annotated[int, Field(gt=0)]

_yaml_path: ContextVar[Path | None] = ContextVar("vigil_yaml_path", default=None)


class Section(BaseModel):
    """Base of every settings section: immutable and closed to unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(Section):
    """How to reach the cluster. ``KAFKA_BOOTSTRAP_SERVERS`` in the environment wins."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client: Literal["kafka-python", "confluent"] = "confluent"
    """The runtime's consumer and producer: confluent-kafka (librdkafka, the default: the
    pass-through runs 2.6x faster on it, ahead of a Quix Streams app where kafka-python's
    falls behind, ``bench/peers.py``) or kafka-python (pure Python, no native code). Both
    give the same delivery guarantees; the README says when to choose which."""
    client_id: str = "vigil"
    group_id: str = "vigil"
    group_instance_id: str | None = None
    """Static group membership: a restarted instance with the same id takes its partitions
    back at once instead of waiting for the session timeout."""
    assignment_strategy: Literal["cooperative-sticky", "range"] = "cooperative-sticky"
    """How the group shares partitions. ``cooperative-sticky`` (incremental rebalancing): a
    member joining or leaving moves only the partitions that change owner, and the others
    keep working through the rebalance. ``range`` (eager): every member gives up every
    partition at each rebalance. A group cannot mix the two: change it with all members
    stopped."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    session_timeout_ms: Positive = 45_000
    max_poll_interval_ms: Positive = 300_000
    max_poll_records: Positive = 500
    max_partition_fetch_bytes: Positive = 1_048_576
    fetch_min_bytes: Positive = 65_536
    fetch_max_wait_ms: Positive = 5
    """A fetch is answered once ``fetch_min_bytes`` are ready or after ``fetch_max_wait_ms``.
    The clients' defaults (1 byte, 500 ms) answer at once with whatever is there: a consumer
    that keeps up sends a fetch for every few records, and the broker's and the client's work
    per record grows with the load. Measured (``bench/load_latency.py``, pass-through,
    confluent, two cores shared with the broker and the sender): at 50% of capacity the p99
    fell from 188-310 ms to 40-56 ms; at low load it rose from 2-3 to 9-10 ms (10 ms of wait:
    64-78 ms and 12 ms; 2 ms: 67-178 ms and 6 ms). The price is paid while idle: a consumer
    with nothing to read fetches every ``fetch_max_wait_ms``, which on kafka-python cost a
    fifth of a core of this machine (5 ms; 50 ms: 4%; 500 ms: 1.5%). Where consumers sit idle
    for long and a few tens of milliseconds do not matter, raise it."""
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    linger_ms: Annotated[int, Field(ge=0)] = 5
    """How long the producer waits to fill a batch. Measured (``bench/latency.py``): 5 ms
    keeps pass-through p99 under 20 ms at low load where 20 ms gave 58 ms, and the
    throughput of a full backlog did not move."""
    batch_size: Positive = 262_144
    request_timeout_ms: Positive = 30_000
    delivery_timeout_ms: Positive = 300_000
    """How long the producer keeps retrying one output; the same order as ``runtime.outage_budget_s``."""
    max_request_size: Positive = 8_388_608


class TopicSpec(Section):
    """A topic's name and how it is created by ``vigil topics create``."""

    name: TopicName
    partitions: Positive = 3
    replication_factor: Positive = 1
    config: dict[str, str] = Field(default_factory=dict)


class TopicsSettings(Section):
    """The input and output topics."""

    frames: TopicSpec = TopicSpec(name="vigil.frames", partitions=6)
    sensors: TopicSpec = TopicSpec(name="vigil.sensors", partitions=6)
    alerts: TopicSpec = TopicSpec(name="vigil.alerts", partitions=3)
    inferences: TopicSpec = TopicSpec(name="vigil.inferences", partitions=6)
    dlq: TopicSpec = TopicSpec(name="vigil.dlq", partitions=3, config={"max.message.bytes": "8388608"})
    redrive_log: TopicSpec = TopicSpec(
        name="vigil.dlq.redriven", partitions=1, config={"cleanup.policy": "compact"}
    )
    """Compacted: one record per dead letter ``vigil dlq redrive`` published again, keyed by the
    letter's coordinates, so a second redrive skips it."""
    sensor_state: TopicSpec = TopicSpec(
        name="vigil.sensors.state",
        partitions=6,
        config={"cleanup.policy": "compact", "segment.ms": "3600000", "min.cleanable.dirty.ratio": "0.1"},
    )
    """Compacted: the sensor state a member hands over with a partition, one record per asset
    (``consumers.pipelines.sensors.changelog``); as many partitions as ``sensors``. A restore
    reads its partition whole, so segments roll hourly for the cleaner to keep it near one
    hand-off's size."""

    def all(self) -> list[TopicSpec]:
        """Every topic, inputs first."""
        return [
            self.frames,
            self.sensors,
            self.alerts,
            self.inferences,
            self.dlq,
            self.redrive_log,
            self.sensor_state,
        ]


class RuntimeSettings(Section):
    """The consume-process-produce loop."""

    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    commit_interval_ms: Positive = 1_000
    poll_timeout_ms: Positive = 100
    max_in_flight: Positive = 5_000
    resume_below_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
    max_message_bytes: Positive = 262_144
    publish_inferences: bool = True
    shutdown_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    transactional_id_prefix: str = "vigil"
    instance_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,128}$")] | None = None
    """This process's identity in the group's transactional ids (exactly-once). Unique per process;
    set it (or ``kafka.group_instance_id``) to keep it stable across restarts, so a restarted
    process fences its predecessor's open transaction at once. Default: host name and process id."""
    outage_budget_s: Annotated[float, Field(gt=0)] = 300.0
    """How long commits and transaction steps that fail for broker reasons (unreachable,
    timed out, coordinator moving) are retried with back-off before the process exits non-zero."""
    stuck_item_s: Annotated[float, Field(gt=0)] = 120.0
    """``/readyz`` fails while an input has been in flight longer than this."""
    commit_stale_s: Annotated[float, Field(gt=0)] = 60.0
    """``/readyz`` fails while inputs wait and no commit has succeeded for longer than this."""
    torch_threads: Annotated[int, Field(gt=0, le=256)] | None = None
    """Torch's intra-op threads for the whole process; None: one core left to the consumer
    threads, the rest shared by the model pipelines run (``default_torch_threads``)."""


class BatchingSettings(Section):
    """Micro-batching (``consumers/pipelines/batcher.py``): a batch closes at ``max_batch_size``
    items, ``max_wait_ms`` after its first, or (``close_when_idle``, at low load) as soon as
    nothing more is queued while the model has nothing to run next."""

    max_batch_size: Annotated[int, Field(gt=0, le=4096)] = 32
    max_wait_ms: Annotated[float, Field(ge=0, le=10_000)] = 10.0
    """With ``close_when_idle`` an upper bound only, reached while the model is busy."""
    max_queue: Positive = 1024
    close_when_idle: bool = True
    """A batch opened ``max_wait_ms`` or more after the last one closed (low load) closes as
    soon as nothing more is queued while the model has nothing to run next; False: every
    batch waits ``max_wait_ms`` for company (the policy before; ``bench/low_load.py``)."""
    quiet_ms: Annotated[float, Field(ge=0, le=1_000)] = 0.0
    """With ``close_when_idle``: how long without a new item ends such a batch (0: at once)."""


class FetchSettings(Section):
    """How frame images are read. Only URIs under ``allowed_prefixes`` are ever fetched."""

    allowed_prefixes: list[Annotated[str, StringConstraints(min_length=8)]] = Field(
        default_factory=lambda: ["file:///var/lib/vigil/frames/"]
    )
    timeout_s: Annotated[float, Field(gt=0)] = 5.0
    """Connect and per-read timeout of one try."""
    deadline_s: Annotated[float, Field(gt=0)] = 30.0
    """Total time one frame's fetch may take, retries and back-off included; then ``fetch_failed``."""
    max_retries: Annotated[int, Field(ge=0, le=100)] = 3
    """Transient failures (timeouts, HTTP 408/429/5xx) retried this often, then ``fetch_failed``."""
    allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    """CIDR blocks an ``http(s)://`` fetch may connect to besides public addresses (e.g. the
    plant's camera network ``10.20.0.0/16``). Checked after DNS resolution; link-local
    (cloud metadata), loopback and private addresses are refused unless listed here or named
    literally by an allowed prefix."""
    max_bytes: Positive = 20 * 2**20
    workers: Annotated[int, Field(gt=0, le=256)] = 8
    retry_initial_s: Annotated[float, Field(gt=0)] = 0.2
    retry_max_s: Annotated[float, Field(gt=0)] = 10.0
    """Cap of the jittered exponential back-off between tries (a server's ``Retry-After`` wins)."""


ImageFormat = Literal["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]


class DecodeSettings(Section):
    """What images are decoded, and how. Headers are checked before any pixel is decoded."""

    max_pixels: Annotated[int, Field(gt=0)] = 40_000_000
    """Largest width x height accepted (40 MP: a full-resolution industrial camera; decoding one
    takes ~120 MB, so every fetch worker at once stays within a small machine)."""
    formats: tuple[ImageFormat, ...] = ("JPEG", "PNG")
    """Formats accepted, read from the header (never from the file name or content type)."""
    max_pixels_per_byte: Annotated[float, Field(gt=0)] = 4096.0
    """A header that declares more pixels than this per byte of file cannot match its bytes
    (lossless and JPEG coding stay far below it): ``corrupt_image`` before decoding."""
    isolate: bool = True
    """Decode in child processes, so a decoder crash or hang fails its frame, not the service."""
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """A decode that takes longer is killed and its frame is ``corrupt_image``."""


RuleName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class AlertRule(Section):
    """When a score becomes an alert, per source pattern and label.

    Fires when at least ``n`` of the last ``m`` scores are >= ``hi``; resolves when fewer
    than ``n`` of the last ``m`` are >= ``lo`` (hysteresis); after a resolve no new alert
    fires for ``cooldown_s`` seconds of event time.
    """

    name: RuleName
    sources: str = "*"
    label: str = "*"
    hi: float
    lo: float | None = None
    n: Positive = 1
    m: Positive = 1
    cooldown_s: Annotated[float, Field(ge=0)] = 0.0
    severity: Literal["info", "warning", "critical"] = "warning"

    @property
    def resolve_below(self) -> float:
        """The resolve threshold (``lo``, or ``hi`` when no hysteresis is set)."""
        return self.hi if self.lo is None else self.lo


Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class ModelServingSettings(Section):
    """What every model pipeline's section has: where its models come from, where they run, how
    items are batched, and the alert rules on model outputs."""

    registry: str = "~/.local/share/vigil/models"
    device: Device = "auto"
    precision: Precision = "auto"
    batching: BatchingSettings = BatchingSettings()
    alert_rules: list[AlertRule] = Field(default_factory=list)
    """Alert rules on model scores; when empty, the card's thresholds in the pipeline's default shape."""
    reload_interval_s: Annotated[float, Field(ge=0)] = 5.0
    """How often models bound to a registry alias check whether it moved (0: never); a
    promotion is picked up without a restart (``consumers/pipelines/reload.py``)."""
    trace: bool = True
    """On the CPU, serve each model as one TorchScript graph, traced at load and kept only
    where it gives the eager model's outputs (``models/engine.py``): a batch then holds
    Python's GIL once, not once per layer, and does not crawl beside a busy consumer thread."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_rules(cls, data: object) -> object:
        """Configurations written before ``alert_rules`` name them ``rules`` (vision) or
        ``model_rules`` (sensors)."""
        old = getattr(cls, "_OLD_RULES_KEY", None)
        if isinstance(data, dict) and old and old in data:
            if "alert_rules" in data:
                raise ValueError(f"set alert_rules or its old name {old}, not both")
            data = {("alert_rules" if k == old else k): v for k, v in data.items()}
        return data


class VisionSettings(ModelServingSettings):
    """The visual inspection pipeline."""

    _OLD_RULES_KEY: ClassVar[str] = "rules"
    model: ModelName = "demo-defects"
    model_version: ModelName | None = None
    channels_last: bool = True
    compile: bool = False
    engine: Literal["auto", "torch", "openvino"] = "auto"
    """On the CPU: ``auto`` serves through OpenVINO the models whose card has a ``cpu_engine``
    section (what ``vigil train vision`` writes), at the card's precision where its check images
    agree with torch (``models/cpu_engine.py``); ``openvino`` also takes the others, at fp32;
    ``torch`` never. A GPU always runs torch."""
    gpu_decode: bool = True
    fetch: FetchSettings = FetchSettings()
    decode: DecodeSettings = DecodeSettings()


class SensorModelBinding(Section):
    """Which registry model scores which assets; the first binding that matches wins."""

    assets: str = "*"
    """fnmatch pattern on ``asset_id``."""
    sensor_kind: str = "*"
    model: ModelName
    model_version: ModelName | None = None
    """A version or an alias, as every kind pins its models (``version`` is its old name)."""
    batching: BatchingSettings | None = None
    """This model's micro-batching (as a model's own in Triton); unset: the section's ``batching``."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_version(cls, data: object) -> object:
        """Bindings written before ``model_version`` name it ``version``."""
        if isinstance(data, dict) and "version" in data:
            if "model_version" in data:
                raise ValueError("set model_version or its old name version, not both")
            data = {("model_version" if k == "version" else k): v for k, v in data.items()}
        return data


class SensorRule(Section):
    """A rule without a model, for assets and sensor kinds matching the patterns.

    Kinds: ``threshold`` (a channel above ``limit`` for at least ``for_s`` seconds),
    ``rate`` (absolute change per second above ``limit``), ``range`` (a value outside
    [``low``, ``high``]) and ``stale`` (no reading from the asset for ``for_s`` seconds).
    Each condition scores 1 while it holds, and the shared alert policy applies ``n`` of
    ``m``, cooldown and the resolve event, as for model scores.
    """

    name: RuleName
    kind: Literal["threshold", "rate", "range", "stale"]
    channel: str = "*"
    assets: str = "*"
    sensor_kind: str = "*"
    limit: float = 0.0
    low: float | None = None
    """Range rules: the lowest acceptable value (none: unbounded)."""
    high: float | None = None
    for_s: Annotated[float, Field(ge=0)] = 0.0
    n: Positive = 1
    m: Positive = 1
    cooldown_s: Annotated[float, Field(ge=0)] = 0.0
    severity: Literal["info", "warning", "critical"] = "warning"

    def applies(self, asset_id: str, sensor_kind: str) -> bool:
        """Whether this rule watches ``asset_id`` of ``sensor_kind``."""
        return fnmatchcase(asset_id, self.assets) and fnmatchcase(sensor_kind, self.sensor_kind)

    def policy_rule(self) -> AlertRule:
        """The alert policy rule that turns this rule's condition scores into alerts."""
        return AlertRule(
            name=self.name,
            sources=self.assets,
            hi=1.0,
            n=self.n,
            m=self.m,
            cooldown_s=self.cooldown_s,
            severity=self.severity,
        )


class SensorSettings(ModelServingSettings):
    """The sensor pipeline: windows, models, rules and bad-input handling."""

    _OLD_RULES_KEY: ClassVar[str] = "model_rules"
    models: list[SensorModelBinding] = Field(default_factory=list)
    precision: Precision = "fp32"
    batching: BatchingSettings = BatchingSettings(max_batch_size=256, max_wait_ms=20.0, max_queue=8192)
    lateness_s: Annotated[float, Field(ge=0)] = 0.0
    """Events up to this much older than an asset's newest are put back in order; older ones are late."""
    stagger_windows: bool = True
    """Each asset's windows fall due at a phase of its own (a stable hash of its id), so assets
    that report on the same tick spread their scoring over the stride instead of completing
    every window at once; off, every asset's windows end on the same grid steps."""
    max_future_s: Annotated[float, Field(gt=0)] = 300.0
    """An event time further than this after the record's Kafka timestamp is ``out_of_time_range``."""
    max_block_span_s: Annotated[float, Field(gt=0)] = 3_600.0
    """A sample block spanning longer than this (samples / rate) is ``invalid_block``; with
    ``max_future_s`` it bounds how far one record can move an asset's clock."""
    max_past_s: Annotated[float, Field(gt=0)] | None = 7 * 86_400.0
    """An event time further than this before the record's Kafka timestamp is ``out_of_time_range``
    (``None`` accepts any age, for replays of old history)."""
    unknown_channels: Literal["dead_letter", "ignore"] = "dead_letter"
    """A channel that neither the asset's model nor any of its rules knows: dead-letter the
    reading, or drop the channel and count it."""
    rules: list[SensorRule] = Field(default_factory=list)
    rebuild_history_s: Annotated[float, Field(ge=0)] | None = None
    """On assignment, a partition's windows and alert state are restored from this much of its
    history (by Kafka timestamp). None (the default): as far back as the windows and rules look
    (a full window plus the strides an alert rule's ``m`` spans, each rule's ``for_s``, their
    cooldowns and the lateness bound; at least 60 s). 0 starts empty."""


class MetricsSettings(Section):
    """Where ``/metrics``, ``/healthz`` and ``/readyz`` are served, and who may read ``/metrics``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9108
    basic_auth_username: str | None = None
    basic_auth_password: SecretStr | None = None
    """With both set, ``/metrics`` asks for HTTP basic authentication (health checks stay open)."""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    """With both set, the endpoint speaks HTTPS only."""

    @model_validator(mode="after")
    def _pairs(self) -> MetricsSettings:
        if (self.basic_auth_username is None) != (self.basic_auth_password is None):
            raise ValueError("basic_auth_username and basic_auth_password go together")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class HttpSinkSettings(Section):
    """What every HTTP alert sink shares: where, how long to wait, how often to try."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]
    timeout_s: Annotated[float, Field(gt=0)] = 5.0
    """How long a try waits for its answer before the next try goes out (a late answer to it
    still counts while ``deliver_within_s`` lasts)."""
    deliver_within_s: Annotated[float, Field(gt=0)] = 30.0
    """Each alert's budget from the moment the sink is handed it: one the receiver has not
    taken by then is parked on the dead-letter topic, and its input's offset may commit. It
    bounds how long a slow or dead receiver holds the pipeline's commits."""
    concurrency: Annotated[int, Field(gt=0, le=64)] = 4
    """Deliveries in flight at once (one source's alerts stay in order on one of them)."""
    retries: Annotated[int, Field(ge=0, le=20)] = 5
    """Bounded: after these, with back-off doubling from 0.5 s up to 30 s, the alert is parked
    on the dead-letter topic (reason ``undelivered_alert``) and the input's offset may commit;
    ``vigil dlq redrive --reason undelivered_alert`` delivers it again once the receiver is back."""
    down_for_s: Annotated[float, Field(ge=0)] = 30.0
    """After an alert was parked, the receiver counts as down this long: each alert meanwhile
    gets one try, not the retries, so a dead receiver cannot hold the pipeline up."""


class AlertmanagerSinkSettings(HttpSinkSettings):
    """Vigil's alerts also go to an Alertmanager (its v2 API, ``url`` e.g. ``http://alertmanager:9093``)."""

    firing_for_s: Annotated[float, Field(gt=0)] = 86_400.0
    """A firing alert's ``endsAt`` this far ahead: Vigil sends a transition once, not repeatedly
    as Prometheus does, so Alertmanager must not time it out before its resolution arrives."""
    link: str | None = None
    """``generatorURL`` of each alert, with ``{alert_id}`` replaced, e.g. a dashboard or search
    URL; unset, the alert id is in the annotations only."""


class WebhookSinkSettings(HttpSinkSettings):
    """Vigil's alerts also go to a webhook: each alert's JSON is POSTed to ``url``, signed."""

    secret: SecretStr | None = None
    """Key of the HMAC-SHA256 signature header (``X-Vigil-Signature: t=<unix s>,v1=<hex>`` over
    ``<unix s>.<body>``); unset, alerts go unsigned and a warning says so at start."""


class SinksSettings(Section):
    """Where alerts go besides the Kafka alerts topic."""

    alertmanager: AlertmanagerSinkSettings | None = None
    webhook: WebhookSinkSettings | None = None


class VigilSettings(BaseSettings):
    """The whole configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix="VIGIL_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicsSettings = TopicsSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    vision: VisionSettings = VisionSettings()
    sensors: SensorSettings = SensorSettings()
    sinks: SinksSettings = SinksSettings()
    pipelines: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")], dict[str, Any]] = Field(
        default_factory=dict
    )
    """Every kind's section, by kind name (``pipelines.vision``, ``pipelines.sensors``,
    ``pipelines.vibration``). The built-in kinds' sections are read into ``vision`` and
    ``sensors`` (``_built_in_sections``); an added kind's is checked against its own section
    when the pipeline is built (``PipelineKind.section``)."""
    metrics: MetricsSettings = MetricsSettings()

    @model_validator(mode="before")
    @classmethod
    def _built_in_sections(cls, data: object) -> object:
        """``pipelines.vision`` and ``pipelines.sensors`` become the ``vision`` and ``sensors``
        sections; keys given at the top level too (the old place, or ``VIGIL_VISION__*``
        variables) win over them, key by key."""
        if not isinstance(data, dict) or not isinstance(data.get("pipelines"), dict):
            return data
        pipelines = data["pipelines"]
        built_in = [name for name in BUILT_IN_SECTIONS if name in pipelines]
        if not built_in:
            return data
        data = {**data, "pipelines": {k: v for k, v in pipelines.items() if k not in built_in}}
        for name in built_in:
            data[name] = _merged(pipelines[name], data.get(name))
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_path.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def config_hash(self) -> str:
        """sha256 of the configuration without secrets; alerts carry it for audit."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


BUILT_IN_SECTIONS = ("vision", "sensors")
"""Kinds whose sections are typed fields of ``VigilSettings`` (read from ``pipelines.<name>``)."""


def _merged(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``, mappings merged key by key."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merged(base.get(k), v) for k, v in over.items()}}
    return base if over is None else over


def _warn_of_old_sections(path: Path) -> None:
    """Say so when a configuration file still has a built-in kind's section at the top level."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return  # the settings source reports it
    if isinstance(document, dict):
        for name in BUILT_IN_SECTIONS:
            if name in document:
                log.warning(
                    "%s: the top-level %r section is deprecated; move it under pipelines.%s "
                    "(every kind configures there)",
                    path,
                    name,
                    name,
                )


class ConfigurationError(ValueError):
    """The configuration is invalid; the message names the fields, never their values."""


def load_settings(path: str | Path | None = None, **overrides: object) -> VigilSettings:
    """Build the settings from ``path`` (YAML), the environment and ``overrides``."""
    if path is not None and not Path(path).is_file():
        raise ConfigurationError(f"configuration file not found: {path}")
    if path is not None:
        _warn_of_old_sections(Path(path))
    token = _yaml_path.set(Path(path) if path is not None else None)
    try:
        return VigilSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        where = f" in {path}" if path is not None else ""
        raise ConfigurationError(
            f"invalid configuration{where}: {describe_errors(error, limit=10)}"
        ) from None
    finally:
        _yaml_path.reset(token)
