"""Variants of ``tl.bayes_classify`` on pbmc68k: 5-fold CV and, optionally, the unseen-type test.

The same folds, inputs and metrics as ``bayes_pbmc.py``, but the classifier is rebuilt here from the
package's pieces (module, engine, split and seeding as in ``tl.bayes_classify``) so that variants the API
does not offer can be measured: refitting on all labelled cells, hyper-parameters chosen on the
validation split, temperature scaling, ensembles of fits. With no overrides it reproduces the
``bayes_pbmc.py`` figures of the defaults. Results of the variants tried are in ``README.md``.

    OMP_NUM_THREADS=1 python bayes_variants.py NAME '{"n_ens": 5, "beta": 0.3}' [--unseen] [--vae-cache F]

Appends to ``results/bayes_variants.jsonl`` and ``results/bayes_variants.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent / "results"

DEFAULTS = {
    "n_hidden": 32,
    "n_layers": 1,
    "prior_scale": 3.0,
    "beta": 1.0,
    "val_frac": 0.2,
    "max_epochs": None,
    "kl_warmup": None,
    "batch_size": 128,
    "lr": 1e-2,
    "patience": 30,
    "init_scale": 0.1,
    "num_samples": 200,
    "n_ens": 1,
    "ens_split": False,  # each member its own split seed
    "refit": False,
    "grid": None,  # list of dicts of overrides, chosen by val NLL
    "select": "nll",
    "early_stopping": True,
    "eb": False,
    "temp": False,
    "rotate": True,  # False: a guide independent per feature, as tl.bayes_classify had before the principal axes
    "seed": 0,
}


def eb_module_class():
    import pyro.distributions as dist
    import torch

    from scdgm.modules import BayesianClassifierModule

    class EBModule(BayesianClassifierModule):
        """Per-layer prior scales learned by maximising the ELBO (type-II ML)."""

        def __init__(self, *a, eb_bias=True, **k):
            super().__init__(*a, **k)
            self.eb_bias = eb_bias
            self.log_prior = torch.nn.ParameterDict()
            for name in self.model.site_names:
                if name.startswith("bias") and not eb_bias:
                    continue
                scale = self.model.prior(name).base_dist.scale.flatten()[0]
                self.log_prior[name] = torch.nn.Parameter(torch.log(scale.detach().clone()))

        def kl_divergence(self):
            total = torch.zeros(())
            for name in self.model.site_names:
                loc, scale = self.guide_loc_scale(name)
                if name in self.log_prior:
                    p = dist.Normal(torch.zeros_like(loc), self.log_prior[name].exp().expand_as(loc))
                else:
                    p = self.model.prior(name).base_dist
                total = total + torch.distributions.kl_divergence(dist.Normal(loc, scale), p).sum()
            return total

    return EBModule


def member(data, codes, train_idx, val_idx, cfg, seed):
    import torch

    from scdgm.data import BatchStore, MiniBatches, feature_stats, principal_axes
    from scdgm.modules import BayesianClassifierModule
    from scdgm.modules._bayes import SD_FLOOR
    from scdgm.train import default_kl_warmup_epochs, default_max_epochs, fit, seeded

    n_classes = int(codes.max()) + 1
    mean, sd = feature_stats(data, train_idx)
    bs = min(cfg["batch_size"], len(train_idx))
    # As in tl.bayes_classify: the guide is independent along the principal axes of the training cells.
    axes = principal_axes(data, train_idx, mean, sd, sd_floor=SD_FLOOR) if cfg["rotate"] else None
    with seeded(seed, "cpu"):
        cls = eb_module_class() if cfg["eb"] else BayesianClassifierModule
        extra = {"eb_bias": cfg["eb"] != "weights"} if cfg["eb"] else {}
        module = cls(
            data.n_vars,
            n_classes,
            n_hidden=cfg["n_hidden"],
            n_layers=cfg["n_layers"],
            prior_scale=cfg["prior_scale"],
            n_train=len(train_idx),
            init_scale=cfg["init_scale"],
            n_components=None if axes is None else axes.shape[1],
            **extra,
        )
        rotation = None if axes is None else torch.as_tensor(axes)
        module.set_standardization(torch.as_tensor(mean), torch.as_tensor(sd), rotation)
        me = default_max_epochs(len(train_idx)) if cfg["max_epochs"] is None else cfg["max_epochs"]
        kw = default_kl_warmup_epochs(me) if cfg["kl_warmup"] is None else min(cfg["kl_warmup"], me)
        store = BatchStore.from_prepared(data, "cpu")
        train = MiniBatches(store, train_idx, batch_size=bs, shuffle=True, seed=seed, drop_last=len(train_idx) > bs)
        validation = MiniBatches(store, val_idx, batch_size=4096, shuffle=False) if len(val_idx) else None
        fitted = fit(
            module,
            train,
            validation,
            max_epochs=me,
            lr=cfg["lr"],
            weight_decay=0.0,
            beta=cfg["beta"],
            kl_warmup_epochs=kw,
            early_stopping=cfg["early_stopping"],
            patience=cfg["patience"],
            device="cpu",
            progress_bar=False,
        )
    return module, fitted, kw


def draw_logits(module, data, num_samples, seed):
    import torch

    from scdgm.data import dense_rows
    from scdgm.modules._bayes import mlp_logits
    from scdgm.train import seeded

    module.eval()
    x = torch.as_tensor(dense_rows(data, np.arange(data.n_obs)))
    with seeded(seed, "cpu"), torch.no_grad():
        weights = module.draw_weights(num_samples)
        return mlp_logits(module.standardize(x), weights, module.n_layers)


def summary_from_logits(logits, T=1.0):
    import torch

    log_p = torch.log_softmax(logits / T, dim=-1)
    p = log_p.exp()
    ent = -(p * log_p).sum(-1).mean(0)
    return torch.cat([p.mean(0), ent.unsqueeze(-1)], dim=-1).numpy()


def fit_temperature(logits, idx, y):
    import torch

    lv = logits[:, idx]
    yt = torch.as_tensor(y)
    best = (np.inf, 1.0)
    for T in np.exp(np.linspace(np.log(0.05), np.log(5), 101)):
        lp = torch.logsumexp(torch.log_softmax(lv / T, -1), 0) - np.log(lv.shape[0])
        nll = float(-lp[torch.arange(len(y)), yt].mean())
        if nll < best[0]:
            best = (nll, float(T))
    return best[1]


def summary(module, data, num_samples, seed):
    return summary_from_logits(draw_logits(module, data, num_samples, seed))


def classify(adata, cfg, seed=0):
    """Returns (result dict over all cells, info)."""
    from scdgm._metrics import negative_log_likelihood, uncertainty_from_summary
    from scdgm.data import prepare_data, split_indices

    data = prepare_data(adata, use_rep=cfg["use_rep"], labels_key="masked_label", allow_missing_labels=True)
    codes = data.covariates["labels"]
    info = {"epochs": [], "chosen": None}
    summaries, all_logits = [], []
    for m in range(cfg["n_ens"]):
        mseed = seed + m
        split_seed = mseed if cfg["ens_split"] else seed
        train_idx, val_idx = split_indices(
            data.n_obs, validation_fraction=cfg["val_frac"], seed=split_seed, stratify=codes
        )
        cands = cfg["grid"] or [{}]
        best = None
        for over in cands:
            c = {**cfg, **over}
            module, fitted, kw = member(data, codes, train_idx, val_idx, c, mseed)
            s = summary(module, data, c["num_samples"], mseed)
            if len(cands) > 1:
                val_nll = negative_log_likelihood(s[val_idx, :-1], codes[val_idx])
            else:
                val_nll = 0.0
            if best is None or val_nll < best[0]:
                best = (val_nll, over, module, fitted, kw, s)
        val_nll, over, module, fitted, kw, s = best
        info["chosen"] = (info["chosen"] or []) + [over]
        info["epochs"].append(fitted.best_epoch + 1)
        if cfg["refit"]:
            c = {**cfg, **over, "max_epochs": max(fitted.best_epoch + 1, kw), "kl_warmup": kw, "early_stopping": False}
            all_idx = np.flatnonzero(codes >= 0)
            module, fitted2, _ = member(data, codes, all_idx, np.array([], dtype=np.int64), c, mseed)
            s = summary(module, data, c["num_samples"], mseed)
        if cfg["temp"]:
            all_logits.append(draw_logits(module, data, cfg["num_samples"], mseed))
        summaries.append(s)
    if cfg["temp"]:
        import torch

        logits = torch.cat(all_logits, 0)
        T = fit_temperature(logits, val_idx, codes[val_idx])
        info["T"] = round(T, 3)
        summaries = [summary_from_logits(logits, T)]
    res = uncertainty_from_summary(np.mean(summaries, axis=0))
    return res, info


def load(vae_cache: str | None):
    from bayes_pbmc import _prepare

    return _prepare(vae_cache)[0]


def masked(adata, labels, hidden):
    import pandas as pd

    m = np.asarray(labels, dtype=object).copy()
    m[hidden] = None
    work = adata.copy()
    work.obs["masked_label"] = pd.Categorical(m)
    return work


def reorder(res, work, classes):
    trained = list(work.obs["masked_label"].cat.categories)
    proba = np.zeros((work.n_obs, len(classes)))
    for j, name in enumerate(trained):
        proba[:, classes.index(name)] = res["proba"][:, j]
    return proba


def run_api(work, cfg, key):
    import scdgm as dgm

    dgm.tl.bayes_classify(work, "masked_label", use_rep=cfg["use_rep"], key_added=key, seed=0, **cfg.get("api", {}))
    return {
        "proba": work.obsm[f"{key}_proba"],
        "epistemic": work.obs[f"{key}_epistemic"].to_numpy(),
    }, {"epochs": [int(work.uns[key]["metrics"].get("best_epoch", -1))]}


def part_cv(adata, names, cfg, api):
    from sklearn.model_selection import StratifiedKFold

    from scdgm._metrics import classification_metrics

    labels = adata.obs["cell_type"].astype(str).to_numpy()
    classes = sorted(set(labels))
    codes = np.array([classes.index(v) for v in labels])
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(codes)), codes))
    out = {}
    for name in names:
        c = {**cfg, "use_rep": None if name == "genes" else name}
        pooled = np.zeros((len(codes), len(classes)))
        t0 = time.perf_counter()
        infos = []
        for _, test in folds:
            hidden = np.zeros(len(codes), bool)
            hidden[test] = True
            work = masked(adata, labels, hidden)
            res, info = run_api(work, c, "cv") if api else classify(work, c, c["seed"])
            pooled[test] = reorder(res, work, classes)[test]
            infos.append(info)
        m = classification_metrics(pooled, codes)
        m["conf"] = float(pooled.max(1).mean())
        m["sec"] = (time.perf_counter() - t0) / 5
        m["epochs"] = [i["epochs"] for i in infos]
        m["chosen"] = [i.get("chosen") for i in infos]
        m["T"] = [i.get("T") for i in infos]
        out[name] = m
        print(
            f"  cv {name}: acc {m['accuracy']:.3f} ece {m['ece']:.3f} nll {m['nll']:.3f} conf {m['conf']:.3f} "
            f"({m['sec']:.1f} s/fold) epochs {m['epochs']} chosen {m['chosen']} T {m['T']}",
            flush=True,
        )
    return out


def part_unseen(adata, names, cfg, api):
    from bayes_pbmc import unseen_splits

    from scdgm._metrics import auroc

    labels = adata.obs["cell_type"].astype(str).to_numpy()
    out = {}
    for name in names:
        c = {**cfg, "use_rep": None if name == "genes" else name}
        aucs = []
        for _left_out, unseen, test_known, hidden in unseen_splits(labels):
            work = masked(adata, labels, hidden)
            res, _ = run_api(work, c, "u") if api else classify(work, c, c["seed"])
            scored = np.concatenate([test_known, np.flatnonzero(unseen)])
            aucs.append(auroc(res["epistemic"][scored], unseen[scored]))
        out[name] = {"auroc": float(np.mean(aucs)), "per_type": aucs}
        print(f"  unseen {name}: mean AUROC epistemic {np.mean(aucs):.3f} {np.round(aucs, 3).tolist()}", flush=True)
    return out


def main():
    import torch

    import scdgm as dgm

    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("cfg", nargs="?", default="{}")
    p.add_argument("--unseen", action="store_true")
    p.add_argument("--no-cv", action="store_true")
    p.add_argument("--inputs", nargs="+", default=["genes", "X_vae"])
    p.add_argument("--api", action="store_true")
    p.add_argument("--vae-cache", default=None, help="h5ad to reuse / store pbmc68k with X_vae (see bayes_pbmc.py)")
    a = p.parse_args()
    torch.set_num_threads(1)
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 0
    over = json.loads(a.cfg)
    cfg = {**DEFAULTS, **over}
    adata = load(a.vae_cache)
    print(f"== {a.name} {over}", flush=True)
    t0 = time.perf_counter()
    res = {"name": a.name, "cfg": over, "api": a.api}
    if not a.no_cv:
        res["cv"] = part_cv(adata, a.inputs, cfg, a.api)
    if a.unseen:
        res["unseen"] = part_unseen(adata, a.inputs, cfg, a.api)
    res["minutes"] = (time.perf_counter() - t0) / 60
    with open(HERE / "bayes_variants.jsonl", "a") as f:
        f.write(json.dumps(res, default=float) + "\n")
    # log line
    cells = []
    for name in a.inputs:
        s = f"{name}: "
        if "cv" in res:
            m = res["cv"][name]
            s += f"{m['accuracy']:.3f}/{m['ece']:.3f}/{m['nll']:.3f}"
        if "unseen" in res:
            s += f" AUROC {res['unseen'][name]['auroc']:.3f}"
        cells.append(s)
    line = (
        f"| {a.name} | `{json.dumps(over)}`{' (api)' if a.api else ''} | "
        + " | ".join(cells)
        + f" | {res['minutes']:.1f} min |"
    )
    with open(HERE / "bayes_variants.md", "a") as f:
        f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
