"""Benchmark of our SAM against the official ``segment-anything`` package on the same weights.

Both get the same random ViT-B weights (the reference is built and randomised as in the tests,
saved to a temporary checkpoint that both load). Measured:

* in one process, interleaved so both see the same machine load (medians over repeats):
  encoder time per 1024 px image (reference fp32; ours fp32 and in its default precision),
  point-to-mask latency with a cached embedding on a 512 px image (``SamPredictor.predict`` vs
  ``Predictor.predict``), achieved FLOP/s of our encoder (FLOPs counted with
  ``torch.utils.flop_counter``) against a 4096 x 4096 matmul measured in the same process, and
  the mask disagreement of our default precision against fp32;
* each in a fresh process with its own defaults ("as a user sees it"): model loading and two
  ``set_image`` calls, with the peak resident memory of the encode (VmHWM after resetting it
  once the model is loaded), system time, page faults, and the same under glibc allocator
  variants (library default, ``NAPARI_SAM_MALLOC=default``, ``MALLOC_MMAP_MAX_=0``).

usage: python benchmarks/bench_model.py [--quick] [--out docs/benchmarks_model.md] [--no-write]
Needs the reference package (the ``test`` extra); runs on the CPU (or NAPARI_SAM_DEVICE).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/oracle.py: the reference with a torchvision stand-in
ALLOC_ENVS = {  # allocator variants for the fresh-process runs
    "library default": {},
    "glibc default": {"NAPARI_SAM_MALLOC": "default"},
    "MALLOC_MMAP_MAX_=0": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)},
}


def image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth RGB uint8 blobs plus noise (as in tests/model/test_equivalence.py)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros((*shape, 3))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(40, 150)
        img += rng.uniform(80, 200, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))[..., None]
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes (Linux), else empty."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is of what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def median_time(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- child: everything in one process ----------------------------------------------------------
def same_process(work: Path, reps: int, calls: int) -> dict[str, Any]:
    from oracle import segment_anything

    from napari_sam import load_model
    from napari_sam.predictor import ImageEmbedding, Predictor, autocast_for, encode_images

    from napari_sam._allocator import tune_allocator

    # Identical settings: the allocator tuning our encoder applies is process-wide, so apply it
    # before anything runs; the reference benefits from it too.
    allocator = tune_allocator()
    sa = segment_anything()
    ckpt = str(work / "vit_b_random.pt")
    ref = sa.sam_model_registry["vit_b"](checkpoint=ckpt).eval()
    ours = load_model(ckpt)  # default precision
    default = ours.precision
    res: dict[str, Any] = {"default_precision": default, "threads": torch.get_num_threads(), "allocator": allocator}

    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(4096, 4096, dtype=dtype), torch.randn(4096, 4096, dtype=dtype)
        torch.mm(a, b)
        peaks[name] = 2 * 4096**3 / median_time(lambda a=a, b=b: torch.mm(a, b), 3)
    res["matmul_peak"] = peaks

    img = image((1024, 1024))
    x = ours.normalize_and_pad(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    runs: dict[str, Callable[[], torch.Tensor]] = {
        "ref_fp32": lambda: ref.image_encoder(x),
        "ours_fp32": lambda: ours.image_encoder(x),
    }
    if default != "fp32":
        def ours_default() -> torch.Tensor:
            with autocast_for(ours):
                return ours.image_encoder(x).float()
        runs[f"ours_{default}"] = ours_default
    times: dict[str, list[float]] = {k: [] for k in runs}
    feats: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for _ in range(reps):  # interleaved: each repeat runs every case once
            for key, fn in runs.items():
                t0 = time.perf_counter()
                feats[key] = fn()
                times[key].append(time.perf_counter() - t0)
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            ours.image_encoder(x)
    res["encoder_s"] = {k: statistics.median(v) for k, v in times.items()}
    res["encoder_all_s"] = times
    res["encoder_flops"] = counter.get_total_flops()
    res["embedding_maxdiff_fp32"] = (feats["ours_fp32"] - feats["ref_fp32"]).abs().max().item()

    # point to mask on a 512 px image, embeddings cached
    small = image((512, 512), seed=1)
    ref_pred = sa.SamPredictor(ref)
    ref_pred.set_image(small)
    ours_pred = Predictor(ours)
    emb = encode_images(ours, [small.astype(np.float32)])[0]
    ours_pred.set_embedding(emb)
    pts = [np.array([[60.0 + (37 * i) % 390, 60.0 + (53 * i) % 390]]) for i in range(calls)]  # inside 512 px

    def ref_call(p: np.ndarray) -> Any:
        return ref_pred.predict(point_coords=p[:, ::-1].copy(), point_labels=np.array([1]))

    def ours_call(p: np.ndarray, precision: str) -> Any:
        ours.precision = precision
        try:
            return ours_pred.predict(points=p, point_labels=[1])
        finally:
            ours.precision = default

    lat: dict[str, list[float]] = {"ref_fp32": [], f"ours_{default}": [], "ours_fp32": []}
    ref_call(pts[0]), ours_call(pts[0], default), ours_call(pts[0], "fp32")  # warm up
    for p in pts:
        for key, fn in (("ref_fp32", lambda: ref_call(p)), (f"ours_{default}", lambda: ours_call(p, default)),
                        ("ours_fp32", lambda: ours_call(p, "fp32"))):
            t0 = time.perf_counter()
            fn()
            lat[key].append(time.perf_counter() - t0)
    res["predict_s"] = {k: statistics.median(v) for k, v in lat.items()}

    # mask disagreement: default precision (embedding and decoder) against fp32, 1024 px image
    if default != "fp32":
        preds = {}
        for prec in ("fp32", default):
            p = Predictor(ours)
            p.set_embedding(ImageEmbedding(feats[f"ours_{prec}"].float(), (1024, 1024), (1024, 1024)))
            preds[prec] = p
        rng = np.random.default_rng(5)
        fractions = []
        for i in range(24):
            kw: dict[str, Any] = {"points": rng.uniform(40, 984, (1 + i % 3, 2)), "multimask": True}
            if i % 4 == 3:
                r0, c0 = rng.uniform(50, 500, 2)
                kw = {"box": [r0, c0, r0 + rng.uniform(150, 450), c0 + rng.uniform(150, 450)], "multimask": False}
            ours.precision = "fp32"
            m32 = preds["fp32"].predict(**kw).masks
            ours.precision = default
            mlow = preds[default].predict(**kw).masks
            fractions.append(float((m32[0] != mlow[0]).mean()))
        res["mask_disagreement"] = {"mean": float(np.mean(fractions)), "max": float(np.max(fractions)),
                                    "n_prompts": len(fractions)}
    res["load"] = os.getloadavg()
    return res


# -- child: one implementation as a user runs it -----------------------------------------------
def user_run(work: Path, impl: str, precision: str | None, passes: int) -> dict[str, Any]:
    ckpt = str(work / "vit_b_random.pt")
    img = image((1024, 1024))
    t0 = time.perf_counter()
    if impl == "ref":
        from oracle import segment_anything

        sa = segment_anything()
        predictor: Any = sa.SamPredictor(sa.sam_model_registry["vit_b"](checkpoint=ckpt).eval())
        used = "fp32"
    else:
        from napari_sam import load_model
        from napari_sam.predictor import Predictor

        model = load_model(ckpt, precision=precision)
        predictor, used = Predictor(model), model.precision
    out: dict[str, Any] = {"load_s": time.perf_counter() - t0, "precision": used}
    before = proc_status()
    out["peak_reset"] = reset_peak()
    times, cpu0, res0 = [], os.times(), __import__("resource").getrusage(0)
    for _ in range(passes):
        t0 = time.perf_counter()
        predictor.set_image(img)
        times.append(time.perf_counter() - t0)
    cpu1, res1, after = os.times(), __import__("resource").getrusage(0), proc_status()
    if impl == "ours":
        from napari_sam._allocator import allocator_state

        out["allocator"] = allocator_state()
    out.update(
        set_image_s=times, user_s=cpu1.user - cpu0.user, sys_s=cpu1.system - cpu0.system,
        minor_faults=res1.ru_minflt - res0.ru_minflt, rss_model=before.get("VmRSS"),
        peak_rss=after.get("VmHWM"), rss_after=after.get("VmRSS"), threads=torch.get_num_threads(),
        load=os.getloadavg(),
    )
    return out


def child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this script as a fresh process with ``args``; return the JSON it prints last."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(cmd, env=full_env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report ------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    info = {"cpu": platform.processor() or "unknown"}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Flags"):
                info[key.strip()] = value.strip()
    flags = set(info.pop("Flags", "").split())
    info["bf16/amx"] = ", ".join(sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})) or "none"
    info.update(torch=torch.__version__, python=platform.python_version(), glibc=" ".join(platform.libc_ver()),
                threads=str(torch.get_num_threads()))
    return info


def gb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GB"


def report(mach: dict[str, str], same: dict[str, Any], users: dict[str, dict[str, Any]], quick: bool) -> str:
    d = same["default_precision"]
    enc, pred, peak = same["encoder_s"], same["predict_s"], same["matmul_peak"]
    flops = same["encoder_flops"]
    lines = [
        "# Model benchmark: napari-sam vs segment-anything (random ViT-B weights, same in both)",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} with `python benchmarks/bench_model.py{' --quick' if quick else ''}`.",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in mach.items()) + ".",
        f"Load average (1/5/15 min) at the end of the same-process run: {', '.join(f'{x:.1f}' for x in same['load'])} "
        "(other jobs share these cores; ratios come from interleaved runs in one process).",
        "",
        "## Same process, interleaved (medians)",
        "",
        f"Allocator in this process (for both): {same['allocator']}; torch threads: {same['threads']}.",
        "",
        "| measure | reference | ours fp32 | ours default | target | met |",
        "|---|---|---|---|---|---|",
    ]
    r_enc, o32, od = enc["ref_fp32"], enc["ours_fp32"], enc.get(f"ours_{d}", enc["ours_fp32"])
    lines.append(f"| encoder s / 1024 px image ({d} default) | {r_enc:.2f} | {o32:.2f} ({r_enc / o32:.2f}x) | "
                 f"{od:.2f} ({r_enc / od:.2f}x) | >= 1.6x | {'yes' if r_enc / od >= 1.6 else 'no'} |")
    rp, op32, opd = pred["ref_fp32"], pred["ours_fp32"], pred[f"ours_{d}"]
    lines.append(f"| point-to-mask ms, 512 px, cached embedding | {1e3 * rp:.1f} | {1e3 * op32:.1f} ({rp / op32:.2f}x) | "
                 f"{1e3 * opd:.1f} ({rp / opd:.2f}x) | >= 3x | {'yes' if rp / opd >= 3 else 'no'} |")
    eff32, effd = flops / o32 / peak["fp32"], flops / od / peak.get(d, peak["fp32"])
    lines.append(f"| encoder GFLOP/s (of {flops / 1e9:.0f} GFLOP) / matmul peak | {flops / r_enc / 1e9:.0f} / "
                 f"{peak['fp32'] / 1e9:.0f} ({flops / r_enc / peak['fp32']:.0%}) | {flops / o32 / 1e9:.0f} / "
                 f"{peak['fp32'] / 1e9:.0f} ({eff32:.0%}) | {flops / od / 1e9:.0f} / {peak.get(d, peak['fp32']) / 1e9:.0f} "
                 f"({effd:.0%}) | >= 75% | {'yes' if effd >= 0.75 else 'no'} |")
    lines += ["", f"Encoder passes per case: {len(same['encoder_all_s']['ref_fp32'])}; all times (s): "
              + "; ".join(f"{k} {', '.join(f'{t:.2f}' for t in v)}" for k, v in same["encoder_all_s"].items()) + ".",
              f"Embedding max abs difference ours fp32 vs reference: {same['embedding_maxdiff_fp32']:.2e}."]
    if "mask_disagreement" in same:
        m = same["mask_disagreement"]
        lines.append(f"Mask disagreement {d} vs fp32 (best mask, {m['n_prompts']} point/box prompts on a 1024 px image, "
                     f"embedding and decoder both in {d}): mean {m['mean']:.3%}, max {m['max']:.3%} (target < 0.5%).")
    lines += ["", "## Fresh process per case, as a user runs it (`set_image` on a 1024 px image)", "",
              "| case | precision | allocator | load s | 1st set_image s | 2nd s | sys s | page faults | "
              "RSS after load | peak during encode | RSS after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, u in users.items():
        t = u["set_image_s"]
        lines.append(f"| {name} | {u['precision']} | {u.get('allocator_env', '')} | {u['load_s']:.1f} | {t[0]:.2f} | "
                     f"{t[-1]:.2f} | {u['sys_s']:.1f} | {u['minor_faults']:,} | {gb(u['rss_model'])} | "
                     f"{gb(u['peak_rss'])} | {gb(u['rss_after'])} |")
    ref_u, ours_u = users.get("reference"), users.get("ours")
    if ref_u and ours_u:
        ratio = min(ref_u["set_image_s"]) / min(ours_u["set_image_s"])
        lines += ["", f"As a user sees it (fastest set_image of each, own defaults): ours {ratio:.2f}x the reference "
                  f"(target >= 3x: {'met' if ratio >= 3 else 'not met'}). Each row ran alone, at different moments, so "
                  "machine load can differ between rows; load averages: "
                  + "; ".join(f"{k} {u['load'][0]:.1f}" for k, u in users.items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 encoder pass per case, 5 decoder calls, fewer runs")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_model.md"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, work = args.child[0], Path(args.child[1])
        if kind == "same":
            result = same_process(work, int(args.child[2]), int(args.child[3]))
        else:
            prec = None if args.child[3] == "auto" else args.child[3]
            result = user_run(work, args.child[2], prec, int(args.child[4]))
        print(json.dumps(result))
        return

    from oracle import build_reference, randomize

    reps, calls, passes = (1, 5, 2) if args.quick else (3, 20, 2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        ref = build_reference("vit_b")
        randomize(ref, seed=1)
        torch.save(ref.state_dict(), work / "vit_b_random.pt")
        del ref
        print("same-process run ...", flush=True)
        same = child(["same", tmp, str(reps), str(calls)])
        cases = [("reference", "ref", "fp32", "glibc default"), ("ours", "ours", "auto", "library default"),
                 ("ours fp32", "ours", "fp32", "library default")]
        if not args.quick:
            cases += [("ours, glibc default malloc", "ours", "auto", "glibc default"),
                      ("ours, MALLOC_MMAP_MAX_=0", "ours", "auto", "MALLOC_MMAP_MAX_=0"),
                      ("reference, MALLOC_MMAP_MAX_=0", "ref", "fp32", "MALLOC_MMAP_MAX_=0")]
        users = {}
        for name, impl, prec, alloc in cases:
            print(f"fresh process: {name} ...", flush=True)
            users[name] = child(["user", tmp, impl, prec, str(passes)], ALLOC_ENVS[alloc])
            users[name]["allocator_env"] = alloc
    text = report(machine(), same, users, args.quick)
    print(text)
    if not args.no_write:
        write_section(Path(args.out), text)
        print(f"written to {args.out}")


BEGIN, END = "<!-- bench_model.py results: begin -->", "<!-- bench_model.py results: end -->"


def write_section(path: Path, text: str) -> None:
    """Replace the generated section of ``path`` (between BEGIN/END markers), keeping the notes
    written around it; a new file gets only the section."""
    section = f"{BEGIN}\n{text}{END}\n"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        section = head + section + rest.partition(END)[2].lstrip("\n")
    path.write_text(section)


if __name__ == "__main__":
    main()
