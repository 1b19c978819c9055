"""u2netmatte on Ray Data: one pipeline per actor, folders or object stores in and out.

As a library::

    import ray
    from u2netmatte.ray import MatteBatch

    ds = ray.data.read_images("s3://bucket/photos")
    ds = ds.map_batches(
        MatteBatch,
        compute=ray.data.ActorPoolStrategy(size=4),
        batch_size=8,
        num_cpus=2,
        fn_constructor_kwargs={"mode": "mask", "threads": 2},
    )

As a job (one output per input, relative names kept, and a manifest)::

    python -m u2netmatte.ray IN... -o OUT [--address ADDR] [--actors N] [--threads T]
        [--batch-size B] [--mode alpha|composite|mask|blur] [--skip-existing]

IN and OUT are folders or `s3://bucket/prefix` URIs. For an S3-compatible
store other than AWS, set `AWS_ENDPOINT_URL` (or `--endpoint-url`); the
credentials are the usual `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import posixpath
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow.fs as pafs
import ray
from PIL import Image
from ray.data import ActorPoolStrategy

from .matte import MODES, Matte

__all__ = [
    "IMAGE_EXTENSIONS",
    "MANIFEST_NAME",
    "FileMatte",
    "Job",
    "MatteBatch",
    "Store",
    "main",
    "plan",
    "run_job",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = ("input", "output", "node", "status", "error")


@dataclass(frozen=True)
class Store:
    """How to reach object stores: the S3 endpoint (None: AWS's) and region.

    Plain data, so that it travels to actors; each process makes its own
    filesystems from it.
    """

    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def from_env(cls, endpoint_url: str | None = None) -> Store:
        """`endpoint_url`, else `$AWS_ENDPOINT_URL_S3` / `$AWS_ENDPOINT_URL`; region from `$AWS_REGION`."""
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(endpoint or None, region)

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """The filesystem holding `uri` and the path in it."""
        if uri.startswith("s3://"):
            kwargs: dict[str, Any] = {"region": self.region or "us-east-1"}
            if self.endpoint_url:
                endpoint = urlparse(self.endpoint_url)
                kwargs["endpoint_override"] = endpoint.netloc or endpoint.path
                kwargs["scheme"] = endpoint.scheme or "https"
            return pafs.S3FileSystem(**kwargs), uri[len("s3://") :].rstrip("/")
        return pafs.LocalFileSystem(), os.path.abspath(uri)


def _join(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if root.startswith("s3://") else os.path.join(root, relative)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class Job:
    """What a run does: every input with its output, and what it skips."""

    items: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def list_inputs(inputs: Sequence[str], store: Store) -> list[tuple[str, str]]:
    """(input URI, name relative to its root) for every image under `inputs`, sorted per root.

    Folders are walked recursively; a file given by name is taken whatever
    its extension. Broken links are listed too, so that they are reported.
    """
    found: list[tuple[str, str]] = []
    for root in inputs:
        fs, path = store.resolve(root)
        info = fs.get_file_info(path)
        broken_link = not root.startswith("s3://") and os.path.islink(path) and not os.path.exists(path)
        if info.type == pafs.FileType.File or broken_link:
            found.append((root, posixpath.basename(path)))
            continue
        if info.type != pafs.FileType.Directory:
            raise FileNotFoundError(f"input {root} does not exist")
        names: list[str] = []
        if root.startswith("s3://"):
            for entry in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
                if entry.type == pafs.FileType.File and _is_image(entry.path):
                    names.append(posixpath.relpath(entry.path, path))
        else:
            for folder, _dirs, files in os.walk(path):
                for name in files:
                    if _is_image(name):
                        names.append(os.path.relpath(os.path.join(folder, name), path).replace(os.sep, "/"))
        found.extend((_join(root, name), name) for name in sorted(names))
    return found


def output_names(relatives: Iterable[str]) -> list[str]:
    """`dir/name.png` for each `dir/name.ext`; where two share it, the later keep their extension."""
    taken: set[str] = set()
    out = []
    for relative in relatives:
        stem, _ext = posixpath.splitext(relative)
        name = f"{stem}.png"
        n = 0
        while name in taken:
            name = f"{relative}.png" if n == 0 else f"{relative}-{n}.png"
            n += 1
        taken.add(name)
        out.append(name)
    return out


def _absolute(uri: str) -> str:
    return uri if uri.startswith("s3://") else os.path.abspath(uri)


def _inside(child: str, parent: str) -> bool:
    child, parent = child.rstrip("/"), parent.rstrip("/")
    return child == parent or child.startswith(parent + "/")


def plan(inputs: Sequence[str], output: str, store: Store, skip_existing: bool = False) -> Job:
    """Every input with its output under `output`; with `skip_existing`, those whose output exists are skipped.

    Raises ValueError when the output folder is an input folder or inside
    one (a re-run would take outputs for inputs), or an output would be an
    input.
    """
    # Local paths are made absolute here, on the driver: actors and write
    # run in other folders (and a folder must be at the same path on
    # every node: a shared file system).
    inputs = [_absolute(root) for root in inputs]
    output = _absolute(output)
    local = not output.startswith("s3://")
    for root in inputs:
        if _inside(output, root) and (local == (not root.startswith("s3://"))):
            raise ValueError(f"the output {output} is inside the input {root}: outputs would become inputs")
    listed = list_inputs(inputs, store)
    names = output_names(relative for _uri, relative in listed)
    fs, out_path = store.resolve(output)
    existing: set[str] = set()
    if skip_existing and fs.get_file_info(out_path).type == pafs.FileType.Directory:
        for entry in fs.get_file_info(pafs.FileSelector(out_path, recursive=True)):
            if entry.type == pafs.FileType.File:
                existing.add(posixpath.relpath(entry.path, out_path))
    job = Job()
    input_uris = {uri for uri, _ in listed}
    for (uri, _relative), name in zip(listed, names, strict=True):
        item = {"input": uri, "output": _join(output, name)}
        if item["output"] in input_uris:
            raise ValueError(f"the output {item['output']} would overwrite an input")
        (job.skipped if name in existing else job.items).append(item)
    return job


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))


def _encode_png(frame: np.ndarray) -> bytes:
    # Fast compression, as the folder tool's encoder: the size costs less than the time.
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class MatteBatch:
    """A callable class for `Dataset.map_batches`: one `Matte` pipeline per actor.

    Takes the images in `image_column` (uint8 arrays, any sizes: a tensor
    column or an object column of arrays, as `read_images` gives) and adds
    `output_column` with one output each (HxW in `mask` mode, else HxWx4).

    Args:
        mode, model, batch_size, threads: as `Matte`'s; give the actors
            `num_cpus=threads` so that a node's actors do not oversubscribe it.
        image_column, output_column: the columns read and written.
        **element_properties: other properties of the element.
    """

    def __init__(
        self,
        mode: str = "alpha",
        model: str = "u2netp",
        batch_size: int = 4,
        threads: int = 1,
        image_column: str = "image",
        output_column: str = "matte",
        **element_properties: Any,
    ) -> None:
        self.matte = Matte(
            mode=mode, model=model, batch_size=batch_size, threads=threads, **element_properties
        )
        self.image_column = image_column
        self.output_column = output_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.matte.run(list(batch[self.image_column]))
        result = dict(batch)
        column = np.empty(len(outputs), dtype=object)
        column[:] = outputs
        result[self.output_column] = column
        return result


class FileMatte:
    """The job's `map_batches` class: reads each input, runs it, writes its PNG.

    Rows in: `input`, `output` (URIs). Rows out: the same with `node` (the
    Ray node id), `status` (ok or error) and `error` (empty when it
    worked): the manifest's rows. A file that cannot be read, decoded or
    written fails alone.

    The actor writes each output itself rather than handing the PNG to a
    Datasink: its write tasks (run with num_cpus=0) found no idle worker
    on a node whose CPUs the actors hold (Ray keeps idle workers up to the
    node's CPUs), so Ray started (and imported Ray, numpy and Pillow in) a
    new worker process for nearly every block: measured on one-CPU nodes,
    that took as much CPU as a second actor. Written here, the PNG never
    crosses the object store.
    """

    def __init__(self, store: Store | None = None, **matte_args: Any) -> None:
        self.matte = Matte(**matte_args)
        self.store = store or Store()
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [str(u) for u in batch["input"]]
        outputs = [str(o) for o in batch["output"]]
        errors = [""] * len(inputs)
        good: list[int] = []

        def frames() -> Iterator[np.ndarray]:
            for i, uri in enumerate(inputs):
                try:
                    fs, path = self.store.resolve(uri)
                    with fs.open_input_stream(path) as stream:
                        data = stream.read()
                except (OSError, ValueError) as e:
                    errors[i] = f"cannot read: {e}"
                    continue
                try:
                    frame = _decode(data)
                except Image.UnidentifiedImageError:
                    errors[i] = "not an image that Pillow can read"
                    continue
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    errors[i] = f"cannot decode: {e}"
                    continue
                good.append(i)
                yield frame

        # Each frame is decoded as the element takes it and each output
        # encoded and written as it comes out, while the element's own
        # thread runs the model on the next ones: reading and writing
        # overlap inference.
        for k, out in enumerate(self.matte.iter(frames())):
            i = good[k]
            try:
                put(self.store, outputs[i], _encode_png(out))
            except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid (a bad S3 path) is a ValueError
                errors[i] = f"cannot write: {e}"
        return {
            "input": np.array(inputs, dtype=object),
            "output": np.array(outputs, dtype=object),
            "node": np.array([self.node] * len(inputs), dtype=object),
            "status": np.array(["error" if e else "ok" for e in errors], dtype=object),
            "error": np.array(errors, dtype=object),
        }


def put(store: Store, uri: str, data: bytes) -> None:
    """Writes `data` at `uri`: a local file under a temporary name, renamed when complete; an object whole."""
    fs, path = store.resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temp = f"{path}.{uuid.uuid4().hex[:8]}.part"
        try:
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.remove(temp)
        return
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def read_manifest(output: str, store: Store) -> dict[str, dict[str, str]]:
    """The previous run's manifest rows by input (empty when there is none)."""
    fs, path = store.resolve(_join(output, MANIFEST_NAME))
    try:
        with fs.open_input_stream(path) as stream:
            text = stream.read().decode("utf-8")
    except (FileNotFoundError, OSError):
        return {}
    return {row["input"]: row for row in csv.DictReader(io.StringIO(text))}


def write_manifest(output: str, store: Store, rows: Sequence[dict[str, str]]) -> str:
    """Writes `manifest.csv` (input, output, node, status, error) under `output`; returns its URI."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["input"]):
        writer.writerow({k: row.get(k, "") for k in MANIFEST_FIELDS})
    uri = _join(output, MANIFEST_NAME)
    put(store, uri, text.getvalue().encode("utf-8"))
    return uri


@dataclass
class Summary:
    """What a run did: every manifest row, and how many it wrote, skipped and failed."""

    rows: list[dict[str, str]]
    written: int
    skipped: int
    failed: int
    manifest: str


def run_job(
    inputs: Sequence[str],
    output: str,
    *,
    store: Store | None = None,
    actors: int = 1,
    threads: int = 1,
    batch_size: int = 4,
    mode: str = "alpha",
    model: str = "u2netp",
    skip_existing: bool = False,
    element_properties: dict[str, Any] | None = None,
) -> Summary:
    """Runs the job on the Ray cluster `ray.init` connected to, and writes the manifest.

    Actors are spread over the nodes (Ray Data's default for actors), each
    holding one pipeline and `threads` logical CPUs, and each writing its
    outputs; the driver gathers the manifest's rows as the blocks come out.
    """
    store = store or Store.from_env()
    output = _absolute(output)
    job = plan(inputs, output, store, skip_existing)
    previous = read_manifest(output, store) if skip_existing else {}
    # An output that exists is complete (written under a temporary name, or
    # put whole): it counts as done, with the node that made it when known.
    skipped = [
        {**item, "node": previous.get(item["input"], {}).get("node", ""), "status": "ok", "error": ""}
        for item in job.skipped
    ]
    rows: list[dict[str, str]] = []
    if job.items:
        matte_args = {"mode": mode, "model": model, "batch_size": batch_size, "threads": threads}
        matte_args.update(element_properties or {})
        ds = ray.data.from_items(job.items, override_num_blocks=max(1, len(job.items) // batch_size))
        ds = ds.map_batches(
            FileMatte,
            compute=ActorPoolStrategy(size=actors),
            batch_size=batch_size,
            num_cpus=threads,
            fn_constructor_kwargs={"store": store, **matte_args},
        )
        # Streamed, block by block; the driver keeps every row (a few hundred
        # bytes each) until the manifest is written, not the images.
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows.extend({k: str(block[k][j]) for k in MANIFEST_FIELDS} for j in range(len(block["input"])))
    manifest = write_manifest(output, store, rows + skipped)
    failed = sum(1 for r in rows if r["status"] != "ok")
    return Summary(rows + skipped, len(rows) - failed, len(skipped), failed, manifest)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m u2netmatte.ray",
        description="Cut out images on a Ray cluster: one u2netmatte pipeline per actor; "
        "one PNG per input under OUT with its relative name, and OUT/manifest.csv.",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="IN", help="image files or folders (recursive); paths or s3:// URIs"
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder or s3:// prefix")
    p.add_argument(
        "--address", help="Ray cluster to join (ray start's address); default: $RAY_ADDRESS or a local one"
    )
    p.add_argument(
        "--actors", type=int, help="pipelines (actors) in the pool; default: the cluster's CPUs / threads"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="inference threads (and logical CPUs) per actor (default 1)"
    )
    p.add_argument("-b", "--batch-size", type=int, default=4, help="frames per inference run (default 4)")
    p.add_argument("--mode", choices=MODES, default="alpha", help="output (default alpha: RGBA cut-out)")
    p.add_argument("-m", "--model", default="u2netp", help="an .onnx path or a model name (default u2netp)")
    p.add_argument(
        "--skip-existing", action="store_true", help="do only the inputs whose output is not there yet"
    )
    p.add_argument(
        "--endpoint-url",
        help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL), e.g. http://127.0.0.1:9000",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PROPERTY=VALUE",
        help="any other element property, e.g. --set fill-color=0xffffffff (repeatable)",
    )
    return p


def _property_value(text: str) -> Any:
    """A --set value as the element's property wants it: int (0x.. too), float, bool or string."""
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 when every input was written, 1 when some failed (named), 2 on bad arguments."""
    args = _parser().parse_args(argv)
    if args.threads < 1:
        print("error: --threads must be at least 1", file=sys.stderr)
        return 2
    props: dict[str, Any] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set {item}: expected PROPERTY=VALUE", file=sys.stderr)
            return 2
        props[name] = _property_value(value)
    store = Store.from_env(args.endpoint_url)
    try:
        plan(args.inputs, args.output, store)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        ray.init(address=args.address)
        actors = args.actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // args.threads)
        summary = run_job(
            args.inputs,
            args.output,
            store=store,
            actors=actors,
            threads=args.threads,
            batch_size=args.batch_size,
            mode=args.mode,
            model=args.model,
            skip_existing=args.skip_existing,
            element_properties=props,
        )
    except Exception as e:  # a fatal error (the model cannot load, the cluster went away): named, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    for row in summary.rows:
        if row["status"] != "ok":
            print(f"failed: {row['input']}: {row['error']}", file=sys.stderr)
    print(
        f"{summary.written} written, {summary.skipped} already there, {summary.failed} failed; "
        f"manifest: {summary.manifest}",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
