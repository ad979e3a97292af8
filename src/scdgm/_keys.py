"""Every AnnData key scdgm writes, derived from ``key_added`` in this one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def check_key(name: str, value: Any) -> str:
    """Refuse a key that h5ad cannot store as one name: not a string, empty, or holding ``/``.

    ``write_h5ad`` turns ``"a/b"`` into nested groups and puts ``""`` at the top of ``.uns``, so such
    keys would not read back as written.
    """
    if not isinstance(value, str) or not value or "/" in value:
        msg = f"{name}={value!r} is not a usable key: pass a non-empty string without '/' (h5ad reads '/' as nesting)."
        raise ValueError(msg)
    return value


class _Stem:
    """Checks the stem of every keys class on construction, before a tool does any work."""

    stem: str

    def __post_init__(self) -> None:
        check_key("key_added", self.stem)


@dataclass(frozen=True)
class ModelKeys(_Stem):
    """Keys written by a model-training tool (``tl.vae`` and the models built on it)."""

    stem: str

    @property
    def obsm(self) -> str:
        """Latent representation: ``.obsm["X_<stem>"]``."""
        return f"X_{self.stem}"

    @property
    def uns(self) -> str:
        """Params, history, metrics and the stored model: ``.uns["<stem>"]``."""
        return self.stem

    def embedding(self, method: str) -> str:
        """2-D view of the latent space cached by ``pl.latent``: ``.obsm["X_<stem>_<method>"]``."""
        return f"X_{self.stem}_{method}"

    @property
    def denoised_layer(self) -> str:
        """Denoised expression from ``tl.denoise``: ``.layers["<stem>_denoised"]``."""
        return f"{self.stem}_denoised"


@dataclass(frozen=True)
class LoadingsKeys(_Stem):
    """Keys written by ``tl.ldvae_loadings``."""

    stem: str

    @property
    def varm(self) -> str:
        """Gene loadings (genes x factors): ``.varm["<stem>_loadings"]``."""
        return f"{self.stem}_loadings"

    @property
    def varm_unrotated(self) -> str:
        """Loadings before any rotation: ``.varm["<stem>_loadings_unrotated"]``."""
        return f"{self.stem}_loadings_unrotated"

    @property
    def obsm(self) -> str:
        """Factor values per cell: ``.obsm["X_<stem>"]``."""
        return f"X_{self.stem}"

    @property
    def obsm_unrotated(self) -> str:
        """Factor values before any rotation: ``.obsm["X_<stem>_unrotated"]``."""
        return f"X_{self.stem}_unrotated"

    @property
    def uns(self) -> str:
        """Params and top genes per factor: ``.uns["<stem>"]``."""
        return self.stem


@dataclass(frozen=True)
class AttributionKeys(_Stem):
    """Keys written by ``tl.integrated_gradients``."""

    stem: str

    @property
    def varm(self) -> str:
        """Mean attribution per gene and target: ``.varm["<stem>"]``."""
        return self.stem

    @property
    def varm_abs(self) -> str:
        """Mean absolute attribution per gene and target: ``.varm["<stem>_abs"]``."""
        return f"{self.stem}_abs"

    @property
    def delta(self) -> str:
        """Completeness error per cell: ``.obs["<stem>_delta"]``."""
        return f"{self.stem}_delta"

    def layer(self, target: str) -> str:
        """Per-cell attributions of one target: ``.layers["<stem>_<target>"]``."""
        return f"{self.stem}_{target}"

    @property
    def uns(self) -> str:
        """Params, group means and top genes per target: ``.uns["<stem>"]``."""
        return self.stem


@dataclass(frozen=True)
class ClassifierKeys(_Stem):
    """Keys written by ``tl.bayes_classify``."""

    stem: str

    @property
    def pred(self) -> str:
        """Predicted label: ``.obs["<stem>_pred"]``."""
        return f"{self.stem}_pred"

    @property
    def confidence(self) -> str:
        """Probability of the predicted label: ``.obs["<stem>_confidence"]``."""
        return f"{self.stem}_confidence"

    @property
    def entropy(self) -> str:
        """Total predictive entropy: ``.obs["<stem>_entropy"]``."""
        return f"{self.stem}_entropy"

    @property
    def epistemic(self) -> str:
        """Epistemic uncertainty (mutual information): ``.obs["<stem>_epistemic"]``."""
        return f"{self.stem}_epistemic"

    @property
    def unknown(self) -> str:
        """Flag for cells unlike any training class: ``.obs["<stem>_unknown"]``."""
        return f"{self.stem}_unknown"

    @property
    def unknown_score(self) -> str:
        """How unlike every training class a cell is (higher: less alike): ``.obs["<stem>_unknown_score"]``."""
        return f"{self.stem}_unknown_score"

    @property
    def unknown_pvalue(self) -> str:
        """Conformal p-value of the unknown score against held-out known cells: ``.obs["<stem>_unknown_pvalue"]``."""
        return f"{self.stem}_unknown_pvalue"

    @property
    def proba(self) -> str:
        """Mean class probabilities: ``.obsm["<stem>_proba"]``."""
        return f"{self.stem}_proba"

    @property
    def uns(self) -> str:
        """Params, classes, held-out metrics and the model: ``.uns["<stem>"]``."""
        return self.stem


@dataclass(frozen=True)
class SyntheticKeys(_Stem):
    """Keys written by ``tl.generate`` and ``tl.decode`` (in the new AnnData of synthetic cells)."""

    stem: str

    @property
    def uns(self) -> str:
        """Provenance of the synthetic cells (model key, params, seed): ``.uns["<stem>"]``."""
        return self.stem


@dataclass(frozen=True)
class PerturbationKeys(_Stem):
    """Keys written by ``tl.predict_perturbation`` (in the new AnnData of predicted cells)."""

    stem: str

    @property
    def uns(self) -> str:
        """The latent delta, the groups it was learnt from, the control cells' means and params: ``.uns["<stem>"]``."""
        return self.stem


@dataclass(frozen=True)
class DifferentialExpressionKeys(_Stem):
    """Keys written by ``tl.differential_expression``."""

    stem: str

    @classmethod
    def of_model(cls, model_key: str) -> DifferentialExpressionKeys:
        """The default keys for the model in ``.uns[model_key]``: ``"rank_genes_groups_<model_key>"``."""
        return cls(f"rank_genes_groups_{model_key}")

    @property
    def uns(self) -> str:
        """Results in the layout of ``sc.tl.rank_genes_groups``, and params: ``.uns["<stem>"]``."""
        return self.stem


@dataclass(frozen=True)
class QualityKeys(_Stem):
    """Keys written by ``tl.synthetic_quality``."""

    stem: str

    @property
    def uns(self) -> str:
        """The table of quality metrics, with a real-vs-real control, and params: ``.uns["<stem>"]``."""
        return self.stem
