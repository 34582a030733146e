"""The four device-resident views of a dataset that a run uses."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig

from src.core.errors import ConfigError, UserError
from src.core.memory import free_memory
from src.data.augment import Recipe
from src.data.loader import DeviceData, split_train_val, subset
from src.data.sources import RawData

log = logging.getLogger(__name__)


@dataclass
class DataBundle:
    """train: shuffled and augmented; train_eval, val, test: in order, no augmentation."""

    train: DeviceData
    train_eval: DeviceData
    val: DeviceData
    test: DeviceData
    input_shape: tuple[int, int, int]
    num_classes: int
    fingerprint: str | None = None  # digest of the files read (src/data/image_folder.py)
    streamed: bool = False

    def split(self, name: str) -> DeviceData:
        """An evaluation split by its metric name: train (the training set without
        augmentation), val or test."""
        return self.train_eval if name == "train" else getattr(self, name)


def check_present(dataset: DictConfig) -> None:
    """The one-line DatasetNotFoundError a dataset's read would raise for lack of its files,
    raised before a run writes anything; sources that read files declare how to tell
    (src/data/sources.py: reads_files)."""
    source = get_method(dataset.source._target_)
    missing = getattr(source, "missing_files", None)
    if missing is not None:
        error = missing(**{k: v for k, v in dataset.source.items() if k != "_target_"})
        if error is not None:
            raise error


def build_data(cfg: DictConfig, batch_size: int, eval_batch_size: int,
               device: torch.device, augment: DictConfig | None = None) -> DataBundle:
    """Read the dataset named by `cfg` (a conf/dataset/*.yaml node), split and move it to `device`.

    The validation split is carved from the training set with `cfg.split_seed`, independent of the
    run seed; the official test set is kept for the final evaluation. With `val_split: test` the
    test set is also the validation set and every training sample trains. `train_limit` and
    `eval_limit` keep only the first samples (debug runs). augment: the run's `augment`
    node (src/data/augment.py), for the training batches.
    """
    try:
        raw: RawData = instantiate(cfg.source)
    except InstantiationException as e:
        # Hydra wraps the loader's one-line error in a long one; surface the loader's own.
        if isinstance(e.__cause__, UserError):  # missing, damaged or planted files
            raise e.__cause__ from None
        raise
    n_train = len(raw.train_y)
    val_split = cfg.get("val_split", "train")
    val_from = "val"
    if val_split == "test":  # the optimizer records validate on the test split
        tx, ty, vx, vy = raw.train_x, raw.train_y, raw.test_x, raw.test_y
        val_from = "test"
    elif val_split != "train":
        raise ConfigError(f"dataset.val_split={val_split} is not a split: use train (carve "
                          f"val_size samples from the training set) or test")
    elif raw.val_x is not None and raw.val_y is not None:  # the source's own (image_folder)
        tx, ty, vx, vy = raw.train_x, raw.train_y, raw.val_x, raw.val_y
    elif not 0 < cfg.val_size < n_train:
        raise ConfigError(f"dataset.val_size={cfg.val_size} must lie in 1..{n_train - 1} "
                          f"({cfg.name} has {n_train} training samples)")
    else:
        tx, ty, vx, vy = split_train_val(raw.train_x, raw.train_y, cfg.val_size, cfg.split_seed)
    tx, ty = subset(tx, ty, cfg.train_limit)
    vx, vy = subset(vx, vy, cfg.eval_limit)
    sx, sy = subset(raw.test_x, raw.test_y, cfg.eval_limit)
    resident = residence(cfg.get("resident", True), raw, (tx, vx, sx), device)
    files: dict[str, Path | None] = dict.fromkeys(("train", "val", "test"))
    if resident:  # a copy on the device (on a CPU, in memory rather than mapped from a file)
        tx, vx, sx = (t.to(device, copy=t.device == device) if raw.files else t.to(device)
                      for t in (tx, vx, sx))
    else:
        assert raw.files is not None
        files.update(train=raw.files["train"], val=raw.files[val_from], test=raw.files["test"])
    ty, vy, sy = (t.to(device) for t in (ty, vy, sy))
    mean, std = raw.mean, raw.std
    if not cfg.normalize:  # scale to [0, 1] only: uint8 images by 255, float data unchanged
        scale = 255.0 if raw.train_x.dtype == torch.uint8 else 1.0
        mean, std = (0.0,) * len(mean), (scale,) * len(std)

    workers = int(cfg.get("stream_workers", 2))

    def view(x: torch.Tensor, y: torch.Tensor, split: str) -> DeviceData:
        return DeviceData(x, y, mean, std, eval_batch_size, shuffle=False, drop_last=False,
                          device=device, stream=files[split], stream_workers=workers)

    aug = cfg.augment
    train = DeviceData(tx, ty, mean, std, batch_size, shuffle=True, drop_last=True,
                       crop_padding=aug.crop_padding, flip=aug.flip, device=device,
                       stream=files["train"], stream_workers=workers,
                       recipe=Recipe.from_config(augment), num_classes=raw.num_classes)
    if len(train) == 0:
        raise ConfigError(f"batch_size={batch_size} is larger than the {len(ty)} training "
                          f"samples: lower batch_size (or workers)")
    return DataBundle(train=train, train_eval=view(tx, ty, "train"), val=view(vx, vy, "val"),
                      test=view(sx, sy, "test"), input_shape=raw.input_shape,
                      num_classes=raw.num_classes, fingerprint=raw.fingerprint,
                      streamed=not resident)


def residence(setting: object, raw: RawData, xs: tuple[torch.Tensor, ...],
              device: torch.device) -> bool:
    """`dataset.resident`: true (the splits live on the device), false (streamed from their
    files) or auto (resident when they take at most half the device's free memory)."""
    if setting not in (True, False, "auto"):
        raise ConfigError(f"dataset.resident={setting}: use auto, true or false")
    if setting is True or (setting == "auto" and not raw.files):
        return True
    if not raw.files:
        raise ConfigError("dataset.resident=false streams from files: only dataset=image_folder "
                          "has them; this dataset lives on the device")
    if setting is False:
        return False
    need = sum(x.numel() * x.element_size() for x in xs)
    fits = need <= 0.5 * free_memory(device)
    log.info("dataset.resident=auto: %.1f MB of images %s on %s", need / 1e6,
             "live" if fits else "stream to it: they do not fit", device)
    return fits
