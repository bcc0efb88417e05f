"""Why, measured: runs that answer three questions the lesson leaves a learner with.

    python why.py           # both experiments, over seeds 1 to 5
    python why.py memory    # 1. How can a gradient cut at every step build a memory?
    python why.py lesson    # 2. Why does the stateless model end above its floor?
                            # 3. What does the stateful model's score measure?

`memory` trains its own stateful models on the lesson's noise: the lesson's target
(the mean of the last 2 inputs) or the input one step back alone, with the gradient
allowed to cross K steps (K consecutive steps per sample, the state carried between
samples). `lesson` runs the lesson itself, with other epochs and
learning rates, as sweep.py sets them. Runs go --jobs at a time in new processes. Each
experiment writes its runs to OUTPUT_DIR/<experiment>.json, prints its tables as
docs/why.md shows them, and draws OUTPUT_DIR/<experiment>.png.
"""

import argparse
import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import pathlib
import re
import statistics
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent
os.environ.setdefault(
    "TF_CPP_MIN_LOG_LEVEL", "3"
)  # the lesson's settings, before Keras
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
SEEDS = [1, 2, 3, 4, 5]
LAGS = range(9)  # the memory readout: the input k = 0 to 8 steps back


def lesson(values):
    """The lesson run in this process with `values`: what the experiments read of it."""
    import keras
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(ROOT))
    import sweep

    namespace = {"__name__": "__main__"}
    with tempfile.TemporaryDirectory() as folder:
        code = sweep.with_values(
            sweep.LESSON.read_text(), values | {"output_dir": folder}
        )
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, str(sweep.LESSON), "exec"), namespace)
    plt.close("all")
    found = {}
    for name in ("stateful", "stateless"):
        scores = namespace["results"][name]
        residual = scores["residual"][~np.isnan(scores["residual"])]
        found[name] = {
            key: float(scores[key]) for key in ("test_mse", "floor", "recovered")
        }
        found[name] |= dict(mean=float(residual.mean()), sd=float(residual.std()))
    epochs = namespace["history_stateful"]
    found["stateful"]["val_loss"] = [h["val_loss"][0] for h in epochs]
    found["stateless"]["val_loss"] = namespace["history_stateless"]["val_loss"]
    model, (x, y) = namespace["model_stateless"], namespace["train"]
    predicted = model.predict(x, batch_size=values.get("batch_size", 1), verbose=0)
    found["stateless"]["train_mean"] = float(np.mean(y - predicted))
    keras.utils.clear_session()
    return values | found


def data(target, seed):
    """The lesson's noise for `seed`, and a target: "mean" (of this input and the one
    before: the lesson's, with its data bit for bit) or a delay d (the input d steps
    back, alone). Returns the inputs x, the targets y, the best guess from the current
    input alone, every input drawn, and the target's reach back (1, or d)."""
    import keras

    lag = 1 if target == "mean" else target
    keras.utils.set_random_seed(seed)
    noise = np.random.uniform(-0.1, 0.1, 1000 + lag)  # as the lesson draws it
    x = noise[lag:]
    y = (x + noise[lag - 1 : -1]) / 2 if target == "mean" else noise[:-lag]
    guess = x / 2 if target == "mean" else np.zeros_like(x)
    return x, y, guess, noise, lag


def chunks(a, steps):
    """A series as samples of `steps` consecutive values, in time order."""
    return a.reshape(-1, steps, 1)


def model(steps, seed, learning_rate=0.001):
    """A stateful LSTM(20), an output at every step, on batches of one sample of
    `steps` inputs; the lesson's StatefulLSTM, so that it carries its state on every
    backend."""
    import keras

    source = (ROOT / "lstm_stateful.py").read_text()  # the class of its aside's cell
    aside = re.search(r"^class StatefulLSTM\(.*?(?=^\S)", source, re.M | re.S)[0]
    namespace = {"keras": keras}
    exec(aside, namespace)
    StatefulLSTM = namespace["StatefulLSTM"]

    keras.utils.set_random_seed(seed)
    lstm = StatefulLSTM(20, stateful=True, return_sequences=True)
    built = keras.Sequential([keras.Input(batch_shape=(1, steps, 1)), lstm])
    built.add(keras.layers.Dense(1))
    adam = keras.optimizers.Adam(learning_rate)
    built.compile(loss="mse", optimizer=adam, steps_per_execution=100)
    return built


def states(trained, x, seed):
    """The trained LSTM's state (h and c) after each input of x, fed one per call from
    zeros, in a copy of it built for samples of one step."""
    import keras

    stream = model(1, seed)
    stream.set_weights(trained.get_weights())
    found = []
    for value in x:
        stream.predict_on_batch(np.array([[[value]]]))
        h_and_c = [keras.ops.convert_to_numpy(s)[0] for s in stream.layers[0].states]
        found.append(np.concatenate(h_and_c))
    return np.array(found)


def truncated(target, steps, seed, epochs=10, learning_rate=0.001):
    """A stateful LSTM(20) and Dense(1), trained as the lesson trains its stateful
    model, on samples of `steps` consecutive inputs (the gradient crosses steps - 1 of
    them), the state carried from sample to sample. Its test error against the floor
    (the best guess from the current input alone), and the memory readout, k = 0 to 8.
    With epochs 0: the untrained model."""
    import keras

    x, y, guess, noise, lag = data(target, seed)
    train, test = slice(0, 800), slice(800, 1000)
    trained, val_loss = model(steps, seed, learning_rate), []
    for _ in range(epochs):
        history = trained.fit(
            chunks(x[train], steps), chunks(y[train], steps), batch_size=1,
            shuffle=False, verbose=0,
            validation_data=(chunks(x[test], steps), chunks(y[test], steps)),
        )  # fmt: skip
        val_loss += history.history["val_loss"]
        trained.layers[0].reset_state()
    trained.steps_per_execution = 1
    test_x = chunks(x[test], steps)
    predicted = trained.predict(test_x, batch_size=1, verbose=0).ravel()
    scored = slice(lag, None)  # the first points reach back before the reset
    error = np.mean((y[test] - predicted)[scored] ** 2)
    floor = np.mean((y[test] - guess[test])[scored] ** 2)
    memory = readout(states(trained, x, seed), noise, lag)
    keras.utils.clear_session()
    return dict(
        target=target, steps=steps, seed=seed, epochs=epochs, test_mse=float(error),
        floor=float(floor), recovered=float(1 - error / floor), val_loss=val_loss,
        memory_r2=memory,
    )  # fmt: skip


def readout(states, noise, lag):
    """The lesson's memory readout: for each k, the R² of a least-squares readout, from
    the state after each input, of the input k steps back; fitted on the first 800
    inputs, scored on the last 200."""
    first = max(LAGS)
    newest = lag + np.arange(first, len(states))  # the index in noise of each input
    targets = np.stack([noise[newest - k] for k in LAGS], axis=1)
    features = np.c_[states, np.ones(len(states))][first:]
    fit, held_out = slice(0, 800 - first), slice(800 - first, None)
    weights = np.linalg.lstsq(features[fit], targets[fit], rcond=1e-7)[0]
    error = targets[held_out] - features[held_out] @ weights
    return (1 - np.mean(error**2, axis=0) / np.var(targets[held_out], axis=0)).tolist()


def call(job):
    """A job in a worker process: (function name, keyword arguments)."""
    name, kwargs = job
    return globals()[name](**kwargs)


TARGETS = ("mean", 1, 4)  # the lesson's mean; the input 1 or 4 steps back, alone
EXPERIMENTS = {
    "memory": [
        ("truncated", dict(target=target, steps=steps, seed=seed))
        for target in TARGETS
        for steps in (1, 2, 4, 8)
        for seed in SEEDS
    ]
    + [("truncated", dict(target=1, steps=1, seed=seed, epochs=0)) for seed in SEEDS],
    "lesson": [
        ("lesson", dict(values=dict(seed=seed, epochs=epochs, learning_rate=rate)))
        for rate in (0.001, 0.0003)
        for epochs in (10, 100)
        for seed in [1986, *SEEDS]  # the lesson's own seed, then seeds 1 to 5
    ]
    + [
        ("lesson", dict(values=dict(seed=seed, epochs=100, batch_size=16)))
        for seed in [1986, *SEEDS]
    ],
}


def median(values):
    return statistics.median(values)


def memory_tables(runs):
    print("| target | K | recovered, median (lowest) | R² of the input k steps back, "
          "median over seeds, k = 0 ... 8 |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    rows = [(target, steps, 10) for target in TARGETS for steps in (1, 2, 4, 8)]
    for target, steps, epochs in [("any", 1, 0), *rows]:
        cell = [r for r in runs if (r["steps"], r["epochs"]) == (steps, epochs)
                and (r["target"] == target or epochs == 0)]  # fmt: skip
        shares = [r["recovered"] for r in cell]
        memory = [median([r["memory_r2"][k] for r in cell]) for k in LAGS]
        name = "mean" if target == "mean" else f"input {target} back"
        share = f"{median(shares):.1%} ({min(shares):.1%})"
        if not epochs:
            name, steps, share = "none: untrained", "-", "-"
        memory = " ".join(f"{m:.2f}" for m in memory)
        print(f"| {name} | {steps} | {share} | {memory} |")


def jumps(losses):
    """The epochs (counted from 1) whose validation loss is over 1.5 times the last."""
    return [e + 1 for e in range(1, len(losses)) if losses[e] > 1.5 * losses[e - 1]]


def unseen(seed):
    """What the lesson's window cannot show in each training sample: the target minus
    the best guess from the window (the lesson's data, with tsteps 2 and lahead 1)."""
    x, y, guess, _, _ = data("mean", seed)
    return (y - guess)[:800]


def stateless_table(runs):
    print("| learning rate | batch | epochs | seed | test MSE | floor | recovered "
          "(at epoch 30) | residual mean, test (training) | residual variance / "
          "floor | output's offset | unseen part's mean, last 25 (50) training "
          "samples |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        m, part = run["stateless"], unseen(run["seed"])
        offset = part.mean() - m["train_mean"]  # the model's output minus the guess's
        at_30 = (
            f" ({1 - m['val_loss'][29] / m['floor']:.1%})" if run["epochs"] > 30 else ""
        )
        print(
            f"| {run.get('learning_rate', 0.001)} | {run.get('batch_size', 1)} | "
            f"{run['epochs']} | {run['seed']} | {m['test_mse']:.2e} | {m['floor']:.2e} "
            f"| {m['recovered']:.1%}{at_30} | "
            f"{m['mean']:+.4f} ({m['train_mean']:+.4f}) | "
            f"{m['sd'] ** 2 / m['floor']:.3f} | {offset:+.4f} | "
            f"{part[-25:].mean():+.4f} ({part[-50:].mean():+.4f}) |"
        )
    ones = [run for run in runs if run.get("batch_size", 1) == 1]
    offsets = [unseen(r["seed"]).mean() - r["stateless"]["train_mean"] for r in ones]
    recent = [unseen(r["seed"])[-50:].mean() for r in ones]
    same = sum(np.sign(offsets) == np.sign(recent))
    correlation = np.corrcoef(offsets, recent)[0, 1]
    print(f"\nOne sample a batch: the offset has the sign of the last 50 samples' mean "
          f"in {same} of {len(ones)} runs; correlation {correlation:.2f}.")  # fmt: skip


def stateful_table(runs):
    print("| learning rate | epochs | seed | recovered | residual mean | residual sd | "
          "lowest val_loss (epoch) | last | epochs that jump |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        if run.get("batch_size", 1) != 1:
            continue
        m, losses = run["stateful"], run["stateful"]["val_loss"]
        best = int(np.argmin(losses))
        print(
            f"| {run['learning_rate']} | {run['epochs']} | {run['seed']} | "
            f"{m['recovered']:.1%} | {m['mean']:+.4f} | {m['sd']:.4f} | "
            f"{losses[best]:.1e} ({best + 1}) | {losses[-1]:.1e} | "
            f"{', '.join(map(str, jumps(losses))) or 'none'} |"
        )


def memory_figure(runs, path):
    """R² of the input k back, median over seeds, by K, for each target."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, len(TARGETS), sharey=True)
    untrained = [median([r["memory_r2"][k] for r in runs if r["epochs"] == 0])
                 for k in LAGS]  # fmt: skip
    for ax, target in zip(axes, TARGETS, strict=True):
        ax.plot(LAGS, untrained, "--", color="0.5", label="untrained")
        for steps, colour in zip((1, 2, 4, 8), ("C0", "C1", "C2", "C3"), strict=True):
            cell = [r for r in runs if (r["target"], r["steps"], r["epochs"])
                    == (target, steps, 10)]  # fmt: skip
            memory = [median([r["memory_r2"][k] for r in cell]) for k in LAGS]
            ax.plot(
                LAGS, memory, "-o", ms=3, color=colour, label=f"trained, K = {steps}"
            )
        need = "k = 0 and 1" if target == "mean" else f"k = {target}"
        name = (
            "the mean of the last 2" if target == "mean" else f"the input {target} back"
        )
        ax.set(title=f"target: {name}\n(it needs {need})", xlabel="k: the input k back")
        ax.axvline(1 if target == "mean" else target, color="tab:red", ls=":", lw=1)
    axes[0].set(ylabel="R² of that input, read from the state", ylim=(-0.1, 1.05))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper")
    fig.suptitle("What the state holds, median over seeds 1 to 5; dotted: the input "
                 "the target needs")  # fmt: skip
    fig.savefig(path)


def epochs_figure(runs, path):
    """Each model's test error by epoch, as a share of its floor, over 100 epochs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = {0.001: "tab:red", 0.0003: "tab:blue"}
    for ax, name in zip(axes, ("stateful", "stateless"), strict=True):
        for run in runs:
            if run["epochs"] != 100 or run.get("batch_size", 1) != 1:
                continue
            rate, m = run["learning_rate"], run[name]
            label = f"learning rate {rate}" if run["seed"] == 1 else None
            ax.plot(range(1, 101), np.array(m["val_loss"]) / m["floor"], lw=0.8,
                    color=colours[rate], label=label)  # fmt: skip
        ax.axhline(1, color="0.3", ls="--", lw=1, label="the floor")
        ax.axvline(10, color="0.3", ls=":", lw=1, label="the lesson's 10 epochs")
        ax.set(
            title=f"{name.capitalize()} model, seeds 1986 and 1 to 5", xlabel="epoch"
        )
    axes[0].set(yscale="log", ylabel="validation loss (the test set) / the floor")
    axes[1].set(ylim=(0.95, 1.35))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper")
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="*", choices=[*EXPERIMENTS, []])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output-dir", default="outputs/why")
    parser.add_argument("--from-json", action="store_true",
                        help="tables and figures of the runs saved before")  # fmt: skip
    args = parser.parse_args()
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MPLBACKEND"] = "Agg"
    context = multiprocessing.get_context("spawn")
    for experiment in args.experiments or list(EXPERIMENTS):
        saved = output_dir / f"{experiment}.json"
        if args.from_json:
            runs = json.loads(saved.read_text())
        else:
            pool = concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context)
            with pool:
                runs = list(pool.map(call, EXPERIMENTS[experiment]))
            saved.write_text(json.dumps(runs, indent=1))
        print(f"\n## {experiment}\n")
        if experiment == "memory":
            memory_tables(runs)
            memory_figure(runs, output_dir / "why-memory.png")
        else:
            stateless_table(runs)
            print()
            stateful_table(runs)
            epochs_figure(runs, output_dir / "why-epochs.png")


if __name__ == "__main__":
    main()
