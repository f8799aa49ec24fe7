"""A run's id: a short hash of its resolved config, so that the same config always lands in the
same folder and a rerun skips what is done. Keys added after ids were first written enter the
hash only when they change what a run computes, so older configs keep their ids."""

from __future__ import annotations

import hashlib
import json

from bnexp.config.schema import RunConfig

HASHED_WHEN_SET = (
    ("train", "lr_scaling"),
    ("train", "steps"),
    ("measure", "eval_subset"),
    ("train", "lr_schedule"),
    ("data", "augment"),
    ("data", "val_fraction"),
    ("model", "depth"),
    ("model", "factory"),
    ("model", "factory_args"),
)


def run_id(cfg: RunConfig) -> str:
    """Short hash of the resolved run config; `name` (the output folder) is excluded."""
    # how a run is executed (vectorize_seeds, checkpoint_every) does not change what it
    # computes, nor does how the report reads it (measure.fit): not hashed, so changing them
    # keeps a sweep's run ids and resumes it
    exclude = {"vectorize_seeds", "checkpoint_every"}
    dump = cfg.model_dump(mode="json", exclude={"name": True, "train": exclude, "measure": {"fit"}})
    # keys added after run ids were first written enter the hash only when set, so the runs of
    # configs written before them keep their ids (and their results) across the upgrade
    for section, key in HASHED_WHEN_SET:
        if dump[section].get(key) is None:
            dump[section].pop(key, None)
    # weight_decay_norm changes the numbers only with weight decay and BN layers; there it is
    # hashed, false too: such a run decayed BN's gamma/beta before the key existed, and its old
    # results must not pass for the new default's
    if cfg.train.weight_decay == 0 or cfg.model.norm == "none":
        dump["train"].pop("weight_decay_norm")
    augment = cfg.data.augment
    if augment is not None and augment.crop_padding == 0 and not augment.hflip:
        dump["data"].pop("augment", None)  # augments nothing: the same run as null
    # a schedule that keeps lr_used at every step is the same run as none
    schedule = cfg.train.lr_schedule
    if schedule is not None and schedule.rule == "constant" and schedule.warmup_epochs == 0:
        dump["train"].pop("lr_schedule", None)
    # an lr_scaling that leaves the lr as written (rule none, or the base batch size itself) is
    # the same run as none: rule none and linear at the base batch share one run, not two
    scaling = cfg.train.lr_scaling
    if scaling is not None and (
        scaling.rule == "none" or cfg.train.batch_size == scaling.base_batch_size
    ):
        dump["train"].pop("lr_scaling", None)
    payload = json.dumps(dump, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]
