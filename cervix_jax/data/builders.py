"""TensorFlow-free tfds builders: `synthetic_cervix` and `cervix_folder` (the user's own images).

Both write `array_record` files of `tfds.features.Tensor` features only (zlib-encoded images and
masks), read back with `builder.as_data_source("train")`: no TensorFlow anywhere. One split,
`train`, holds every example; `cervix_jax.data.split` carves train/val/test by group.

    prepare(config.data)          -> builder (built if needed, with a progress bar)
    load_source(config.data)      -> (source, info)
    python -m cervix_jax.data.builders --name cervix_folder --manual_dir ~/colpo --data_dir ~/tfds
"""
from __future__ import annotations

if __name__ == "__main__":  # run the registered module's main, not a second copy of the builders
    import sys
    from cervix_jax.data.builders import main
    main(sys.argv[1:])
    sys.exit(0)

import argparse
import dataclasses
import functools
import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from cervix_jax.data import images as images_lib
from cervix_jax.data import synthetic
from cervix_jax.train.errors import RunRefused


class StaleBuildError(RunRefused, ValueError):
    """A cervix_folder build whose inputs changed; `launch.py prepare --rebuild` (or the builders CLI's
    `--rebuild`) deletes and rebuilds it. launch.py prints the message and exits 2, no traceback."""

REPORT_NAME = "build_report.json"
_T = tfds.features.Tensor
_ZLIB = tfds.features.Encoding.ZLIB


def _features(hw: tuple, extra: Optional[dict] = None) -> tfds.features.FeaturesDict:
    """The example schema of docs/internals.md; hw = (H, W) or (None, None); `extra`: more features."""
    scalar = lambda: _T(shape=(), dtype=np.int64)
    mask = lambda: _T(shape=tuple(hw), dtype=np.uint8, encoding=_ZLIB)
    return tfds.features.FeaturesDict({
        "image": _T(shape=(*hw, 3), dtype=np.uint8, encoding=_ZLIB),
        "label": scalar(), "treatability": scalar(), "dysplasia": scalar(),
        **{k: mask() for k in synthetic.MASK_KEYS},
        "has_masks": scalar(),
        "cervix_center": _T(shape=(2,), dtype=np.float32),
        "group": scalar(), "id": scalar(),
        **(extra or {}),
    })


def _synthetic_extra(hw: tuple) -> dict:
    """The keys only synthetic examples carry (docs/internals.md "Examples")."""
    scalar = lambda: _T(shape=(), dtype=np.int64)
    return {"reason": scalar(), "cin_grade": scalar(), "visit": scalar(),
            "cervix_box": _T(shape=(4,), dtype=np.float32),
            **{k: _T(shape=tuple(hw), dtype=np.uint8, encoding=_ZLIB) for k in synthetic.EXTRA_MASK_KEYS}}


class _ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """array_record by default: the tfds default (tfrecord) would need TensorFlow. Examples are
    stored in id order (DatasetInfo disable_shuffling), so source[i]["id"] == i."""

    def __init__(self, *, file_format=None, **kwargs):
        super().__init__(file_format=file_format or tfds.core.FileFormat.ARRAY_RECORD, **kwargs)


def _workers(num_examples: int, pixels: int) -> int:
    """Worker processes for a build: 1 for small builds, else up to the cores (max 8)."""
    if num_examples * pixels < 50 * 1200 * 800:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def parallel_map(fn, args, workers: int, chunksize: int = 4):
    """fn over args, results in order; in `workers` processes when workers > 1 (forked, or
    spawned once JAX is imported: forking a process running JAX threads can deadlock)."""
    if workers <= 1:
        yield from map(fn, args)
        return
    method = "spawn" if "jax" in sys.modules else "fork"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap(fn, args, chunksize=chunksize)


# ----------------------------------------------------------------------------------------------
# synthetic_cervix

@dataclasses.dataclass(eq=False)
class SyntheticCervixConfig(tfds.core.BuilderConfig):
    synthetic: synthetic.SyntheticConfig = synthetic.SyntheticConfig()


class SyntheticCervix(_ArrayRecordBuilder):
    """Procedural cervigram-like images with cervix/os/TZ/lesion/polyp masks, paper B's Table 3 referral
    reason, CIN grade, visit and cervix box per image (cervix_jax.data.synthetic)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "2.0.0": "Generator v2: treatability from Table 3 reasons as local geometry (1, 2, 3, 7, 9, 10); "
                 "dysplasia = CIN grade >= 2 shown by the lesion's punctation; nuisances drawn independently "
                 "of both labels; new keys reason, cin_grade, visit, cervix_box, polyp_mask; placement "
                 "by config (paper_a centred, paper_b anywhere, evidence off-centre).",
    }
    BUILDER_CONFIGS = [
        SyntheticCervixConfig(
            name="tiny", description="48 images of 128x192 (HxW), 16 not treatable; tests and demo.",
            synthetic=synthetic.SyntheticConfig(height=128, width=192, num_images=48, num_positive=16,
                                                images_per_woman=3, label="treatability", seed=0)),
        SyntheticCervixConfig(
            name="demo", description="192 images of 128x192 (HxW), 64 not treatable; the README's demo.",
            synthetic=synthetic.SyntheticConfig(height=128, width=192, num_images=192, num_positive=64,
                                                images_per_woman=3, label="treatability", seed=3)),
        SyntheticCervixConfig(
            name="paper_b", description="Paper B's size: 1,033 images of 800x1200 (HxW), 729 treatable / "
                                        "304 not treatable; label = treatability; cervix anywhere.",
            synthetic=synthetic.SyntheticConfig(height=800, width=1200, num_images=1033, num_positive=304,
                                                images_per_woman=3, label="treatability", seed=1)),
        SyntheticCervixConfig(
            name="paper_a", description="Paper A's size: 978 images of 1176x1176, 391 CIN2+ (40%, "
                                        "an assumption: the paper gives no ratio); label = dysplasia; "
                                        "cervix centred.",
            synthetic=synthetic.SyntheticConfig(height=1176, width=1176, num_images=978, num_positive=391,
                                                images_per_woman=3, label="dysplasia", seed=2,
                                                placement="centred")),
        SyntheticCervixConfig(
            name="evidence", description="Paper A's regulator evidence (docs/results/paper_a.md): 480 images "
                                         "of 96x144 (HxW), 240 CIN2+; lesion semi-axes 0.15-0.25 of the "
                                         "cervix's; label = dysplasia; cervix off-centre, speculum bars on.",
            synthetic=synthetic.SyntheticConfig(height=96, width=144, num_images=480, num_positive=240,
                                                images_per_woman=3, label="dysplasia", seed=5,
                                                lesion_size=(0.15, 0.25), placement="off_centre")),
        SyntheticCervixConfig(
            name="patch_demo", description="Paper A's long demo (configs/demo.py:patch_long): 1,200 images "
                                           "of 96x144 (HxW), 600 CIN2+; lesion semi-axes 0.2-0.3 of the "
                                           "cervix's (the generator's largest); label = dysplasia; cervix "
                                           "off-centre, speculum bars on.",
            synthetic=synthetic.SyntheticConfig(height=96, width=144, num_images=1200, num_positive=600,
                                                images_per_woman=3, label="dysplasia", seed=11,
                                                lesion_size=(0.2, 0.3), placement="off_centre")),
    ]
    DEFAULT_CONFIG_NAME = "tiny"

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config.synthetic
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__ + f"\nlabel = {cfg.label}; " + self.builder_config.description,
            features=_features((cfg.height, cfg.width), _synthetic_extra((cfg.height, cfg.width))),
            homepage="https://example.invalid/cervix-jax",
            disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        cfg = self.builder_config.synthetic
        fn = functools.partial(synthetic.generate_example, cfg)
        workers = _workers(cfg.num_images, cfg.height * cfg.width)
        for ex in parallel_map(fn, range(cfg.num_images), workers, chunksize=cfg.images_per_woman):
            yield int(ex["id"]), ex


# ----------------------------------------------------------------------------------------------
# cervix_folder

LABEL_MAPS = {
    # The default: the ImageFolder convention (torchvision, Keras, tfds): sorted class-folder names (or
    # manifest labels) -> 0, 1; treatable/not_treatable (paper B) and normal/abnormal (paper A) are
    # recognised and also fill treatability / dysplasia (cervix_jax.data.images.imagefolder_mapping).
    "imagefolder": (None, "label"),
    "identity": ({"0": 0, "1": 1}, "label"),
    # A PROXY for paper B's label: TZ type 1 -> ablation-eligible (treatable); types 2/3 -> not
    # (IARC: "Ablative treatment is not indicated in a type 2 or type 3 TZ").
    "mobileodt_treatability": ({"Type_1": 0, "Type_2": 1, "Type_3": 1}, "treatability"),
    # A visibility PROXY: type 3 (TZ not fully visible) -> 1, types 1/2 -> 0.
    "mobileodt_type3": ({"Type_1": 0, "Type_2": 0, "Type_3": 1}, "treatability"),
}
LABEL_MAP_NAME = "label_map.json"


@dataclasses.dataclass(eq=False)
class CervixFolderConfig(tfds.core.BuilderConfig):
    """label_map: class / manifest label name -> 0/1, or None for the ImageFolder convention.
    label_kind: which key the label also fills ("treatability" | "dysplasia"; "label" fills neither,
    both stay -1 = unknown, unless the ImageFolder rule recognises the class names)."""
    label_map: Optional[dict] = None
    label_kind: str = "label"
    max_side: int = 1200
    min_side: int = 32


def folder_config(name: str, label_map: Optional[dict], label_kind: str = "label", max_side: int = 1200,
                  min_side: int = 32) -> CervixFolderConfig:
    """A custom cervix_folder config (its build lives under data_dir/cervix_folder/<name>/)."""
    if label_kind not in ("label", "treatability", "dysplasia"):
        raise ValueError(f"cervix_folder: label_kind must be label|treatability|dysplasia, "
                         f"found {label_kind!r}")
    bad = {k: v for k, v in (label_map or {}).items() if v not in (0, 1)}
    if bad:
        raise ValueError(f"cervix_folder: label_map values must be 0 or 1, found {bad}")
    described = "ImageFolder convention" if label_map is None else f"label_map={label_map}"
    return CervixFolderConfig(name=name, description=described,
                              label_map=None if label_map is None else dict(label_map),
                              label_kind=label_kind, max_side=max_side, min_side=min_side)


class CervixFolder(_ArrayRecordBuilder):
    """The user's own cervix images: class subfolders or a CSV manifest (path,label,group)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [folder_config(n, m, k) for n, (m, k) in LABEL_MAPS.items()]
    DEFAULT_CONFIG_NAME = "imagefolder"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Pass your folder as the manual_dir (tfds.download.DownloadConfig(manual_dir=FOLDER), or
    `python -m cervix_jax.data.builders --name cervix_folder/<config> --manual_dir FOLDER`):
      * class subfolders: FOLDER/<class>/*.jpg|png|...; e.g. FOLDER/treatable|not_treatable, or
        Intel-MobileODT FOLDER/Type_1|Type_2|Type_3 (each file is its own group: without patient ids
        no split by woman is possible), or
      * a CSV manifest FOLDER/manifest.csv (or, through cervix_jax's prepare / load_source / launch.py,
        FOLDER = the CSV file) with header path,label[,group]; paths relative to the CSV.
    Labels are mapped to 0/1 by the ImageFolder convention (default config imagefolder: sorted class
    names -> 0, 1; treatable/not_treatable as paper B's classes) or by the config's label_map (configs:
    identity, mobileodt_treatability, mobileodt_type3; the MobileODT ones are PROXIES, not paper B's
    expert treatability label). The mapping is printed and saved as label_map.json, and a build report
    (skipped files and why, conversions, input hashes) as build_report.json, next to the dataset.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__ + "\n" + (self.builder_config.description or ""),
            features=_features((None, None)), homepage="https://example.invalid/cervix-jax",
            disable_shuffling=True)

    def _split_generators(self, dl_manager):
        # prepare() passes a CSV manual_dir here (tfds' DownloadManager only takes folders).
        source = getattr(self, "manual_source", None) or Path(dl_manager.manual_dir)
        return {"train": self._generate_examples(Path(source))}

    def _generate_examples(self, manual_dir: Path):
        cfg = self.builder_config
        found = images_lib.discover(manual_dir, cfg.label_map)
        label_kind = cfg.label_kind if cfg.label_kind != "label" else (found.label_kind or "label")
        mapping = ", ".join(f"{images_lib.printable(k)!r} -> {v}" for k, v in sorted(found.label_map.items()))
        print(f"cervix_folder: label mapping ({found.label_rule}): {mapping}; label also fills: "
              f"{label_kind if label_kind != 'label' else 'neither treatability nor dysplasia'}", flush=True)
        problems = found.problems
        read = functools.partial(images_lib.read_image, max_side=cfg.max_side, min_side=cfg.min_side)
        groups: dict[str, int] = {}
        converted, counts = [], {0: 0, 1: 0}
        n = 0
        items = found.items
        workers = 1 if len(items) < 200 else max(1, min(8, os.cpu_count() or 1))
        for item, res in zip(items, parallel_map(read, [it.path for it in items], workers)):
            if res.image is None:
                problems.append({"path": item.path, "reason": res.error})
                continue
            if res.notes:
                converted.append({"path": item.path, "notes": res.notes})
            h, w = res.image.shape[:2]
            known = np.int64(item.label)
            unknown = np.int64(-1)
            ex = {
                "image": res.image,
                "label": known,
                "treatability": known if label_kind == "treatability" else unknown,
                "dysplasia": known if label_kind == "dysplasia" else unknown,
                **{k: np.zeros((h, w), np.uint8) for k in synthetic.MASK_KEYS},
                "has_masks": np.int64(0),
                "cervix_center": np.full((2,), np.nan, np.float32),
                "group": np.int64(groups.setdefault(item.group, len(groups))),
                "id": np.int64(n),
            }
            counts[item.label] += 1
            n += 1
            yield n - 1, ex
        if n == 0:
            raise ValueError(_nothing_written(found.source, problems))
        labels = {"label_map": found.label_map, "rule": found.label_rule, "label_kind": label_kind,
                  "classes": found.classes}
        report = {
            "manual_dir": str(Path(manual_dir).expanduser().resolve()), "source": found.source,
            "layout": found.layout, "config": cfg.name, **labels, "max_side": cfg.max_side,
            "min_side": cfg.min_side, "manifest_encoding": found.manifest_encoding,
            "inputs": _build_inputs(found, cfg),
            "counts": {"written": n, "skipped": len(problems), "converted": len(converted),
                       "groups": len(groups), "label_0": counts[0], "label_1": counts[1]},
            "skipped": problems, "converted": converted,
        }
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.data_dir) / LABEL_MAP_NAME).write_text(json.dumps(labels, indent=1))
        _write_report(Path(self.data_dir) / REPORT_NAME, report)


def _build_inputs(found: images_lib.Discovery, cfg: CervixFolderConfig) -> dict:
    """What a build depends on; prepare() refuses a build whose inputs differ from the folder's now."""
    return {**found.inputs, "label_map": cfg.label_map, "max_side": cfg.max_side, "min_side": cfg.min_side}


def _nothing_written(source: str, problems: list[dict]) -> str:
    shown = "\n".join(f"  {images_lib.printable(p['path'])}: {images_lib.printable(p['reason'])}"
                      for p in problems[:10])
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    return (f"cervix_folder: no image of {images_lib.printable(source)} could be read ({len(problems)} files "
            f"skipped, nothing built):\n{shown}{more}")


def _write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    c = report["counts"]
    say = images_lib.printable
    print(f"cervix_folder: wrote {c['written']} images ({c['label_0']} label 0, {c['label_1']} label 1, "
          f"{c['groups']} groups); converted {c['converted']}; skipped {c['skipped']} "
          f"(reasons in {REPORT_NAME} next to the dataset).")
    for p in report["skipped"][:10]:
        print(f"  skipped {say(p['path'])}: {say(p['reason'])}")
    if len(report["skipped"]) > 10:
        print(f"  ... and {len(report['skipped']) - 10} more in {REPORT_NAME}")


def _stale_reasons(report: dict, inputs: dict) -> list[str]:
    """Why a build (its report) no longer matches the folder's inputs now; [] if it does."""
    built = report.get("inputs")
    if built is None:
        return ["it was built by an older cervix-jax that did not record its inputs"]
    reasons = []
    if built.get("manifest_sha256") != inputs.get("manifest_sha256"):
        reasons.append("the manifest's content changed")
    if built.get("files_sha256") != inputs.get("files_sha256"):
        reasons.append(f"the files changed (added, removed, resized or modified: {built.get('num_files')} "
                       f"then, {inputs.get('num_files')} now)")
    for key in ("label_map", "max_side", "min_side"):
        if built.get(key) != inputs.get(key):
            reasons.append(f"{key} changed ({built.get(key)} then, {inputs.get(key)} now)")
    return reasons


# ----------------------------------------------------------------------------------------------
# Entry points.

def _get(data_config, key, default=None):
    try:
        return data_config[key]
    except (KeyError, TypeError, AttributeError):
        return getattr(data_config, key, default)


def builder_for(data_config, label_map: Optional[dict] = None) -> tfds.core.DatasetBuilder:
    """The (unbuilt) builder named by data_config.name ("synthetic_cervix/tiny",
    "cervix_folder/mobileodt_treatability", ...) under data_config.data_dir. `label_map`
    (cervix_folder only) makes a custom config named "custom"."""
    name = _get(data_config, "name")
    data_dir = os.path.expanduser(_get(data_config, "data_dir"))
    if label_map is not None:
        if name.split("/")[0] != "cervix_folder":
            raise ValueError(f"data.name: label_map is only for cervix_folder, found name {name!r}")
        kind = _get(data_config, "label", "label")
        kind = kind if kind in ("treatability", "dysplasia") else "label"
        return CervixFolder(config=folder_config("custom", label_map, kind), data_dir=data_dir)
    return tfds.builder(name, data_dir=data_dir)


def prepare(data_config, label_map: Optional[dict] = None, *,
            rebuild: bool = False) -> tfds.core.DatasetBuilder:
    """Builds the dataset of data_config (name, data_dir, manual_dir) if not built; returns the builder.

    For cervix_folder, an existing build is reused only if it was made from the same manual_dir and
    its inputs are unchanged (the manifest's bytes, every file's path, size and mtime, the mapping and
    size limits); otherwise it is refused as stale, or deleted and rebuilt with rebuild=True.
    manual_dir may be the folder or a CSV manifest file.
    """
    builder = builder_for(data_config, label_map)
    manual_dir = _get(data_config, "manual_dir") or None
    if builder.name != "cervix_folder":
        builder.download_and_prepare()
        return builder
    if not manual_dir:
        raise ValueError("data.manual_dir: cervix_folder needs the folder (or CSV) of your images; found ''")
    manual_dir = Path(os.path.expanduser(manual_dir))
    folder = (manual_dir.parent if manual_dir.is_file() else manual_dir).resolve()
    if folder == Path(builder.data_dir).resolve() or folder in Path(builder.data_dir).resolve().parents:
        raise ValueError(f"data.data_dir={str(builder.data_dir_root)!r} is inside data.manual_dir="
                         f"{str(manual_dir)!r}: the build would become part of its own input; put data_dir "
                         "elsewhere")
    cfg = builder.builder_config
    report_path = Path(builder.data_dir) / REPORT_NAME
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        given = manual_dir.resolve()
        source = given / images_lib.MANIFEST_NAME if (given / images_lib.MANIFEST_NAME).is_file() else given
        built_from = report.get("source", report["manual_dir"])
        if str(source) != built_from and str(given) != report["manual_dir"]:
            raise ValueError(f"data.manual_dir={str(manual_dir)!r}, but {builder.data_dir} was built from "
                             f"{built_from!r}; use another data.data_dir or delete that folder")
        found = images_lib.discover(manual_dir, cfg.label_map)
        stale = _stale_reasons(report, _build_inputs(found, cfg))
        if stale and not rebuild:
            name = f"cervix_folder/{cfg.name}" + (" --label_map ..." if cfg.name == "custom" else "")
            raise StaleBuildError(
                f"cervix_folder: the build in {builder.data_dir} is stale: {'; '.join(stale)}. Rebuild it "
                f"with `python launch.py prepare --config <your config> --rebuild` (or python -m "
                f"cervix_jax.data.builders --name {name} --manual_dir {str(manual_dir)!r} --data_dir "
                f"{str(builder.data_dir_root)!r} --rebuild), delete that folder, or use another "
                "data.data_dir")
        if stale:
            print(f"cervix_folder: rebuilding {builder.data_dir}: {'; '.join(stale)}", flush=True)
            shutil.rmtree(builder.data_dir)
            builder = builder_for(data_config, label_map)
    tfds_dir = manual_dir.parent if manual_dir.is_file() else manual_dir
    builder.manual_source = manual_dir  # read by _split_generators: the folder or the CSV itself
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tfds_dir)))
    return builder


def load_source(data_config, label_map: Optional[dict] = None, *, rebuild: bool = False):
    """(random-access source of split "train", DatasetInfo), building first if needed (`rebuild`: see
    `prepare`). `memory/<n>` (tests, smoke runs) gives an in-memory source (`cervix_jax.data.memory`)
    and info None."""
    from cervix_jax.data import memory
    if memory.is_memory(_get(data_config, "name")):
        return memory.source(data_config), None
    builder = prepare(data_config, label_map, rebuild=rebuild)
    return builder.as_data_source("train"), builder.info


def _parse_label_map(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.rpartition("=")
        if not sep or value not in ("0", "1"):
            raise argparse.ArgumentTypeError(f"--label_map: expected NAME=0|1[,NAME=0|1...], found {part!r}")
        out[name] = int(value)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m cervix_jax.data.builders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="synthetic_cervix/tiny",
                   help="synthetic_cervix/{tiny,paper_b,paper_a} or "
                        "cervix_folder/{" + ",".join(LABEL_MAPS) + "}")
    p.add_argument("--data_dir", default="~/.cache/cervix_jax/tfds")
    p.add_argument("--manual_dir", default="",
                   help="cervix_folder: your folder of class subfolders, or a CSV")
    p.add_argument("--label_map", type=_parse_label_map, default=None,
                   help="cervix_folder: e.g. Type_1=0,Type_2=1,Type_3=1 (a custom config named 'custom')")
    p.add_argument("--label", default="label", help="with --label_map: treatability|dysplasia|label")
    p.add_argument("--rebuild", action="store_true",
                   help="cervix_folder: delete and rebuild a build whose inputs changed "
                        "(else refused as stale)")
    a = p.parse_args(argv)
    data = dict(name=a.name, data_dir=a.data_dir, manual_dir=a.manual_dir, label=a.label)
    builder = prepare(data, a.label_map, rebuild=a.rebuild)
    print(f"{builder.info.full_name}: {builder.info.splits['train'].num_examples} examples in "
          f"{builder.data_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
