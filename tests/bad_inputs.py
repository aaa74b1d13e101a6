"""Bad inputs a user can give `python -m bench.run`, and the one line each must get back.

Shared by `tests/test_bad_inputs.py` (which runs every case through the real CLI) and
`scripts/bad_inputs_table.py` (which prints the README's table from the same cases).
"""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # the mistake, as the README's table says it
    argv: Callable[[Path], list[str]]  # the folder holds data/ (a valid tiny COCO set) and weights/
    expect: str  # a fragment of the error line


def write_coco(root: Path, split: str, edit: Callable[[dict], None] | None = None, count: int = 2) -> tuple[Path, Path]:
    """A valid COCO split of `count` images (ids 1..count) under root; `edit` may break its JSON first."""
    images = root / split
    images.mkdir(parents=True, exist_ok=True)
    ids = range(1, count + 1)
    for i in ids:
        Image.new("RGB", (64, 48), (40 * i % 256, 90, 160)).save(images / f"{i}.jpg")
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in ids],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 16], "area": 320, "iscrowd": 0}
                        for i in ids],
        "categories": [{"id": 1, "name": "thing", "supercategory": "thing"}],
    }
    if edit is not None:
        edit(data)
    ann = root / f"{split}.json"
    ann.write_text(json.dumps(data))
    return ann, images


def data_args(edit_train: Callable[[dict], None] | None = None, edit_val: Callable[[dict], None] | None = None,
              after: Callable[[Path], None] | None = None, extra: tuple[str, ...] = ()) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        train_ann, train_images = write_coco(tmp / "data", "train", edit_train)
        val_ann, val_images = write_coco(tmp / "data", "val", edit_val)
        if after is not None:
            after(tmp / "data")
        return ["--train-ann", str(train_ann), "--train-images", str(train_images), "--val-ann", str(val_ann),
                "--val-images", str(val_images), *extra]
    return argv


def _set(*items: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [arg for item in items for arg in ("--set", item)]


def _config_file(text: str) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        (tmp / "my.yaml").write_text(text)
        return ["--config", str(tmp / "my.yaml")]
    return argv


def _file_at(name: str, flag: str, below: str) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        (tmp / name).write_text("a file")
        return [flag, str(tmp / name / below)]
    return argv


def _weights(tmp: Path) -> list[str]:
    import timm
    import torch

    (tmp / "weights").mkdir(exist_ok=True)
    torch.save(timm.create_model("resnet18").state_dict(), tmp / "weights" / "resnet50.pth")
    return ["--backbones", "resnet50", "--pretrained-dir", str(tmp / "weights")]


def _first(key: str, field: str, value: object) -> Callable[[dict], None]:
    return lambda data: data[key][0].__setitem__(field, value)


def _renumber_category(data: dict, new_id: int) -> None:
    data["categories"][0]["id"] = new_id
    for annotation in data["annotations"]:
        annotation["category_id"] = new_id


CASES = [
    Case("unknown_backbone", "a backbone timm does not know", lambda t: ["--backbones", "detnet99"],
         "unknown backbone 'detnet99'"),
    Case("no_pyramid", "a timm model without a stride-4..32 feature pyramid (a ViT)",
         lambda t: ["--backbones", "vit_tiny_patch16_224"], "needs a pyramid of 4 or 5 stages"),
    Case("bad_device", "a device that is not cpu or cuda", lambda t: ["--device", "mps"], "device must be cpu or cuda"),
    Case("bad_seeds", "seeds that are not numbers", lambda t: ["--seeds", "a,b"], "--seeds takes a count"),
    Case("unknown_setting", "a setting that does not exist", _set("train.bogus=1"), "Key 'bogus' not in 'TrainConfig'"),
    Case("zero_batch", "a batch of zero images", _set("train.batch_size=0"), "train.batch_size must be >= 1"),
    Case("string_number", "a word where a number belongs", _set("train.base_lr=fast"), "could not be converted to Float"),
    Case("zero_lr", "a learning rate of zero", _set("train.base_lr=0"), "train.base_lr must be > 0"),
    Case("bad_fraction", "a flip probability above 1", _set("train.hflip=1.5"), "train.hflip must be <= 1"),
    Case("yaml_error", "a --config file that is not YAML", _config_file("profile: [1, 2\nseeds: 3"),
         "invalid YAML at line"),
    Case("config_type", "a --config file with a string where a number belongs",
         _config_file("profile:\n  train:\n    iterations: many\n"), "could not be converted to Integer"),
    Case("missing_config", "a --config file that does not exist", lambda t: ["--config", str(t / "nope.yaml")],
         "cannot read"),
    Case("out_under_file", "--out below a file", _file_at("taken", "--out", "run"), "is a file, not a folder"),
    Case("out_read_only", "--out in a read-only place", lambda t: ["--out", "/sys/detbench-run"], "cannot write in"),
    Case("cache_under_file", "--cache-dir below a file", _file_at("cache-file", "--cache-dir", "c"),
         "is a file, not a folder"),
    Case("missing_weights_dir", "--pretrained-dir that does not exist",
         lambda t: ["--pretrained-dir", str(t / "no-weights")], "is not a folder"),
    Case("unfit_weights", "a weights file of another architecture", _weights, "does not fit"),
    Case("missing_annotations", "an annotation file that does not exist",
         lambda t: data_args(after=lambda d: (d / "train.json").unlink())(t), "missing file"),
    Case("not_json", "an annotation file that is not JSON",
         lambda t: data_args(after=lambda d: (d / "train.json").write_text("{oops"))(t), "is not valid JSON"),
    Case("not_coco", "a JSON file without images/annotations/categories",
         data_args(edit_train=lambda d: d.pop("annotations")), "missing annotations"),
    Case("image_id_type", "an image id that is not an integer", data_args(edit_train=_first("images", "id", "1")),
         "image #0 id must be an integer"),
    Case("bad_bbox", "a bbox that is not 4 numbers", data_args(edit_train=_first("annotations", "bbox", [1, 2, 3])),
         "bbox must be 4 finite numbers"),
    Case("unknown_category", "an annotation of a category the file does not list",
         data_args(edit_train=_first("annotations", "category_id", 7)), "which is not in 'categories'"),
    Case("duplicate_image", "two images with the same id", data_args(edit_train=_first("images", "id", 2)),
         "id 2 is used twice"),
    Case("escaping_path", "a file_name that leaves the image folder (../../x.jpg)",
         data_args(edit_train=_first("images", "file_name", "../../x.jpg")), "points outside"),
    Case("missing_image", "an image file that is missing", data_args(after=lambda d: (d / "train" / "2.jpg").unlink()),
         "image listed in the annotations is missing"),
    Case("corrupt_image", "an image file that cannot be read",
         data_args(after=lambda d: (d / "train" / "1.jpg").write_bytes(b"not a jpeg")), "cannot read image id 1"),
    Case("wrong_size", "an image whose real size differs from the JSON",
         data_args(edit_train=_first("images", "width", 640)), "image is 64x48 but"),
    Case("no_objects", "a training set with no usable object",
         data_args(edit_train=lambda d: d["annotations"].clear()), "no usable object"),
    Case("strict_degenerate", "a box of zero width with --strict-data",
         data_args(edit_train=_first("annotations", "bbox", [4, 4, 0, 16]), extra=("--strict-data",)),
         "is among the boxes with non-positive size, which --strict-data refuses"),
    Case("other_categories", "validation categories that differ from training",
         data_args(edit_val=lambda d: _renumber_category(d, 2)), "must share their categories"),
]


def prepare_case(case: Case, tmp: Path, cache: Path) -> tuple[list[str], Path]:
    """The case's inputs made under tmp; the arguments for `python -m bench.run` and the --out they name."""
    argv = ["--profile", "smoke", "--cache-dir", str(cache), "--out", str(tmp / "new-run"), "--no-progress",
            *case.argv(tmp)]
    if argv.count("--out") > 1:  # the case names its own --out
        del argv[argv.index("--out"):argv.index("--out") + 2]
    if argv.count("--cache-dir") > 1:
        del argv[argv.index("--cache-dir"):argv.index("--cache-dir") + 2]
    return argv, Path(argv[argv.index("--out") + 1])


def run_cases(jobs: list[tuple[list[str], Path]], module: str = "bench.run") -> list[subprocess.CompletedProcess]:
    """Each (argv, cwd) as `python -m <module> argv` run in cwd would: its own exit code, stdout and stderr. One
    interpreter imports detbench once, then forks a child per job that runs the module as __main__, so thirty
    cases cost one import of torch, not thirty (tests/test_run.py runs `python -m bench.run` itself). What that
    import printed, every real process would print first: it heads each job's output."""
    request = json.dumps([module, [[argv, str(cwd)] for argv, cwd in jobs]])
    served = subprocess.run([sys.executable, __file__, "--serve"], input=request, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    if served.returncode != 0:
        raise RuntimeError(f"the case runner failed: {served.stderr[-2000:]}")
    printed, _, results = served.stdout.rstrip("\n").rpartition("\n")  # the results are the last line
    printed = printed + "\n" if printed else ""
    return [subprocess.CompletedProcess(argv, code, printed + out, served.stderr + err)
            for (argv, _), (code, out, err) in zip(jobs, json.loads(results), strict=True)]


def _run_as_main(module: str, argv: list[str], cwd: str) -> int:
    """In a forked child: what `python -m module argv` in cwd does, down to the exit code and the traceback."""
    os.chdir(cwd)
    sys.path[0], sys.argv = cwd, [module, *argv]  # python -m puts the working folder first on the path
    sys.modules.pop(module, None)  # run afresh as __main__, as the interpreter would, not the imported copy
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    else:
        return 0
    return 1


def _serve() -> None:
    """The other end of `run_cases`: [module, jobs] as JSON on stdin, [exit code, stdout, stderr] of each job as
    the last line of stdout."""
    import bench.run  # noqa: F401  imported before any fork: every child starts from here

    module, jobs = json.loads(sys.stdin.read())
    results = []
    for argv, cwd in jobs:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                code = 1
                try:
                    code = _run_as_main(module, argv, cwd)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            out.seek(0)
            err.seek(0)
            results.append([os.waitstatus_to_exitcode(status), out.read(), err.read()])
    print(json.dumps(results))


def table_row(case: Case, done: subprocess.CompletedProcess, tmp: Path) -> str:
    """The README's row for the case: the mistake, the exit code, the last line printed (the folder shortened)."""
    line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    line = line.replace(str(tmp.resolve()), "…").replace(str(tmp), "…").replace("|", "\\|")
    return f"| {case.what} | {done.returncode} | `{line}` |"


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
