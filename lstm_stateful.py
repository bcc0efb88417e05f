# %% [markdown]
# # Stateful vs stateless LSTM
#
# **Author:** the Keras team (the Keras 2 example `examples/lstm_stateful.py`); Keras 3 port:
# its maintainers<br>
# **Date created:** 2026/11/28 (this port; the Keras 2 original is undated)<br>
# **Last modified:** 2026/12/03<br>
# **Description:** A stateful LSTM remembers what its input window cannot show; a stateless one
# cannot.<br>
# **Accelerator:** None

# %% [markdown]
# ## Introduction
#
# How to use a stateful LSTM model, stateful vs stateless LSTM performance comparison.
#
# [More documentation about the Keras LSTM layer](https://keras.io/api/layers/recurrent_layers/lstm/)
#
# The models are trained on an input/output pair, where
# the input is a generated uniformly distributed
# random sequence of length = `input_len`,
# and the output is a moving average of the input with window length = `tsteps`.
# Both `input_len` and `tsteps` are defined in the "editable parameters"
# section.
#
# A larger `tsteps` value means that the LSTM will need more memory
# to figure out the input-output relationship.
# This memory length is controlled by the `lahead` variable (more details below).
#
# The rest of the parameters are:
#
# - `input_len`: the length of the generated input sequence
# - `lahead`: the input sequence length that the LSTM
#   is trained on for each output point
# - `batch_size`, `epochs`: same parameters as in the `model.fit(...)`
#   function
#
# When `lahead > 1`, the model input is preprocessed to a "rolling window view"
# of the data, with the window length = `lahead`.
# This is similar to scikit-image's `view_as_windows`
# with `window_shape` being a single number.
# (The original said sklearn's; its link went to scikit-image.)
#
# When `lahead < tsteps`, only the stateful LSTM converges because its
# statefulness allows it to see beyond the capability that lahead
# gave it to fit the n-point average. The stateless LSTM does not have
# this capability, and hence is limited by its `lahead` parameter,
# which is not sufficient to see the n-point average.
#
# When `lahead >= tsteps`, both the stateful and stateless LSTM converge.
#
# This port runs the original's experiment on Keras 3 (TensorFlow, JAX or PyTorch), then checks
# the claim against a number, uses the trained model one step at a time, and shows what each
# model's state remembers. Run it cell by cell, or whole: `python lstm_stateful.py` (`--help`
# lists its flags).


# %% [markdown]
# ## Setup
#
# TensorFlow reads three settings as it loads, so they come before `import keras`, each only
# where you set none:
#
# - `TF_CPP_MIN_LOG_LEVEL=3`: its C++ log lines held back, errors too (a CPU-only machine with
#   CUDA's libraries logs a failed call to cuInit); a few lines it writes while loading remain.
# - `TF_ENABLE_ONEDNN_OPTS=0` and `TF_NUM_INTEROP_THREADS=1`: no oneDNN kernels, one thread for
#   independent operations; both faster for operations as tiny as this model's (docs/speed.md).
#
# Keras runs on TensorFlow unless `KERAS_BACKEND` says `jax` or `torch`. In a plain `python`
# run, Ctrl-C prints one line instead of a traceback.

# %%
import argparse
import json
import os
import pathlib
import re
import sys
import typing

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
written = []  # the files this run has written, each whole (see save)
if sys.excepthook is sys.__excepthook__:  # plain Python, not a notebook: Ctrl-C prints one line
    sys.excepthook = lambda kind, *details: (  # (and Python exits with status 130)
        print(f"\nInterrupted: {', '.join(written) or 'nothing'} written by this run")
        if kind is KeyboardInterrupt
        else sys.__excepthook__(kind, *details)
    )
try:
    import keras
except (ImportError, ValueError) as error:  # the backend is not installed, or has no such name
    hint = "install it (see the README) or set KERAS_BACKEND to tensorflow, jax or torch"
    sys.stderr.write(f"lstm_stateful.py: error: Keras cannot load its backend: {error}; {hint}\n")
    sys.exit(2)

# %% [markdown]
# ## Editable parameters
#
# Change a value here, or pass it as a flag: `input_len` is `--input-len`, `show` is `--show` /
# `--no-show`. The defaults are the original's experiment.

# %%
input_len: int = 1000  # length of the generated input
tsteps: int = 2  # window of the moving average that is the output
lahead: int = 1  # input window the LSTM sees for each output point
batch_size: int = 1  # samples per batch, fixed for the stateful model
epochs: int = 10  # training epochs of each model
seed: int = 1986  # seed of the data (the original's) and of the initial weights
layout: typing.Literal["interleaved", "contiguous"] = "interleaved"  # which sample in which slot
window_order: typing.Literal["newest-first", "oldest-first"] = "newest-first"  # inputs in a window
learning_rate: float = 0.001  # Adam's step size (Keras's default, as in the original)
fast: bool = True  # Keras's faster ways to run the same model (docs/speed.md)
output_dir: str = "outputs"  # folder for the figures and metrics.json
show: bool = True  # open the figures at the end, where a display exists

# %% [markdown]
# ### Flags, and checks before any work
#
# Each line above is a flag whose default is its value and whose help is its comment
# (`--help`). Flags are read only where this file is the program that runs (`python
# lstm_stateful.py`, or `%run lstm_stateful.py` in IPython), never from a notebook kernel's
# own command line. Every value, typed above or passed, is checked here: a bad one, too little
# data, more memory than the machine has, or a folder that cannot be written stops the run
# with one line and exit status 2. Then the values the run uses are printed. `fast` chooses
# here how Keras runs the models on each backend: the models are the same (docs/speed.md).

# %%
KINDS = globals().get("__annotations__") or globals()["__annotate__"](1)  # 3.14: made on demand


def problem(name, value):
    """What is wrong with a parameter's value, or None."""
    kind, low, choices = KINDS[name], 0 if name == "seed" else 1, typing.get_args(KINDS[name])
    ok, must = {
        int: (type(value) is int and low <= value < 2**32, f"an integer from {low} to 2**32 - 1"),
        float: (type(value) in (int, float) and 0 < value < np.inf, "a positive number"),
        bool: (type(value) is bool, "True or False"),
        str: (type(value) is str and value != "", "a folder name"),
    }.get(kind, (value in choices, f"one of {', '.join(choices)}"))
    return None if ok else f"must be {must}"


parser = argparse.ArgumentParser(prog="lstm_stateful.py", description="Stateful vs stateless LSTM")
parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message}\n")  # one line
this_file = globals().get("__file__")  # a notebook's cell has none
block = pathlib.Path(this_file).read_text(encoding="utf-8") if this_file else ""
comments = dict(re.findall(r"^(\w+): .+?  # (.+)$", block, re.MULTILINE))  # each flag's help
for name, kind in KINDS.items():
    default, choices = globals()[name], typing.get_args(kind) or None
    options = {"type": kind if kind in (int, float) else str, "choices": choices}
    options = {"action": argparse.BooleanOptionalAction} if kind is bool else options
    text = f"{comments.get(name, '')} (default: {default})"
    parser.add_argument("--" + name.replace("_", "-"), default=default, help=text, **options)
ours = this_file and sys.argv and os.path.realpath(sys.argv[0]) == os.path.realpath(this_file)
args = parser.parse_args(sys.argv[1:] if ours else [])
for name in KINDS:
    if message := problem(name, value := getattr(args, name)):
        where = "in the editable block" if value is globals()[name] else "on the command line"
        parser.error(f"{name} = {value!r} {where}: {message}")
globals().update(vars(args))

if (backend := keras.backend.backend()) not in ("tensorflow", "jax", "torch"):
    parser.error(f"Keras's {backend} backend cannot train: use tensorflow, jax or torch")
# The original's split: 80% to train, the rest to test, each cut to whole batches.
to_train = int(input_len * 0.8) // batch_size * batch_size
to_test = input_len - to_train - input_len % batch_size
# The test set's streams, each scored from its tsteps-th point on (see the layouts below); R²
# needs two points scored.
streams = batch_size if layout == "contiguous" else 1
if to_train == 0 or to_test < tsteps + 1 or to_test // streams < tsteps:
    parser.error(f"--input-len {input_len} leaves too few test points for --tsteps {tsteps}")
# Bytes, measured (docs/speed.md): Keras and its backend; per input and window step, the window
# view and the states kept for "What the state remembers"; the LSTM's activations in training.
need = 2**30 + 1300 * (input_len + lahead) * lahead + 600 * batch_size * lahead
if hasattr(os, "sysconf") and need > os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"):
    parser.error(f"these sizes need {need / 2**30:.1f} GiB, more than this machine has")
try:
    os.makedirs(output_dir, exist_ok=True)
    pathlib.Path(output_dir, ".write-test").touch()
    pathlib.Path(output_dir, ".write-test").unlink()
except OSError as error:
    parser.error(f"--output-dir {output_dir!r} cannot be written: {error}")
print(", ".join(f"{name} = {globals()[name]!r}" for name in KINDS))
# fast: many steps per compiled call (PyTorch: Keras takes one); XLA on JAX always, and on
# TensorFlow for windows of 3+ steps, whose runs repeat only with it (docs/results.md).
speed = {
    "steps_per_execution": 1000 if fast and backend != "torch" else 1,
    "jit_compile": backend == "jax" or (backend == "tensorflow" and fast and lahead > 2),
}


def save(name, thing):
    """Write a figure (PNG) or a dict (JSON) to name.partial, then rename it: Ctrl-C never leaves
    half a file under its own name."""
    path = os.path.join(output_dir, name)
    if isinstance(thing, dict):
        pathlib.Path(path + ".partial").write_text(json.dumps(thing, indent=2))
    else:
        thing.savefig(path + ".partial", format="png")
    os.replace(path + ".partial", path)
    written.append(path)


# %% [markdown]
# ## The data
#
# Uniform noise, and its moving average over `tsteps` points: with `tsteps = 2` the input
# `1, 2, 3, 4, 5` gives the output `1.5, 2.5, 3.5, 4.5`. Each sample is a window of the last
# `lahead` inputs, newest first in the original: with `lahead = 3` the windows of `1, 2, 3, 4, 5`
# are `3, 2, 1` / `4, 3, 2` / `5, 4, 3`. The banner first says what the original expects of
# the stateless model. Then, in the heads and tails, the input's column i holds the input i
# steps back (each column is column 0 shifted down by i rows), and each output is the average
# of column 0's value and the `tsteps - 1` values above it.

# %%
will = "ALSO" if lahead >= tsteps else "NOT"
print("*" * 33, f"STATELESS LSTM WILL {will} CONVERGE", "*" * 33, sep="\n")

print("Generating Data...")


def gen_uniform_amp(amp=1, xn=10000):
    """Generates uniform random data between
    -amp and +amp
    and of length xn

    # Arguments
        amp: maximum/minimum range of uniform data
        xn: length of series
    """
    # A generator of its own, not numpy's global one the original seeded: the very same numbers.
    data_input = np.random.RandomState(seed).uniform(-1 * amp, +1 * amp, xn)
    data_input = pd.DataFrame(data_input)
    return data_input


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
data_input = gen_uniform_amp(amp=0.1, xn=input_len + to_drop)
series = data_input[0].to_numpy()  # every input in time order, for "What the state remembers"

# set the target to be a N-point average of the input
expected_output = data_input.rolling(window=tsteps, center=False).mean()

# when lahead > 1, need to convert the input to "rolling window view"
# https://docs.scipy.org/doc/numpy/reference/generated/numpy.repeat.html
if lahead > 1:
    data_input = np.repeat(data_input.values, repeats=lahead, axis=1)
    data_input = pd.DataFrame(data_input)
    for i, c in enumerate(data_input.columns):
        data_input[c] = data_input[c].shift(i)
# Beyond the original: oldest-first windows, in time order, end with the newest input. Newest
# first, where lahead > tsteps the target sits at the window's first steps (docs/sweep.md).
if window_order == "oldest-first":
    data_input = data_input[data_input.columns[::-1]]

# drop the nan
expected_output = expected_output[to_drop:]
data_input = data_input[to_drop:]

print("Input shape:", data_input.shape)
print("Output shape:", expected_output.shape)
print("Input head: ", data_input.head(), sep="\n")
print("Output head: ", expected_output.head(), sep="\n")
print("Input tail: ", data_input.tail(), sep="\n")
print("Output tail: ", expected_output.tail(), sep="\n")

print("Plotting input and expected output")
fig, ax = plt.subplots()
ax.plot(data_input[0][:10], ".")
ax.plot(expected_output[0][:10], "-")
ax.legend(["Input", "Expected output"])
ax.set(title="Input", xlabel="time step")
save("input.png", fig)  # shown at the end: the original's plt.show() here blocked the run

# %% [markdown]
# ## Keras's bug, and the workaround
#
# An LSTM's state is two vectors of 20 numbers for each sample of a batch: h, the hidden state
# (its output), and c, the cell state (its memory). Keras 3 keeps a stateful LSTM's state
# outside the variables its trainers know, so on JAX `fit()` trains a stateless model without
# a word, and on PyTorch it raises (docs/keras-bug.md). `TrackedStateLSTM` is
# `keras.layers.LSTM` with that mended, on every backend: copy it into your own code and use
# it as you would Keras's.


# %%
@keras.saving.register_keras_serializable(package="lstm_stateful")  # so load_model finds it
class TrackedStateLSTM(keras.layers.LSTM):
    """keras.layers.LSTM, whose state JAX and PyTorch carry from batch to batch too.

    The state joins the layer's `variables`, which trainers read and write back (JAX), but not
    its weights: summary(), get_weights() and saving see the parameters alone. Each step starts
    from a copy of the state, which autograd may keep (PyTorch).
    """

    @property
    def variables(self):
        return [*super().variables, *(self.states or [])]  # no states: stateless, or not built

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if self.stateful and initial_state is None:
            initial_state = [keras.ops.copy(state) for state in self.states]
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)


# %% [markdown]
# ## The models
#
# An LSTM of 20 units, then one Dense output, trained on the mean squared error with Adam, as
# in the original. A stateful LSTM carries its state from batch to batch, slot by slot, so its
# batch size is part of its input shape. In the summary, the parameters are the weights alone:
# the state is not one of them.


# %%
def initial_weights(units=20):
    """Keras's default initial weights for LSTM(units) and Dense(1), drawn by numpy from `seed`:
    glorot-uniform kernels, an orthogonal recurrent kernel, zero biases but the forget gate's,
    at 1. The same numbers on every backend, where Keras would draw its own."""
    rng = np.random.default_rng(seed)

    def glorot_uniform(fan_in, fan_out):
        limit = np.sqrt(6 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out))

    kernel = glorot_uniform(1, 4 * units)  # the four gates (i, f, c, o) side by side
    q, r = np.linalg.qr(rng.standard_normal((4 * units, units)))
    recurrent_kernel = (q * np.sign(np.diag(r))).T
    bias = np.concatenate([np.zeros(units), np.ones(units), np.zeros(2 * units)])
    return [kernel, recurrent_kernel, bias, glorot_uniform(units, 1), np.zeros(1)]


def create_model(stateful, batch_size=batch_size):
    model = keras.Sequential()
    # Keras 3 takes a stateful LSTM's fixed batch here, not as LSTM(batch_size=...).
    model.add(keras.Input(batch_shape=(batch_size, lahead, 1)))
    # fast: windows of up to 4 steps unrolled (docs/speed.md)
    model.add(TrackedStateLSTM(20, stateful=stateful, unroll=fast and lahead <= 4))
    model.add(keras.layers.Dense(1))
    # Adam with its step size a parameter: the original's "adam" is Adam(0.001).
    model.compile(loss="mse", optimizer=keras.optimizers.Adam(learning_rate), **speed)
    model.set_weights(initial_weights())  # Beyond the original: the same start on every backend
    return model


print("Creating Stateful Model...")
model_stateful = create_model(stateful=True)
model_stateful.summary()

# %% [markdown]
# ## Train and test sets, in batches
#
# The first 80% of the samples train, the rest test, each cut to whole batches. A stateful
# LSTM hands the state of slot i of one batch to slot i of the next, so which sample sits in
# which slot decides what the state carries. With `batch_size = 3` and 12 time steps t0..t11:
#
# ```
# layout="interleaved" (the original)   layout="contiguous"
#          slot 0 slot 1 slot 2                  slot 0 slot 1 slot 2
# batch 0    t0     t1     t2           batch 0    t0     t4     t8
# batch 1    t3     t4     t5           batch 1    t1     t5     t9
# batch 2    t6     t7     t8           batch 2    t2     t6     t10
# batch 3    t9     t10    t11          batch 3    t3     t7     t11
# ```
#
# Interleaved, slot 0 goes t0, t3, t6: its state holds the input from `batch_size` steps back,
# not the one before, and is of no use for `tsteps = 2` once `batch_size > 1`. Contiguous, each
# slot walks through a stream of its own, one step at a time (docs/layouts.md). With
# `batch_size = 1`, the default, both are time order. The shapes below are (samples, lahead, 1)
# and (samples, 1).


# %%
def split_data(x, y):
    """The original's split (to_train and to_test, from the checks above), reshaped as Keras
    takes it: x (samples, lahead, 1), y (samples, 1). to_numpy copies: pandas may hand out
    read-only views."""
    x, y = x.to_numpy(copy=True)[:, :, np.newaxis], y.to_numpy(copy=True)  # some reshaping
    test = slice(to_train, to_train + to_test)
    return (x[:to_train], y[:to_train]), (x[test], y[test])


def to_layout(a, undo=False):
    """Time-ordered rows in the order the layout batches them: slot i of each batch walks stream
    i (contiguous); with the default layout, one stream, nothing moves. `undo`: back in time
    order."""
    rows = (-1, streams) if undo else (streams, -1)
    return a.reshape(*rows, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape)


(x_train, y_train), (x_test, y_test) = split_data(data_input, expected_output)
print("x_train.shape: ", x_train.shape)
print("y_train.shape: ", y_train.shape)
print("x_test.shape: ", x_test.shape)
print("y_test.shape: ", y_test.shape)
x_train, y_train, x_test, y_test = (to_layout(a) for a in (x_train, y_train, x_test, y_test))

# %% [markdown]
# ## Training the stateful model
#
# One epoch per `fit()`, the batches in order (`shuffle=False`), the state reset by hand after
# each, so that every epoch starts afresh. Each epoch prints a line: keep an eye on `val_loss`,
# the loss on the test set. Where `lahead < tsteps`, this model's falls far below the stateless
# model's, next.

# %%
print("Training")
# Both models: batches in order, validated on the test set after each epoch, a line per epoch
# (verbose=2: Keras's progress bar counts past its total with many steps per call).
fit_args = dict(batch_size=batch_size, verbose=2, validation_data=(x_test, y_test), shuffle=False)
history_stateful = {"loss": [], "val_loss": []}
for i in range(epochs):
    print("Epoch", i + 1, "/", epochs)
    # Note that the last state for sample i in a batch will
    # be used as initial state for sample i in the next batch.
    # Thus we are simultaneously training on batch_size series with
    # lower resolution than the original series contained in data_input.
    # Each of these series are offset by one step and can be
    # extracted with data_input[i::batch_size].
    # (So with layout="interleaved"; contiguous, slot i walks stream i. The validation
    # runs on from the state training left. Gradients never cross batches.)
    history = model_stateful.fit(x_train, y_train, epochs=1, **fit_args).history
    for key in history_stateful:
        history_stateful[key] += history[key]
    # Keras 3 has no Model.reset_states(): the stateful LSTM layer resets its own state.
    model_stateful.layers[0].reset_state()

print("Predicting")
# From here on one step per call, predict and any later fit: with many, TensorFlow's predict
# is slow (docs/speed.md).
model_stateful.steps_per_execution = 1
predicted_stateful = model_stateful.predict(x_test, batch_size=batch_size)

# %% [markdown]
# ## The stateless model
#
# The same model without state, trained the usual way: one `fit()` for all epochs. Each window
# starts from zeros, so it knows only the `lahead` inputs it is shown. Where `lahead < tsteps`
# its `val_loss` soon stops falling: it has learnt what its window can tell.

# %%
print("Creating Stateless Model...")
model_stateless = create_model(stateful=False)

print("Training")
history_stateless = model_stateless.fit(x_train, y_train, epochs=epochs, **fit_args).history

print("Predicting")
model_stateless.steps_per_execution = 1  # one step per call from here on, as above
predicted_stateless = model_stateless.predict(x_test, batch_size=batch_size)

# %% [markdown]
# ## The residuals
#
# The original's three panels, in time order: the expected output, then each model's residual
# (expected minus predicted), on one scale. In grey behind each: what the window cannot show,
# the residual of the best a model without state can do, which is to average what its window
# shows (the inputs it cannot see average zero). Its mean square is the *floor*: no model
# without state goes below it. Where `lahead < tsteps` the stateless residual follows the grey
# while the stateful one stays near zero. The stateful model meets the test set from a reset
# state, so its first `tsteps - 1` points, whose average reaches back past the reset, are left
# out of its score.

# %%
print("Plotting Results")
expected, window = to_layout(y_test, undo=True)[:, 0], to_layout(x_test, undo=True)[:, :, 0]
best_without_state = expected if lahead >= tsteps else window.sum(axis=1) / tsteps
skipped = np.arange(len(expected)) % (len(expected) // streams) < tsteps - 1  # in each stream


def score(predicted, skipped):
    """For predictions in time order: the residual (NaN where not scored), the test MSE and R²,
    the floor (the test MSE of the best guess without state, on the same points), the share of
    it recovered, and the verdict."""
    m = {"residual": np.where(skipped, np.nan, expected - predicted)}
    m["test_mse"] = float(np.mean(m["residual"][~skipped] ** 2))
    m["r2"] = 1 - m["test_mse"] / float(np.var(expected[~skipped]))
    m["floor_mse"] = float(np.mean((expected - best_without_state)[~skipped] ** 2))
    m["recovered"] = 1 - m["test_mse"] / m["floor_mse"] if m["floor_mse"] > 0 else None
    m["converged"] = m["r2"] >= 0.8 if m["recovered"] is None else m["recovered"] >= 0.5
    return m


results = {
    "stateful": score(to_layout(predicted_stateful, undo=True)[:, 0], skipped),
    "stateless": score(to_layout(predicted_stateless, undo=True)[:, 0], np.zeros_like(skipped)),
}
fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True, layout="constrained")
axes[0].plot(expected)
axes[0].set(title="Expected", ylabel="moving average")
axes[2].sharey(axes[1])
for ax, (name, m) in zip(axes[1:], results.items(), strict=True):
    ax.plot(expected - best_without_state, color="0.8", label="what the window cannot show")
    ax.plot(m["residual"], color="tab:blue", label="expected - predicted")
    ax.set(title=f"{name.capitalize()}: Expected - Predicted (test MSE {m['test_mse']:.2e})")
axes[1].legend(loc="upper right", fontsize=8)
axes[2].set_xlabel("test time step")
save("results.png", fig)

# %% [markdown]
# ## The verdict
#
# Beyond the original: a number for "converges". A model *converges* when it recovers at least
# half of the floor (its test MSE at most half of it), on the points it is scored on; R² would
# credit a model at the floor with the part of the average it sees. Where `lahead >= tsteps`
# there is no floor, and a model converges when its R² reaches 0.8. Below: each model's line,
# then whether the run agrees with the example's claim. The loss per epoch shows the stateless
# model on the floor.

# %%
print(f"\nKeras {keras.version()} on {backend}; seed {seed}")


def judged(m):
    """What a verdict reads: the share of the floor recovered, or R² where there is no floor."""
    return f"R² {m['r2']:.3f}" if m["recovered"] is None else f"{m['recovered']:.1%} recovered"


for name, m in results.items():
    floor = "" if m["recovered"] is None else f" against a floor of {m['floor_mse']:.2e}"
    verdict = "converged" if m["converged"] else "NOT converged"
    print(f"{name:<10} test MSE {m['test_mse']:.2e}{floor}: {judged(m)}, {verdict}")
both = lahead >= tsteps
claim = f"{'both models converge' if both else 'only the stateful model converges'} when "
claim += f"lahead {'>=' if both else '<'} tsteps"
agrees = results["stateful"]["converged"] and results["stateless"]["converged"] == both
print(f"This run {'agrees' if agrees else 'does NOT agree'} with the example's claim: {claim}.")

results["stateful"] |= history_stateful
results["stateless"] |= history_stateless
fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
for name, color in (("stateful", "tab:blue"), ("stateless", "tab:orange")):
    m, x = results[name], range(1, epochs + 1)
    ax.plot(x, m["loss"], "-o", color=color, label=f"{name} training loss")
    ax.plot(x, m["val_loss"], ":x", color=color, label=f"{name} validation loss")
if lahead < tsteps:  # a wide pale band, seen around the stateless loss that lies on it
    floor = results["stateless"]["floor_mse"]
    label = f"stateless floor on the test set, {floor:.2e}"
    ax.axhline(floor, color="tab:red", linewidth=8, alpha=0.25, zorder=0, label=label)
ax.set(title="Loss per epoch", xlabel="epoch", ylabel="mean squared error", yscale="log")
ax.legend(fontsize=8)
save("loss.png", fig)

# %% [markdown]
# ## The trained model, one step at a time
#
# How a stateful model is used next: on a stream, one sample per call, each call going on from
# the state the call before left. The weights do not depend on the batch size, the state does,
# so they go to a copy built for batches of one sample. Fed the test set from a reset state, it
# predicts what `predict()` did where the batch size is 1 (largest difference 0); a model
# trained in bigger batches expects what its slots carried (docs/layouts.md).

# %%
model_stream = create_model(stateful=True, batch_size=1)
model_stream.set_weights(model_stateful.get_weights())  # the parameters only, not the state
x_stream = to_layout(x_test, undo=True)  # in time order
streamed = np.concatenate([model_stream.predict_on_batch(x[np.newaxis]) for x in x_stream])
results["stream"] = score(streamed[:, 0], np.arange(len(expected)) < tsteps - 1)  # one stream
difference = np.max(np.abs(streamed - to_layout(predicted_stateful, undo=True)))
results["stream"]["largest_difference"] = float(difference)
print(f"streamed   test MSE {results['stream']['test_mse']:.2e}: {judged(results['stream'])}")
print(f"(one sample per call at batch size 1; largest difference from predict(): {difference:.1e})")

# %% [markdown]
# ## What the state remembers
#
# The claim is about memory, so look at it. Each trained LSTM runs over the whole series, and
# its state (h and c, 40 numbers) after each sample is kept: the stateful one carries it from
# sample to sample from one reset, the stateless one starts each window from zeros. Then, for
# each k, a linear readout (least squares, fitted on the training samples) tries to recover
# from that state the input k steps before each sample's newest input; its R² on the test
# samples says how much of that input the state holds: 1 all of it, 0 nothing (with a few
# hundred training samples; far fewer overfit). The window shows k < `lahead`; the average
# needs k < `tsteps`. Below, a row of R² for each model, k = 0, 1, ...; memory.png draws them.


# %%
class StateCell(keras.layers.LSTMCell):
    """An LSTM step whose output is its whole state, h and c side by side."""

    def call(self, inputs, states, training=False):
        _, (h, c) = super().call(inputs, states, training=training)
        return keras.ops.concatenate([h, c], axis=-1), [h, c]


def states_after_each_sample(model, x):
    """The state after each sample of `x` (time order): stateful, the windows end to end as one
    stream (as at batch size 1); stateless, each window from zeros."""
    rnn = keras.layers.RNN(StateCell(20), return_sequences=True)
    probe = keras.Sequential([keras.Input((None, 1)), rnn])
    probe.set_weights(model.layers[0].get_weights())  # the trained LSTM's kernels and biases
    runs = x.reshape(1, -1, 1) if model.layers[0].stateful else x
    return probe.predict(runs, verbose=0).reshape(len(x), lahead, 40)[:, -1]


def memory_r2(states, inputs, n_train, ks):
    """For each k in `ks`: the R² of a linear readout, from the state after each sample, of the
    input k steps before the sample's newest (inputs[-len(states):] are the newest). Least
    squares on the first `n_train` samples, scored on the rest; from sample max(ks) on, so that
    every k has its input."""
    back = max(ks)
    lags = [inputs[len(inputs) - len(states) + back - k : len(inputs) - k] for k in ks]
    targets, features = np.stack(lags, axis=1), np.c_[states, np.ones(len(states))][back:]
    train, test = slice(0, n_train - back), slice(n_train - back, None)
    # rcond: directions of the state below float32's precision (1e-7 of the largest) are
    # rounding, not memory, and are left out (else each backend's rounding reads otherwise).
    weights = np.linalg.lstsq(features[train], targets[train], rcond=1e-7)[0]
    error = targets[test] - features[test] @ weights
    return (1 - np.mean(error**2, axis=0) / np.var(targets[test], axis=0)).tolist()


x_all = np.concatenate([to_layout(x_train, undo=True), x_stream])  # every sample, in time order
inputs = series[: to_drop + len(x_all)]  # every input, up to the last sample's newest
ks = range(max(tsteps, lahead) + 3)
fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
ax.axvspan(-0.5, lahead - 0.5, color="0.9", label=f"in the window: k < lahead = {lahead}")
ax.axvline(tsteps - 0.5, color="tab:red", linestyle="--", label=f"the average: k < {tsteps}")
print(f"R² of the input k = {', '.join(map(str, ks))} steps back, read from the state:")
for name, model in (("stateful", model_stateful), ("stateless", model_stateless)):
    states = states_after_each_sample(model, x_all)
    results[name]["memory_r2"] = r2 = memory_r2(states, inputs, len(x_train), ks)
    print(f"{name:<10}", " ".join(f"{r:5.2f}" for r in r2))
    ax.plot(ks, r2, "-o", label=name)
ax.set(title="What the state remembers", xlabel="k: the input k steps before the newest")
ax.set(ylabel="R² of the input, read from the state", ylim=(min(-0.1, *ax.get_ylim()), 1.05))
ax.legend(fontsize=8)
save("memory.png", fig)

# %% [markdown]
# ## The numbers, in a file
#
# `metrics.json` holds the parameters and each model's scores, losses and memory. In a terminal
# with a display, the figures open now.

# %%
metrics = {
    "backend": backend,
    "params": {name: globals()[name] for name, kind in KINDS.items() if kind in (int, float)},
    **{name: globals()[name] for name in ("layout", "window_order", "fast")},
    "agrees": agrees,
    **{name: {k: v for k, v in m.items() if k != "residual"} for name, m in results.items()},
}
save("metrics.json", metrics)
print(f"Figures and metrics.json written to {output_dir}")
# Agg: no display (matplotlib's fallback). A notebook has shown each figure under its cell.
if show and plt.get_backend().lower() != "agg":
    plt.show()
else:
    plt.close("all")
