"""Video frame extraction: the server's sampler against decoding every frame.

Generates (once, cached in bench/out/) a 10-minute 1280x720 30 fps H.264 video per key-frame
interval, then measures extracting the server's default 64 uniformly sampled frames:

* ``sampler``: what the server does (``VideoFile`` + ``select_frames``, one frame at a time;
  decord seeks to the key frame before each wanted frame and decodes forward from there);
* ``get_batch``: decord's ``get_batch`` with the same 64 indices, all 64 frames held at once;
* ``every frame``: decoding the whole video in order, keeping the same 64 frames;
* ``open only``: opening the video, the fixed cost in time and memory.

Each measurement runs in a fresh subprocess and reports its wall time and peak resident
memory (``ru_maxrss``): decord's frame buffers are native memory that tracemalloc cannot see.
All three extractions must return byte-identical frames.

    .venv/bin/python bench/video_decode.py                 # key frames every 250 and 60 frames
    .venv/bin/python bench/video_decode.py --gop 250 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from machine import cpu_description

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT, FPS, MINUTES = 1280, 720, 30, 10
FRAMES = MINUTES * 60 * FPS
MEASUREMENTS = ("open only", "sampler", "get_batch", "every frame")


def synthetic_frames(count: int) -> Iterator[np.ndarray]:
    """Low-complexity yuv420p frames: a scrolling luma ramp and a moving white square."""
    frame = np.full((HEIGHT * 3 // 2, WIDTH), 128, np.uint8)
    columns = np.arange(WIDTH, dtype=np.int32)
    for number in range(count):
        frame[:HEIGHT] = ((columns + 4 * number) % 256).astype(np.uint8)
        left = (7 * number) % (WIDTH - 160)
        frame[280:440, left:left + 160] = 255
        yield frame


def generate(path: Path, gop: int) -> None:
    """Encode ``2 * gop`` frames once, then repeat their packets up to 10 minutes.

    x264 writes closed GOPs that start with an IDR frame, so a chunk of whole GOPs can be
    repeated with shifted timestamps: the file decodes, seeks and indexes like a real
    10-minute encode, at the encoding cost of a few seconds of video.
    """
    import av

    chunk = 2 * gop
    assert FRAMES % chunk == 0, "the video must be a whole number of chunks"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        packets = []
        for array in synthetic_frames(chunk):
            packets += stream.encode(av.VideoFrame.from_ndarray(array, format="yuv420p"))
        packets += stream.encode(None)
        # Copied before any mux: muxing rescales a packet's timestamps in place.
        copies = [(bytes(p), p.pts, p.dts, p.duration, p.is_keyframe, p.time_base) for p in packets]
        for repeat in range(FRAMES // chunk):
            for data, pts, dts, duration, keyframe, time_base in copies:
                shift = round(chunk / FPS / time_base)
                packet = av.Packet(data)
                packet.pts, packet.dts = pts + repeat * shift, dts + repeat * shift
                packet.duration, packet.time_base, packet.is_keyframe = duration, time_base, keyframe
                packet.stream = stream
                container.mux(packet)


def measure(name: str, path: Path) -> dict[str, object]:
    """One measurement, in this (fresh) process."""
    import decord

    from embedding_server.media.frame_selection import select_frames
    from embedding_server.media.video import VideoFile
    from embedding_server.http_api.schemas import SegmentConfig
    from embedding_server.settings import Settings

    wanted = select_frames(SegmentConfig(), FRAMES, FPS, Settings(video_default_num_frames=64))
    digest = hashlib.sha256()
    started = time.perf_counter()
    if name in ("open only", "sampler"):
        video = VideoFile(path)
        assert (video.frame_count, video.fps) == (FRAMES, FPS)
        for index in wanted if name == "sampler" else ():
            digest.update(video.frame(index).tobytes())
    elif name == "get_batch":
        digest.update(decord.VideoReader(str(path)).get_batch(wanted).asnumpy().tobytes())
    else:
        reader, keep = decord.VideoReader(str(path)), set(wanted)
        for index in range(len(reader)):
            frame = reader.next()
            if index in keep:
                digest.update(frame.asnumpy().tobytes())
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mib": peak_mib,
            "digest": digest.hexdigest()[:16] if name != "open only" else "-"}


def run_measurement(name: str, path: Path) -> dict[str, object]:
    command = [sys.executable, __file__, "--measure", name, "--video", str(path)]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gop", type=int, action="append", help="key-frame interval (repeatable)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement; best time kept")
    parser.add_argument("--measure", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.video)))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"# {cpu_description()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    results = {}
    for gop in args.gop or [250, 60]:
        path = OUT / f"video-{MINUTES}min-{HEIGHT}p-{FPS}fps-gop{gop}.mp4"
        if not path.exists():
            started = time.perf_counter()
            generate(path, gop)
            print(f"generated {path.name} in {time.perf_counter() - started:.1f} s")
        import decord

        keyframes = len(decord.VideoReader(str(path)).get_key_indices())
        print(f"\n{path.name}: {path.stat().st_size / 2**20:.1f} MiB, {FRAMES} frames, "
              f"{keyframes} key frames (one every {gop})")
        print("| extraction | frames decoded to RGB | best time (s) | peak RSS (MiB) | frames digest |")
        print("|---|---|---|---|---|")
        for name in MEASUREMENTS:
            runs = [run_measurement(name, path) for _ in range(args.repeats)]
            best = min(runs, key=lambda run: run["seconds"])
            peak = max(run["peak_rss_mib"] for run in runs)
            decoded = {"open only": "0", "every frame": str(FRAMES)}.get(name, "64")
            print(f"| {name} | {decoded} | {best['seconds']:.2f} | {peak:.0f} | {best['digest']} |",
                  flush=True)
            results[f"gop{gop}/{name}"] = {**best, "peak_rss_mib": peak, "runs": runs}
    (OUT / "video_decode.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
