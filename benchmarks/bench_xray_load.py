"""How much LoadXrayd + PreprocessXrayd cost on top of pydicom's own decode.

Writes a synthetic 2000 x 2000, 12-bit DX radiograph (uncompressed and JPEG 2000 lossless)
to a temporary folder, then times, as medians of several repeats:

* decode: ``pydicom.dcmread(path).pixel_array`` alone;
* ours: ``LoadXrayd`` + ``PreprocessXrayd`` (to 0.5 mm, 280 x 280 px: a 140 mm knee crop);

and prints the median of their per-repeat ratios (the two are timed alternately). Target: ratio <= 1.5 (our handling costs less than half a decode).

    .venv/bin/python benchmarks/bench_xray_load.py [--size 2000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
from monai.transforms import Compose
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from xray2mri.pipeline.data.synth.dicom_writer import MAX_LOG_ATTENUATION, write_dx
from xray2mri.transforms.xray import LoadXrayd, PreprocessXrayd


def synthetic_radiograph(size: int, seed: int = 0) -> np.ndarray:
    """12-bit stored values: smooth soft tissue, two 'bones', quantum noise (synthetic)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 600 + 900 * np.exp(-(((x - 0.5) / 0.3) ** 2))
    img += 1400 * (((x - 0.5) / 0.12) ** 2 + ((y - 0.3) / 0.25) ** 2 < 1)
    img += 1300 * (((x - 0.5) / 0.11) ** 2 + ((y - 0.75) / 0.22) ** 2 < 1)
    img += rng.normal(0, 25, img.shape).astype(np.float32)
    return np.clip(img, 0, 4095).astype(np.uint16)


def write(pixels: np.ndarray, path: Path, compressed: bool) -> Path:
    """The stored values as a MONOCHROME1 DX file (magnification 1.1), written by the cohort's own DX writer."""
    write_dx(
        path,
        pixels / (4095 / MAX_LOG_ATTENUATION),  # quantises back to exactly these stored values
        subject="BENCHMARK",
        laterality="L",
        imager_pixel_mm=0.15,
        sid_mm=1100.0,
        sod_mm=1000.0,
        photometric="MONOCHROME1",
        transfer_syntax=JPEG2000Lossless if compressed else ExplicitVRLittleEndian,
        bits_stored=12,
    )
    return path


def paired_medians(decode, ours, repeats: int) -> tuple[float, float, float]:
    """Median times of ``decode`` and ``ours`` run alternately (fair under a changing load),
    and the median of the per-pair ratios."""
    decode(), ours()  # warm up (imports, page cache)
    pairs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        decode()
        t1 = time.perf_counter()
        ours()
        t2 = time.perf_counter()
        pairs.append((t1 - t0, t2 - t1))
    return (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs),
            statistics.median(p[1] / p[0] for p in pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--spacing", type=float, default=0.5)
    parser.add_argument("--out-size", type=int, default=280)
    args = parser.parse_args()

    pixels = synthetic_radiograph(args.size)
    pipeline = Compose(
        [
            LoadXrayd(keys="xray"),
            PreprocessXrayd(keys="xray", spacing=args.spacing, size=args.out_size),
        ]
    )
    print(f"pydicom {pydicom.__version__}; {args.size}x{args.size} 12-bit MONOCHROME1 DX -> "
          f"{args.spacing} mm, {args.out_size} px; medians of {args.repeats} repeats")
    print(f"{'syntax':<28}{'decode s':>10}{'ours s':>10}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, compressed in (("uncompressed (explicit LE)", False), ("JPEG 2000 lossless", True)):
            path = write(pixels, Path(tmp) / f"{compressed}.dcm", compressed)
            repeats = args.repeats if not compressed else max(3, args.repeats // 3)
            decode, ours, ratio = paired_medians(
                lambda p=path: pydicom.dcmread(p).pixel_array, lambda p=path: pipeline({"xray": str(p)}), repeats
            )
            out = pipeline({"xray": str(path)})["xray"]
            assert out.shape == (1, args.out_size, args.out_size)
            print(f"{name:<28}{decode:>10.4f}{ours:>10.4f}{ratio:>8.2f}")


if __name__ == "__main__":
    main()
