"""
Title: Stateful vs stateless LSTM
Author: the Keras team (Keras 2 example `examples/lstm_stateful.py`); Keras 3 port: its maintainers
Date created: 2026/11/28 (this Keras 3 port; the Keras 2 original is undated)
Last modified: 2026/12/01
Description: A stateful LSTM remembers what its input window cannot show; a stateless one cannot.
Accelerator: None

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

What "stateful" means here: an LSTM carries a state (two vectors of 20 numbers, h and c) from each
step of its window to the next. A stateless LSTM starts every window from zeros, so it knows only
the `lahead` inputs it is shown. A stateful LSTM (`stateful=True`) starts each batch from the state
the batch before left, slot by slot: sample i of a batch continues sample i of the batch before.
So with batches of one sample in time order the state runs along the whole series, until it is
reset by hand, after each epoch and before predicting, so that each pass starts afresh. Two things
learners ask: the validation inside `fit` runs on from the state training left (as in the
original), and it moves the state on; and the state is carried forward from batch to batch, but
gradients never flow back across batches: each step learns through its own window only.

After the original's experiment, the trained stateful model is used as one uses it next: its
weights go to a copy built for batches of one sample, which is fed the test set one sample per
call, as a stream arrives; the run prints what the state holds and that `reset_state()` clears it.

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
import pathlib
import re
import sys
import tempfile
import time
import types
import typing

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backends import BackendFilter, backend_registry


# ---------------------------------------------------------------------------------------------
# SETUP: TensorFlow's settings, then Keras (on TensorFlow unless KERAS_BACKEND says jax or torch)
# ---------------------------------------------------------------------------------------------
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
            held.seek(0)
            os.write(saved, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# TensorFlow reads these when it loads, so they come first, each only where the user set none.
# Its C++ log lines held back from level 3 (errors) down, such as a CPU-only machine's CUDA
# lines; the few it writes while it loads, before any level applies, are held back too and
# shown only if the import fails.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's kernels and more than one thread for independent ops: both slower for ops as tiny as
# this model's (docs/speed.md).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
try:
    with stderr_held():
        import keras
except (ImportError, ValueError, KeyboardInterrupt) as error:  # no such backend, or Ctrl-C
    if __name__ != "__main__":
        raise
    if isinstance(error, KeyboardInterrupt):
        print("Interrupted while loading Keras: nothing written")
        sys.exit(130)
    hint = "install it (see the README) or set KERAS_BACKEND to tensorflow, jax or torch"
    sys.stderr.write(f"lstm_stateful.py: error: Keras cannot load its backend: {error}; {hint}\n")
    sys.exit(2)


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
layout: typing.Literal["interleaved", "contiguous"] = "interleaved"  # which sample in which slot
window_order: typing.Literal["newest-first", "oldest-first"] = "newest-first"  # inputs in a window
learning_rate: float = 0.001  # Adam's step size (Keras's default, as in the original)
fast: bool = True  # faster: many steps per compiled call (windows of 2+ may round a bit otherwise)
output_dir: str = "outputs"  # folder for the figures and the JSON files
show: bool = True  # open the figures at the end, where a display exists
sweep: bool = False  # run the experiment over the grid sweep_tsteps x sweep_lahead instead
sweep_tsteps: list[int] = [1, 2, 3, 4]  # tsteps values of the sweep
sweep_lahead: list[int] = [1, 2, 3, 4]  # lahead values of the sweep

AMP = 0.1  # the input is uniform noise in [-AMP, +AMP], as in the original
RECOVERED = 0.5  # a model converges when it recovers this share of what its window cannot show
CONVERGED_R2 = 0.8  # where the window shows everything (no floor): when its R² reaches this
MODELS = ("stateful", "stateless")
STREAMED = (*MODELS, "stream")  # and the trained stateful model, one sample per call


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


def build_series(input_len, tsteps, lahead, seed, window_order):
    """The original's data: the input (in rolling window view) and its moving average.

    Returns two DataFrames of `input_len` rows: the input with `lahead` columns, column i
    holding the input from i steps back, in `window_order` (the LSTM reads them left to right),
    and the expected output.
    """

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
    # A RandomState of its own draws the very numbers np.random.seed(seed) gave the original,
    # without touching numpy's global state.
    rng = np.random.RandomState(seed)
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
    # Beyond the original: oldest-first windows end with the newest input, in time order (as
    # keras.utils.timeseries_dataset_from_array makes them). Newest-first, where lahead > tsteps
    # the target lies at a window's first steps, which the LSTM must carry through the rest. A
    # stateless LSTM starts each window from zeros, which mark that step; a stateful one starts
    # from what the window before left, and there fails to fit in 10 epochs (docs/sweep.md).
    if window_order == "oldest-first":
        data_input = data_input[data_input.columns[::-1]]

    # drop the nan
    return data_input[to_drop:], expected_output[to_drop:]


def split_sizes(input_len, batch_size, ratio=0.8):
    """The original's 80/20 train/test split: how many points each set gets."""
    to_train = int(input_len * ratio)
    # tweak to match with batch_size (both sets: a stateful model takes whole batches only)
    to_train -= to_train % batch_size
    return to_train, input_len - to_train - input_len % batch_size


def split_data(x, y, batch_size):
    """The original's split, reshaped as Keras takes it: x (samples, lahead, 1), y (samples, 1).

    to_numpy copies: pandas 3's copy-on-write may hand out read-only views.
    """
    to_train, to_test = split_sizes(len(x), batch_size)
    x, y = x.to_numpy(copy=True)[:, :, np.newaxis], y.to_numpy(copy=True)
    test = slice(to_train, to_train + to_test)
    return (x[:to_train], y[:to_train]), (x[test], y[test])


# ---------------------------------------------------------------------------------------------
# MODEL
# ---------------------------------------------------------------------------------------------
def create_model(stateful, batch_size, lahead, speed, seed, learning_rate):
    """LSTM(20) then Dense(1), trained on mse with adam, as in the original.

    `speed` (from speed_settings) chooses how Keras runs the model (docs/speed.md).
    """
    # Not Keras's own classes: FusedStepsSequential (SPEED SETTINGS, below) is keras.Sequential
    # with a predict and a progress bar fit for fused steps; TrackedStateLSTM (BACKEND WORKAROUND)
    # is keras.layers.LSTM with its state where JAX and PyTorch carry it. Copy them with this.
    model = FusedStepsSequential()
    # Keras 3 takes the fixed batch a stateful LSTM needs here, not as LSTM(batch_size=...).
    model.add(keras.Input(batch_shape=(batch_size, lahead, 1)))
    model.add(TrackedStateLSTM(20, stateful=stateful, unroll=speed["unroll"]))
    model.add(keras.layers.Dense(1))
    # Adam, with its step size a parameter: the original's "adam" is Adam(learning_rate=0.001).
    # With batches of one sample, each step follows one sample's error; for a model without
    # state most of it is the part of the average it cannot see. At 0.001 those steps keep the
    # stateless model above its floor, and one seed in ten (--seed 5) jumps in its last epoch;
    # smaller steps end both, and fit less in 10 epochs (docs/sweep.md).
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    model.compile(loss="mse", optimizer=optimizer, **speed["compile"])
    # Beyond the original: the same initial weights on every backend, for the same seed.
    model.set_weights(initial_weights(seed))
    return model


def initial_weights(seed, units=20):
    """Keras's default initial weights for LSTM(units) and Dense(1), drawn by numpy from `seed`.

    Keras would draw them from each backend's own random numbers, so that TensorFlow, JAX and
    PyTorch would train from other weights to other numbers. Here both models, on every backend,
    start from these: glorot-uniform kernels, an orthogonal recurrent kernel, zero biases but the
    forget gate's, at 1.
    """
    rng = np.random.default_rng(seed)  # a generator of its own: not the data's stream

    def glorot_uniform(fan_in, fan_out):
        limit = np.sqrt(6 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out))

    kernel = glorot_uniform(1, 4 * units)  # the four gates (i, f, c, o) side by side
    q, r = np.linalg.qr(rng.standard_normal((4 * units, units)))
    recurrent_kernel = (q * np.sign(np.diag(r))).T  # orthogonal rows, as keras's Orthogonal
    bias = np.concatenate([np.zeros(units), np.ones(units), np.zeros(2 * units)])
    return [kernel, recurrent_kernel, bias, glorot_uniform(units, 1), np.zeros(1)]


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
    speed = speed_settings(args.fast, args.lahead)

    print("Creating Stateful Model...")
    start = time.perf_counter()
    model_stateful = create_model(
        True, batch_size, args.lahead, speed, args.seed, args.learning_rate
    )

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
        # The validation after each epoch runs on from the state training left, and moves it on.
        # Gradients never cross batches: each step learns through its own window of lahead inputs.
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
        # Keras 3 has no Model.reset_states(): the stateful LSTM layer resets its own state.
        model_stateful.layers[0].reset_state()

    print("Predicting")
    predicted_stateful = model_stateful.predict(x_test, batch_size=batch_size)
    seconds_stateful = time.perf_counter() - start

    print("Creating Stateless Model...")
    start = time.perf_counter()
    model_stateless = create_model(
        False, batch_size, args.lahead, speed, args.seed, args.learning_rate
    )

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
    x_test, expected = (to_layout(a, batch_size, args.layout, undo=True) for a in (x_test, y_test))
    expected = expected.flatten()
    predicted_stateful = to_layout(predicted_stateful, batch_size, args.layout, undo=True).flatten()
    predicted_stateless = to_layout(
        predicted_stateless, batch_size, args.layout, undo=True
    ).flatten()
    # Beyond the original: the best a model without state can do is to average what its window
    # shows (the inputs it cannot see average zero); with lahead >= tsteps that is the target.
    window = x_test[:, :, 0]
    best_without_state = expected if args.lahead >= args.tsteps else window.sum(1) / args.tsteps
    skipped = without_history(len(expected), args.tsteps, batch_size, args.layout)
    stateful = score(expected, predicted_stateful, best_without_state, skipped)
    stateless = score(expected, predicted_stateless, best_without_state, np.zeros_like(skipped))

    # Beyond the original: the trained stateful model used as a stream arrives, one sample per
    # call through the whole test set in time order: one stream from a reset state.
    streamed = one_step_at_a_time(model_stateful, x_test, args.lahead, speed)
    from_reset = without_history(len(expected), args.tsteps, 1, "interleaved")
    stream = score(expected, streamed, best_without_state, from_reset)
    stream["largest_difference"] = float(np.max(np.abs(streamed - predicted_stateful)))
    return {
        "expected": expected,
        "stateful": {**stateful, **history_stateful, "seconds": seconds_stateful},
        "stateless": {**stateless, **history_stateless, "seconds": seconds_stateless},
        "stream": stream,
    }


def one_step_at_a_time(model_stateful, x, lahead, speed):
    """Predict `x` (in time order) one sample per call, as a trained stateful model is used.

    The trained weights go to a copy built for batches of one sample: the weights do not depend
    on the batch size, the state does. The copy starts from a reset state, and each call starts
    from the state the call before left. Prints what the state is, holds, and what a reset does.
    """
    shape = tuple(model_stateful.layers[0].states[0].shape)
    print(f"The stateful LSTM's state: h and c, each of shape {shape}, a row per batch slot.")
    print("A copy for batch size 1 predicts the test set one sample per call, from a reset state:")
    model = create_model(True, 1, lahead, speed, seed=0, learning_rate=0.001)  # it never trains
    model.set_weights(model_stateful.get_weights())  # the parameters only, not the state
    model.layers[0].reset_state()
    predicted = np.concatenate([model.predict_on_batch(x[i : i + 1]) for i in range(len(x))])
    h = keras.ops.convert_to_numpy(model.layers[0].states[0])
    print(f"after the stream, h[0, :4] = {np.round(h[0, :4], 4)}: what {len(x)} samples left")
    model.layers[0].reset_state()
    zeros = all(not np.any(keras.ops.convert_to_numpy(s)) for s in model.layers[0].states)
    print(f"after reset_state(), h and c are all zeros: {zeros}")
    return predicted.flatten()


def score(expected, predicted, best_without_state, skipped):
    """One model's residual (NaN at the skipped points), test MSE, R², floor and verdict.

    The verdict, one rule for every run and every cell of a sweep. With lahead < tsteps a model
    without state sits at a floor, the MSE of `best_without_state` on the very points it is
    scored on (this test set's floor, which scatters around stateless_floor_mse), whatever it
    does; R² would credit it with the part of the average its window shows. So a model converges
    when it `recovered` at least RECOVERED (half) of what its window cannot show (how far the
    stateless models stay from that: docs/results.md). With lahead >= tsteps there is no floor:
    R² >= CONVERGED_R2.
    """
    residual = np.where(skipped, np.nan, expected - predicted)
    test_mse = float(np.mean((expected[~skipped] - predicted[~skipped]) ** 2))
    floor_mse = float(np.mean((expected[~skipped] - best_without_state[~skipped]) ** 2))
    r2 = 1.0 - test_mse / float(np.var(expected[~skipped]))
    recovered = 1.0 - test_mse / floor_mse if floor_mse > 0 else None
    converged = r2 >= CONVERGED_R2 if recovered is None else recovered >= RECOVERED
    return {
        "residual": residual,
        "test_mse": test_mse,
        "r2": r2,
        "floor_mse": floor_mse,
        "recovered": recovered,
        "converged": bool(converged),
    }


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
    ax.set(title="Input", xlabel="time step")
    return fig


def plot_results(results, floor_mse):
    """The original's three panels: the expected output, then each model's residual.

    The residual panels share one scale, so the model that is stuck shows at a glance,
    and a dashed band marks the size of this test set's stateless floor (its root-mean-square).
    """
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True, layout="constrained")
    axes[0].plot(results["expected"])
    axes[0].set(title="Expected", ylabel="moving average")
    axes[2].sharey(axes[1])
    for ax, name in zip(axes[1:], MODELS, strict=True):
        result = results[name]
        ax.plot(result["residual"])
        ax.set_title(
            f"{name.capitalize()}: Expected - Predicted (test MSE {result['test_mse']:.2e})"
        )
        ax.set_ylabel("residual")
        if floor_mse > 0:
            rms = np.sqrt(floor_mse)
            label = f"stateless floor (this test set), RMS ±{rms:.4f}"
            ax.axhline(rms, color="tab:red", linestyle="--", label=label)
            ax.axhline(-rms, color="tab:red", linestyle="--")
    if floor_mse > 0:
        axes[1].legend(loc="upper right")  # once, where it hides nothing: near zero when it works
    axes[2].set_xlabel("test time step")
    return fig


def plot_loss(results, floor_mse):
    """Training and validation loss per epoch for both models: the picture of converging."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for name, color in zip(MODELS, ("tab:blue", "tab:orange"), strict=True):
        loss, val_loss = results[name]["loss"], results[name]["val_loss"]
        epochs_run = np.arange(1, len(loss) + 1)
        ax.plot(epochs_run, loss, "-o", color=color, label=f"{name} training loss")
        ax.plot(epochs_run, val_loss, ":x", color=color, label=f"{name} validation loss")
    if floor_mse > 0:
        label = f"stateless floor {floor_mse:.2e} (expected)"
        ax.axhline(floor_mse, color="tab:red", linestyle="--", label=label)
    ax.set(title="Loss per epoch", xlabel="epoch", ylabel="mean squared error", yscale="log")
    ax.xaxis.get_major_locator().set_params(integer=True)
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
    data_input, expected_output = build_series(
        args.input_len, args.tsteps, args.lahead, args.seed, args.window_order
    )
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
    metrics = run_metrics(args, results)
    figures["results.png"] = plot_results(results, metrics["stateless"]["floor_mse"])
    figures["loss.png"] = plot_loss(results, metrics["stateless_floor_mse"])

    # Beyond the original: the numbers in a file, and a summary that checks the claim.
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    print_summary(metrics)
    print(f"Figures and metrics.json written to {args.output_dir}")
    finish_figures(figures, args.output_dir, args.show)
    return metrics


# =============================================================================================
# =============================================================================================
# The lesson ends here. Below is the machinery around it, one section per job.
# =============================================================================================


# ---------------------------------------------------------------------------------------------
# BACKEND WORKAROUND (machinery): a stateful LSTM that every backend really carries
# ---------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="lstm_stateful")  # so load_model finds it
class TrackedStateLSTM(keras.layers.LSTM):
    """keras.layers.LSTM, whose state JAX and PyTorch carry from batch to batch too.

    Works around Keras 3 (docs/keras-bug.md; a test says when it can go), which creates a
    stateful RNN's state variables untracked: they are not among the model's variables, so the
    JAX trainer, which is functional and writes back only the variables it knows, never updates
    them (fit silently trains a stateless model); and on PyTorch the state is overwritten in
    place while autograd still needs it (RuntimeError in the first step). The state joins the
    layer's `variables` (for JAX), which trainers read and write back, but not its weights, which
    summary(), get_weights() and saving read: those still see the parameters alone, at any batch
    size. Each step starts from a copy of the state (for PyTorch).
    """

    @property
    def variables(self):
        return [*super().variables, *(self.states or [])]  # no states: stateless, or not built

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if self.stateful and initial_state is None:  # start from a copy, which autograd may keep
            initial_state = [keras.ops.copy(state) for state in self.states]
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)


# ---------------------------------------------------------------------------------------------
# SPEED SETTINGS (machinery): how each backend runs the same model fastest
# ---------------------------------------------------------------------------------------------
STEPS_PER_EXECUTION = 1000  # with fast: at most this many training steps per compiled call
# With fast: unroll windows up to this many steps; past it, compiling the unrolled window costs
# more than it saves (docs/speed.md). PyTorch compiles nothing, so it unrolls longer ones.
UNROLL_UP_TO = {"tensorflow": 4, "jax": 4, "torch": 16}


def speed_settings(fast, lahead):
    """How Keras runs the model: LSTM(unroll=...) and compile(steps_per_execution=...,
    jit_compile=...): the same model; windows of 2+ steps may round a little otherwise.

    With `fast`, Keras runs many training steps per call into compiled code instead of returning
    to Python after every batch of one sample, and short windows are unrolled. Steps still run
    one after another, so the state passes from each batch to the next. An epoch whose steps
    are not a multiple of STEPS_PER_EXECUTION ends with a shorter call, at the same speed.
    """
    backend = keras.backend.backend()
    steps = STEPS_PER_EXECUTION if fast and backend != "torch" else 1  # PyTorch: Keras allows 1
    # jit_compile (XLA). JAX: always; without it every op runs on its own. TensorFlow: with fast,
    # for windows of 3+ steps, whose gradients its own runtime sums (AddN) in an order that can
    # change from call to call; XLA keeps one order, so runs repeat. Windows of 1 or 2 repeat
    # without it, and skip its compiling. PyTorch: eager (torch.compile is slower here). The
    # measurements behind each choice: docs/speed.md and docs/results.md.
    xla = backend == "jax" or (backend == "tensorflow" and fast and lahead > 2)
    compile_options = {"steps_per_execution": steps, "jit_compile": xla}
    return {"unroll": fast and lahead <= UNROLL_UP_TO[backend], "compile": compile_options}


@keras.saving.register_keras_serializable(package="lstm_stateful")  # so load_model finds it
class FusedStepsSequential(keras.Sequential):
    """keras.Sequential, predicting one step per call, with a progress bar that ends at its total.

    TensorFlow builds a fused predict as one graph with every step spelt out, which takes
    seconds to build for a single pass over the test set (docs/speed.md); training and
    validation loop instead, and keep their fused steps.
    """

    def fit(self, *args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), ProgbarLogger()]
        return super().fit(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self.steps_per_execution = 1
        return super().predict(*args, **kwargs)


class ProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, which never counts past its total: Keras reports each call as if it
    ran all its steps, a short one too (1000/800 for an epoch of 800 steps)."""

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(min(batch, self.target - 1), logs)


# ---------------------------------------------------------------------------------------------
# LAYOUTS (machinery): which sample sits in which slot of which batch
# ---------------------------------------------------------------------------------------------
def to_layout(a, batch_size, layout, undo=False):
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
    With batch_size = 1 both are the same. `undo` puts rows that follow `layout` back in time order.
    """
    if layout == "interleaved":
        return a
    # in time order, a.reshape(batch_size, -1, ...)[i] is stream i; with `undo`, the rows are
    # batches and a.reshape(-1, batch_size, ...)[k, i] is step k of stream i
    rows = (-1, batch_size) if undo else (batch_size, -1)
    return a.reshape(*rows, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape)


def without_history(n_test, tsteps, batch_size, layout):
    """Mask of the test points whose moving average reaches back past the last state reset.

    The test set is predicted from a freshly reset state. The original leaves out its first
    tsteps - 1 points; with the contiguous layout every stream starts from that reset.
    """
    # each point's step in its stream; interleaved, the test set is one stream
    step = np.arange(n_test) % (n_test // batch_size if layout == "contiguous" else n_test)
    return step < tsteps - 1


def print_layout_note(batch_size, layout):
    """Say what the state carries when batches interleave the series (see to_layout)."""
    if layout == "interleaved" and batch_size > 1:
        print(f"Note: the state holds the input from {batch_size} steps back (see --layout)")


# ---------------------------------------------------------------------------------------------
# RESULTS (machinery): the summary that checks the claim, metrics.json, the figures' files
# ---------------------------------------------------------------------------------------------
def run_metrics(args, results):
    """What metrics.json holds: the parameters, each model's scores and losses, the stream's."""
    return {
        "backend": keras.backend.backend(),
        "params": {n: getattr(args, n) for n, kind in PARAMETERS.items() if kind in (int, float)},
        **{name: getattr(args, name) for name in ("layout", "window_order", "fast")},
        "stateless_floor_mse": stateless_floor_mse(args.tsteps, args.lahead),
        **{name: {k: v for k, v in results[name].items() if k != "residual"} for name in STREAMED},
    }


def claim_check(metrics):
    """The example's claim for these parameters, and whether this run's verdicts agree with it."""
    both = metrics["params"]["lahead"] >= metrics["params"]["tsteps"]
    stateful, stateless = (metrics[name]["converged"] for name in MODELS)
    claim = "both models converge" if both else "only the stateful model converges"
    return stateful and stateless == both, f"{claim} when lahead {'>=' if both else '<'} tsteps"


def judged(m):
    """The number a model's verdict reads (see score): the share recovered, or R² with no floor."""
    return f"R² {m['r2']:.3f}" if m["recovered"] is None else f"{m['recovered']:.1%} recovered"


def print_summary(metrics):
    """Both models' scores and verdicts, the rule of the verdict, and the claim check."""
    params, floor = metrics["params"], metrics["stateless"]["floor_mse"]
    print(f"\nKeras {keras.version()} on {metrics['backend']}; seed {params['seed']}")
    for name in MODELS:
        m = metrics[name]
        verdict = "converged" if m["converged"] else "NOT converged"
        print(f"{name:<10} test MSE {m['test_mse']:.2e}: {judged(m)}, {verdict}")
    stream = metrics["stream"]
    print(
        f"streamed   test MSE {stream['test_mse']:.2e}: {judged(stream)} (the stateful model's "
        "weights at batch size 1, one test sample per call; largest difference from its "
        f"predict(): {stream['largest_difference']:.1e})"
    )
    if floor == 0:
        print(f"converged: R² >= {CONVERGED_R2} (no stateless floor: the window shows every input)")
    else:
        print(
            f"stateless floor (the best a model without state can do): {floor:.2e} on this test "
            f"set, {metrics['stateless_floor_mse']:.2e} expected\nconverged: recovers at least "
            f"{RECOVERED:.0%} of what the window cannot show (test MSE at most half the floor)"
        )
    agrees, claim = claim_check(metrics)
    print(f"This run {'agrees' if agrees else 'does NOT agree'} with the example's claim: {claim}.")


def finish_figures(figures, output_dir, show):
    """Save every figure, show them if asked and a display exists, then close them."""
    for name, fig in figures.items():
        write_whole(os.path.join(output_dir, name), functools.partial(fig.savefig, format="png"))
    # matplotlib falls back to Agg by itself where there is no display; showing there only warns.
    non_interactive = backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)
    if show and plt.get_backend().lower() not in non_interactive:
        plt.show()
    for fig in figures.values():
        plt.close(fig)


def write_whole(path, write):
    """Write a file under another name, then rename it: nobody (nor Ctrl-C) sees it half-written."""
    try:
        write(path + ".partial")
        os.replace(path + ".partial", path)
    finally:
        if os.path.exists(path + ".partial"):
            os.remove(path + ".partial")


def write_json(path, obj):
    write_whole(path, lambda partial: pathlib.Path(partial).write_text(json.dumps(obj, indent=2)))


# ---------------------------------------------------------------------------------------------
# SWEEP (machinery): the experiment over a grid of tsteps x lahead, to check the claim in every cell
# ---------------------------------------------------------------------------------------------
def run_sweep(args):
    """The experiment over sweep_tsteps x sweep_lahead: one line per cell; sweep.json (for each
    cell, what metrics.json holds for its run) and sweep.png, both rewritten after every cell, so
    that Ctrl-C keeps the cells done."""
    pairs = [(t, la) for t in args.sweep_tsteps for la in args.sweep_lahead]
    cells, start = [], time.perf_counter()
    print(f"Sweeping tsteps {args.sweep_tsteps} x lahead {args.sweep_lahead}")
    print_layout_note(args.batch_size, args.layout)
    for done, (t, la) in enumerate(pairs, start=1):
        cell = argparse.Namespace(**{**vars(args), "tsteps": t, "lahead": la})
        with contextlib.redirect_stdout(io.StringIO()):  # one line per cell, not its log
            results = experiment(
                cell, *build_series(args.input_len, t, la, args.seed, args.window_order)
            )
        cells.append(run_metrics(cell, results))
        write_json(os.path.join(args.output_dir, "sweep.json"), {"cells": cells})
        figure = plot_sweep(cells, args.sweep_tsteps, args.sweep_lahead)
        finish_figures({"sweep.png": figure}, args.output_dir, args.show and done == len(pairs))
        agrees = "agrees" if claim_check(cells[-1])[0] else "DIFFERS"
        models = ", ".join(f"{name} {judged(cells[-1][name])}" for name in MODELS)
        seconds = time.perf_counter() - start
        print(
            f"[{done}/{len(pairs)}] tsteps={t} lahead={la}: {models}: {agrees} | "
            f"{seconds:.0f} s elapsed, about {seconds / done * (len(pairs) - done):.0f} s left",
            flush=True,
        )
    print(f"sweep.json and sweep.png written to {args.output_dir}")


def plot_sweep(cells, tsteps_list, lahead_list):
    """The claim checked cell by cell over tsteps x lahead: green where the run agrees with it,
    red where it differs, and what each model's verdict reads."""
    size = (max(8, 2.6 * len(lahead_list) + 1.5), 1.2 * len(tsteps_list) + 1.5)
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    agrees = np.full((len(tsteps_list), len(lahead_list)), np.nan)
    for metrics in cells:
        params = metrics["params"]
        row, col = tsteps_list.index(params["tsteps"]), lahead_list.index(params["lahead"])
        agrees[row, col] = claim_check(metrics)[0]
        text = "\n".join(f"{name}: {judged(metrics[name])}" for name in MODELS)
        ax.text(col, row, text, ha="center", va="center", fontsize=8)
    ax.imshow(agrees, origin="lower", cmap="RdYlGn", vmin=-0.5, vmax=1.5, aspect="auto")
    ax.set_xticks(range(len(lahead_list)), lahead_list)
    ax.set_yticks(range(len(tsteps_list)), tsteps_list)
    ax.set(xlabel="lahead (input window)", ylabel="tsteps (moving-average window)")
    ax.set_title(
        "The claim (only the stateful model converges when lahead < tsteps, both when lahead >= "
        f"tsteps), cell by cell:\ngreen where this run agrees, red where it differs "
        f"({cells[0]['window_order']} windows, learning rate {cells[0]['params']['learning_rate']})"
    )
    return fig


# ---------------------------------------------------------------------------------------------
# COMMAND LINE (machinery): flags and checks made from the editable block, then main
# ---------------------------------------------------------------------------------------------
# The editable block, read back: each parameter's name and type, in the block's order. From this
# code's own namespace (under `python -m cProfile` or `-m trace` it is not sys.modules[__name__]),
# in a module object, which makes the annotations (Python 3.14 evaluates them only when asked).
namespace = types.ModuleType("namespace")
vars(namespace).update(globals())
PARAMETERS = inspect.get_annotations(namespace)


def problem(name, value):
    """What is wrong with a parameter's value, from a flag or from the block; None if nothing."""
    kind, choices = PARAMETERS[name], typing.get_args(PARAMETERS[name])
    if kind is int:
        must = "an integer from 0 to 2**32 - 1" if name == "seed" else "a positive integer"
        ok = type(value) is int and (0 <= value < 2**32 if name == "seed" else value > 0)
    elif kind is float:
        must, ok = "a positive number", type(value) in (int, float) and 0 < value < float("inf")
    elif kind == list[int]:
        must = "a list of positive integers"
        ok = type(value) is list and value and all(type(v) is int and v > 0 for v in value)
    elif kind in (bool, str):
        must, ok = ("True or False" if kind is bool else "a folder name"), type(value) is kind
    elif typing.get_origin(kind) is typing.Literal:
        must, ok = f"one of {', '.join(choices)}", value in choices
    else:
        kind = getattr(kind, "__name__", kind)
        return f"the type {kind} is not one this script checks; keep the line's type"
    return None if ok and value != "" else f"must be {must}"


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line, without the usage (see --help)
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser():
    """One flag per parameter of the editable block: its default, type and --help (the comment
    after it) come from there. In a notebook's cell there is no file, and no help text."""
    parser = ArgumentParser(prog="lstm_stateful.py", description="Stateful vs stateless LSTM.")
    comments = {}  # the comment after each line of the block
    with contextlib.suppress(KeyError, OSError), open(globals()["__file__"], encoding="utf-8") as f:
        comments = dict(re.findall(r"^(\w+): .+?  # (.+)$", f.read(), re.MULTILINE))
    for name, kind in PARAMETERS.items():
        default, choices = globals()[name], typing.get_args(kind) or None  # a Literal's choices
        options = {"default": default, "help": f"{comments.get(name, '')} (default: {default})"}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind == list[int]:
            options |= {"type": int, "nargs": "+", "metavar": "N"}
        else:  # int, or str with or without choices
            options |= {"type": {int: int, float: float}.get(kind, str), "choices": choices}
        parser.add_argument("--" + name.replace("_", "-"), **options)
    return parser


def available_memory():
    """Bytes this process can still use: Linux's MemAvailable, else all physical memory (macOS),
    else None (Windows has neither: there numpy's MemoryError stops a run that does not fit)."""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check(args):
    """What, if anything, keeps this run from running; checked before any work."""
    for name, value in vars(args).items():  # the editable block's values too: they are defaults
        if message := problem(name, value):
            where = "in the editable block" if value is globals()[name] else "on the command line"
            return f"{name} = {value!r} {where}: {message}"
    if not args.sweep and (args.sweep_tsteps, args.sweep_lahead) != (sweep_tsteps, sweep_lahead):
        return "--sweep-tsteps and --sweep-lahead only make sense with --sweep"
    if (backend := keras.backend.backend()) not in ("tensorflow", "jax", "torch"):
        return f"Keras's {backend} backend cannot train: set KERAS_BACKEND=tensorflow, jax or torch"
    n, batch = args.input_len, args.batch_size
    tsteps = max(args.sweep_tsteps) if args.sweep else args.tsteps
    lahead = max(args.sweep_lahead) if args.sweep else args.lahead
    to_train, to_test = split_sizes(n, batch)
    # R² needs two scored points, and the stateful score skips the first tsteps - 1 of each
    # stream that starts from a reset state: one, or with --layout contiguous, batch_size.
    streams = batch if args.layout == "contiguous" else 1
    if to_train == 0 or to_test < tsteps + 1 or to_test // streams < tsteps:
        return (
            f"--input-len {n} leaves {to_train} training and {to_test} test points, "
            f"{to_test // streams} per stream; --tsteps {tsteps} needs more: raise --input-len"
        )
    # The window view of float64 exists up to 6 times over (3 while it is built, measured), and
    # training keeps ~580 bytes per sample and window step (measured; 640 = 20 units x 8 float32).
    need, have = 6 * (n + lahead - 1) * lahead * 8 + batch * lahead * 640, available_memory()
    if have is not None and need > have:
        gib = f"{need / 2**30:.1f} GiB, and {have / 2**30:.1f} GiB is available"
        return f"--input-len, --lahead and --batch-size need about {gib}: lower them"
    try:
        os.makedirs(args.output_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=args.output_dir).close()
    except OSError as error:
        return f"--output-dir {args.output_dir!r} cannot be written: {error}"


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
    args = parser.parse_args(command_line() if argv is None else argv)
    if message := check(args):
        parser.error(message)
    # Ctrl-C: one line instead of a traceback, and 130, the status a shell gives a run it stopped.
    since = time.time() - 1  # file times may be rounded down to the second
    # TensorFlow's Python logger at ERROR for the run, put back afterwards (a notebook's process
    # lives on): each cell of a sweep builds new models, which TensorFlow warns about as retracing.
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        run_sweep(args) if args.sweep else run(args)
    except KeyboardInterrupt:
        folder = args.output_dir
        kept = sorted(f for f in os.listdir(folder) if os.path.getmtime(f"{folder}/{f}") >= since)
        print(f"\nInterrupted: {', '.join(kept) or 'nothing'} written to {folder} by this run")
        return 130
    except MemoryError:  # where available_memory() could not tell: numpy's allocation failed
        parser.error("out of memory; lower --input-len or --lahead")
    finally:
        logger.setLevel(level)
    return 0


if __name__ == "__main__":
    status = main()
    if status:  # a notebook's cell shows even sys.exit(0) as an exception
        sys.exit(status)
