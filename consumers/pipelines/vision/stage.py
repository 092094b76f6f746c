"""The visual inspection stage: frame reference → fetch → decode → micro-batch → model → result and alerts.

Fetch and CPU decode run in a bounded worker pool, so they overlap inference; each model
has its own lane (engine, micro-batcher, alert policy). Every frame ends in exactly one
outcome: a result (and alerts), or a failure with a precise dead-letter reason. A transient
fetch failure is retried until it succeeds; at shutdown it is abandoned uncommitted.

A lane bound to a registry alias is replaced when the alias moves (``ModelReloader``): each
frame keeps the lane it was decoded for, and the old lane closes once no fetch worker holds
it and its queued batches are done; the alert state carries over to the new lane.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from consumers.pipelines.batcher import Deliver
from consumers.pipelines.lane import ModelLane, ScoredItems
from consumers.pipelines.outputs import PipelineOutputs, ScoredItem
from consumers.pipelines.reload import Binding, ModelReloader, retire, warn_if_unpinned
from consumers.pipelines.vision.decoder import IsolatedDecoder
from consumers.pipelines.vision.fetch import FetchError, FrameFetcher
from consumers.pipelines.vision.workers import WorkerPool
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Failure, Outcome, Output, Settled, Work
from models.alert_policy import AlertPolicy, AlertShape
from models.engine import single_torch_thread
from models.registry import LoadedModel, ModelLoader, registry_loader
from models.vision.anomaly import LOCATION_COLUMNS
from models.vision.image_header import ImageRefused, check_header
from models.vision.preprocess import (
    CorruptImageError,
    Roi,
    RoiOutsideImageError,
    is_jpeg,
    preprocess,
    preprocess_on_device,
    to_image_point,
)
from schemas.common import Evidence, ImageRegion
from schemas.messages import AlertKind, FrameRef
from schemas.model_card import ImageInputSpec
from schemas.settings import VigilSettings, VisionSettings

log = logging.getLogger(__name__)
STAGE = "vision"


@dataclass(frozen=True)
class _Frame:
    work: Work
    frame: FrameRef
    pixels: torch.Tensor | bytes
    sha256: str
    height: int
    width: int
    """Of the image the model saw: the region of interest, else the whole frame."""
    lane: VisionLane
    """The lane that scores it (a hot reload may have replaced the stage's since)."""


VISION_ALERTS = AlertShape(n=1, m=1)
"""The vision default: an alert on the first frame past a card threshold."""


class VisionLane(ModelLane[_Frame]):
    """One image model: engine, micro-batcher and alert policy."""

    def __init__(
        self,
        vision: VisionSettings,
        model: LoadedModel,
        deliver: Deliver[_Frame, torch.Tensor],
        observer: RuntimeObserver,
    ) -> None:
        if not isinstance(model.card.input, ImageInputSpec):
            raise ValueError(f"model {model.card.name} does not take images")
        self.spec: ImageInputSpec = model.card.input
        example = torch.zeros(self.spec.channels, self.spec.height, self.spec.width)
        super().__init__(
            STAGE,
            model,
            vision,
            deliver,
            observer,
            example,
            VISION_ALERTS,
            channels_last=vision.channels_last,
            compile=vision.compile,
        )
        self.gpu_decode = vision.gpu_decode and self.engine.device.type == "cuda"
        self.kind: AlertKind = "visual_anomaly" if model.card.task == "visual_anomaly" else "visual_defect"
        self.policy = AlertPolicy(self.rules)
        self.users = 0
        """Fetch workers between choosing this lane and queueing on it (under the stage's lock)."""

    def prepare(self, batch: Sequence[_Frame]) -> tuple[torch.Tensor | None, list[Exception | None]]:
        if not self.gpu_decode:
            return self.engine.prepare(torch.stack([f.pixels for f in batch])), [None] * len(batch)  # type: ignore[misc]
        rois = [_roi(f.frame) for f in batch]
        decoded = preprocess_on_device([f.pixels for f in batch], self.spec, rois, self.engine.device)
        good = [t for t in decoded if isinstance(t, torch.Tensor)]
        errors = [d if isinstance(d, Exception) else None for d in decoded]
        stacked = self.engine.prepare(torch.stack(good)) if good else None
        return stacked, errors

    def execute(self, batch: Sequence[_Frame], prepared: Any) -> list[torch.Tensor | BaseException]:
        stacked, errors = prepared
        outputs = iter(self.engine.run_splitting(stacked) if stacked is not None else [])
        return [error if error is not None else next(outputs) for error in errors]

    def scores(self, output: torch.Tensor) -> dict[str, float]:
        """Model output for one image, by label (an anomaly scorer's location columns aside)."""
        labels = self.model.card.labels
        return {label: float(v) for label, v in zip(labels, output[: len(labels)].tolist(), strict=True)}

    def region(self, output: torch.Tensor, frame: _Frame) -> ImageRegion | None:
        """Where an anomaly scorer's output says the anomaly is, in the frame's pixels."""
        if self.kind != "visual_anomaly" or len(output) < 1 + len(LOCATION_COLUMNS):
            return None
        peak_x, peak_y, x0, y0, x1, y1 = output[1 : 1 + len(LOCATION_COLUMNS)].tolist()
        points = [
            to_image_point(fx, fy, frame.height, frame.width, self.spec)
            for fx, fy in ((peak_x, peak_y), (x0, y0), (x1, y1))
        ]
        roi = _roi(frame.frame)
        dx, dy = (roi[0], roi[1]) if roi else (0, 0)
        (px, py), (left, top), (right, bottom) = points
        return ImageRegion(
            peak_x=int(px) + dx,
            peak_y=int(py) + dy,
            x=int(left) + dx,
            y=int(top) + dy,
            width=max(1, round(right - left)),
            height=max(1, round(bottom - top)),
        )


def _roi(frame: FrameRef) -> Roi | None:
    return None if frame.roi is None else (frame.roi.x, frame.roi.y, frame.roi.width, frame.roi.height)


class VisionStage:
    """``ProcessingStage`` for ``FrameRef`` inputs; see the module docstring."""

    name = STAGE

    def __init__(
        self,
        settings: VigilSettings,
        loader: ModelLoader | None = None,
        observer: RuntimeObserver | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer or RuntimeObserver()
        vision = settings.vision
        self._loader = loader or registry_loader(vision.registry)
        self._stop = threading.Event()
        self._fetcher = FrameFetcher(vision.fetch, self._stop)
        self._worker_state = threading.local()
        # One decoder process per fetch worker, started now: the first frames do not wait for
        # the fork server, and a machine that cannot start one fails at start-up.
        self._decoders = [IsolatedDecoder(vision.decode.timeout_s) for _ in range(vision.fetch.workers)]
        if vision.decode.isolate:
            for decoder in self._decoders:
                decoder.start()
        spare: queue.SimpleQueue[IsolatedDecoder] = queue.SimpleQueue()
        for decoder in self._decoders:
            spare.put(decoder)

        def start_worker() -> None:
            single_torch_thread()
            self._worker_state.decoder = spare.get()

        self._pool = WorkerPool(vision.fetch.workers, "vision-fetch", initializer=start_worker)
        self._done: queue.Queue[Outcome] = queue.Queue()
        self._scored: ScoredItems[_Frame] = ScoredItems()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._lanes: dict[str, VisionLane] = {}
        self._requested: dict[str, str | None] = {}
        self._lane_free = threading.Condition(self._lock)
        self._outputs = PipelineOutputs(settings, STAGE)
        self.default_lane = self.lane(vision.model, vision.model_version)
        self.reloader: ModelReloader[VisionLane] = ModelReloader(
            STAGE,
            vision.registry,
            vision.reload_interval_s,
            self._bindings,
            lambda _, model: VisionLane(vision, model, self._scored.deliver, self.observer),
            self._install,
            self._loader,
            self.observer,
        )
        self.reloader.start()

    def lane(self, name: str, version: str | None = None) -> VisionLane:
        """The lane of model ``name``, loaded (and warmed up) on first use."""
        with self._lock:
            if name not in self._lanes:
                model = self._loader(name, version)
                self._lanes[name] = VisionLane(
                    self.settings.vision, model, self._scored.deliver, self.observer
                )
                self._requested[name] = version
                warn_if_unpinned(self.settings.vision.registry, name, version, model.card.version)
            return self._lanes[name]

    # -- hot reload ------------------------------------------------------------------------

    def _bindings(self) -> list[Binding]:
        with self._lock:
            return [
                Binding(name, name, self._requested[name], lane.ref.version)
                for name, lane in self._lanes.items()
            ]

    def _install(self, binding: Binding, lane: VisionLane) -> None:
        """Serve ``lane`` from now on; the one it replaces drains on a thread of its own."""
        with self._lock:
            old = self._lanes[binding.key]
            lane.policy.continue_from(old.policy)
            self._lanes[binding.key] = lane
            if self.default_lane is old:
                self.default_lane = lane
        retire(partial(self._drain, old), STAGE)

    def _drain(self, old: VisionLane) -> None:
        with self._lane_free:
            self._lane_free.wait_for(lambda: old.users == 0)
        old.close()  # finishes the batches already queued on it

    def _acquire(self, frame: FrameRef) -> VisionLane:
        if frame.model:
            self.lane(frame.model)  # loaded on first use
        with self._lock:  # chosen and held at once: a lane being retired is never handed out
            lane = self._lanes[frame.model] if frame.model else self.default_lane
            lane.users += 1
            return lane

    def _release(self, lane: VisionLane) -> None:
        with self._lane_free:
            lane.users -= 1
            if lane.users == 0:  # only a retiring lane's drain waits, and only for none
                self._lane_free.notify_all()

    # -- ProcessingStage -------------------------------------------------------------------

    def submit(self, work: Sequence[Work]) -> None:
        """Start fetching each frame; outcomes arrive through ``collect``."""
        with self._lock:
            self._in_flight += len(work)
        for item in work:
            self._pool.submit(self._fetch_and_decode, item)

    def collect(self, timeout_s: float) -> list[Outcome]:
        """Outcomes finished since the last call (results and alerts are built here, in the caller's thread)."""
        for item, result in self._scored.drain(timeout_s):
            self._guarded_outcome(item, result)
        outcomes = []
        try:
            while True:
                outcomes.append(self._done.get_nowait())
        except queue.Empty:
            pass
        with self._lock:
            self._in_flight -= len(outcomes)
        return outcomes

    def in_flight(self) -> int:
        """Frames submitted whose outcome has not been collected."""
        with self._lock:
            return self._in_flight

    def on_assignment(self, held: set[tuple[str, int]]) -> None:
        """Frames are scored alone: no partition state to drop or restore."""

    def restoring(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Frames are scored alone: nothing to restore."""
        return {}

    def handoff(self, settled: Mapping[tuple[str, int], Settled]) -> list[Output]:
        """Frames are scored alone: no state to hand over."""
        return []

    def close(self) -> None:
        """Stop retrying fetches, finish queued batches, release the workers (never waiting on a
        stuck one beyond the fetch deadline) and their decoder processes."""
        self._stop.set()
        self.reloader.stop()
        self._pool.shutdown(deadline_s=self.settings.vision.fetch.timeout_s)
        for lane in self._lanes.values():
            lane.close()
        for decoder in self._decoders:
            decoder.close()

    # -- the work --------------------------------------------------------------------------

    def _fail(self, work: Work, reason: str, error: BaseException) -> None:
        self._done.put(Outcome(work.record, failure=Failure.from_exception(reason, STAGE, error)))

    def _fetch_and_decode(self, work: Work) -> None:
        try:
            self._fetch_and_decode_unguarded(work)
        except Exception as error:  # every frame gets an outcome, even on a bug
            log.exception("frame %s failed unexpectedly", work.record)
            self._fail(work, "processing_error", error)

    def _fetch_and_decode_unguarded(self, work: Work) -> None:
        frame = work.message
        assert isinstance(frame, FrameRef)
        try:
            lane = self._acquire(frame)
        except (FileNotFoundError, ValueError) as error:  # no such entry, or one that fails its checks
            return self._fail(work, "unknown_model", error)
        try:
            return self._decode_into(work, frame, lane)
        finally:
            self._release(lane)

    def _decode_into(self, work: Work, frame: FrameRef, lane: VisionLane) -> None:
        started = time.monotonic()
        try:
            data = self._fetcher.fetch(frame.uri, frame.sha256)
        except FetchError as error:
            if error.transient:  # only when stopping: leave it uncommitted for the next owner
                with self._lock:
                    self._in_flight -= 1
                return None
            return self._fail(work, error.reason, error)
        fetched = time.monotonic()
        self.observer.on_step("fetch", fetched - started)
        decode = self.settings.vision.decode
        try:
            header = check_header(data, decode.formats, decode.max_pixels, decode.max_pixels_per_byte)
            on_device = lane.gpu_decode and is_jpeg(data)  # nvJPEG in the batch; the rest on the CPU here
            pixels: torch.Tensor | bytes = data if on_device else self._decode(data, lane.spec, _roi(frame))
        except ImageRefused as error:
            return self._fail(work, error.reason, error)
        except CorruptImageError as error:
            return self._fail(work, "corrupt_image", error)
        except RoiOutsideImageError as error:
            return self._fail(work, "invalid_roi", error)
        if not on_device:
            self.observer.on_step("decode", time.monotonic() - fetched)
        roi = _roi(frame)
        height, width = (roi[3], roi[2]) if roi else (header.height, header.width)
        lane.batcher.put(_Frame(work, frame, pixels, hashlib.sha256(data).hexdigest(), height, width, lane))
        return None

    def _decode(self, data: bytes, spec: ImageInputSpec, roi: Roi | None) -> torch.Tensor:
        """Bytes to model input on the CPU: in this worker's own decoder process when isolated."""
        if not self.settings.vision.decode.isolate:
            return preprocess(data, spec, roi)
        decoder: IsolatedDecoder = self._worker_state.decoder
        return decoder.preprocess(data, spec, roi)

    def _guarded_outcome(self, item: _Frame, result: torch.Tensor | BaseException) -> None:
        try:
            self._outcome(item, result)
        except Exception as error:  # a result that cannot be built fails its frame alone
            log.exception("building the outcome of %s failed", item.work.record)
            self._fail(item.work, "processing_error", error)

    def _outcome(self, item: _Frame, result: torch.Tensor | BaseException) -> None:
        """Turn one frame's model output into its result, alerts or failure."""
        work, frame = item.work, item.frame
        if isinstance(result, CorruptImageError):
            return self._fail(work, "corrupt_image", result)
        if isinstance(result, RoiOutsideImageError):
            return self._fail(work, "invalid_roi", result)
        if isinstance(result, BaseException):
            return self._fail(work, "inference_failed", result)
        lane = item.lane
        record = work.record
        evidence = Evidence(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            frame_uri=frame.uri,
            frame_sha256=item.sha256,
            region=lane.region(result, item),
        )
        scored = ScoredItem(
            record,
            frame.camera_id,
            lane.ref,
            lane.scores(result),
            evidence,
            frame.captured_at,
            work.received_at,
            lane.kind,
            site=frame.site,
        )
        outputs = self._outputs.scored(scored, lane.policy, self.observer)
        self._done.put(Outcome(record, tuple(outputs)))
        return None
