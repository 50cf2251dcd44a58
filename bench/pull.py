"""Benchmark: pulling an OCI image from a registry, Kurma vs `skopeo copy` + `umoci unpack`.

The image: ~100 MiB unpacked in 5 gzip layers, ~4.5k files (a static busybox, a few
thousand small files of 256 B-32 KiB, 18 of 4 MiB; each file a deterministic mix of
random bytes and text, so gzip has real work; the upper layers also replace and delete
some of the base's files). Built once from a seed and cached as an OCI layout under
`bench/.cache/`, then pushed with skopeo to a TLS docker-registry on 127.0.0.1 (a CA the
bench makes, tests/registry/support.py).

Pull + unpack, interleaved rounds (after an untimed warm-up round):

- kurma: the Images.Fetch call from a connected client on kurmad's unix socket, until the
  stream ends with the image stored (download, verify, unpack every layer into its tree);
  then `kurmactl pull -q` of the same image, as a person runs it (CLI start included).
  Before each pull the image is deleted (`Images.Delete` collects its layers and blobs:
  the bench checks that none are left), so every pull starts from an empty store.
- peer: `skopeo copy docker://REF oci:DIR:bench` + `umoci unpack --image DIR:bench
  BUNDLE`, a fresh DIR and BUNDLE each round, removed after it (untimed).

Everything that is written (kurmad's state and pods, the registry's storage, skopeo's DIR,
umoci's bundle) is on one tmpfs the bench mounts (peers.state_tmpfs), so neither side is
measured against the disk. Target: kurma's median <= 0.8x the peer's.

Then pod start from that OCI image vs the same tree imported as an ACI (built from umoci's
rootfs): Create(start=True) + Wait through the API (pod_start.api_start), /bin/true,
interleaved, p50 and ratio. Target: OCI <= 1.05x ACI.

    python3 bench/pull.py [--rounds 5] [--warmup 1] [--starts 50] [--settle 0.15]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import grpc  # noqa: E402
import peers  # noqa: E402
from api import Kurmad  # noqa: E402
from pod_start import api_start, interleave  # noqa: E402

from kurma.aci import Compression, build_aci  # noqa: E402
from kurma.api.v1 import images_pb2_grpc  # noqa: E402
from kurma.client import app_spec, images_pb2, run_spec  # noqa: E402
from tests.archives import TarBuilder  # noqa: E402
from tests.oci_images import build_image, busybox_layer  # noqa: E402
from tests.registry.support import CA, RegistryProcess, push  # noqa: E402

CGROUP_PARENT = "kurma-bench-pull"
IMAGE_VERSION = 1  # bump when the content below changes: the cached layout is rebuilt
SEED = 20240601
TAG = "bench"
REPOSITORY = "bench/pull"
ACI_NAME = "example.com/bench-pull-aci"
TOOLS = ("docker-registry", "skopeo", "umoci", "busybox")

# (small files, 4 MiB files) per layer; the upper layers also replace and delete base files
LAYERS = ((2000, 6), (600, 3), (600, 3), (600, 3), (600, 3))
BIG = 4 << 20
REPLACED, DELETED = 25, 10  # base files each upper layer rewrites / whites out
RANDOM_SHARE = 0.25  # of each file's 4 KiB blocks; the rest is text from a word corpus


# --- the image ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    layout: Path
    files: int
    unpacked: int  # bytes of file content
    compressed: int  # bytes of the layer blobs


class Content:
    """Deterministic file bodies: 4 KiB blocks, each random bytes or a slice of a text corpus
    (pseudo-words), so they compress about as well as a typical distribution's files."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        weights = list(range(len(letters), 0, -1))
        vocab = ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(3000)]
        words = rng.choices(vocab, k=250_000)
        lines = (" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
        self.corpus = "\n".join(lines).encode()

    def make(self, size: int) -> bytes:
        out, rng, left = [], self.rng, size
        while left > 0:
            n = min(4096, left)
            if rng.random() < RANDOM_SHARE:
                out.append(rng.randbytes(n))
            else:
                at = rng.randrange(len(self.corpus) - n)
                out.append(self.corpus[at : at + n])
            left -= n
        return b"".join(out)

    def small_size(self) -> int:
        return int(2 ** self.rng.uniform(8, 15))  # 256 B .. 32 KiB, log-uniform


def _layers(content: Content) -> tuple[list[TarBuilder], int, int]:
    """The five layers' tars; (builders, files, content bytes)."""
    rng = content.rng
    builders, files, size = [], 0, 0
    base_files: list[str] = []
    for index, (small, big) in enumerate(LAYERS):
        if index == 0:
            tar = busybox_layer(peers.busybox_binary()).symlink("bin/true", "busybox")
            files += 1
            size += peers.busybox_binary().stat().st_size
        else:
            tar = TarBuilder()
        share, lib = f"usr/share/bench{index}", f"usr/lib/bench{index}"
        for name in ("usr", "usr/share", "usr/lib", share, lib):
            tar.dir(name)
        for d in range(small // 100):
            tar.dir(f"{share}/d{d:02d}")
        for n in range(small):
            name = f"{share}/d{n // 100:02d}/f{n:04d}.txt"
            data = content.make(content.small_size())
            tar.file(name, data, mode=0o755 if n % 10 == 0 else 0o644)
            files, size = files + 1, size + len(data)
            if index == 0:
                base_files.append(name)
        for n in range(big):
            data = content.make(BIG)
            tar.file(f"{lib}/blob{n}.bin", data)
            files, size = files + 1, size + len(data)
        if index > 0:
            picked = rng.sample(base_files, REPLACED + DELETED)
            for name in picked[:REPLACED]:
                data = content.make(content.small_size())
                tar.file(name, data)
                size += len(data)
            for name in picked[REPLACED:]:
                parent, _, leaf = name.rpartition("/")
                tar.file(f"{parent}/.wh.{leaf}")
                base_files.remove(name)
        builders.append(tar)
    return builders, files, size


def ensure_image(cache: Path = peers.CACHE) -> Built:
    """The image's OCI layout (tag `bench`), built once and cached; rebuilt when the
    constants above, IMAGE_VERSION or the host's busybox change."""
    busybox = peers.busybox_binary().stat()
    shape = f"{LAYERS}-{BIG}-{REPLACED}-{DELETED}-{RANDOM_SHARE}"
    key = f"v{IMAGE_VERSION}-{SEED}-{shape}-{busybox.st_size}-{busybox.st_mtime_ns}"
    dest = cache / "pull-image"
    facts = dest / "bench-facts.json"
    if facts.exists() and json.loads(facts.read_text()).get("key") == key:
        doc = json.loads(facts.read_text())
        return Built(dest, doc["files"], doc["unpacked"], doc["compressed"])
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pull-image.", dir=cache))
    try:
        builders, files, unpacked = _layers(Content(random.Random(SEED)))
        image = build_image(
            [(b, Compression.GZIP) for b in builders],
            run={"Entrypoint": ["/bin/true"], "Env": ["PATH=/bin"]},
        )
        image.write_layout(tmp, TAG)
        manifest = json.loads(image.manifest)
        compressed = sum(layer["size"] for layer in manifest["layers"])
        doc = {"key": key, "files": files, "unpacked": unpacked, "compressed": compressed}
        (tmp / "bench-facts.json").write_text(json.dumps(doc))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Built(dest, files, unpacked, compressed)


# --- the two sides --------------------------------------------------------------------------


class KurmaPull:
    """Pulls through kurmad: Fetch from a connected client, or `kurmactl pull -q`."""

    def __init__(self, daemon: Kurmad, ref: str) -> None:
        self.daemon, self.ref = daemon, ref
        self.channel = grpc.insecure_channel(f"unix:{daemon.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.images = images_pb2_grpc.ImagesStub(self.channel)
        self.client = daemon.client()
        self.cli = [sys.executable, "-m", "kurma.cli.main", "-H", f"unix://{daemon.socket}",
                    "pull", ref, "-q"]  # fmt: skip

    def fetch(self) -> float:
        self.clear()
        start = time.perf_counter()
        last = None
        for update in self.images.Fetch(images_pb2.FetchRequest(name=self.ref), timeout=600):
            last = update
        elapsed = time.perf_counter() - start
        if last is None or not last.HasField("image") or not last.created:
            raise RuntimeError(f"Fetch of {self.ref} ended without a new image: {last}")
        return elapsed

    def kurmactl(self) -> float:
        self.clear()
        start = time.perf_counter()
        done = subprocess.run(self.cli, cwd=ROOT, capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - start
        if done.returncode != 0 or not done.stdout.startswith("sha512-"):
            raise RuntimeError(f"kurmactl pull failed: {done.stdout}{done.stderr}")
        return elapsed

    def clear(self) -> None:
        """Delete the image if stored; check that its layers and blobs went with it."""
        for image in self.client.list_images():
            if self.ref in image.references:
                self.client.delete_image(image.id)
        left = [p for d in ("layers", "blobs/sha256") for p in (self.daemon.state / d).glob("*")]
        if left:
            raise RuntimeError(f"image rm left {len(left)} layers/blobs: {left[:3]}")

    def close(self) -> None:
        self.client.close()
        self.channel.close()


class PeerPull:
    """`skopeo copy docker://REF oci:DIR:bench` then `umoci unpack`, fresh dirs each round."""

    def __init__(self, ref: str, cert_dir: Path, scratch: Path) -> None:
        self.ref, self.cert_dir, self.scratch = ref, cert_dir, scratch
        self.skopeo: list[float] = []
        self.umoci: list[float] = []

    def run(self, keep: Path | None = None) -> float:
        """One timed copy + unpack; the dirs are removed after it, unless `keep` (a bundle
        path to leave in place)."""
        work = Path(tempfile.mkdtemp(prefix="peer-", dir=self.scratch))
        layout, bundle = work / "oci", keep or work / "bundle"
        copy = ["skopeo", "--insecure-policy", "copy", "--quiet",
                "--src-cert-dir", str(self.cert_dir), f"docker://{self.ref}",
                f"oci:{layout}:{TAG}"]  # fmt: skip
        unpack = ["umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle)]
        try:
            start = time.perf_counter()
            _check(subprocess.run(copy, capture_output=True, text=True, timeout=600))
            copied = time.perf_counter()
            _check(subprocess.run(unpack, capture_output=True, text=True, timeout=600))
            end = time.perf_counter()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if keep is None:
            self.skopeo.append(copied - start)
            self.umoci.append(end - copied)
        return end - start


def _check(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(done.args)} failed ({done.returncode}):\n{done.stderr}")


def aci_manifest() -> bytes:
    return json.dumps({
        "acKind": "ImageManifest", "acVersion": "0.8.11", "name": ACI_NAME,
        "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
        "app": {"exec": ["/bin/true"], "user": "0", "group": "0",
                "environment": [{"name": "PATH", "value": "/bin"}]},
    }).encode()  # fmt: skip


# --- the run --------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--starts", type=int, default=50, help="pod starts per side")
    parser.add_argument("--settle", type=float, default=0.15,
                        help="untimed quiet after each pod start (see pod_start.py)")  # fmt: skip
    args = parser.parse_args()
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"needs {', '.join(missing)} (build/apt-deps.sh)", file=sys.stderr)
        return 1

    began = time.monotonic()
    built = ensure_image()
    print(
        f"image: {len(LAYERS)} gzip layers, {built.files} files, "
        f"{built.unpacked / (1 << 20):.0f} MiB of file content, "
        f"{built.compressed / (1 << 20):.0f} MiB compressed ({time.monotonic() - began:.1f} s "
        "to build or find in the cache)"
    )
    with peers.state_tmpfs() as run:
        return measure(args, built, run)


def measure(args: argparse.Namespace, built: Built, run: Path) -> int:
    """Everything below runs with its state on the tmpfs `run`."""
    scratch = Path(tempfile.mkdtemp(prefix="kurma-bench-pull-", dir=run))
    registry = daemon = kurma = None
    try:
        ca = CA(scratch / "ca")
        registry = RegistryProcess.start(scratch / "registry", ca=ca)
        ref = f"{registry.host}/{REPOSITORY}:v1"
        push(SimpleNamespace(path=built.layout, tag=TAG), registry, f"{REPOSITORY}:v1", ca=ca)  # type: ignore[arg-type]
        certs = ca.certs_dir(scratch / "certs.d", registry.host)
        daemon = Kurmad(
            pods_parent=run, work_parent=run, cgroup_parent=CGROUP_PARENT,
            extra=["--registries", json.dumps({"certs_dir": str(certs)}),
                   "--registry-auth-file", ""],
        )  # fmt: skip
        kurma = KurmaPull(daemon, ref)
        peer = PeerPull(ref, certs / registry.host, scratch)
        sides = {"kurma": kurma.fetch, "kurmactl": kurma.kurmactl, "peer": peer.run}
        interleave(args.warmup, sides)
        peer.skopeo.clear()
        peer.umoci.clear()
        times = interleave(args.rounds, sides)

        k, c, p = (statistics.median(times[n]) for n in ("kurma", "kurmactl", "peer"))
        print(
            f"pull + unpack from a TLS docker-registry on loopback, {args.rounds} interleaved "
            f"rounds (+{args.warmup} warm-up), everything on a tmpfs"
        )
        print(f"  kurma Fetch (connected client)  {spread(times['kurma'])}")
        print(f"  kurmactl pull -q                {spread(times['kurmactl'])}")
        print(f"  skopeo copy + umoci unpack      {spread(times['peer'])}")
        print(
            f"    of which skopeo median {statistics.median(peer.skopeo):.2f} s, "
            f"umoci {statistics.median(peer.umoci):.2f} s"
        )
        print(f"  kurma/peer {k / p:.2f}x (target <= 0.80x), kurmactl/peer {c / p:.2f}x")

        # pod start: the OCI image as pulled vs the same tree as an ACI
        bundle = scratch / "aci-source"
        peer.run(keep=bundle)
        aci = scratch / "bench-pull.aci"
        build_aci(bundle / "rootfs", aci_manifest(), aci, compression=Compression.NONE,
                  mtime=0, owner=(0, 0))  # fmt: skip
        shutil.rmtree(bundle)
        with daemon.client() as client:
            client.import_image(aci)
            aci.unlink()
            kurma.fetch()  # the OCI image stays for the starts
            oci_spec, aci_spec = run_spec(app_spec(ref)), run_spec(app_spec(ACI_NAME))
            starts = {
                "oci": lambda: api_start(client, oci_spec),
                "aci": lambda: api_start(client, aci_spec),
            }
            interleave(3, starts)
            start_times = interleave(args.starts, starts, args.settle)
        o50, a50 = (peers.percentile(start_times[n], 50) for n in ("oci", "aci"))
        o99, a99 = (peers.percentile(start_times[n], 99) for n in ("oci", "aci"))
        print(
            f"pod start through the API (Create(start) + Wait, /bin/true), {args.starts} "
            f"interleaved runs, {args.settle:g} s quiet after each"
        )
        print(f"  from the OCI image   p50 {o50 * 1000:6.2f} ms  p99 {o99 * 1000:6.2f} ms")
        print(f"  from the same ACI    p50 {a50 * 1000:6.2f} ms  p99 {a99 * 1000:6.2f} ms")
        print(f"  oci/aci p50 {o50 / a50:.2f}x (target <= 1.05x)")
        print(
            f"summary: pull kurma {k:.2f} s vs skopeo+umoci {p:.2f} s = {k / p:.2f}x "
            f"(target <= 0.80x); pod start p50 oci/aci {o50 / a50:.2f}x (target <= 1.05x)"
        )
    finally:
        if kurma is not None:
            kurma.close()
        if daemon is not None:
            daemon.close()
        if registry is not None:
            registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
