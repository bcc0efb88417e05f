"""
Title: How to use a stateful LSTM model, stateful vs stateless LSTM performance comparison
Original: the Keras 2 example `examples/lstm_stateful.py` (Keras team, MIT licence)
Port: Keras 3 (TensorFlow, JAX or PyTorch), as one runnable, tested script
Description: a stateful LSTM remembers what its input window cannot show it.

The models are trained on an input/output pair, where
the input is a generated uniformly distributed
random sequence of length = `input_len`,
and the output is a moving average of the input with window length = `tsteps`
(e.g. if tsteps=2 and input=[1, 2, 3, 4, 5], then output=[1.5, 2.5, 3.5, 4.5]).
Both `input_len` and `tsteps` are defined in the "editable parameters"
section.

A larger `tsteps` value means that the LSTM will need more memory
to figure out the input-output relationship.
This memory length is controlled by the `lahead` variable (more details below).

When `lahead > 1`, the model input is preprocessed to a "rolling window view"
of the data, with the window length = `lahead`.
This is similar to sklearn's `view_as_windows`
with `window_shape` being a single number.

When `lahead < tsteps`, only the stateful LSTM converges because its
statefulness allows it to see beyond the capability that lahead
gave it to fit the n-point average. The stateless LSTM does not have
this capability, and hence is limited by its `lahead` parameter,
which is not sufficient to see the n-point average.

When `lahead >= tsteps`, both the stateful and stateless LSTM converge.

How a run judges "converges": a model without state cannot know the `tsteps - lahead` inputs
outside its window, so its error cannot go below a floor, the error of its best guess (the
average of what the window shows). A model converges when it recovers at least half of what the
window cannot show: its test MSE is at most half that floor, measured on the same test points.
(R² would credit a model at the floor with the part of the average it sees: with tsteps = 6 and
lahead = 5, 0.83.) Where there is no floor (`lahead >= tsteps`), it converges when R² >= 0.8.

What "stateful" means here: an LSTM carries a state (two vectors of 20 numbers) from each step
of its window to the next. A stateless LSTM starts every window from zeros, so it knows only the
`lahead` inputs it is shown. A stateful LSTM (`stateful=True`) starts each batch from the state
the batch before left, slot by slot: sample i of a batch continues sample i of the batch before.
So with batches of one sample in time order the state runs along the whole series, until it is
reset by hand, after each epoch and before predicting, so that each pass starts afresh.

Usage:
    python lstm_stateful.py                       # the original experiment
    python lstm_stateful.py --tsteps 3 --lahead 3 # both models converge
    python lstm_stateful.py --batch-size 4 --layout contiguous  # batches that keep state useful
    python lstm_stateful.py --sweep               # the claim over tsteps 1..4 x lahead 1..4
    python lstm_stateful.py --help                # every flag, with its default
    KERAS_BACKEND=jax python lstm_stateful.py     # on JAX (or torch); TensorFlow by default
    %run lstm_stateful.py --epochs 2              # in Jupyter or IPython; or paste the file into
                                                  # a cell and edit the constants at the top

Every run writes input.png, results.png, loss.png and metrics.json into output_dir;
a sweep writes sweep.json and sweep.png.
"""

import argparse
import contextlib
import functools
import inspect
import io
import json
import logging
import os
import sys
import tempfile
import time
import tokenize
import typing
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backends import BackendFilter, backend_registry

# `keras` is imported after the lesson, in START-UP: TensorFlow's log settings must come first,
# and the backends this run does not use are kept from loading.

# ---------------------------------------------------------------------------------------------
# EDITABLE PARAMETERS
# ---------------------------------------------------------------------------------------------
# The one place each parameter is set. Each line is also a flag (input_len: --input-len), whose
# default is the value, whose check comes from the type and whose --help is the comment.
input_len: int = 1000  # length of the generated input
tsteps: int = 2  # window of the moving average that is the output
lahead: int = 1  # input window the LSTM sees for each output point
batch_size: int = 1  # samples per batch, fixed for the stateful model
epochs: int = 10  # training epochs of each model
seed: int = 1986  # seed of the data (the original's) and of the initial weights
layout: Literal["interleaved", "contiguous"] = "interleaved"  # which sample is in which batch slot
fast: bool = True  # faster: many steps per compiled call (windows of 2+ steps round differently)
output_dir: str = "outputs"  # folder for the figures and the JSON files
show: bool = True  # open the figures at the end, where a display exists
sweep: bool = False  # run the experiment over the grid sweep_tsteps x sweep_lahead instead
sweep_tsteps: list[int] = [1, 2, 3, 4]  # tsteps values of the sweep
sweep_lahead: list[int] = [1, 2, 3, 4]  # lahead values of the sweep

AMP = 0.1  # the input is uniform noise in [-AMP, +AMP], as in the original
RECOVERED = 0.5  # a model converges when it recovers this share of what its window cannot show
CONVERGED_R2 = 0.8  # where the window shows everything (no floor): when its R² reaches this


# ---------------------------------------------------------------------------------------------
# DATA
# ---------------------------------------------------------------------------------------------
def gen_uniform_amp(amp=1, xn=10000, rng=np.random):
    """Generates uniform random data between
    -amp and +amp
    and of length xn

    # Arguments
        amp: maximum/minimum range of uniform data
        xn: length of series
        rng: a legacy numpy RandomState (the original used the global one)
    """
    data_input = rng.uniform(-1 * amp, +1 * amp, xn)
    data_input = pd.DataFrame(data_input)
    return data_input


def build_series(input_len, tsteps, lahead, seed):
    """The original's data: the input (in rolling window view) and its moving average.

    Returns two DataFrames of `input_len` rows: the input with `lahead` columns,
    column i holding the input from i steps back, and the expected output.
    """
    # A RandomState of its own draws the very numbers np.random.seed(seed) gave the original,
    # without touching numpy's global state.
    rng = np.random.RandomState(seed)

    # Since the output is a moving average of the input,
    # the first few points of output will be NaN
    # and will be dropped from the generated data
    # before training the LSTM.
    # Also, when lahead > 1,
    # the preprocessing step later of "rolling window view"
    # will also cause some points to be lost.
    # For aesthetic reasons,
    # in order to maintain generated data length = input_len after pre-processing,
    # add a few points to account for the values that will be lost.
    to_drop = max(tsteps - 1, lahead - 1)
    data_input = gen_uniform_amp(amp=AMP, xn=input_len + to_drop, rng=rng)

    # set the target to be a N-point average of the input
    expected_output = data_input.rolling(window=tsteps, center=False).mean()

    # when lahead > 1, need to convert the input to "rolling window view"
    # (the newest input comes first in each window, exactly as in the original)
    if lahead > 1:
        data_input = np.repeat(data_input.values, repeats=lahead, axis=1)
        data_input = pd.DataFrame(data_input)
        for i, c in enumerate(data_input.columns):
            data_input[c] = data_input[c].shift(i)

    # drop the nan
    expected_output = expected_output[to_drop:]
    data_input = data_input[to_drop:]
    return data_input, expected_output


def split_data(x, y, batch_size, ratio=0.8):
    """The original's 80/20 train/test split, trimmed to whole batches."""
    to_train = int(x.shape[0] * ratio)
    # tweak to match with batch_size
    to_train -= to_train % batch_size

    x_train = x[:to_train]
    y_train = y[:to_train]
    x_test = x[to_train:]
    y_test = y[to_train:]

    # tweak to match with batch_size
    to_drop = x.shape[0] % batch_size
    if to_drop > 0:
        x_test = x_test[: -1 * to_drop]
        y_test = y_test[: -1 * to_drop]

    # some reshaping (to_numpy copies: pandas 3's copy-on-write may hand out read-only views)
    def reshape_3(x):
        return x.to_numpy(copy=True).reshape((x.shape[0], x.shape[1], 1))

    x_train = reshape_3(x_train)
    x_test = reshape_3(x_test)

    def reshape_2(x):
        return x.to_numpy(copy=True).reshape((x.shape[0], 1))

    y_train = reshape_2(y_train)
    y_test = reshape_2(y_test)

    return (x_train, y_train), (x_test, y_test)


# ---------------------------------------------------------------------------------------------
# MODEL
# ---------------------------------------------------------------------------------------------
def create_model(stateful, batch_size, lahead, speed):
    """LSTM(20) then Dense(1), trained on mse with adam, as in the original.

    `speed` (from speed_settings) chooses how Keras runs the model, never what it computes.
    Sequential and LSTM are Keras's, with the fixes of SPEED SETTINGS and BACKEND WORKAROUND.
    """
    model = Sequential(
        [
            # Keras 3 takes the fixed batch a stateful LSTM needs here, not as LSTM(batch_size=...).
            keras.Input(batch_shape=(batch_size, lahead, 1)),
            LSTM(20, stateful=stateful, unroll=speed["unroll"]),
            keras.layers.Dense(1),
        ]
    )
    model.compile(
        loss="mse",
        optimizer="adam",
        steps_per_execution=speed["steps_per_execution"],
        jit_compile=speed["jit_compile"],
    )
    return model


def reset_states(model):
    """Forget what the stateful LSTM carried from earlier batches."""
    # Keras 3 has no Model.reset_states(); each stateful RNN layer resets its own state.
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()


# ---------------------------------------------------------------------------------------------
# THE EXPERIMENT: train both models, predict the test set, score the predictions
# ---------------------------------------------------------------------------------------------
def experiment(args, data_input, expected_output):
    """Train and test the stateful and the stateless LSTM on the same data, as the original.

    `args` holds the editable parameters. Returns, in time order, the expected test output and,
    for each model, its residual (NaN where a point is not scored), scores and loss per epoch.
    """
    batch_size, epochs = args.batch_size, args.epochs
    (x_train, y_train), (x_test, y_test) = split_data(data_input, expected_output, batch_size)
    print("x_train.shape: ", x_train.shape)
    print("y_train.shape: ", y_train.shape)
    print("x_test.shape: ", x_test.shape)
    print("y_test.shape: ", y_test.shape)
    # Beyond the original: which sample follows which from batch to batch (see LAYOUTS).
    x_train, y_train, x_test, y_test = (
        to_layout(a, batch_size, args.layout) for a in (x_train, y_train, x_test, y_test)
    )

    keras.utils.clear_session()  # a fresh start for each experiment: a sweep runs many
    keras.utils.set_random_seed(args.seed)  # numpy, Python and the backend: the weights repeat
    speed = speed_settings(args.fast, args.lahead)

    print("Creating Stateful Model...")
    start = time.perf_counter()
    model_stateful = create_model(True, batch_size, args.lahead, speed)

    print("Training")
    history_stateful = {"loss": [], "val_loss": []}  # per epoch, for loss.png and metrics.json
    for i in range(epochs):
        print("Epoch", i + 1, "/", epochs)
        # Note that the last state for sample i in a batch will
        # be used as initial state for sample i in the next batch.
        # Thus we are simultaneously training on batch_size series with
        # lower resolution than the original series contained in data_input.
        # Each of these series are offset by one step and can be
        # extracted with data_input[i::batch_size].
        # (With layout="contiguous", slot i instead walks one step at a time through stream i.)
        history = model_stateful.fit(
            x_train,
            y_train,
            batch_size=batch_size,
            epochs=1,
            verbose=1,
            validation_data=(x_test, y_test),
            shuffle=False,
        )
        for key in history_stateful:
            history_stateful[key] += history.history[key]
        reset_states(model_stateful)

    print("Predicting")
    predicted_stateful = model_stateful.predict(x_test, batch_size=batch_size)
    seconds_stateful = time.perf_counter() - start

    print("Creating Stateless Model...")
    start = time.perf_counter()
    model_stateless = create_model(False, batch_size, args.lahead, speed)

    print("Training")
    history_stateless = model_stateless.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        verbose=1,
        validation_data=(x_test, y_test),
        shuffle=False,
    ).history

    print("Predicting")
    predicted_stateless = model_stateless.predict(x_test, batch_size=batch_size)
    seconds_stateless = time.perf_counter() - start

    # Score both on the test set, back in time order (see LAYOUTS). The stateful model meets it
    # from a reset state, so for it
    # drop the first "tsteps-1" because it is not possible to predict them
    # since the "previous" timesteps to use do not exist
    # (with layout="contiguous", the first tsteps-1 of every stream).
    expected = from_layout(y_test, batch_size, args.layout).flatten()
    predicted_stateful = from_layout(predicted_stateful, batch_size, args.layout).flatten()
    predicted_stateless = from_layout(predicted_stateless, batch_size, args.layout).flatten()
    # Beyond the original: the best a model without state can do is to average what its window
    # shows (the inputs it cannot see average zero); with lahead >= tsteps that is the target.
    window = from_layout(x_test, batch_size, args.layout)[:, :, 0]
    best_without_state = expected if args.lahead >= args.tsteps else window.sum(1) / args.tsteps
    skipped = without_history(len(expected), args.tsteps, batch_size, args.layout)
    stateful = score(expected, predicted_stateful, best_without_state, skipped)
    stateless = score(expected, predicted_stateless, best_without_state, np.zeros_like(skipped))
    return {
        "expected": expected,
        "stateful": {**stateful, **history_stateful, "seconds": seconds_stateful},
        "stateless": {**stateless, **history_stateless, "seconds": seconds_stateless},
    }


def score(expected, predicted, best_without_state, skipped):
    """One model's residual (NaN at the skipped points), test MSE, R², floor and verdict.

    Its floor is the MSE of `best_without_state` on the very points it is scored on: the floor
    of this test set, which scatters around the expected one (stateless_floor_mse).
    """
    residual = np.where(skipped, np.nan, expected - predicted)
    kept = ~skipped
    test_mse = float(np.mean((expected[kept] - predicted[kept]) ** 2))
    floor_mse = float(np.mean((expected[kept] - best_without_state[kept]) ** 2))
    r2 = 1.0 - test_mse / float(np.var(expected[kept]))
    recovered = 1.0 - test_mse / floor_mse if floor_mse > 0 else None
    return {
        "residual": residual,
        "test_mse": test_mse,
        "r2": r2,
        "floor_mse": floor_mse,
        "recovered": recovered,
        "converged": converged(recovered, r2),
    }


def converged(recovered, r2):
    """The verdict, one rule for every run and cell of a sweep.

    With lahead < tsteps, a model without state sits at the floor whatever it does, and R² would
    credit it with the part of the average its window shows. So a model converges when it
    `recovered` at least RECOVERED (half) of what its window cannot show: its test MSE is at most
    half the floor of this test set. Measured on the same points, the floor's own scatter cancels,
    and half is far above what stateless models reach by chance (measured: never above 6%). With
    lahead >= tsteps there is no floor (`recovered` is None): R² >= CONVERGED_R2, as before.
    """
    return bool(r2 >= CONVERGED_R2 if recovered is None else recovered >= RECOVERED)


def stateless_floor_mse(tsteps, lahead, amp=AMP):
    """The lowest test MSE a model can reach that sees only the last `lahead` inputs.

    The target averages `tsteps` inputs; `tsteps - lahead` of them are outside the
    window, each uniform on [-amp, amp] (variance amp**2 / 3) and weighted 1 / tsteps.
    """
    if lahead >= tsteps:
        return 0.0
    return (tsteps - lahead) * amp**2 / (3 * tsteps**2)


# ---------------------------------------------------------------------------------------------
# PLOTS
# ---------------------------------------------------------------------------------------------
def plot_input(data_input, expected_output):
    """The original's first plot: the first ten inputs and expected outputs."""
    fig, ax = plt.subplots()
    ax.plot(data_input[0][:10], ".")
    ax.plot(expected_output[0][:10], "-")
    ax.legend(["Input", "Expected output"])
    ax.set_title("Input")
    ax.set_xlabel("time step")
    return fig


def plot_results(results, floor_mse):
    """The original's three panels: the expected output, then each model's residual.

    The residual panels share one scale, so the model that is stuck shows at a glance,
    and a dashed band marks the size of this test set's stateless floor (its root-mean-square).
    """
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True, layout="constrained")
    axes[0].plot(results["expected"])
    axes[0].set_title("Expected")
    axes[0].set_ylabel("moving average")
    axes[2].sharey(axes[1])
    for ax, name in zip(axes[1:], ("stateful", "stateless"), strict=True):
        result = results[name]
        ax.plot(result["residual"])
        ax.set_title(
            f"{name.capitalize()}: Expected - Predicted (test MSE {result['test_mse']:.2e})"
        )
        ax.set_ylabel("residual")
        if floor_mse > 0:
            rms = np.sqrt(floor_mse)
            ax.axhline(
                rms,
                color="tab:red",
                linestyle="--",
                label=f"stateless floor (this test set), RMS ±{rms:.4f}",
            )
            ax.axhline(-rms, color="tab:red", linestyle="--")
    if floor_mse > 0:
        axes[1].legend(loc="upper right")  # once, where it hides nothing: near zero when it works
    axes[2].set_xlabel("test time step")
    return fig


def plot_loss(results, floor_mse):
    """Training and validation loss per epoch for both models: the picture of converging."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for name, color in (("stateful", "tab:blue"), ("stateless", "tab:orange")):
        loss, val_loss = results[name]["loss"], results[name]["val_loss"]
        epochs_run = np.arange(1, len(loss) + 1)
        ax.plot(epochs_run, loss, color=color, marker="o", label=f"{name} training loss")
        ax.plot(
            epochs_run,
            val_loss,
            color=color,
            linestyle=":",
            marker="x",
            label=f"{name} validation loss",
        )
    if floor_mse > 0:
        ax.axhline(
            floor_mse,
            color="tab:red",
            linestyle="--",
            label=f"stateless floor {floor_mse:.2e} (expected)",
        )
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error")
    ax.set_title("Loss per epoch")
    ax.legend()
    return fig


# ---------------------------------------------------------------------------------------------
# RUN: the original script, top to bottom
# ---------------------------------------------------------------------------------------------
def run(args):
    """Data, both models and the figures, as the original; then metrics.json and a summary."""
    print("*" * 33)
    if args.lahead >= args.tsteps:
        print("STATELESS LSTM WILL ALSO CONVERGE")
    else:
        print("STATELESS LSTM WILL NOT CONVERGE")
    print("*" * 33)
    print_layout_note(args.batch_size, args.layout)

    print("Generating Data...")
    data_input, expected_output = build_series(args.input_len, args.tsteps, args.lahead, args.seed)
    print("Input shape:", data_input.shape)
    print("Output shape:", expected_output.shape)
    print("Input head: ")
    print(data_input.head())
    print("Output head: ")
    print(expected_output.head())
    print("Input tail: ")
    print(data_input.tail())
    print("Output tail: ")
    print(expected_output.tail())

    print("Plotting input and expected output")
    figures = {"input.png": plot_input(data_input, expected_output)}
    # Shown only at the end, with the others: the original's plt.show() here blocked the run.

    results = experiment(args, data_input, expected_output)

    print("Plotting Results")
    floor_mse = stateless_floor_mse(args.tsteps, args.lahead)
    figures["results.png"] = plot_results(results, results["stateless"]["floor_mse"])
    figures["loss.png"] = plot_loss(results, floor_mse)

    # Beyond the original: the numbers in a file, and a summary that checks the claim.
    metrics = run_metrics(args, results, floor_mse)
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    print_summary(metrics)
    print(f"Figures and metrics.json written to {args.output_dir}")
    finish_figures(figures, args.output_dir, args.show)
    return metrics


# =============================================================================================
# The lesson ends here. Below is the machinery around it, one section per job.
# =============================================================================================


# ---------------------------------------------------------------------------------------------
# START-UP (machinery): load Keras quietly, and only the one backend this run uses
# ---------------------------------------------------------------------------------------------
BACKENDS = ("tensorflow", "jax", "torch")  # the Keras 3 backends that can train


@contextlib.contextmanager
def stderr_held():
    """Hold back what the process writes to its stderr (file descriptor 2) for a while, and
    write it out after all if the block fails: then it says why."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except Exception:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def chosen_backend():
    """The backend Keras will load, by Keras's rules: KERAS_BACKEND, else keras.json, else TF."""
    home = os.path.expanduser("~")
    keras_dir = os.environ.get("KERAS_HOME") or os.path.join(
        home if os.access(home, os.W_OK) else "/tmp", ".keras"
    )
    try:
        with open(os.path.join(keras_dir, "keras.json")) as f:
            name = json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        name = "tensorflow"
    return os.environ.get("KERAS_BACKEND") or name


if __name__ == "__main__" and "IPython" not in sys.modules and chosen_backend() in BACKENDS:
    # Keras imports JAX whenever it is installed, and keras.utils.set_random_seed imports TensorFlow
    # to seed it: seconds and log lines for frameworks this run never uses. A None entry makes
    # Python treat a module as not installed. Only in a process of its own, which ends with the
    # run: an importer, or IPython and a notebook's kernel (where %run's __name__ is "__main__"
    # too), keeps every framework.
    for other in set(BACKENDS) - {chosen_backend()}:
        sys.modules.setdefault(other, None)

# Without these a CPU-only machine prints a screenful of TensorFlow C++ log lines: the level
# must be set before TensorFlow loads, and a few INFO lines are written while it loads, before
# any level applies (held back, and shown only if the import fails).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's kernels pay a set-up cost per op that outweighs ops as tiny as this model's.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
try:
    with stderr_held():
        import keras
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    print("Interrupted while loading Keras: nothing written")
    sys.exit(130)
except (ImportError, ValueError) as error:  # Keras or its backend not installed, or no such backend
    if __name__ != "__main__":
        raise
    print(
        f"lstm_stateful.py: error: Keras cannot load the {chosen_backend()!r} backend ({error}); "
        f"install it (see the README) or set KERAS_BACKEND to one of {', '.join(BACKENDS)}",
        file=sys.stderr,
    )
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# BACKEND WORKAROUND (machinery): a stateful LSTM that every backend really carries
# ---------------------------------------------------------------------------------------------
class LSTM(keras.layers.LSTM):
    """keras.layers.LSTM, with its state kept where JAX and PyTorch carry it too.

    Works around Keras 3 (seen on 3.7.0 to 3.15.1), which creates a stateful RNN's state
    variables untracked: they are not among the model's variables, so the JAX trainer, which is
    functional and writes back only the variables it knows, never updates them (fit silently
    trains a stateless model); and on PyTorch the state is overwritten in place while autograd
    still needs it (RuntimeError in the first step). A stateless LSTM is left as it is.
    """

    def build(self, sequences_shape, initial_state_shape=None):
        super().build(sequences_shape, initial_state_shape)
        if self.stateful:  # the same zeros, now as tracked, non-trainable weights of the layer
            self.states = [
                self.add_weight(
                    shape=state.shape, initializer="zeros", trainable=False, name="rnn_state"
                )
                for state in self.states
            ]

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if self.stateful and initial_state is None:  # start from a copy, which autograd may keep
            initial_state = [keras.ops.copy(state) for state in self.states]
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)


# ---------------------------------------------------------------------------------------------
# SPEED SETTINGS (machinery): how each backend runs the same model fastest
# ---------------------------------------------------------------------------------------------
STEPS_PER_EXECUTION = 1000  # with fast: at most this many training steps per compiled call
# With fast: unroll windows up to this many steps. Past it, compiling the unrolled window costs
# more than it saves (measured, 1 and 10 epochs: TensorFlow breaks even at 16, XLA under JAX at
# ~4-8).
UNROLL_UP_TO = {"tensorflow": 16, "jax": 4, "torch": 16}


def speed_settings(fast, lahead):
    """How Keras should run the model: LSTM(unroll=...) and compile(steps_per_execution=...,
    jit_compile=...). The model and its maths stay the same.

    With `fast`, Keras runs many training steps per call into compiled code instead of returning
    to Python after every batch of one sample, and the LSTM is unrolled. Steps still run one
    after another, so the state passes from each batch to the next. Windows longer than
    UNROLL_UP_TO steps stay a loop (measured crossover, see the README). An epoch whose steps
    are not a multiple of STEPS_PER_EXECUTION ends with a shorter call, at the same speed.
    """
    backend = keras.backend.backend()
    return {
        "unroll": fast and lahead <= UNROLL_UP_TO[backend],  # short windows: straight-line code
        # Keras allows one step per call on PyTorch
        "steps_per_execution": STEPS_PER_EXECUTION if fast and backend != "torch" else 1,
        # TensorFlow: no XLA, on the CPU it costs more to compile than it saves on steps this
        # small. JAX: jax.jit, without which every op runs on its own, ~100x slower. PyTorch:
        # eager; torch.compile took 34 s to compile, and its losses ended far from eager mode's.
        "jit_compile": backend == "jax",
    }


class Sequential(keras.Sequential):
    """keras.Sequential, predicting one step per call, with a progress bar that ends at its total.

    TensorFlow builds a fused predict as one graph with every step spelt out, which takes
    seconds to build for a single pass over the test set (measured: 7 s more for the default
    run); training and validation loop instead, and keep their fused steps.
    """

    def fit(self, *args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), ProgbarLogger()]
        return super().fit(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self.steps_per_execution = 1
        return super().predict(*args, **kwargs)


class ProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, which never counts past its total.

    Keras (seen on 3.15) reports each call as if it ran all its steps_per_execution steps, the
    short last call of an epoch too: 2000/1500 for an epoch of 1500 steps.
    """

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(min(batch, self.target - 1), logs)


@contextlib.contextmanager
def tensorflow_settings():
    """Two TensorFlow settings for the run, put back afterwards (a notebook's process lives on).

    Its graph optimizer (Grappler) off, so that the same seed gives the same numbers: it rewrites
    the training step from process to process in ways that change its rounding; with a window of
    3 or more steps, about one run in six gave other numbers. With it off, 103 runs of 104
    repeated (see the README), and the default run's numbers and time stay the same.
    Its Python logger quieter: each cell of a sweep builds new models, whose first calls
    TensorFlow warns about as "retracing".
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    logger, option = logging.getLogger("tensorflow"), "disable_meta_optimizer"
    level, before = logger.level, tf.config.optimizer.get_experimental_options().get(option, False)
    logger.setLevel(logging.ERROR)
    tf.config.optimizer.set_experimental_options({option: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({option: before})
        logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# LAYOUTS (machinery): which sample sits in which slot of which batch
# ---------------------------------------------------------------------------------------------
def to_layout(a, batch_size, layout):
    """Reorder time-ordered rows so that batches follow `layout`.

    A stateful LSTM hands the state of slot i of one batch to slot i of the next, so what the
    state carries depends on which time step sits in which slot. With batch_size = 3 and
    12 time steps t0..t11:

        interleaved (the original)        contiguous
                 slot 0 slot 1 slot 2              slot 0 slot 1 slot 2
        batch 0    t0     t1     t2       batch 0    t0     t4     t8
        batch 1    t3     t4     t5       batch 1    t1     t5     t9
        batch 2    t6     t7     t8       batch 2    t2     t6     t10
        batch 3    t9     t10    t11      batch 3    t3     t7     t11

    interleaved: row j is time step j, so slot 0 goes t0 -> t3 -> t6: its state holds the input
        from batch_size steps back, not the one before; for tsteps = 2 it is of no use, and the
        stateful model sits at the stateless floor once batch_size > 1.
    contiguous: the series is cut into batch_size streams of equal length; slot i of every
        batch walks through stream i, one time step at a time, as with batch_size = 1.
    With batch_size = 1 both are the same.
    """
    if layout == "interleaved":
        return a
    streams = a.reshape(batch_size, -1, *a.shape[1:])  # streams[i] = stream i, in time order
    return streams.swapaxes(0, 1).reshape(a.shape)  # row k * batch_size + i = stream i, step k


def from_layout(a, batch_size, layout):
    """Put rows that follow `layout` back in time order (undoes to_layout)."""
    if layout == "interleaved":
        return a
    batches = a.reshape(-1, batch_size, *a.shape[1:])  # batches[k, i] = stream i, step k
    return batches.swapaxes(0, 1).reshape(a.shape)


def without_history(n_test, tsteps, batch_size, layout):
    """Mask of the test points whose moving average reaches back past the last state reset.

    The test set is predicted from a freshly reset state. The original leaves out its first
    tsteps - 1 points; with the contiguous layout every stream starts from that reset.
    """
    skipped = np.zeros(n_test, dtype=bool)
    starts = [0] if layout == "interleaved" else range(0, n_test, n_test // batch_size)
    for start in starts:
        skipped[start : start + tsteps - 1] = True
    return skipped


def interleaved_warning(batch_size, layout):
    """What the state carries when batches interleave the series; None if it is the step before."""
    if layout != "interleaved" or batch_size == 1:
        return None
    return (
        f"Note: with batch_size = {batch_size} and the interleaved layout, slot i of each batch "
        f"continues slot i of the batch before, {batch_size} time steps later, so the stateful "
        f"LSTM's state carries the input from {batch_size} steps back, not the one before "
        f"(--layout contiguous keeps it the one before)."
    )


def print_layout_note(batch_size, layout):
    warning = interleaved_warning(batch_size, layout)
    if warning:
        print(warning)


# ---------------------------------------------------------------------------------------------
# RESULTS (machinery): the summary that checks the claim, metrics.json, the figures' files
# ---------------------------------------------------------------------------------------------
METRIC_KEYS = (
    "test_mse",
    "r2",
    "floor_mse",
    "recovered",
    "converged",
    "loss",
    "val_loss",
    "seconds",
)


def model_metrics(result):
    """The JSON-ready part of one model's result."""
    return {key: result[key] for key in METRIC_KEYS}


def numbers(args):
    """The parameters that fix the data and the models: the whole numbers of the block."""
    return {name: getattr(args, name) for name, kind in PARAMETERS.items() if kind is int}


def run_metrics(args, results, floor_mse):
    """What metrics.json holds: the parameters, and each model's scores and losses."""
    return {
        "backend": keras.backend.backend(),
        "params": numbers(args),
        "layout": args.layout,
        "fast": args.fast,
        "stateless_floor_mse": floor_mse,
        "stateful": model_metrics(results["stateful"]),
        "stateless": model_metrics(results["stateless"]),
    }


def agrees_with_claim(tsteps, lahead, stateful_converged, stateless_converged):
    """The example's claim: the stateful model converges; the stateless one iff lahead >= tsteps."""
    return stateful_converged and stateless_converged == (lahead >= tsteps)


def claim_sentence(tsteps, lahead, stateful_converged, stateless_converged):
    """One sentence: does this run agree with the example's claim?"""
    expected = (
        "both models converge when lahead >= tsteps"
        if lahead >= tsteps
        else "only the stateful model converges when lahead < tsteps"
    )
    if agrees_with_claim(tsteps, lahead, stateful_converged, stateless_converged):
        return f"This run agrees with the example's claim: {expected}."
    outcome = {
        (True, True): "both converged",
        (True, False): "only the stateful model converged",
        (False, True): "only the stateless model converged",
        (False, False): "neither converged",
    }[(stateful_converged, stateless_converged)]
    return f"This run does NOT agree with the example's claim ({expected}): {outcome}."


def judged(m):
    """The number a model's verdict reads (see converged), as text."""
    return f"R² {m['r2']:.3f}" if m["recovered"] is None else f"{m['recovered']:.1%} recovered"


def floor_text(m):
    return "none" if m["recovered"] is None else f"{m['floor_mse']:.2e}"


def print_summary(metrics):
    """A short table of both models' scores, the rule of the verdict, and the claim check."""
    params = metrics["params"]
    print()
    print(f"Keras {keras.version()} on {metrics['backend']}; seed {params['seed']}")
    print(f"{'model':<10} {'test MSE':>10} {'R²':>8} {'recovered':>10}  converged")
    for name in ("stateful", "stateless"):
        m = metrics[name]
        recovered = "-" if m["recovered"] is None else f"{m['recovered']:.1%}"
        converged = "yes" if m["converged"] else "no"
        print(f"{name:<10} {m['test_mse']:>10.2e} {m['r2']:>8.3f} {recovered:>10}  {converged}")
    if metrics["stateless"]["recovered"] is None:
        print("stateless floor: none, the window shows every input of the moving average")
        print(f"converged: R² >= {CONVERGED_R2}")
    else:
        print(
            "stateless floor (the best a model without state can do): "
            f"{metrics['stateless']['floor_mse']:.2e} on this test set, "
            f"{metrics['stateless_floor_mse']:.2e} expected"
        )
        print(
            f"converged: recovers at least {RECOVERED:.0%} of what the window cannot show "
            "(test MSE at most half the floor)"
        )
    converged = [metrics[name]["converged"] for name in ("stateful", "stateless")]
    print(claim_sentence(params["tsteps"], params["lahead"], *converged))


def display_available():
    """True when pyplot runs an interactive backend, i.e. plt.show() can open windows."""
    # matplotlib falls back to Agg by itself where there is no display; showing there only warns.
    non_interactive = backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)
    return plt.get_backend().lower() not in non_interactive


def finish_figures(figures, output_dir, show):
    """Save every figure, show them if asked and possible, then close them."""
    for name, fig in figures.items():
        write_whole(os.path.join(output_dir, name), functools.partial(fig.savefig, format="png"))
    if show and display_available():
        plt.show()
    for fig in figures.values():
        plt.close(fig)


def write_whole(path, write):
    """Write a file under another name, then rename it: nobody (nor Ctrl-C) sees it half-written."""
    partial = path + ".partial"
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_json(path, obj):
    def dump(partial):
        with open(partial, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    write_whole(path, dump)


# ---------------------------------------------------------------------------------------------
# SWEEP (machinery): the experiment over a grid of tsteps x lahead, to check the claim in every cell
# ---------------------------------------------------------------------------------------------
def run_sweep(args):
    """The experiment over sweep_tsteps x sweep_lahead: sweep.json (cell by cell) and sweep.png.

    Ctrl-C stops it; the cells already done stay in sweep.json and in the figure.
    Returns the cells done.
    """
    tsteps_list, lahead_list = args.sweep_tsteps, args.sweep_lahead
    pairs = [(t, la) for t in tsteps_list for la in lahead_list]
    backend = keras.backend.backend()
    grids = f"tsteps in {tsteps_list} x lahead in {lahead_list}"
    print(f"Sweeping {len(pairs)} cells: {grids} on {backend}")
    print_layout_note(args.batch_size, args.layout)
    path = os.path.join(args.output_dir, "sweep.json")
    fixed = {
        name: value for name, value in numbers(args).items() if name not in ("tsteps", "lahead")
    }
    header = {"backend": backend, "params": fixed, "layout": args.layout, "fast": args.fast}
    cells = []
    start = time.perf_counter()
    try:
        for done, (t, la) in enumerate(pairs, start=1):
            cell_args = argparse.Namespace(**{**vars(args), "tsteps": t, "lahead": la})
            data = build_series(args.input_len, t, la, args.seed)
            with contextlib.redirect_stdout(
                io.StringIO()
            ):  # one line per cell, not its training log
                results = experiment(cell_args, *data)
            cells.append(
                {
                    "tsteps": t,
                    "lahead": la,
                    "stateless_floor_mse": stateless_floor_mse(t, la),
                    "stateful": model_metrics(results["stateful"]),
                    "stateless": model_metrics(results["stateless"]),
                }
            )
            write_json(path, {**header, "cells": cells})
            elapsed = time.perf_counter() - start
            left = elapsed / done * (len(pairs) - done)
            print(
                f"[{done}/{len(pairs)}] tsteps={t} lahead={la}: "
                f"stateful {judged(cells[-1]['stateful'])}, "
                f"stateless {judged(cells[-1]['stateless'])}"
                f" | {elapsed:.0f} s elapsed, about {left:.0f} s left",
                flush=True,
            )
    except KeyboardInterrupt:
        print(f"\nInterrupted: {len(cells)} of {len(pairs)} cells kept in {path}")
    if not cells:
        return cells

    print()
    print(
        f"{'tsteps':>6} {'lahead':>6} {'test floor':>10} {'stateful':>18} {'stateless':>18}  claim"
    )
    for cell in cells:
        converged = [cell[name]["converged"] for name in ("stateful", "stateless")]
        agrees = agrees_with_claim(cell["tsteps"], cell["lahead"], *converged)
        print(
            f"{cell['tsteps']:>6} {cell['lahead']:>6} {floor_text(cell['stateless']):>10} "
            f"{judged(cell['stateful']):>18} {judged(cell['stateless']):>18}  "
            f"{'agrees' if agrees else 'DIFFERS'}"
        )
    figure = plot_sweep(cells, tsteps_list, lahead_list)
    finish_figures({"sweep.png": figure}, args.output_dir, args.show)
    print(f"sweep.json and sweep.png written to {args.output_dir}")
    return cells


def plot_sweep(cells, tsteps_list, lahead_list):
    """One heat map per model of what its verdict reads, over tsteps x lahead: the share it
    recovered of what the window cannot show, or R² where there is no floor. Converged cells are
    framed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    for ax, name in zip(axes, ("stateful", "stateless"), strict=True):
        grid = np.full((len(tsteps_list), len(lahead_list)), np.nan)
        for cell in cells:
            row, col = tsteps_list.index(cell["tsteps"]), lahead_list.index(cell["lahead"])
            grid[row, col] = (
                cell[name]["recovered"] if cell["lahead"] < cell["tsteps"] else cell[name]["r2"]
            )
        image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1)
        for cell in cells:
            row, col = tsteps_list.index(cell["tsteps"]), lahead_list.index(cell["lahead"])
            value = grid[row, col]
            text = f"{value:.0%}" if cell["lahead"] < cell["tsteps"] else f"R² {value:.2f}"
            color = "white" if value < 0.6 else "black"
            ax.text(col, row, text, ha="center", va="center", color=color)
            if cell[name]["converged"]:
                frame = plt.Rectangle(
                    (col - 0.45, row - 0.45), 0.9, 0.9, fill=False, edgecolor="red", linewidth=2
                )
                ax.add_patch(frame)
        # where lahead = tsteps: on and right of it the window holds the whole moving average
        diagonal = [
            (lahead_list.index(t), tsteps_list.index(t)) for t in tsteps_list if t in lahead_list
        ]
        if diagonal:
            ax.plot(*zip(*diagonal, strict=True), color="white", linestyle="--")
        ax.set_xticks(range(len(lahead_list)), [str(v) for v in lahead_list])
        ax.set_yticks(range(len(tsteps_list)), [str(v) for v in tsteps_list])
        ax.set_xlabel("lahead (input window)")
        ax.set_ylabel("tsteps (moving-average window)")
        ax.set_title(f"{name.capitalize()} LSTM")
    fig.suptitle(
        "Left of the dashed line (lahead < tsteps): share recovered of what the window cannot "
        f"show; on and right of it: R².\nRed frame: converged (recovered >= {RECOVERED:.0%}, or "
        f"R² >= {CONVERGED_R2} where there is no floor)"
    )
    fig.colorbar(image, ax=axes, label="share recovered, or R² (colours clipped to 0..1)")
    return fig


# ---------------------------------------------------------------------------------------------
# COMMAND LINE (machinery): flags and checks made from the editable block, then main
# ---------------------------------------------------------------------------------------------
# The editable block, read back: each parameter's name and type, in the block's order.
PARAMETERS = inspect.get_annotations(sys.modules[__name__])


def block_comments():
    """Each parameter's meaning: the comment after it in the editable block (the --help text)."""
    try:
        with open(globals()["__file__"], encoding="utf-8") as f:
            tokens = list(tokenize.generate_tokens(f.readline))
    except (KeyError, OSError, SyntaxError, tokenize.TokenError):  # no file: pasted into a cell
        return {}  # no source to read: flags without help texts
    names = {t.start[0]: t.string for t in tokens if t.type == tokenize.NAME and t.start[1] == 0}
    comments = {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}
    return {
        names[line]: comments[line].lstrip("# ")
        for line in names
        if names[line] in PARAMETERS and line in comments
    }


def whole_number(value, must):
    """An int from a flag's text or from the editable block; never a bool or a float."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise argparse.ArgumentTypeError(f"{must}, got {value!r}")


def positive_int(value):
    """A whole number > 0."""
    must = "must be a positive integer"
    number = whole_number(value, must)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{must}, got {value!r}")
    return number


def seed_int(value):
    """A seed numpy's RandomState accepts."""
    number = whole_number(value, "must be an integer")
    if not 0 <= number < 2**32:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**32 - 1, got {value!r}")
    return number


def one_of(choices):
    def choice(value):
        if value not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    return choice


def switch(value):
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"must be True or False, got {value!r}")
    return value


def folder(value):
    if not isinstance(value, str) or not value:
        raise argparse.ArgumentTypeError(f"must be a folder name, got {value!r}")
    return value


def grid(value):
    """A non-empty list of positive integers (the sweep's grids)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise argparse.ArgumentTypeError(f"must be a list of positive integers, got {value!r}")
    return [positive_int(item) for item in value]


def check_of(name):
    """The check a parameter's values get, from its type in the block."""
    kind = PARAMETERS[name]
    if name == "seed":
        return seed_int  # the one number that may be 0
    if typing.get_origin(kind) is Literal:
        return one_of(typing.get_args(kind))
    checks = {int: positive_int, bool: switch, str: folder, list[int]: grid}
    return checks.get(kind, unknown_type(kind))


def unknown_type(kind):
    """The check of a type edited into the block that the script cannot check: always refuses."""

    def refuse(value):
        raise argparse.ArgumentTypeError(
            f"the type {getattr(kind, '__name__', kind)} is not one this script can check; "
            f"keep the line's type (int, bool, str, list[int] or Literal[...]) and change its value"
        )

    return refuse


def check_editable_block(parser):
    """argparse checks what is typed on the command line; the block's values get the same checks."""
    block = globals()
    for name in PARAMETERS:
        try:
            check_of(name)(block[name])
        except argparse.ArgumentTypeError as error:
            message = f"{name} = {block[name]!r} in the editable block: {error}"
            parser.exit(2, f"{parser.prog}: error: {message}\n")


def make_parser():
    """One flag per parameter of the editable block: its default, check and help come from there."""
    parser = argparse.ArgumentParser(
        prog="lstm_stateful.py",  # not the kernel's name, in a notebook
        description="Stateful vs stateless LSTM on a moving average (the Keras example, Keras 3).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    comments = block_comments()
    for name, kind in PARAMETERS.items():
        flag, default, text = "--" + name.replace("_", "-"), globals()[name], comments.get(name)
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=text
            )
        elif kind == list[int]:
            # SUPPRESS: absent unless given, so that main can refuse it without --sweep
            parser.add_argument(
                flag,
                type=positive_int,
                nargs="+",
                default=argparse.SUPPRESS,
                metavar="N",
                help=f"{text} (default: {default})",
            )
        else:
            choices = typing.get_args(kind)
            metavar = "{" + ",".join(choices) + "}" if choices else None
            parser.add_argument(
                flag, type=check_of(name), default=default, metavar=metavar, help=text
            )
    return parser


def available_memory():
    """Bytes this process can still use: Linux's MemAvailable, else all physical memory (macOS),
    else None (Windows has neither: there numpy's MemoryError stops a run that does not fit)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


# The (input_len x lahead) window view of float64 exists several times over: building the arrays
# peaks at 3 copies (measured), run() keeps the one it prints and plots, and fit converts the
# arrays once more. 6 copies leaves a margin.
DATA_COPIES = 6
# Training keeps the LSTM's gates and states of every sample and window step for the backward
# pass: measured ~580 bytes per sample and step (--lahead 500, --batch-size 2000 vs 8000).
ACTIVATION_BYTES = 20 * 8 * 4  # 20 units x 8 float32 values


def memory_needed(input_len, lahead, batch_size):
    """Bytes of (data, LSTM activations) a run needs at its peak, on top of the framework's own."""
    data = DATA_COPIES * (input_len + lahead - 1) * lahead * 8
    activations = batch_size * lahead * ACTIVATION_BYTES
    return data, activations


def check_memory(parser, input_len, lahead, batch_size):
    """Refuse, before any work, data or a model that would not fit in memory."""
    data, activations = memory_needed(input_len, lahead, batch_size)
    have = available_memory()
    if have is not None and data + activations > have:
        gib = 2**30
        lower = "--lahead or --input-len" if data >= activations else "--batch-size or --lahead"
        parser.error(
            f"--input-len {input_len}, --lahead {lahead} and --batch-size {batch_size} need about "
            f"{(data + activations) / gib:.1f} GiB ({data / gib:.1f} GiB of data, "
            f"{activations / gib:.1f} GiB of LSTM activations), and {have / gib:.1f} GiB of memory "
            f"is available; lower {lower}"
        )


def split_sizes(input_len, batch_size, ratio=0.8):
    """How many points split_data puts in the training and test sets, without building them."""
    to_train = int(input_len * ratio)
    to_train -= to_train % batch_size
    to_test = input_len - to_train - input_len % batch_size
    return to_train, to_test


def check_sizes(parser, input_len, tsteps, batch_size, layout):
    """Refuse, before any work, a combination that leaves too little data to train or test."""
    to_train, to_test = split_sizes(input_len, batch_size)
    if to_train == 0:
        parser.error(
            f"--input-len {input_len} with --batch-size {batch_size} leaves no training data "
            f"(80% of input_len, trimmed to whole batches); raise --input-len or lower --batch-size"
        )
    # R² needs at least two scored points, and the stateful score skips the first tsteps - 1.
    if to_test < tsteps + 1:
        parser.error(
            f"--input-len {input_len} with --batch-size {batch_size} leaves {to_test} test points; "
            f"--tsteps {tsteps} needs at least {tsteps + 1}; raise --input-len or lower --tsteps"
        )
    # Each contiguous stream starts from a reset state and skips its own first tsteps - 1.
    if layout == "contiguous" and to_test // batch_size < tsteps:
        parser.error(
            f"--layout contiguous cuts the {to_test} test points into {batch_size} streams of "
            f"{to_test // batch_size}; --tsteps {tsteps} needs streams of at least {tsteps}; "
            f"raise --input-len or lower --batch-size"
        )


def prepare_output_dir(parser, path):
    """Make sure the figures can be written before spending minutes on training."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        parser.error(f"--output-dir {path!r} cannot be written: {error.strerror or error}")


MIN_KERAS = (3, 7)  # fused steps (fast) stop with an error on TensorFlow under Keras 3.0 to 3.6


def backend_problem():
    """None when this Keras and its backend can run the script, else one line saying why not."""
    version = tuple(int(part) for part in keras.version().split(".")[:2])
    if version < MIN_KERAS:
        return (
            f"Keras {keras.version()} is too old: this script needs keras >= 3.7 "
            "(pip install -U keras)"
        )
    if keras.backend.backend() not in BACKENDS:
        return (
            f"the Keras backend {keras.backend.backend()!r} cannot train; "
            f"set KERAS_BACKEND to one of {', '.join(BACKENDS)}"
        )
    return None


def interrupted(output_dir, since):
    """The one line printed after Ctrl-C: which files this run had written, whole, by then."""
    kept = sorted(
        name
        for name in os.listdir(output_dir)
        if not name.startswith(".") and os.path.getmtime(os.path.join(output_dir, name)) >= since
    )
    return f"Interrupted: {', '.join(kept) or 'nothing'} written to {output_dir} by this run"


def command_line():
    """The flags given to this file, if it is the program that runs (python lstm_stateful.py, or
    %run in IPython); none where another program runs (a notebook's kernel, with its own `-f
    kernel.json`; code that imports this file): the editable block's values then apply."""
    this_file = globals().get("__file__")  # a notebook cell that holds this code has none
    if this_file and sys.argv and os.path.realpath(sys.argv[0]) == os.path.realpath(this_file):
        return sys.argv[1:]
    return []


def main(argv=None):
    """Run with the flags `argv` (default: command_line()); returns the exit status."""
    parser = make_parser()
    check_editable_block(parser)
    args = parser.parse_args(command_line() if argv is None else argv)
    problem = backend_problem()
    if problem:
        parser.exit(2, f"{parser.prog}: error: {problem}\n")
    given = vars(args)
    if not args.sweep and ("sweep_tsteps" in given or "sweep_lahead" in given):
        parser.error("--sweep-tsteps and --sweep-lahead only make sense with --sweep")
    # the grids, from the flags or else the block: each value once, in increasing order
    args.sweep_tsteps = sorted(set(given.get("sweep_tsteps", sweep_tsteps)))
    args.sweep_lahead = sorted(set(given.get("sweep_lahead", sweep_lahead)))
    most_tsteps = max(args.sweep_tsteps) if args.sweep else args.tsteps
    most_lahead = max(args.sweep_lahead) if args.sweep else args.lahead
    check_sizes(parser, args.input_len, most_tsteps, args.batch_size, args.layout)
    check_memory(parser, args.input_len, most_lahead, args.batch_size)
    prepare_output_dir(parser, args.output_dir)
    # Ctrl-C: one line instead of a traceback, and 130, the status a shell gives a run it stopped.
    since = time.time() - 1  # file times may be rounded down to the second
    try:
        with tensorflow_settings():
            if args.sweep:
                cells = run_sweep(args)
                # the sweep said what it kept
                return 0 if len(cells) == len(args.sweep_tsteps) * len(args.sweep_lahead) else 130
            run(args)
    except KeyboardInterrupt:
        print(f"\n{interrupted(args.output_dir, since)}", flush=True)
        return 130
    except MemoryError:  # where available_memory() could not tell: numpy's allocation failed
        parser.exit(2, f"{parser.prog}: error: out of memory; lower --input-len or --lahead\n")
    return 0


if __name__ == "__main__":
    status = main()
    if status:  # a notebook's cell shows even sys.exit(0) as an exception
        sys.exit(status)
