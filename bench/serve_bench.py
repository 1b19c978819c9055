#!/usr/bin/env python3
"""`u2netmatte serve` against the folder tool (`make bench-serve`; not a test).

Same build, same photos (the five in .deps/photos, copied to 64 files), same
model options, interleaved rounds, median of the rounds:
  - throughput: 8 clients at once posting the 64 photos (rembg's multipart
    form) against the folder tool on the same 64 files; warm-up and the
    tail excluded the same way for both: the rate is the difference of
    photos over the difference of wall times between a run on 16 of them
    and a run on all 64 (the service also answers 8 requests first). The
    CPU time per photo of the folder tool, the service and the benchmark's
    own client (which shares the cores with the service) is printed beside:
    the folder tool's over its whole run on the 64 (start-up included), the
    service's and the client's over the 64 requests (the service warm);
  - latency: one photo at a time, 20 times: the client's time from sending
    the request to the last byte of the answer, less the element's own time
    (the service's Server-Timing `matte`: from the frame entering the
    element to its output); also less decoding and encoding.

    python3 bench/serve_bench.py [--rounds 3] [--clients 8]

BENCH_BUILD_DIR picks the build (default target/release).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("BENCH_BUILD_DIR", CHECKOUT / "target" / "release")).resolve()
TOOL = BUILD / "u2netmatte"
PHOTOS = 64
SMALL = 16


def make_photos(folder: Path, count: int) -> list[Path]:
    sources = sorted(p for p in (CHECKOUT / ".deps" / "photos").iterdir() if p.suffix in (".png", ".jpg"))
    if not sources:
        sys.exit("no photos in .deps/photos: run make setup")
    folder.mkdir(parents=True)
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        dest = folder / f"{i:03d}-{src.name}"
        shutil.copyfile(src, dest)
        out.append(dest)
    return out


def cpu_seconds(who: int) -> float:
    """User + system CPU time so far of this process (RUSAGE_SELF) or its waited-for children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def folder_tool(photos: list[Path], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([str(TOOL), *map(str, photos), "-o", str(out), "--quiet"], check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def folder_rate(photos: list[Path], tmp: Path) -> tuple[float, float]:
    """Photos/s, and CPU seconds per photo (the whole run on all of them)."""
    small = folder_tool(photos[:SMALL], tmp / "small")
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    full = folder_tool(photos, tmp / "full")
    return (len(photos) - SMALL) / (full - small), (cpu_seconds(resource.RUSAGE_CHILDREN) - cpu) / len(photos)


class Service:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [str(TOOL), "serve", "--port", "0"], stderr=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            m = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                break
        else:
            sys.exit("u2netmatte serve did not start")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def remove(self, body: bytes) -> tuple[float, dict[str, float]]:
        """Posts one photo; returns the client's time and the Server-Timing parts (s)."""
        boundary = "bench-boundary-51a7"
        form = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + body + f"\r\n--{boundary}--\r\n".encode()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        started = time.perf_counter()
        conn.request("POST", "/api/remove", form, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        resp = conn.getresponse()
        resp.read()
        took = time.perf_counter() - started
        conn.close()
        if resp.status != 200:
            sys.exit(f"the service answered {resp.status}")
        parts = {
            k: float(v) / 1000
            for k, v in re.findall(r"(\w+);dur=([\d.]+)", resp.getheader("Server-Timing", ""))
        }
        return took, parts

    def cpu_seconds(self) -> float:
        """The service process's user + system CPU time so far (/proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rate(self, bodies: list[bytes], clients: int) -> tuple[float, float, float]:
        """Photos/s as the folder tool's is measured (16 photos, then all), and
        CPU seconds per photo of the service and of this client (all photos)."""
        small = self.wall(bodies[:SMALL], clients)
        service, client = self.cpu_seconds(), cpu_seconds(resource.RUSAGE_SELF)
        full = self.wall(bodies, clients)
        n = len(bodies)
        return (
            (n - SMALL) / (full - small),
            (self.cpu_seconds() - service) / n,
            (cpu_seconds(resource.RUSAGE_SELF) - client) / n,
        )

    def wall(self, bodies: list[bytes], clients: int) -> float:
        """Seconds for `clients` threads to post all of `bodies`, each taking the next."""
        next_index = iter(range(len(bodies)))
        lock = threading.Lock()

        def client() -> None:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                self.remove(bodies[i])

        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - started

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    if not TOOL.exists():
        sys.exit(f"{TOOL} is missing: cargo build --release")
    tmp = Path(tempfile.mkdtemp(prefix="u2netmatte-serve-bench-"))
    try:
        photos = make_photos(tmp / "photos", PHOTOS)
        bodies = [p.read_bytes() for p in photos]
        one = (CHECKOUT / ".deps" / "photos" / "chelsea.png").read_bytes()
        service = Service()
        try:
            service.wall(bodies[:8], args.clients)  # warm-up
            folder, served, added, added_io, element = [], [], [], [], []
            folder_cpu, service_cpu, client_cpu = [], [], []
            for r in range(args.rounds):
                rate, cpu = folder_rate(photos, tmp)
                folder.append(rate)
                folder_cpu.append(cpu)
                rate, cpu, client = service.rate(bodies, args.clients)
                served.append(rate)
                service_cpu.append(cpu)
                client_cpu.append(client)
                for _ in range(20):
                    took, parts = service.remove(one)
                    element.append(parts["matte"])
                    added.append(took - parts["matte"])
                    added_io.append(took - parts["matte"] - parts["decode"] - parts["encode"])
                print(
                    f"round {r + 1}: folder tool {folder[-1]:.2f} photos/s, "
                    f"service ({args.clients} clients) {served[-1]:.2f} photos/s",
                    flush=True,
                )
        finally:
            service.stop()
        f, s = statistics.median(folder), statistics.median(served)
        print(f"\nthroughput ({PHOTOS} photos, median of {args.rounds}, build {BUILD}):")
        print(f"  folder tool        {f:.2f} photos/s")
        print(f"  service, {args.clients} clients {s:.2f} photos/s  = {s / f:.2f}x the folder tool (target >= 0.9)")
        ms = lambda v: statistics.median(v) * 1000  # noqa: E731
        print("CPU time per photo (user + system, all cores, median of the rounds):")
        print(f"  folder tool {ms(folder_cpu):.0f} ms; service {ms(service_cpu):.0f} ms; ", end="")
        print(f"the benchmark's client {ms(client_cpu):.0f} ms (on the same cores as the service)")
        print(f"latency of one photo (chelsea.png 451x300, median of {len(added)}):")
        print(f"  the element's own time (Server-Timing matte) {ms(element):.1f} ms")
        print(f"  added by the service (client time - matte)   {ms(added):.1f} ms (target <= 20)")
        print(f"  of which HTTP and the queue (less decode and encode) {ms(added_io):.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
