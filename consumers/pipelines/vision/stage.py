"""The visual inspection stage: frame reference → fetch → decode → micro-batch → model → result and alerts.

Fetch, hash, header check and CPU decode run in worker processes, one driven by each thread
of a bounded pool (``decoder.py``), so they overlap inference and cost the serving
interpreter only a URI handed out and pixels taken back; each model
has its own lane (engine, micro-batcher, alert policy), which also turns a frame's output into
its scores and evidence. Every frame ends in exactly one outcome: a result (and alerts), or a
failure with a precise dead-letter reason. A transient fetch failure is retried a bounded
number of times within the fetch deadline, then is ``fetch_failed``; one cut short by shutdown
is abandoned uncommitted, for the next owner.

A lane bound to a registry alias is replaced when the alias moves (``ModelStage``'s hot
reload): each frame keeps the lane it was decoded for, and the old lane closes once no fetch
worker holds it and its queued batches are done; the alert state carries over to the new lane.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from consumers.pipelines.batcher import Deliver
from consumers.pipelines.lane import ModelLane
from consumers.pipelines.model_stage import ModelStage
from consumers.pipelines.outputs import PipelineOutputs, ScoredItem
from consumers.pipelines.reload import Binding, warn_if_unpinned
from consumers.pipelines.vision.decoder import IsolatedDecoder
from consumers.pipelines.vision.fetch import FetchError, FrameFetcher
from consumers.pipelines.vision.workers import WorkerPool
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Failure, Outcome, Work
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
    stack_inputs,
    to_image_point,
)
from models.vision.serving import cpu_plan
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
    """The model input, or the JPEG's bytes where the GPU decodes it in the batch."""
    sha256: str
    height: int
    width: int
    """Of the image the model saw: the region of interest, else the whole frame."""
    lane: VisionLane
    """The lane that scores it (a hot reload may have replaced the stage's since)."""
    release: Callable[[], None] | None = None
    """Gives back the worker's slot ``pixels`` views (``decoder.py``), when the outcome is built."""


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
            cpu_plan=cpu_plan(model, vision.engine),
        )
        self.gpu_decode = vision.gpu_decode and self.engine.device.type == "cuda"
        self.kind: AlertKind = "visual_anomaly" if model.card.task == "visual_anomaly" else "visual_defect"
        self.policy = AlertPolicy(self.rules)
        self.users = 0
        """Fetch workers between choosing this lane and queueing on it (under the stage's lock)."""

    def prepare(self, batch: Sequence[_Frame]) -> tuple[torch.Tensor | None, list[Exception | None]]:
        if not self.gpu_decode:  # model inputs already, laid out as the engine takes them
            inputs = stack_inputs([f.pixels for f in batch], self.engine.channels_last)  # type: ignore[misc]
            return self.engine.prepare(inputs), [None] * len(batch)
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

    def scored(self, item: _Frame, output: torch.Tensor) -> ScoredItem:
        """What one frame scored, with its evidence (where the anomaly is, for a scorer)."""
        work, frame = item.work, item.frame
        record = work.record
        evidence = Evidence(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            frame_uri=frame.uri,
            frame_sha256=item.sha256,
            region=self.region(output, item),
        )
        return ScoredItem(
            record,
            frame.camera_id,
            self.ref,
            self.scores(output),
            evidence,
            frame.captured_at,
            work.received_at,
            self.kind,
            site=frame.site,
        )


def _roi(frame: FrameRef) -> Roi | None:
    return None if frame.roi is None else (frame.roi.x, frame.roi.y, frame.roi.width, frame.roi.height)


class VisionStage(ModelStage[_Frame, VisionLane]):
    """``ProcessingStage`` for ``FrameRef`` inputs; see the module docstring."""

    def __init__(
        self,
        settings: VigilSettings,
        loader: ModelLoader | None = None,
        observer: RuntimeObserver | None = None,
    ) -> None:
        super().__init__(STAGE, observer)
        self.settings = settings
        vision = settings.vision
        self._loader = loader or registry_loader(vision.registry)
        self._stop = threading.Event()
        self._fetcher = FrameFetcher(vision.fetch, self._stop)
        self._worker_state = threading.local()
        # One decoder process per fetch worker, started now: the first frames do not wait for
        # the fork server, and a machine that cannot start one fails at start-up.
        self._decoders = [
            IsolatedDecoder(vision.decode.timeout_s, vision.fetch, vision.decode, self._stop)
            for _ in range(vision.fetch.workers)
        ]
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
        self._lanes_lock = threading.Lock()
        self._lanes: dict[str, VisionLane] = {}
        self._requested: dict[str, str | None] = {}
        self._lane_free = threading.Condition(self._lanes_lock)
        self._outputs = PipelineOutputs(settings, STAGE)
        self.default_lane = self.lane(vision.model, vision.model_version)
        self._start_reloader(
            vision.registry,
            vision.reload_interval_s,
            self._bindings,
            lambda _, model: VisionLane(vision, model, self._scored.deliver, self.observer),
            self._loader,
        )

    def lane(self, name: str, version: str | None = None) -> VisionLane:
        """The lane of model ``name``, loaded (and warmed up) on first use."""
        with self._lanes_lock:
            if name not in self._lanes:
                model = self._loader(name, version)
                self._lanes[name] = VisionLane(
                    self.settings.vision, model, self._scored.deliver, self.observer
                )
                self._requested[name] = version
                warn_if_unpinned(self.settings.vision.registry, name, version, model.card.version)
            return self._lanes[name]

    def serving_lanes(self) -> list[VisionLane]:
        """The lane of every model served so far."""
        with self._lanes_lock:
            return list(self._lanes.values())

    # -- hot reload ------------------------------------------------------------------------

    def _bindings(self) -> list[Binding]:
        with self._lanes_lock:
            return [
                Binding(name, name, self._requested[name], lane.ref.version)
                for name, lane in self._lanes.items()
            ]

    def _install(self, binding: Binding, lane: VisionLane) -> VisionLane:
        with self._lanes_lock:
            old = self._lanes[binding.key]
            lane.policy.continue_from(old.policy)
            self._lanes[binding.key] = lane
            if self.default_lane is old:
                self.default_lane = lane
        return old

    def _retire(self, old: VisionLane) -> None:
        """Close ``old`` once no fetch worker holds it; its queued batches finish first."""
        with self._lane_free:
            self._lane_free.wait_for(lambda: old.users == 0)
        old.close()

    def _acquire(self, frame: FrameRef) -> VisionLane:
        if frame.model:
            self.lane(frame.model)  # loaded on first use
        with self._lanes_lock:  # chosen and held at once: a lane being retired is never handed out
            lane = self._lanes[frame.model] if frame.model else self.default_lane
            lane.users += 1
            return lane

    def _release(self, lane: VisionLane) -> None:
        with self._lane_free:
            lane.users -= 1
            if lane.users == 0:  # only a retiring lane's drain waits, and only for none
                self._lane_free.notify_all()

    # -- ModelStage ------------------------------------------------------------------------

    def _admit(self, work: Sequence[Work]) -> None:
        """Start fetching each frame in the worker pool."""
        for item in work:
            self._pool.submit(self._fetch_and_decode, item)

    def close(self) -> None:
        """Stop retrying fetches, release the workers (never waiting on a stuck one beyond the
        fetch deadline), finish queued batches, and stop the decoder processes."""
        self._stop.set()
        if self.reloader is not None:
            self.reloader.stop()
        self._pool.shutdown(deadline_s=self.settings.vision.fetch.timeout_s)
        super().close()
        for decoder in self._decoders:
            decoder.close()

    # -- the work --------------------------------------------------------------------------

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
        if self.settings.vision.decode.isolate and not lane.gpu_decode:
            return self._decode_in_worker(work, frame, lane)
        started = time.monotonic()
        try:
            data, sha256 = self._fetcher.fetch_hashed(frame.uri, frame.sha256)
        except FetchError as error:
            return self._refuse(work, error)
        fetched = time.monotonic()
        self.observer.on_step("fetch", fetched - started)
        decode = self.settings.vision.decode
        try:
            header = check_header(data, decode.formats, decode.max_pixels, decode.max_pixels_per_byte)
            on_device = lane.gpu_decode and is_jpeg(data)  # nvJPEG in the batch; the rest on the CPU here
            pixels: torch.Tensor | bytes = (
                data if on_device else preprocess(data, lane.spec, _roi(frame), header)
            )
        except (ImageRefused, CorruptImageError, RoiOutsideImageError) as error:
            return self._refuse(work, error)
        if not on_device:
            self.observer.on_step("decode", time.monotonic() - fetched)
        roi = _roi(frame)
        height, width = (roi[3], roi[2]) if roi else (header.height, header.width)
        lane.batcher.put(_Frame(work, frame, pixels, sha256, height, width, lane))
        return None

    def _decode_in_worker(self, work: Work, frame: FrameRef, lane: VisionLane) -> None:
        """The whole frame in this worker's own process (fetch, hash, header, decode): this
        thread hands over the URI and takes back the pixels (``decoder.py``)."""
        decoder: IsolatedDecoder = self._worker_state.decoder
        roi = _roi(frame)
        try:
            done = decoder.frame(frame.uri, frame.sha256, lane.spec, roi, lane.engine.channels_last)
        except (FetchError, ImageRefused, CorruptImageError, RoiOutsideImageError) as error:
            return self._refuse(work, error)
        self.observer.on_step("fetch", done.fetch_s)
        self.observer.on_step("decode", done.decode_s)
        height, width = (roi[3], roi[2]) if roi else (done.height, done.width)
        lane.batcher.put(_Frame(work, frame, done.pixels, done.sha256, height, width, lane, done.release))
        return None

    def _refuse(self, work: Work, error: Exception) -> None:
        """Dead-letter ``work`` for a fetch, header or decode ``error`` with its reason; a fetch
        cut short by a stop leaves it uncommitted for the partition's next owner instead."""
        if isinstance(error, FetchError) and error.transient:
            return self.abandon()
        reason = getattr(error, "reason", None) or next(
            r for kind, r in _FAILURE_REASONS.items() if isinstance(error, kind)
        )
        return self._fail(work, reason, error)

    def _scored_item(self, item: _Frame, result: torch.Tensor | BaseException) -> Outcome:
        """One frame's result and alerts, or its failure; its slot is given back."""
        if item.release is not None:
            item.release()  # every frame that reached a lane comes here once, whatever its end
        record = item.work.record
        if isinstance(result, BaseException):
            reason = next(
                (r for kind, r in _FAILURE_REASONS.items() if isinstance(result, kind)), "inference_failed"
            )
            return Outcome(record, failure=Failure.from_exception(reason, STAGE, result))
        scored = item.lane.scored(item, result)
        return Outcome(record, tuple(self._outputs.scored(scored, item.lane.policy, self.observer)))


_FAILURE_REASONS: dict[type[BaseException], str] = {
    CorruptImageError: "corrupt_image",
    RoiOutsideImageError: "invalid_roi",
}
"""Errors of decoding in the batch (nvJPEG), by dead-letter reason; others failed the model."""
