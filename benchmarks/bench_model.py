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

usage: python benchmarks/bench_model.py [--quick] [--threads N] [--out docs/benchmarks_model.md] [--no-write]
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
THREADS_ENV = "BENCH_MODEL_THREADS"  # passes --threads on to the child processes
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


# -- child: everything in one process ----------------------------------------------------------
def same_process(work: Path, reps: int, calls: int) -> dict[str, Any]:
    from oracle import segment_anything
    from torch.utils.flop_counter import FlopCounterMode

    from napari_sam import load_model
    from napari_sam._allocator import tune_allocator
    from napari_sam.predictor import ImageEmbedding, Predictor, autocast_for, encode_images

    # Identical settings: our encoder's allocator tuning is process-wide, so it is applied
    # before anything runs and the reference benefits from it too.
    allocator = tune_allocator()
    sa = segment_anything()
    ckpt = str(work / "vit_b_random.pt")
    ref = sa.sam_model_registry["vit_b"](checkpoint=ckpt).eval()
    ours = load_model(ckpt)  # default precision
    default = ours.precision
    res: dict[str, Any] = {"default_precision": default, "threads": torch.get_num_threads(),
                           "allocator": allocator}

    img = image((1024, 1024))
    x = ours.normalize_and_pad(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    mats = {p: (torch.randn(4096, 4096, dtype=dt), torch.randn(4096, 4096, dtype=dt))
            for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    def encode_default() -> torch.Tensor:
        with autocast_for(ours):
            return ours.image_encoder(x).float()

    runs: dict[str, Callable[[], Any]] = {
        "matmul_fp32": lambda: torch.mm(*mats["fp32"]),
        "matmul_bf16": lambda: torch.mm(*mats["bf16"]),
        "ref_fp32": lambda: ref.image_encoder(x),
        "ours_fp32": lambda: ours.image_encoder(x),
        f"ours_{default}": encode_default,
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    feats: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for fn in (runs["matmul_fp32"], runs["matmul_bf16"]):
            fn()  # warm up
        for _ in range(reps):  # interleaved: each repeat runs every case once
            for key, fn in runs.items():
                t0 = time.perf_counter()
                feats[key] = fn()
                times[key].append(time.perf_counter() - t0)
        counter = FlopCounterMode(display=False)
        with counter:
            ours.image_encoder(x)
    res["matmul_peak"] = {p: 2 * 4096**3 / statistics.median(times.pop(f"matmul_{p}")) for p in mats}
    res["encoder_s"] = {k: statistics.median(v) for k, v in times.items()}
    res["encoder_all_s"] = times
    res["encoder_flops"] = counter.get_total_flops()
    res["embedding_maxdiff_fp32"] = (feats["ours_fp32"] - feats["ref_fp32"]).abs().max().item()

    # point to mask on a 512 px image, embeddings cached (our decoder runs in fp32 always)
    small = image((512, 512), seed=1)
    ref_pred = sa.SamPredictor(ref)
    ref_pred.set_image(small)
    ours_pred = Predictor(ours)
    ours_pred.set_embedding(encode_images(ours, [small.astype(np.float32)])[0])
    pts = [np.array([[60.0 + (37 * i) % 390, 60.0 + (53 * i) % 390]]) for i in range(calls)]  # inside 512 px
    calls_by = {
        "ref": lambda p: ref_pred.predict(point_coords=p[:, ::-1].copy(), point_labels=np.array([1])),
        "ours": lambda p: ours_pred.predict(points=p, point_labels=[1]),
    }
    lat: dict[str, list[float]] = {k: [] for k in calls_by}
    for fn in calls_by.values():
        fn(pts[0])  # warm up
    for p in pts:
        for key, fn in calls_by.items():
            t0 = time.perf_counter()
            fn(p)
            lat[key].append(time.perf_counter() - t0)
    res["predict_s"] = {k: statistics.median(v) for k, v in lat.items()}

    # mask disagreement: the default-precision embedding against the fp32 one, same prompts
    if default != "fp32":
        preds = {}
        for prec in ("fp32", default):
            preds[prec] = Predictor(ours)
            preds[prec].set_embedding(ImageEmbedding(feats[f"ours_{prec}"].float(), (1024, 1024), (1024, 1024)))
        rng = np.random.default_rng(5)
        fractions = []
        for i in range(24):
            kw: dict[str, Any] = {"points": rng.uniform(40, 984, (1 + i % 3, 2)), "multimask": True}
            if i % 4 == 3:
                r0, c0 = rng.uniform(50, 500, 2)
                box = [r0, c0, r0 + rng.uniform(150, 450), c0 + rng.uniform(150, 450)]
                kw = {"box": box, "multimask": False}
            best = [preds[prec].predict(**kw).masks[0] for prec in ("fp32", default)]
            fractions.append(float((best[0] != best[1]).mean()))
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
    if "Model name" in info:
        info.pop("cpu")
    flags = set(info.pop("Flags", "").split())
    info["bf16/amx"] = ", ".join(sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})) or "none"
    info.update(torch=torch.__version__, python=platform.python_version(), glibc=" ".join(platform.libc_ver()),
                threads=str(torch.get_num_threads()))
    return info


def gb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GB"


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def report(mach: dict[str, str], same: dict[str, Any], users: dict[str, list[dict[str, Any]]],
           quick: bool) -> str:
    d = same["default_precision"]
    threads = f" --threads {os.environ[THREADS_ENV]}" if os.environ.get(THREADS_ENV) else ""
    enc, pred, peak, flops = same["encoder_s"], same["predict_s"], same["matmul_peak"], same["encoder_flops"]
    r_enc, o32, od = enc["ref_fp32"], enc["ours_fp32"], enc[f"ours_{d}"]
    rate = {k: flops / t for k, t in (("ref", r_enc), ("fp32", o32), (d, od))}
    eff = rate[d] / peak[d]
    lines = [
        "# Model benchmark: napari-sam vs segment-anything (random ViT-B weights, same in both)",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} with `python benchmarks/bench_model.py"
        f"{' --quick' if quick else ''}{threads}`.",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in mach.items()) + ".",
        "",
        "## Same process, interleaved (medians)",
        "",
        f"Load average (1/5/15 min) at the end: {', '.join(f'{x:.1f}' for x in same['load'])} on "
        f"{os.cpu_count()} cores shared with other jobs. Allocator (for both): {same['allocator']}; "
        f"torch threads: {same['threads']}; ours' default precision: {d}.",
        "",
        "| measure | reference fp32 | ours fp32 | ours default | target | met |",
        "|---|---|---|---|---|---|",
        f"| encoder, s per 1024 px image | {r_enc:.2f} | {o32:.2f} ({r_enc / o32:.2f}x) | {od:.2f} "
        f"({r_enc / od:.2f}x) | >= 1.6x | {yes(r_enc / od >= 1.6)} |",
        f"| point-to-mask, ms (512 px, cached embedding; our decoder is fp32 in every precision) | "
        f"{1e3 * pred['ref']:.1f} | {1e3 * pred['ours']:.1f} ({pred['ref'] / pred['ours']:.2f}x) | same | >= 3x | "
        f"{yes(pred['ref'] / pred['ours'] >= 3)} |",
        f"| encoder GFLOP/s ({flops / 1e9:.0f} GFLOP per pass) | {rate['ref'] / 1e9:.0f} | {rate['fp32'] / 1e9:.0f} | "
        f"{rate[d] / 1e9:.0f} | | |",
        f"| matmul peak GFLOP/s (4096^2, same run) | {peak['fp32'] / 1e9:.0f} | {peak['fp32'] / 1e9:.0f} | "
        f"{peak[d] / 1e9:.0f} | | |",
        f"| encoder / matmul peak | {rate['ref'] / peak['fp32']:.0%} | {rate['fp32'] / peak['fp32']:.0%} | "
        f"{eff:.0%} | >= 75% | {yes(eff >= 0.75)} |",
        "",
        "Encoder passes (s): " + "; ".join(f"{k} {', '.join(f'{t:.2f}' for t in v)}"
                                          for k, v in same["encoder_all_s"].items()) + ".",
        f"Embedding max abs difference, ours fp32 vs reference: {same['embedding_maxdiff_fp32']:.2e}.",
    ]
    if "mask_disagreement" in same:
        m = same["mask_disagreement"]
        lines.append(f"Mask disagreement, {d} embedding vs fp32 embedding (best mask of {m['n_prompts']} point and "
                     f"box prompts, 1024 px): mean {m['mean']:.3%}, max {m['max']:.3%} of pixels (target < 0.5%).")
    lines += ["", "## Fresh process per run, as a user runs it (`set_image` on a 1024 px image)", "",
              "Cold: the first `set_image` of a process; warm: the later ones. Best over the runs of a case; "
              "the reference and ours alternate so that both meet similar load.", "",
              "| case | precision | allocator | runs | load s | cold s | warm s | sys s / call | page faults / call "
              "| RSS after load | peak during encode | RSS after | load avg |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best = {}
    for name, runs in users.items():
        u, n_calls = runs[0], sum(len(r["set_image_s"]) for r in runs)
        cold = min(r["set_image_s"][0] for r in runs)
        warm = min(t for r in runs for t in r["set_image_s"][1:]) if n_calls > len(runs) else cold
        best[name] = min(cold, warm)
        lines.append(
            f"| {name} | {u['precision']} | {u['allocator_env']} | {len(runs)} | {u['load_s']:.1f} | {cold:.2f} | "
            f"{warm:.2f} | {sum(r['sys_s'] for r in runs) / n_calls:.2f} | "
            f"{sum(r['minor_faults'] for r in runs) // n_calls:,} | {gb(u['rss_model'])} | "
            f"{gb(max(r['peak_rss'] or 0 for r in runs))} | {gb(u['rss_after'])} | "
            f"{', '.join(format(r['load'][0], '.1f') for r in runs)} |")
    if "reference" in best and "ours" in best:
        ratio = best["reference"] / best["ours"]
        lines += ["", f"As a user sees it (best `set_image`, each with its own defaults): ours {ratio:.2f}x the "
                  f"reference; target >= 3x: {yes(ratio >= 3)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 encoder pass per case, 5 decoder calls, fewer runs")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_model.md"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in every run (default: torch's own choice, as a user gets); 1 gives "
                    "ratios that other jobs on shared cores disturb less")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        os.environ[THREADS_ENV] = str(args.threads)
    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
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

    reps, calls, passes, rounds = (1, 5, 2, 1) if args.quick else (3, 20, 2, 2)
    cases = {"reference": ("ref", "fp32", "glibc default"), "ours": ("ours", "auto", "library default"),
             "ours fp32": ("ours", "fp32", "library default")}
    if not args.quick:
        cases.update({"ours, glibc default malloc": ("ours", "auto", "glibc default"),
                      "ours, MALLOC_MMAP_MAX_=0": ("ours", "auto", "MALLOC_MMAP_MAX_=0"),
                      "reference, MALLOC_MMAP_MAX_=0": ("ref", "fp32", "MALLOC_MMAP_MAX_=0")})
    order = [name for r in range(rounds) for name in cases if r == 0 or name in ("reference", "ours")]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ref = build_reference("vit_b")
        randomize(ref, seed=1)
        torch.save(ref.state_dict(), Path(tmp) / "vit_b_random.pt")
        del ref
        print("same-process run ...", flush=True)
        same = child(["same", tmp, str(reps), str(calls)])
        users: dict[str, list[dict[str, Any]]] = {}
        for name in order:
            impl, prec, alloc = cases[name]
            print(f"fresh process: {name} ...", flush=True)
            run = child(["user", tmp, impl, prec, str(passes)], ALLOC_ENVS[alloc])
            users.setdefault(name, []).append({**run, "allocator_env": alloc})
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
