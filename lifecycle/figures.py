"""Every PNG image the stages draw, in one place (matplotlib, Agg backend: renders offline).

Each function takes the plot data its stage already computed and writes images; none computes
a metric. Images are written without a software stamp so identical data gives identical bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def feature_importance(rows: list[dict], path: str | Path, top: int = 30) -> None:
    """featurize's PNG bar chart of the `top` most informative features (renders offline)."""
    plt = _pyplot()
    shown = rows[:top][::-1]
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.25 * len(shown)))
    ax.barh([r["feature"] for r in shown], [r["importance"] for r in shown],
            color=["tab:blue" if r["selected"] else "tab:gray" for r in shown])
    shown_of = f"top {top} of {len(rows)} features" if len(rows) > top else f"{len(rows)} features"
    ax.set_title(f"Feature importance: mutual information with the target on train\n"
                 f"({shown_of}; grey: not selected)", fontsize=9)
    ax.set_xlabel("mutual information (nats)")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def evaluation_figures(data: dict[str, list[dict]], pred, threshold: float | None,
                       conf: dict | None, outdir, names: dict | None = None) -> list[str]:
    """evaluate's PNG images of its plot data (`pred`: evaluation.Predictions on test);
    returns the file names."""
    plt = _pyplot()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        fig.subplots_adjust(left=0.17, bottom=0.13, right=0.96, top=0.91, wspace=0.3)
        fig.savefig(outdir / f"{name}.png", dpi=90, metadata={"Software": None})
        plt.close(fig)
        written.append(f"{name}.png")

    def line(name, rows, x, y, title, diagonal=False, marker=None):
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot([p[x] for p in rows], [p[y] for p in rows], marker=marker)
        if diagonal:
            low = min(min(p[x] for p in rows), min(p[y] for p in rows))
            high = max(max(p[x] for p in rows), max(p[y] for p in rows))
            ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel=x, ylabel=y, title=title)
        save(fig, name)

    if data["roc"]:
        line("roc", data["roc"], "fpr", "tpr", "ROC (test)", diagonal=True)
        line("precision_recall", data["precision_recall"], "recall", "precision",
             "Precision-recall (test)")
    if data["calibration"]:
        line("calibration", data["calibration"], "predicted", "observed", "Calibration (test)",
             diagonal=True, marker="o")
    if data["value_by_threshold"]:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        rows = data["value_by_threshold"]
        ax.plot([p["threshold"] for p in rows], [p["value"] for p in rows])
        ax.axvline(threshold, color="red", linestyle="--", label=f"chosen {threshold:.3f}")
        ax.axhline(0, color="grey", linewidth=1)
        ax.set(xlabel="threshold", ylabel="campaign value", title="Value by threshold (test)")
        ax.legend()
        save(fig, "value_by_threshold")
    if conf:
        if "tp" in conf:
            labels = [str((names or {}).get(v, v)) for v in (0, 1)]
            matrix = np.array([[conf["tn"], conf["fp"]], [conf["fn"], conf["tp"]]])
        else:
            labels = list(conf)
            matrix = np.array([[conf[a][p] for p in labels] for a in labels])
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > matrix.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (test)")
        save(fig, "confusion")
    if pred.task == "regression":
        rng = np.random.default_rng(0)
        shown = rng.permutation(len(pred.y))[:2000]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
        left.scatter(pred.scores[shown], pred.y[shown], s=6, alpha=0.5)
        low, high = float(pred.y.min()), float(pred.y.max())
        left.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        left.set(xlabel="predicted", ylabel="actual", title="Predicted vs actual (test)")
        right.scatter(pred.scores[shown], (pred.y - pred.scores)[shown], s=6, alpha=0.5)
        right.axhline(0, color="grey", linewidth=1)
        right.set(xlabel="predicted", ylabel="residual", title="Residuals (test)")
        save(fig, "predicted_vs_actual")
    return written


def explain_figures(result: dict, outdir, top: int = 15) -> list[str]:
    """explain's importance.png (permutation, and mean |SHAP| when there is one) and local.png."""
    plt = _pyplot()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    panels = [("Permutation importance", result["importance"], result["importance_std"],
               f"drop in {result['permutation']['scoring']} (validation)")]
    if result["shap"].get("method"):
        panels.append(("Mean |SHAP|", result["shap"]["mean_abs"], None,
                       f"{result['shap']['units']} ({result['shap']['method']})"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (title, values, std, xlabel) in zip(axes[0], panels, strict=True):
        names = list(values)[:top][::-1]
        ax.barh(names, [values[n] for n in names],
                xerr=[std[n] for n in names] if std else None)
        ax.set(title=title, xlabel=xlabel)
        ax.tick_params(axis="y", labelsize=8)
    fig.subplots_adjust(left=0.22, right=0.97, wspace=0.6, bottom=0.12, top=0.92)
    fig.savefig(outdir / "importance.png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    written.append("importance.png")

    samples = result["local"]["samples"]
    if samples:
        fig, axes = plt.subplots(len(samples), 1, figsize=(6.5, 1.9 * len(samples)),
                                 squeeze=False)
        for ax, s in zip(axes[:, 0], samples, strict=True):
            feats = s["top_features"][::-1]
            contrib = [f["contribution"] for f in feats]
            ax.barh([f"{f['feature']} = {_short(f['value'])}" for f in feats], contrib,
                    color=["tab:red" if c > 0 else "tab:blue" for c in contrib])
            if "prediction" not in s:
                said = f"probability {s['probability']:.3f}"
            elif "probability" in s:
                said = f"predicted {s['prediction']} ({s['probability']:.3f})"
            else:
                said = f"predicted {s['prediction']:.4g}"
            ax.set_title(f"{s['customer']}: {said}, actual {_short(s['actual'])}", fontsize=9)
            ax.tick_params(axis="y", labelsize=7)
            ax.axvline(0, color="grey", linewidth=1)
        axes[-1, 0].set_xlabel(f"contribution ({result['local']['units']}, "
                               f"{result['local']['method']})")
        fig.subplots_adjust(left=0.42, right=0.97, hspace=0.6, top=0.95, bottom=0.08)
        fig.savefig(outdir / "local.png", dpi=80, metadata={"Software": None})
        plt.close(fig)
        written.append("local.png")
    return written


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
