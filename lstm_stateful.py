"""
Title: How to use a stateful LSTM model, stateful vs stateless LSTM performance comparison
Original: the Keras 2 example `examples/lstm_stateful.py` (Keras team, MIT licence)
Port: Keras 3 (TensorFlow, JAX or PyTorch), as one runnable, tested script
Description: a stateful LSTM remembers what its input window cannot show it.

The models are trained on an input/output pair, where
the input is a generated uniformly distributed
random sequence of length = `input_len`,
and the output is a moving average of the input with window length = `tsteps`.
Both `input_len` and `tsteps` are defined in the "editable parameters"
section.

A larger `tsteps` value means that the LSTM will need more memory
to figure out the input-output relationship.
This memory length is controlled by the `lahead` variable (more details below).

The rest of the parameters are:

- `input_len`: the length of the generated input sequence
- `lahead`: the input sequence length that the LSTM
  is trained on for each output point
- `batch_size`, `epochs`: same parameters as in the `model.fit(...)`
  function

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

Usage:
    python lstm_stateful.py                       # the original experiment
    python lstm_stateful.py --tsteps 3 --lahead 3 # both models converge
    python lstm_stateful.py --batch-size 4 --layout contiguous  # batches that keep state useful
    python lstm_stateful.py --sweep               # the claim over tsteps 1..4 x lahead 1..4
    python lstm_stateful.py --help                # every flag, with its default
    KERAS_BACKEND=jax python lstm_stateful.py     # the same on JAX (or torch); TensorFlow by default

Every run writes input.png, results.png, loss.png and metrics.json into --output-dir;
a --sweep writes sweep.json and sweep.png.
"""

import argparse
import contextlib
import json
import logging
import os
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backends import BackendFilter, backend_registry


# ---------------------------------------------------------------------------
# START-UP MACHINERY (not the lesson): load Keras quietly, on one backend only
# ---------------------------------------------------------------------------
BACKENDS = ("tensorflow", "jax", "torch")  # the Keras 3 backends that can train


@contextlib.contextmanager
def stderr_silenced():
    """Send the process's own stderr (file descriptor 2) to /dev/null for a while."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def chosen_backend():
    """The backend Keras will load, by Keras's own rules: KERAS_BACKEND, else keras.json, else TensorFlow."""
    home = os.path.expanduser("~")
    keras_dir = os.environ.get("KERAS_HOME") or os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.join(keras_dir, "keras.json")) as f:
            name = json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        name = "tensorflow"
    return os.environ.get("KERAS_BACKEND") or name


if __name__ == "__main__" and chosen_backend() in BACKENDS:
    # Keras imports JAX whenever it is installed, and keras.utils.set_random_seed imports TensorFlow
    # to seed it: seconds and log lines for frameworks this run never uses. A None entry makes Python
    # treat a module as not installed. Only on the command line: an importer keeps its own imports.
    for other in set(BACKENDS) - {chosen_backend()}:
        sys.modules.setdefault(other, None)

# Without these a CPU-only machine prints a screenful of TensorFlow C++ log lines: the level
# must be set before TensorFlow loads, and a few INFO lines are written while it loads, before
# any level applies. A Python error raised by the import still shows as usual.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's kernels pay a set-up cost per op that outweighs ops as tiny as this model's.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
try:
    with stderr_silenced():
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
# Each cell of a sweep builds new models, whose first calls TensorFlow warns about as "retracing".
logging.getLogger("tensorflow").setLevel(logging.ERROR)

# ----------------------------------------------------------
# EDITABLE PARAMETERS
# Read the documentation in the script head for more details.
# Each one is also the default of a command-line flag (see --help).
# ----------------------------------------------------------
input_len = 1000  # length of input
# The window length of the moving average used to generate
# the output from the input in the input/output pair used
# to train the LSTM
# e.g. if tsteps=2 and input=[1, 2, 3, 4, 5],
# then output=[1.5, 2.5, 3.5, 4.5]
tsteps = 2
lahead = 1  # the input sequence length that the LSTM is trained on for each output point
batch_size = 1  # training parameters passed to "model.fit(...)"
epochs = 10
seed = 1986  # fixes the data (as the original's np.random.seed(1986)) and the Keras weights
output_dir = "outputs"  # where the figures and metrics.json are written
show = True  # also open the figures in windows at the end, where a display exists
layout = "interleaved"  # which sample follows which: the original's "interleaved", or "contiguous"
fast = True  # run many steps per compiled call (same model, same results); False: one step at a time
sweep_tsteps = [1, 2, 3, 4]  # with --sweep: the tsteps values of the grid
sweep_lahead = [1, 2, 3, 4]  # with --sweep: the lahead values of the grid

AMP = 0.1  # the input is uniform noise in [-AMP, +AMP], as in the original
CONVERGED_R2 = 0.8  # a model "converges" when it explains this much of the target's variance


# ------------
# DATA
# ------------
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
    reshape_3 = lambda x: x.to_numpy(copy=True).reshape((x.shape[0], x.shape[1], 1))
    x_train = reshape_3(x_train)
    x_test = reshape_3(x_test)

    reshape_2 = lambda x: x.to_numpy(copy=True).reshape((x.shape[0], 1))
    y_train = reshape_2(y_train)
    y_test = reshape_2(y_test)

    return (x_train, y_train), (x_test, y_test)


def split_sizes(input_len, batch_size, ratio=0.8):
    """How many points split_data puts in the training and test sets, without building them."""
    to_train = int(input_len * ratio)
    to_train -= to_train % batch_size
    to_test = input_len - to_train - input_len % batch_size
    return to_train, to_test


def to_layout(a, batch_size, layout):
    """Reorder time-ordered rows so that batches follow `layout`.

    interleaved (the original): row j is time step j, so slot i of batch k+1 holds the
        time step batch_size steps after slot i of batch k.
    contiguous: the series is cut into batch_size streams of equal length; slot i of
        every batch walks through stream i, so slot i of batch k+1 holds the very next
        time step after slot i of batch k.
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


def build_dataset(input_len, tsteps, lahead, batch_size, seed, layout="interleaved"):
    """The arrays the original trains and tests on: ((x_train, y_train), (x_test, y_test)).

    With layout="contiguous" the rows of each set are reordered by to_layout.
    """
    data_input, expected_output = build_series(input_len, tsteps, lahead, seed)
    (x_train, y_train), (x_test, y_test) = split_data(data_input, expected_output, batch_size)
    x_train, y_train, x_test, y_test = (to_layout(a, batch_size, layout) for a in (x_train, y_train, x_test, y_test))
    return (x_train, y_train), (x_test, y_test)


def stateless_floor_mse(tsteps, lahead, amp=AMP):
    """The lowest test MSE a model can reach that sees only the last `lahead` inputs.

    The target averages `tsteps` inputs; `tsteps - lahead` of them are outside the
    window, each uniform on [-amp, amp] (variance amp**2 / 3) and weighted 1 / tsteps.
    """
    if lahead >= tsteps:
        return 0.0
    return (tsteps - lahead) * amp**2 / (3 * tsteps**2)


# ---------------------------------------------------------------------------
# BACKEND WORKAROUND (not the lesson): a stateful LSTM that every backend really carries
# ---------------------------------------------------------------------------
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
                self.add_weight(shape=state.shape, initializer="zeros", trainable=False, name="rnn_state")
                for state in self.states
            ]

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if self.stateful and initial_state is None:  # start from a copy, which autograd may keep
            initial_state = [keras.ops.copy(state) for state in self.states]
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)


# ---------------------------------------------------------------------------
# SPEED SETTINGS (not the lesson): how each backend runs the same model fastest
# ---------------------------------------------------------------------------
STEPS_PER_EXECUTION = 1000  # with fast: at most this many training steps per call into compiled code
# With fast: unroll windows up to this many steps. Past it, compiling the unrolled window costs more
# than it saves (measured, 1 and 10 epochs: TensorFlow breaks even at 16, XLA under JAX at ~4-8).
UNROLL_UP_TO = {"tensorflow": 16, "jax": 4, "torch": 16}


def speed_settings(fast, lahead, steps_per_epoch=None):
    """Keyword arguments for LSTM(...) and model.compile(...); the model and its maths stay the same.

    With `fast`, Keras runs many training steps per call into compiled code instead of returning
    to Python after every batch of one sample, and the LSTM is unrolled. Steps still run one
    after another, so the state passes from each batch to the next. Windows longer than
    UNROLL_UP_TO steps stay a loop (measured crossover, see the README).
    """
    backend = keras.backend.backend()
    steps = STEPS_PER_EXECUTION if fast and backend != "torch" else 1  # Keras allows 1 on PyTorch
    if steps_per_epoch:
        # The progress bar counts whole calls (TensorFlow counts a short last call as a full one):
        # take the largest number of steps per call that divides the epoch.
        steps = max(n for n in range(1, steps + 1) if steps_per_epoch % n == 0)
    layer = {"unroll": fast and lahead <= UNROLL_UP_TO[backend]}  # short windows: straight-line code beats a loop
    compiled = {
        "steps_per_execution": steps,
        # TensorFlow: no XLA, on the CPU it costs more to compile than it saves on steps this small.
        # JAX: jax.jit, without which every op runs on its own, ~100x slower. PyTorch: eager;
        # torch.compile took 34 s to compile, and its training losses ended far from eager mode's.
        "jit_compile": backend == "jax",
    }
    return layer, compiled


# ------------
# MODEL
# ------------
def create_model(stateful, batch_size, lahead, fast=False, steps_per_epoch=None):
    """LSTM(20) then Dense(1), trained on mse with adam, as in the original.

    `fast` and `steps_per_epoch` choose only how fast it runs (see speed_settings).
    """
    layer_speed, compile_speed = speed_settings(fast, lahead, steps_per_epoch)
    model = keras.Sequential(
        [
            # Keras 3 takes the fixed batch a stateful LSTM needs here, not as LSTM(batch_size=...).
            keras.Input(batch_shape=(batch_size, lahead, 1)),
            LSTM(20, stateful=stateful, **layer_speed),  # keras.layers.LSTM (see BACKEND WORKAROUND)
            keras.layers.Dense(1),
        ]
    )
    model.compile(loss="mse", optimizer="adam", **compile_speed)
    return model


def reset_states(model):
    """Forget what the stateful LSTM carried from earlier batches."""
    # Keras 3 has no Model.reset_states(); each stateful RNN layer resets its own state.
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()


def train_stateful(model, x_train, y_train, x_test, y_test, batch_size, epochs, verbose=1):
    """One epoch per fit, resetting the state after each, as in the original."""
    history = {"loss": [], "val_loss": []}
    for i in range(epochs):
        if verbose:
            print("Epoch", i + 1, "/", epochs)
        # Note that the last state for sample i in a batch will
        # be used as initial state for sample i in the next batch.
        # Thus we are simultaneously training on batch_size series with
        # lower resolution than the original series contained in data_input.
        # Each of these series are offset by one step and can be
        # extracted with data_input[i::batch_size].
        # (With layout="contiguous", slot i instead walks one step at a time through stream i.)
        fitted = model.fit(
            x_train,
            y_train,
            batch_size=batch_size,
            epochs=1,
            verbose=verbose,
            validation_data=(x_test, y_test),
            shuffle=False,
        )
        for key in history:
            history[key] += fitted.history[key]
        reset_states(model)
    return history


def train_stateless(model, x_train, y_train, x_test, y_test, batch_size, epochs, verbose=1):
    """All epochs in one fit: a stateless model has no state to reset."""
    fitted = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        verbose=verbose,
        validation_data=(x_test, y_test),
        shuffle=False,
    )
    return {key: list(fitted.history[key]) for key in ("loss", "val_loss")}


def predict(model, x, batch_size, verbose=1):
    """model.predict, one step per call."""
    # Keras builds a fused predict as one graph with every step spelt out, which costs seconds
    # to build for a single pass over the test set; training and validation loop instead.
    model.steps_per_execution = 1
    return model.predict(x, batch_size=batch_size, verbose=verbose)


def score(y_expected, y_predicted):
    """Test MSE, R² and the verdict, over exactly the points given."""
    residual = (y_expected - y_predicted).flatten()
    test_mse = float(np.mean(residual**2))
    r2 = 1.0 - test_mse / float(np.var(y_expected))
    return {"test_mse": test_mse, "r2": r2, "converged": bool(r2 >= CONVERGED_R2)}


# ------------
# EXPERIMENT
# ------------
def experiment(input_len, tsteps, lahead, batch_size, epochs, seed, fast=False, layout="interleaved", verbose=1):
    """Train and test the stateful and the stateless LSTM on the same data.

    Returns, in time order, the expected test output and for each model its residual
    (NaN where the point is not scored) and its metrics.
    """
    (x_train, y_train), (x_test, y_test) = build_dataset(input_len, tsteps, lahead, batch_size, seed, layout)
    if verbose:
        print("x_train.shape: ", x_train.shape)
        print("y_train.shape: ", y_train.shape)
        print("x_test.shape: ", x_test.shape)
        print("y_test.shape: ", y_test.shape)
    expected = from_layout(y_test, batch_size, layout).flatten()

    # A fresh graph for each experiment: a sweep runs many in one process.
    keras.utils.clear_session()
    # Seeds numpy, Python and the backend, so the initial weights repeat from run to run.
    keras.utils.set_random_seed(seed)
    data = (x_train, y_train, x_test, y_test, batch_size, epochs, verbose)
    results = {"expected": expected}

    for name in ("stateful", "stateless"):
        if verbose:
            print(f"Creating {name.capitalize()} Model...")
        start = time.perf_counter()
        model = create_model(name == "stateful", batch_size, lahead, fast, len(x_train) // batch_size)
        if verbose:
            print("Training")
        train = train_stateful if name == "stateful" else train_stateless
        history = train(model, *data)
        if verbose:
            print("Predicting")
        reset_states(model)  # start the test series from a clean state, as the original did
        predicted = from_layout(predict(model, x_test, batch_size, verbose), batch_size, layout).flatten()
        scored = np.ones(len(expected), dtype=bool)
        if name == "stateful":
            # drop the first "tsteps-1" because it is not possible to predict them
            # since the "previous" timesteps to use do not exist
            scored = ~without_history(len(expected), tsteps, batch_size, layout)
        results[name] = {
            "residual": np.where(scored, expected - predicted, np.nan),
            **score(expected[scored], predicted[scored]),
            **history,
            "seconds": time.perf_counter() - start,
        }
    return results


METRIC_KEYS = ("test_mse", "r2", "converged", "loss", "val_loss", "seconds")


def model_metrics(result):
    """The JSON-ready part of one model's result."""
    return {key: result[key] for key in METRIC_KEYS}


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


def interleaved_warning(batch_size, layout):
    """What the state carries when batches interleave the series, or None when it is the step before."""
    if layout != "interleaved" or batch_size == 1:
        return None
    return (
        f"Note: with batch_size = {batch_size} and the interleaved layout, slot i of each batch continues "
        f"slot i of the batch before, {batch_size} time steps later, so the stateful LSTM's state carries "
        f"the input from {batch_size} steps back, not the one before (--layout contiguous keeps it the one before)."
    )


def print_summary(metrics):
    """A short table of both models' scores, and whether they agree with the claim."""
    params = metrics["params"]
    print()
    print(f"Keras {keras.version()} on {metrics['backend']}; seed {params['seed']}")
    print(f"{'model':<10} {'test MSE':>10} {'R²':>8}  converged (R² >= {CONVERGED_R2})")
    for name in ("stateful", "stateless"):
        m = metrics[name]
        print(f"{name:<10} {m['test_mse']:>10.2e} {m['r2']:>8.3f}  {'yes' if m['converged'] else 'no'}")
    print(f"stateless floor (the best a model without state can do): {metrics['stateless_floor_mse']:.2e}")
    print(
        claim_sentence(
            params["tsteps"], params["lahead"], metrics["stateful"]["converged"], metrics["stateless"]["converged"]
        )
    )


# ------------
# FIGURES AND FILES
# ------------
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
    and a dashed band marks the stateless floor's size (its root-mean-square).
    """
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True, layout="constrained")
    axes[0].plot(results["expected"])
    axes[0].set_title("Expected")
    axes[0].set_ylabel("moving average")
    axes[2].sharey(axes[1])
    for ax, name in zip(axes[1:], ("stateful", "stateless")):
        result = results[name]
        ax.plot(result["residual"])
        ax.set_title(f"{name.capitalize()}: Expected - Predicted (test MSE {result['test_mse']:.2e})")
        ax.set_ylabel("residual")
        if floor_mse > 0:
            rms = np.sqrt(floor_mse)
            ax.axhline(rms, color="tab:red", linestyle="--", label=f"stateless floor, RMS ±{rms:.3f}")
            ax.axhline(-rms, color="tab:red", linestyle="--")
    if floor_mse > 0:
        axes[1].legend(loc="upper right")  # once, where it hides nothing: this panel is near zero when it works
    axes[2].set_xlabel("test time step")
    return fig


def plot_loss(results, floor_mse):
    """Training and validation loss per epoch for both models: the picture of converging."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for name, color in (("stateful", "tab:blue"), ("stateless", "tab:orange")):
        epochs_run = np.arange(1, len(results[name]["loss"]) + 1)
        ax.plot(epochs_run, results[name]["loss"], color=color, marker="o", label=f"{name} training loss")
        ax.plot(epochs_run, results[name]["val_loss"], color=color, linestyle=":", marker="x", label=f"{name} validation loss")
    if floor_mse > 0:
        ax.axhline(floor_mse, color="tab:red", linestyle="--", label=f"stateless floor {floor_mse:.2e}")
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error")
    ax.set_title("Loss per epoch")
    ax.legend()
    return fig


def plot_sweep(cells, tsteps_list, lahead_list):
    """One heat map per model of R² over tsteps x lahead; converged cells are framed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    for ax, name in zip(axes, ("stateful", "stateless")):
        grid = np.full((len(tsteps_list), len(lahead_list)), np.nan)
        for cell in cells:
            grid[tsteps_list.index(cell["tsteps"]), lahead_list.index(cell["lahead"])] = cell[name]["r2"]
        image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1)
        for cell in cells:
            row, col = tsteps_list.index(cell["tsteps"]), lahead_list.index(cell["lahead"])
            r2 = cell[name]["r2"]
            ax.text(col, row, f"{r2:.3f}", ha="center", va="center", color="white" if r2 < 0.6 else "black")
            if cell[name]["converged"]:
                ax.add_patch(plt.Rectangle((col - 0.45, row - 0.45), 0.9, 0.9, fill=False, edgecolor="red", linewidth=2))
        # where lahead = tsteps: on and right of it the window holds the whole moving average
        diagonal = [(lahead_list.index(t), tsteps_list.index(t)) for t in tsteps_list if t in lahead_list]
        if diagonal:
            ax.plot(*zip(*diagonal), color="white", linestyle="--")
        ax.set_xticks(range(len(lahead_list)), [str(v) for v in lahead_list])
        ax.set_yticks(range(len(tsteps_list)), [str(v) for v in tsteps_list])
        ax.set_xlabel("lahead (input window)")
        ax.set_ylabel("tsteps (moving-average window)")
        ax.set_title(f"{name.capitalize()} LSTM")
    fig.suptitle(
        f"R² on the test set; red frame: converged (R² >= {CONVERGED_R2}); dashed: lahead = tsteps"
    )
    fig.colorbar(image, ax=axes, label="R² (colours clipped to 0..1)")
    return fig


def display_available():
    """True when pyplot runs an interactive backend, i.e. plt.show() can open windows."""
    # matplotlib falls back to Agg by itself where there is no display; showing there only warns.
    return plt.get_backend().lower() not in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)


def finish_figures(figures, output_dir, show):
    """Save every figure, show them if asked and possible, then close them."""
    for name, fig in figures.items():
        write_whole(os.path.join(output_dir, name), lambda path: fig.savefig(path, format="png"))
    if show and display_available():
        plt.show()
    for fig in figures.values():
        plt.close(fig)


def write_whole(path, write):
    """Write a file under another name, then rename it: a reader (or Ctrl-C) never finds it half-written."""
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


# ------------
# MAIN PROGRAM
# ------------
def run(params, output_dir, show=False, fast=False, layout="interleaved"):
    """The original experiment: data, both models, figures, metrics.json and a summary.

    `params` holds input_len, tsteps, lahead, batch_size, epochs and seed.
    """
    tsteps, lahead = params["tsteps"], params["lahead"]
    print("*" * 33)
    if lahead >= tsteps:
        print("STATELESS LSTM WILL ALSO CONVERGE")
    else:
        print("STATELESS LSTM WILL NOT CONVERGE")
    print("*" * 33)
    warning = interleaved_warning(params["batch_size"], layout)
    if warning:
        print(warning)

    print("Generating Data...")
    data_input, expected_output = build_series(params["input_len"], tsteps, lahead, params["seed"])
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

    results = experiment(**params, fast=fast, layout=layout)

    print("Plotting Results")
    floor_mse = stateless_floor_mse(tsteps, lahead)
    figures["results.png"] = plot_results(results, floor_mse)
    figures["loss.png"] = plot_loss(results, floor_mse)

    metrics = {
        "backend": keras.backend.backend(),
        "params": params,
        "layout": layout,
        "fast": fast,
        "stateless_floor_mse": floor_mse,
        "stateful": model_metrics(results["stateful"]),
        "stateless": model_metrics(results["stateless"]),
    }
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    print_summary(metrics)
    print(f"Figures and metrics.json written to {output_dir}")
    finish_figures(figures, output_dir, show)
    return metrics


def run_sweep(params, tsteps_list, lahead_list, output_dir, show=False, fast=False, layout="interleaved"):
    """The experiment over a grid of tsteps x lahead: sweep.json (cell by cell) and sweep.png.

    Ctrl-C stops it; the cells already done stay in sweep.json and in the figure.
    Returns the cells done.
    """
    pairs = [(t, la) for t in tsteps_list for la in lahead_list]
    print(f"Sweeping {len(pairs)} cells: tsteps in {tsteps_list} x lahead in {lahead_list} on {keras.backend.backend()}")
    warning = interleaved_warning(params["batch_size"], layout)
    if warning:
        print(warning)
    path = os.path.join(output_dir, "sweep.json")
    header = {
        "backend": keras.backend.backend(),
        "params": {k: params[k] for k in ("input_len", "batch_size", "epochs", "seed")},
        "layout": layout,
        "fast": fast,
    }
    cells = []
    start = time.perf_counter()
    try:
        for done, (t, la) in enumerate(pairs, start=1):
            results = experiment(**{**params, "tsteps": t, "lahead": la}, fast=fast, layout=layout, verbose=0)
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
                f"stateful R² {cells[-1]['stateful']['r2']:.3f}, stateless R² {cells[-1]['stateless']['r2']:.3f}"
                f" | {elapsed:.0f} s elapsed, about {left:.0f} s left",
                flush=True,
            )
    except KeyboardInterrupt:
        print(f"\nInterrupted: {len(cells)} of {len(pairs)} cells kept in {path}")
    if not cells:
        return cells

    print()
    print(f"{'tsteps':>6} {'lahead':>6} {'stateful R²':>12} {'stateless R²':>13} {'floor':>9}  claim")
    for cell in cells:
        agrees = agrees_with_claim(cell["tsteps"], cell["lahead"], cell["stateful"]["converged"], cell["stateless"]["converged"])
        print(
            f"{cell['tsteps']:>6} {cell['lahead']:>6} {cell['stateful']['r2']:>12.3f} "
            f"{cell['stateless']['r2']:>13.3f} {cell['stateless_floor_mse']:>9.2e}  {'agrees' if agrees else 'DIFFERS'}"
        )
    finish_figures({"sweep.png": plot_sweep(cells, tsteps_list, lahead_list)}, output_dir, show)
    print(f"sweep.json and sweep.png written to {output_dir}")
    return cells


# ---------------------------------------------------------------------------
# CHECKS (not the lesson): every parameter, typed as a flag or into the editable block
# ---------------------------------------------------------------------------
LAYOUTS = ("interleaved", "contiguous")


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


def layout_name(value):
    if value not in LAYOUTS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LAYOUTS)}, got {value!r}")
    return value


def switch(value):
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"must be True or False, got {value!r}")
    return value


def folder(value):
    if not isinstance(value, str) or not value:
        raise argparse.ArgumentTypeError(f"must be a folder name, got {value!r}")
    return value


def grid(value):
    """A non-empty list of positive integers (the --sweep grids)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise argparse.ArgumentTypeError(f"must be a list of positive integers, got {value!r}")
    return [positive_int(item) for item in value]


# Which check each parameter gets, whether it comes from a flag or from the editable block.
CHECKS = {
    "input_len": positive_int,
    "tsteps": positive_int,
    "lahead": positive_int,
    "batch_size": positive_int,
    "epochs": positive_int,
    "seed": seed_int,
    "layout": layout_name,
    "output_dir": folder,
    "show": switch,
    "fast": switch,
    "sweep_tsteps": grid,
    "sweep_lahead": grid,
}


def check_editable_block(parser):
    """argparse checks what is typed on the command line; this gives the block's values the same checks."""
    block = globals()
    for name, check in CHECKS.items():
        try:
            check(block[name])
        except argparse.ArgumentTypeError as error:
            parser.exit(2, f"{parser.prog}: error: {name} = {block[name]!r} in the editable block: {error}\n")


def available_memory():
    """Bytes this process can still use: Linux's MemAvailable, else all physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


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
    if data + activations > have:
        gib = 2**30
        lower = "--lahead or --input-len" if data >= activations else "--batch-size or --lahead"
        parser.error(
            f"--input-len {input_len}, --lahead {lahead} and --batch-size {batch_size} need about "
            f"{(data + activations) / gib:.1f} GiB ({data / gib:.1f} GiB of data, {activations / gib:.1f} GiB "
            f"of LSTM activations), and {have / gib:.1f} GiB of memory is available; lower {lower}"
        )


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
        return f"Keras {keras.version()} is too old: this script needs keras >= 3.7 (pip install -U keras)"
    if keras.backend.backend() not in BACKENDS:
        return f"the Keras backend {keras.backend.backend()!r} cannot train; set KERAS_BACKEND to one of {', '.join(BACKENDS)}"
    return None


def make_parser():
    parser = argparse.ArgumentParser(
        description="Stateful vs stateless LSTM on a moving average (the Keras example, on Keras 3).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--input-len", type=positive_int, default=input_len, help="length of the generated input")
    add("--tsteps", type=positive_int, default=tsteps, help="window of the moving average (the target)")
    add("--lahead", type=positive_int, default=lahead, help="input window the LSTM sees per point")
    add("--batch-size", type=positive_int, default=batch_size, help="batch size (fixed for the stateful model)")
    add("--epochs", type=positive_int, default=epochs, help="training epochs for each model")
    add("--seed", type=seed_int, default=seed, help="seed for the data and the weights")
    add("--layout", type=layout_name, default=layout, help=f"which sample follows which in a batch: {', '.join(LAYOUTS)}")
    add("--output-dir", type=folder, default=output_dir, help="folder for the figures and the JSON")
    add("--show", action=argparse.BooleanOptionalAction, default=show, help="open the figures at the end if a display exists")
    add("--fast", action=argparse.BooleanOptionalAction, default=fast, help="run many steps per compiled call")
    add("--sweep", action="store_true", help="run the experiment over a grid of tsteps x lahead instead")
    # SUPPRESS: absent unless given, so that main can refuse them without --sweep
    sweep_grid = dict(type=positive_int, nargs="+", default=argparse.SUPPRESS)
    add("--sweep-tsteps", **sweep_grid, metavar="T", help=f"tsteps values of the sweep (default: {sweep_tsteps})")
    add("--sweep-lahead", **sweep_grid, metavar="L", help=f"lahead values of the sweep (default: {sweep_lahead})")
    return parser


def interrupted(output_dir, since):
    """The one line printed after Ctrl-C: which files this run had written, whole, by then."""
    kept = sorted(
        name
        for name in os.listdir(output_dir)
        if not name.startswith(".") and os.path.getmtime(os.path.join(output_dir, name)) >= since
    )
    return f"Interrupted: {', '.join(kept) or 'nothing'} written to {output_dir} by this run"


def main(argv=None):
    parser = make_parser()
    check_editable_block(parser)
    args = parser.parse_args(argv)
    problem = backend_problem()
    if problem:
        parser.exit(2, f"{parser.prog}: error: {problem}\n")
    params = {
        "input_len": args.input_len,
        "tsteps": args.tsteps,
        "lahead": args.lahead,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seed": args.seed,
    }
    options = {"show": args.show, "fast": args.fast, "layout": args.layout}
    if not args.sweep and ("sweep_tsteps" in vars(args) or "sweep_lahead" in vars(args)):
        parser.error("--sweep-tsteps and --sweep-lahead only make sense with --sweep")
    tsteps_list = sorted(set(getattr(args, "sweep_tsteps", sweep_tsteps))) if args.sweep else [args.tsteps]
    lahead_list = sorted(set(getattr(args, "sweep_lahead", sweep_lahead))) if args.sweep else [args.lahead]
    check_sizes(parser, args.input_len, max(tsteps_list), args.batch_size, args.layout)
    check_memory(parser, args.input_len, max(lahead_list), args.batch_size)
    prepare_output_dir(parser, args.output_dir)
    # Ctrl-C: one line instead of a traceback, and 130, the status a shell gives a run it stopped.
    since = time.time() - 1  # file times may be rounded down to the second
    try:
        if args.sweep:
            cells = run_sweep(params, tsteps_list, lahead_list, args.output_dir, **options)
            return 0 if len(cells) == len(tsteps_list) * len(lahead_list) else 130  # the sweep said what it kept
        run(params, args.output_dir, **options)
    except KeyboardInterrupt:
        print(f"\n{interrupted(args.output_dir, since)}", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
