"""Figures of a run, as the CS231n notebook draws them. matplotlib's object API, no pyplot, so
nothing here needs a display or changes a notebook's backend; a Figure shows itself in Jupyter."""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from twolayer_xp.io.files import atomic_write

# Fixed margins (fractions of the figure) for the figures a run or a sweep writes: their sizes and
# fonts are fixed, so matplotlib's constrained layout (40-50% of their drawing time) buys nothing.
MARGINS = {"left": 0.1, "right": 0.97, "bottom": 0.08, "top": 0.94}


SMOOTHING_POINTS = 200  # the smoothed loss averages windows of len / this many iterations


def history_figure(
    history: dict, title: str = "", *, resumed_at: int | None = None, log_scale: bool | None = None
) -> Figure:
    """Loss per iteration (top) and minibatch-train / val accuracy per epoch (bottom).

    The raw losses are drawn faint and a moving average over them solid, so the curve reads at
    any length; resumed_at marks where a resumed run continued; log_scale (None: when the loss
    spans more than 10x) puts the loss on a log axis."""
    fig = Figure(figsize=(8, 7))
    loss_ax, acc_ax = fig.subplots(2, 1, gridspec_kw=MARGINS | {"hspace": 0.35})
    losses = np.asarray(history["loss_history"], dtype=np.float64)
    loss_ax.plot(losses, linewidth=0.5, alpha=0.3, color="tab:blue", label="minibatch loss", rasterized=True)
    window = max(1, len(losses) // SMOOTHING_POINTS)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        loss_ax.plot(np.arange(window - 1, len(losses)), smooth, color="tab:blue", label=f"mean of {window}")
    finite = losses[np.isfinite(losses) & (losses > 0)]
    if log_scale is None:
        log_scale = finite.size > 0 and finite.max() > 10 * finite.min()
    if log_scale and finite.size:
        loss_ax.set_yscale("log")
    if resumed_at is not None:
        loss_ax.axvline(resumed_at, color="tab:red", linestyle="--", label=f"resumed at {resumed_at}")
    loss_ax.set(title="Loss history" + (f" ({title})" if title else ""), xlabel="Iteration", ylabel="Loss")
    loss_ax.legend(loc="upper right")
    acc_ax.plot(history["train_acc_history"], label="train (minibatch)", marker=".")
    acc_ax.plot(history["val_acc_history"], label="val", marker=".")
    acc_ax.set(title="Classification accuracy history", xlabel="Epoch", ylabel="Accuracy")
    acc_ax.legend()
    return fig


def visualize_grid(images: np.ndarray, ubound: float = 255.0, padding: int = 1) -> np.ndarray:
    """Tile (N, H, W[, C]) images into one grid, each rescaled to [0, ubound] (CS231n's helper)."""
    n, h, w = images.shape[:3]
    channels = images.shape[3:]
    side = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / side))
    grid = np.zeros((rows * (h + padding) - padding, side * (w + padding) - padding, *channels))
    for k in range(n):
        row, col = divmod(k, side)
        img = images[k]
        low, high = np.min(img), np.max(img)
        scaled = np.clip(ubound * (img - low) / (high - low), 0, ubound) if high > low else np.zeros_like(img)
        grid[row * (h + padding) : row * (h + padding) + h, col * (w + padding) : col * (w + padding) + w] = (
            scaled
        )
    return grid


def weights_figure(W1: np.ndarray, image_shape: tuple, title: str = "First-layer weights") -> Figure:
    """W1 (D, H) shown as H images of ``image_shape`` ((8, 8) or (32, 32, 3)) in one grid."""
    images = np.asarray(W1).T.reshape((W1.shape[1], *image_shape))
    grid = visualize_grid(images, padding=1)
    fig = Figure(figsize=(7, 7))
    ax = fig.subplots(gridspec_kw={"left": 0.02, "right": 0.98, "bottom": 0.02, "top": 0.94})
    if grid.ndim == 2:
        ax.imshow(grid.astype("uint8"), cmap="gray", interpolation="nearest")
    else:
        ax.imshow(grid.astype("uint8"), interpolation="nearest")
    ax.set(
        title=f"{title}: {W1.shape[1]} hidden units, each as a {'x'.join(map(str, image_shape[:2]))} image"
    )
    ax.axis("off")
    return fig


def save(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """Save atomically (temp file + rename), like every file a run writes."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def sweep_heatmap(results: list[dict], value: str = "val_acc") -> Figure:
    """Validation accuracy over the learning-rate x regularization grid of ``grid.grid_search``."""
    lrs = sorted({r["learning_rate"] for r in results})
    regs = sorted({r["reg"] for r in results})
    grid = np.full((len(lrs), len(regs)), np.nan)
    for r in results:
        grid[lrs.index(r["learning_rate"]), regs.index(r["reg"])] = r[value]
    fig = Figure(figsize=(1.6 * len(regs) + 3, 1.0 * len(lrs) + 2.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    middle = (np.nanmin(grid) + np.nanmax(grid)) / 2  # white text on the dark half of viridis
    for i, j in np.ndindex(*grid.shape):
        color = "white" if grid[i, j] < middle else "black"
        ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color=color)
    ax.set_xticks(range(len(regs)), [f"{v:.0e}" for v in regs])
    ax.set_yticks(range(len(lrs)), [f"{v:.0e}" for v in lrs])
    ax.set(
        xlabel="regularization strength (reg)",
        ylabel="learning rate",
        title=f"{value.replace('_', ' ')} per setting",
    )
    fig.colorbar(image, ax=ax, label=value.replace("_", " "))
    return fig


def throughput_figure(rows: list[dict], title: str = "Training-step throughput") -> Figure:
    """Samples/s per device, from ``bench.timing.compare_devices``."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    labels = [r["label"] for r in rows]
    values = [r["samples_per_second"] for r in rows]
    bars = ax.bar(labels, values, color=["tab:blue", "tab:green", "tab:orange"][: len(rows)])
    ax.bar_label(bars, [f"{r['samples_per_second']:,.0f}\n({r['ms_per_step']:.2f} ms/step)" for r in rows])
    ax.set(xlabel="device", ylabel="samples / s", title=title)
    ax.margins(y=0.2)
    return fig


def sweep_figure(done: list, diverged: list, best, lr_range, reg_range, study: str, pruned=()) -> Figure:
    """A sweep's trials: learning rate x reg on log axes coloured by val accuracy, and the best
    so far by trial number. done, diverged, pruned: (lr, reg, val_accuracy, number[, epoch])
    per trial, a pruned one's epoch the step it stopped at (its ring's shade); best:
    one such tuple or None; *_range: the searched (low, high)."""
    fig = Figure(figsize=(12, 5))
    space, progress = fig.subplots(
        1, 2, gridspec_kw=MARGINS | {"left": 0.07, "bottom": 0.12, "top": 0.92, "wspace": 0.25}
    )
    if done:
        lr, reg, value = list(zip(*done, strict=True))[:3]
        points = space.scatter(lr, reg, c=value, cmap="viridis", edgecolors="k", linewidths=0.3)
        fig.colorbar(points, ax=space, label="validation accuracy")
        space.scatter(best[0], best[1], marker="*", s=300, facecolors="none", edgecolors="red",
                      label=f"best (#{best[3]})")  # fmt: skip
    if diverged:
        lr, reg = list(zip(*diverged, strict=True))[:2]
        space.scatter(lr, reg, marker="x", color="red", label="diverged")
    if pruned:
        _pruned_points(space, pruned)
    space.set(xscale="log", yscale="log", xlim=_padded(lr_range), ylim=_padded(reg_range), xlabel="learning rate",
              ylabel="regularization strength (reg)",
              title=f"{study}: {len(done)} completed, {len(pruned)} pruned trials")  # fmt: skip
    for axis, (low, high) in ((space.xaxis, lr_range), (space.yaxis, reg_range)):
        if high >= 100 * low:  # decades labelled: minor ticks (half the figure's drawing time) add nothing
            axis.set_minor_locator(NullLocator())
    if done or diverged or pruned:
        space.legend(loc="best")
    done = sorted(done, key=lambda point: point[3])
    numbers, values = [p[3] for p in done], [p[2] for p in done]
    running = [max(values[: i + 1]) for i in range(len(values))]
    progress.plot(numbers, values, ".", color="gray", label="trial")
    progress.step(numbers, running, where="post", color="tab:blue", label="best so far")
    progress.set(xlabel="trial number", ylabel="validation accuracy", title="Best validation accuracy so far")
    progress.legend(loc="lower right")
    return fig


PRUNED_GROUPS = 4  # legend entries for pruned trials at most: epochs beyond that share ranges


def _pruned_points(ax, pruned: list) -> None:
    """Pruned trials as rings, one shade of grey per epoch they were stopped at (lighter:
    earlier), named in the legend with a count: a pruner stops trials at a few epochs only (its
    rungs or report points), and a label beside each of a hundred rings would bury the points.
    More than PRUNED_GROUPS epochs (median's or Hyperband's ~10 report points) are shown as that
    many ranges of epochs, so that the shades stay apart and the legend small."""
    epochs = sorted({p[4] for p in pruned})
    groups = [list(g) for g in np.array_split(epochs, min(len(epochs), PRUNED_GROUPS))]
    shades = np.linspace(0.75, 0.3, len(groups)) if len(groups) > 1 else [0.45]
    for group, shade in zip(groups, shades, strict=True):
        lr, reg = zip(*[(p[0], p[1]) for p in pruned if group[0] <= p[4] <= group[-1]], strict=True)
        when = f"epoch {group[0]}" if len(group) == 1 else f"epochs {group[0]}-{group[-1]}"
        ax.scatter(lr, reg, marker="o", facecolors="none", edgecolors=f"{shade:.2f}", linewidths=0.8,
                   label=f"pruned at {when} ({len(lr)})")  # fmt: skip


def _padded(bounds) -> tuple[float, float]:
    """A log-axis range a little wider than the search range, so edge points show whole."""
    return (bounds[0] / 1.25, bounds[1] * 1.25)
