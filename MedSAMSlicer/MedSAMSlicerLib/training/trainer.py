"""Fine-tuning MedSAM or LiteMedSAM on a site's own labelled volumes, as the published training did.

One sample is one label on one slice, prompted by its ground-truth box loosened by 0-20 px. The
loss is Dice + BCE on logits upsampled to the input size; AdamW (lr 1e-4, weight decay 0.01)
updates the mask decoder, and the image encoder too when asked; the prompt encoder stays frozen.
With the encoder frozen its embeddings never change, so they are computed once through the
engine's cache (kept on disk in the run folder) and training runs on them: a decoder fine-tune
is then practical on a CPU. Each epoch ends with a validation DSC measured through the inference
pipeline itself. The run folder holds a resumable checkpoint (model, optimizer, epoch,
preprocessing), the best model so far as a plain state dict (``model.pth``, which ``segment
--checkpoint`` and the Slicer module load), a CSV log and a loss/DSC plot.

Launched by ``torchrun``, every process trains on its own share of the slices and
DistributedDataParallel averages the gradients; only the first process writes files.
"""

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, SettingsError
from ..evaluation.metrics import dice
from ..files.image_io import paired_images
from ..files.output_files import atomic_output
from ..models.checkpoint import load_strict
from ..models.model_registry import load_model
from ..models.slice_model import SliceModel
from ..prompts.prompt_simulation import bounding_box, loosen_box
from ..volume.embedding_cache import EmbeddingCache
from ..volume.embedding_worker import EmbeddingWorker
from .distributed import Distributed
from .segmentation_loss import dice_bce_loss
from .training_config import TrainingConfig
from .training_data import TrainingCase, TrainingSample, load_case, sample_mask, samples_of, split_by_case
from .training_log import plot_history, write_history

CHECKPOINT_FILE = "checkpoint.pth"
MODEL_FILE = "model.pth"
LOG_FILE = "training_log.csv"
PLOT_FILE = "training_curves.png"
EMBEDDINGS_DIR = "embeddings"
#: settings that may differ when a run is resumed; every other one must match the checkpoint's
RESUMABLE_CHANGES = ("epochs", "device", "amp")

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Log = Callable[[str], None]


@dataclass
class TrainingResult:
    run_dir: Path
    history: List[Dict[str, float]] = field(default_factory=list)  # one row per epoch; epoch 0 is the start
    best_epoch: int = 0
    best_dsc: float = float("nan")

    @property
    def model_file(self) -> Path:
        return self.run_dir / MODEL_FILE


class PromptedSegmenter(nn.Module):
    """The trained network as one module (what DistributedDataParallel wraps): encoder when trained, box decoding.

    ``forward`` takes prepared images ``(B, 3, S, S)`` when the encoder is trained, else embeddings
    ``(B, 256, 64, 64)``, and boxes ``(B, 4)`` in model space; it returns logits ``(B, 1, 256, 256)``.
    """

    def __init__(self, model: SliceModel, train_encoder: bool):
        super().__init__()
        self.image_encoder = model.image_encoder
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.slice_model = model  # not a Module: its parts are registered above
        self.train_encoder = train_encoder
        self.prompt_encoder.requires_grad_(False)
        self.image_encoder.requires_grad_(train_encoder)
        self.mask_decoder.requires_grad_(True)
        # the loss never sees the decoder's mask-quality (IoU) head: it is not trained (and DDP needs every
        # trained parameter to receive a gradient)
        self.mask_decoder.iou_prediction_head.requires_grad_(False)

    def train(self, mode: bool = True) -> "PromptedSegmenter":
        """Only the trained parts change mode; frozen ones stay in evaluation mode."""
        self.training = mode
        self.mask_decoder.train(mode)
        self.image_encoder.train(mode and self.train_encoder)
        self.prompt_encoder.eval()
        return self

    def forward(self, inputs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        embeddings = self.image_encoder(inputs) if self.train_encoder else inputs
        return torch.cat([self.slice_model.logits(embedding, boxes=box[None])[0]
                          for embedding, box in zip(embeddings, boxes)])


class Trainer:
    """One fine-tuning run over prepared cases; ``fit`` runs the epochs, writing the run folder as it goes."""

    def __init__(self, config: TrainingConfig, cases: Sequence[TrainingCase], training_names: Sequence[str],
                 validation_names: Sequence[str], run_dir: Path, distributed: Distributed = Distributed(),
                 progress: Optional[Progress] = None, log: Optional[Log] = None):
        self.config, self.cases, self.run_dir, self.distributed = config, list(cases), Path(run_dir), distributed
        self.progress = progress or (lambda stage, done, total: None)
        self.log = log if (log is not None and distributed.main) else (lambda message: None)
        everything = samples_of(self.cases)
        training_names, validation_names = set(training_names), set(validation_names)
        self.training_samples = [s for s in everything if self.cases[s.case].name in training_names]
        self.validation_samples = [s for s in everything if self.cases[s.case].name in validation_names]
        for samples, what in ((self.training_samples, "training"), (self.validation_samples, "validation")):
            if not samples:
                raise SettingsError(f"the {what} cases hold no labelled slice after ground-truth cleaning "
                                    f"(objects under {config.min_object_voxels} voxels / "
                                    f"{config.min_object_pixels} pixels are dropped)")
        # a trained encoder runs in PyTorch; a frozen one may run its embeddings under a faster runtime
        self.model = load_model(config.model, config.checkpoint, self.distributed.device(self.config.device),
                                "torch" if config.train_encoder else "auto")
        if self.model.runtime_networks is not None:
            self.model.runtime_networks.box_decoder = None  # the decoder is trained here: its exported copy goes stale
        self.network = PromptedSegmenter(self.model, config.train_encoder)
        trained = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, betas=(0.9, 0.999),
                                           weight_decay=config.weight_decay)
        self.parallel = self.network
        if distributed.world > 1:
            device_ids = [self.model.device.index] if self.model.device.type == "cuda" else None
            self.parallel = nn.parallel.DistributedDataParallel(self.network, device_ids=device_ids)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if config.amp and self.model.device.type == "cuda" and torch.cuda.is_bf16_supported()
                         else nullcontext())
        self.cache = EmbeddingCache(max_bytes=4 << 30, directory=self.run_dir / EMBEDDINGS_DIR)
        self.result = TrainingResult(self.run_dir)
        self.start_epoch = 1

    # -- data ---------------------------------------------------------------------------------

    def _mask(self, sample: TrainingSample) -> np.ndarray:
        return sample_mask(self.cases[sample.case], sample)

    def _box(self, mask: np.ndarray, rng: Optional[np.random.Generator]) -> np.ndarray:
        box = bounding_box(mask)
        return box if rng is None else loosen_box(box, self.config.jitter, mask.shape, rng)

    def _key(self, sample: TrainingSample):
        return self.cases[sample.case].source.key(sample.index, self.model.cache_id)

    def _inputs(self, samples: Sequence[TrainingSample]) -> torch.Tensor:
        """What the network's forward takes: prepared images (encoder trained) or cached embeddings."""
        if self.config.train_encoder:
            images = [self.model.prepare(self.cases[s.case].source.slice(s.index)) for s in samples]
            return torch.from_numpy(np.stack(images).astype(np.float32)).to(self.model.torch_device)
        embeddings = [self.cache.get(self._key(s)) for s in samples]
        missing = [s for s, e in zip(samples, embeddings) if e is None]
        if missing:
            raise RuntimeError(f"{len(missing)} embedding(s) are missing from the cache (first: {missing[0]})")
        return torch.from_numpy(np.stack(embeddings)).to(self.model.torch_device)

    def _boxes(self, masks: Sequence[np.ndarray], rng: Optional[np.random.Generator]) -> torch.Tensor:
        boxes = [self.model.model_boxes(self._box(mask, rng)[None], mask.shape)[0] for mask in masks]
        return torch.as_tensor(np.stack(boxes), dtype=torch.float, device=self.model.torch_device)

    def _targets(self, masks: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.model.prepare_mask(m) for m in masks])[:, None]).to(
            self.model.torch_device)

    def _input_size_logits(self, logits: torch.Tensor) -> torch.Tensor:
        size = self.model.input_size
        return F.interpolate(logits.float(), size=(size, size), mode="bilinear", align_corners=False)

    def precompute_embeddings(self) -> None:
        """Encode (once, kept on disk) every slice this rank trains or validates on, when the encoder is frozen."""
        if self.config.train_encoder:
            return
        wanted: Dict[int, set] = {}
        for sample in (self.distributed.shard(self.training_samples)
                       + self.distributed.shard(self.validation_samples, False)):
            wanted.setdefault(sample.case, set()).add(sample.index)
        total = sum(len(indices) for indices in wanted.values())
        done = 0
        with EmbeddingWorker(self.model, self.cache) as worker:
            for case, indices in wanted.items():
                for future in worker.request(self.cases[case].source, sorted(indices)).values():
                    future.result()
                    done += 1
                    self.progress("embedding slices", done, total)

    # -- epochs -------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> float:
        """One pass over this rank's training samples; the mean loss over all ranks."""
        rng = np.random.default_rng([self.config.seed, epoch])
        torch.manual_seed(self.config.seed * 100_003 + epoch)
        samples = self.distributed.shard(self.training_samples)
        order = [samples[n] for n in rng.permutation(len(samples))]
        size, accumulate = self.config.batch_size, self.config.accumulate
        batches = [order[n:n + size] for n in range(0, len(order), size)]
        # an optimizer step per group of ``accumulate`` batches, its gradient the mean over the group's samples
        # (as one batch of that size would give, the last, shorter group included)
        groups = [batches[n:n + accumulate] for n in range(0, len(batches), accumulate)]
        self.parallel.train()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, number = 0.0, 0
        for group in groups:
            group_size = sum(len(batch) for batch in group)
            for batch in group:
                masks = [self._mask(s) for s in batch]
                with self.autocast:
                    logits = self.parallel(self._inputs(batch), self._boxes(masks, rng))
                loss = dice_bce_loss(self._input_size_logits(logits), self._targets(masks))
                (loss * len(batch) / group_size).backward()
                total_loss += float(loss.detach()) * len(batch)
                number += 1
                self.progress(f"epoch {epoch}/{self.config.epochs}", number, len(batches))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        loss_sum, count = self.distributed.total(total_loss, len(samples))
        return loss_sum / count

    @torch.no_grad()
    def validate(self) -> Tuple[float, float]:
        """``(loss, DSC)`` means over the validation slices, the masks made by the inference pipeline itself."""
        self.network.eval()
        samples = self.distributed.shard(self.validation_samples, pad=False)
        loss_sum = dsc_sum = 0.0
        for number, sample in enumerate(samples, start=1):
            mask = self._mask(sample)
            with self.autocast:
                logits = self.network(self._inputs([sample]), self._boxes([mask], None))
            loss_sum += float(dice_bce_loss(self._input_size_logits(logits), self._targets([mask])))
            dsc_sum += dice(mask, self.model.postprocess(logits.float().cpu().numpy(), mask.shape)[0, 0])
            self.progress("validating", number, len(samples))
        loss_sum, dsc_sum, count = self.distributed.total(loss_sum, dsc_sum, len(samples))
        return loss_sum / count, dsc_sum / count

    def fit(self) -> TrainingResult:
        self.precompute_embeddings()
        if self.start_epoch == 1:
            started = time.perf_counter()
            loss, dsc = self.validate()
            self._record(0, float("nan"), loss, dsc, time.perf_counter() - started)
        for epoch in range(self.start_epoch, self.config.epochs + 1):
            started = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            loss, dsc = self.validate()
            self._record(epoch, train_loss, loss, dsc, time.perf_counter() - started)
        return self.result

    # -- the run folder -------------------------------------------------------------------------

    def _record(self, epoch: int, train_loss: float, val_loss: float, val_dsc: float, seconds: float) -> None:
        result = self.result
        result.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dsc": val_dsc,
                               "seconds": seconds})
        improved = not val_dsc <= result.best_dsc  # the first epoch always counts (best is NaN)
        if improved:
            result.best_epoch, result.best_dsc = epoch, val_dsc
        self.log(f"epoch {epoch}: training loss {train_loss:.4f}, validation loss {val_loss:.4f}, "
                 f"validation DSC {val_dsc:.4f}{' (best)' if improved else ''}, {seconds:.1f} s")
        if not self.distributed.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if improved:
            self._save(self.run_dir / MODEL_FILE, self.model.state_dict())
        self._save(self.run_dir / CHECKPOINT_FILE, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": epoch,
            "preprocessing": {"model": self.config.model, "window": self.config.window, "axis": self.config.axis,
                              "min_object_voxels": self.config.min_object_voxels,
                              "min_object_pixels": self.config.min_object_pixels},
            "config": self.config.as_record(), "history": result.history,
            "best_epoch": result.best_epoch, "best_dsc": result.best_dsc,
        })
        write_history(self.run_dir / LOG_FILE, result.history)
        plot_history(self.run_dir / PLOT_FILE, result.history)

    @staticmethod
    def _save(path: Path, content) -> None:
        with atomic_output(path) as temporary:
            torch.save(content, temporary)

    def resume(self) -> None:
        """Continue from the run folder's checkpoint: weights, optimizer, history; the settings must match."""
        path = self.run_dir / CHECKPOINT_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(f"cannot resume: {path} is not a readable training checkpoint "
                                  f"({error.__class__.__name__})") from None
        if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "config", "history"} <= set(state):
            raise CheckpointError(f"cannot resume: {path} is not a training checkpoint of this tool")
        ours, theirs = self.config.as_record(), state["config"]
        changed = sorted(k for k in ours if k not in RESUMABLE_CHANGES and theirs.get(k) != ours[k])
        if changed:
            raise SettingsError(f"cannot resume {self.run_dir}: its run used other settings for "
                                + ", ".join(f"{k} ({theirs.get(k)!r}, now {ours[k]!r})" for k in changed))
        load_strict(nn.ModuleDict(self.model.parts), state["model"], path, self.config.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.result.history = list(state["history"])
        self.result.best_epoch, self.result.best_dsc = int(state["best_epoch"]), float(state["best_dsc"])
        self.start_epoch = int(state["epoch"]) + 1
        self.log(f"resuming {self.run_dir} after epoch {state['epoch']} (best validation DSC "
                 f"{self.result.best_dsc:.4f} at epoch {self.result.best_epoch})")


def check_run_folder(run_dir, resume: bool) -> Path:
    """A new run needs a folder without a run in it; resuming needs one with its checkpoint."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT_FILE).exists() and not resume:
        raise SettingsError(f"{run_dir} already holds a training run; pass --resume to continue it, "
                            "or choose another folder")
    if resume and not (run_dir / CHECKPOINT_FILE).exists():
        raise SettingsError(f"cannot resume: {run_dir} holds no {CHECKPOINT_FILE}")
    return run_dir


def train(config: TrainingConfig, images, labels, run_dir, resume: bool = False,
          progress: Optional[Progress] = None, log: Optional[Log] = None) -> TrainingResult:
    """Fine-tune on the (image, label) pairs of two folders; the run folder is written as training goes.

    Under ``torchrun`` each process calls this; it joins the process group itself.
    """
    config.check()
    run_dir = check_run_folder(run_dir, resume)
    pairs = paired_images(images, labels)
    training, validation = split_by_case([image.name for image, _ in pairs], config.validation_fraction,
                                         config.seed, config.validation_cases)
    cases = []
    for number, (image, label) in enumerate(pairs, start=1):
        cases.append(load_case(image, label, config.window, config.axis, config.min_object_voxels,
                               config.min_object_pixels))
        if progress is not None:
            progress("reading cases", number, len(pairs))
    distributed = Distributed.from_environment()
    if distributed.world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        trainer = Trainer(config, cases, training, validation, run_dir, distributed, progress, log)
        trainer.log(f"{len(training)} training case(s), {len(trainer.training_samples)} slices; {len(validation)} "
                    f"validation case(s), {len(trainer.validation_samples)} slices; {config.model}, "
                    f"training the {config.train}, on {trainer.model.device} x {distributed.world} process(es)")
        if resume:
            trainer.resume()
        return trainer.fit()
    finally:
        if distributed.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
