# %% [markdown]
# # Stateful vs stateless LSTM
#
# **Author:** the Keras team; Keras 3 port: this project's maintainers<br>
# **Date created:** 2026/11/28<br>
# **Last modified:** 2026/12/06<br>
# **Description:** A stateful LSTM remembers what its window leaves out; a stateless one cannot.<br>
# **Accelerator:** None

# %% [markdown]
# ## Introduction
#
# A recurrent layer reads a sequence one step at a time and keeps a *state*: for an LSTM, two
# vectors per sample, `h` (the output it passes on) and `c` (its memory). By default Keras
# starts every sample's state from zeros. With `stateful=True` it starts each batch from the
# state the batch before left behind, so a model can remember inputs it no longer sees.
#
# This example puts that to a test. The input is uniform noise; the target at each step is the
# mean of the last `tsteps` inputs. Each sample shows the model only the last `lahead` inputs
# (the original's name: read it as "how far back the window reaches"). With `tsteps = 2` and
# `lahead = 1`, the model sees one input but must output the mean of two: it has to remember
# the input before.
#
# The claim: when `lahead < tsteps`, a stateful LSTM can fit the target and a stateless one
# cannot; when `lahead >= tsteps`, both can, since the window holds every input of the mean. It
# holds for the defaults and for short windows. It fails where the window is several times
# longer than the mean and its inputs come newest first, as the original builds them, and now
# and then where the mean is long: then 10 epochs at one seed may not be enough
# ([docs/sweep.md](docs/sweep.md) runs it over a grid and over seeds).
#
# The state does not decide what to remember: training sets the weights that write into it and
# read from it. Each batch's gradient stops at the batch's first step (truncated
# backpropagation through time), so only each batch's own loss shapes them. What the state ends
# up holding can reach further back than that loss needs ("What the state remembers", below).

# %% [markdown]
# ## Setup
#
# TensorFlow reads three settings as it loads, so they come before `import keras`, each only
# where you have set none: its C++ log quiet (errors too: a machine with CUDA's libraries and
# no GPU logs a failed cuInit call), no oneDNN kernels and one thread for independent
# operations, both faster for operations as small as these (docs/speed.md). Keras runs on
# TensorFlow unless `KERAS_BACKEND` says `jax` or `torch`.

# %%
import json
import os
import sys
from argparse import SUPPRESS, ArgumentDefaultsHelpFormatter, ArgumentParser, ArgumentTypeError

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
import keras  # noqa: E402  (after the settings above)

# %% [markdown]
# ## Parameters
#
# Edit a value here, or pass it as a flag: `input_len` is `--input-len` (`--help` lists them).
# The defaults are the original's experiment.

# %% tags=["parameters"]
input_len = 1000  # length of the input, after the first steps are dropped
tsteps = 2  # the target is the mean of this many inputs, the newest last
lahead = 1  # each sample is a window of this many inputs
batch_size = 1  # samples per batch; sample i of each batch sits in slot i, with its own state
epochs = 10  # passes over the training set
seed = 1986  # the original's: the noise, and the initial weights
layout = "interleaved"  # or "contiguous": which sample goes to which slot (docs/layouts.md)
window_order = "newest-first"  # or "oldest-first": the order of the inputs in a window
learning_rate = 0.001  # Adam's step size
output_dir = "outputs"  # where the figures and metrics.json go

# %% [markdown]
# ### The command line, and its checks
#
# Flags are read where the program run is `lstm_stateful.py` (`python lstm_stateful.py`, or
# `%run lstm_stateful.py` in IPython), never from a notebook kernel's own command line. A value
# typed above is read as if it were passed as its flag. A bad value, too little data, too
# little memory, or a folder that cannot be made stops the run here, in one line with exit
# status 2.


# %%
def number(text, kind=int, low=1):  # string defaults below go through it too (argparse's rule)
    """A flag's text, or a value typed above, as `kind` from `low` below 2**32 (numpy's seeds)."""
    if not low <= kind(text) < 2**32:  # "2.5" or "x" raise ValueError, and are refused too
        raise ArgumentTypeError(f"{text} is not a number from {low} to 2**32 - 1")
    return kind(text)


LAYOUTS, ORDERS = ["interleaved", "contiguous"], ["newest-first", "oldest-first"]
flags = ArgumentParser("lstm_stateful.py", SUPPRESS, formatter_class=ArgumentDefaultsHelpFormatter)
flags.add_argument("--input-len", type=number, default=str(input_len), help="inputs to learn from")
flags.add_argument("--tsteps", type=number, default=str(tsteps), help="inputs in the mean")
flags.add_argument("--lahead", type=number, default=str(lahead), help="inputs in a window")
flags.add_argument("--batch-size", type=number, default=str(batch_size), help="samples per batch")
flags.add_argument("--epochs", type=number, default=str(epochs), help="passes over the data")
flags.add_argument("--seed", type=lambda text: number(text, low=0), default=str(seed), help="0 up")
flags.add_argument("--layout", choices=LAYOUTS, default=layout, help="which sample in which slot")
flags.add_argument("--window-order", choices=ORDERS, default=window_order, help="of its inputs")
flags.add_argument("--learning-rate", type=float, default=str(learning_rate), help="Adam's step")
flags.add_argument("--output-dir", default=output_dir, help="for the figures and metrics.json")
args = flags.parse_args(sys.argv[1:] if flags.prog == os.path.basename(sys.argv[0]) else [])
input_len, tsteps, lahead, batch_size = args.input_len, args.tsteps, args.lahead, args.batch_size
epochs, seed, layout, window_order = args.epochs, args.seed, args.layout, args.window_order
learning_rate, output_dir = args.learning_rate, args.output_dir
if layout not in LAYOUTS or window_order not in ORDERS or not 0 < learning_rate < np.inf:
    flags.error(f"layout {layout!r}, window_order {window_order!r} or {learning_rate}: not allowed")
if input_len < 5 * batch_size * (tsteps + 1):  # a test set (1/5) of more than tsteps batches
    flags.error(f"--input-len {input_len} is under 5 x --batch-size x (--tsteps + 1)")
try:  # the memory the run needs (docs/speed.md), asked for and given back; then the folder
    np.empty(2**30 + 1300 * (input_len + lahead) * lahead + 600 * batch_size * lahead, np.uint8)
    os.makedirs(output_dir, exist_ok=True)
except (MemoryError, OSError) as error:
    flags.error(f"{error} (--input-len {input_len}, --lahead {lahead}, --output-dir {output_dir})")


# %% [markdown]
# ## The data
#
# The input is uniform noise between -0.1 and 0.1; the target is its moving mean over `tsteps`
# points: with `tsteps = 2`, the inputs `1, 2, 3, 4, 5` give the targets `1.5, 2.5, 3.5, 4.5`.
# Each sample is a window of the last `lahead` inputs, newest first as in the original: with
# `lahead = 3` the windows of `1, 2, 3, 4, 5` are `3, 2, 1` / `4, 3, 2` / `5, 4, 3`. The first
# `max(tsteps, lahead) - 1` inputs have no full mean or no full window, so that many more are
# drawn and then dropped.
#
# The banner says what the original expects of the stateless model. In the printed heads and
# tails, the input's column i holds the input i steps back (column 0 moved down i rows; with
# `window_order = "oldest-first"`, the columns in reverse), and each target is the mean of the
# newest input and the `tsteps - 1` inputs before it.

# %%
window_suffices = lahead >= tsteps  # the window shows every input of the mean
print("*" * 33, f"STATELESS LSTM WILL {'ALSO' if window_suffices else 'NOT'} CONVERGE", sep="\n")
print("*" * 33)
print("Generating Data...")


def save(name, thing):
    """Write a figure (PNG) or a dict (JSON) into output_dir, first under a temporary name, then
    renamed: Ctrl-C never leaves half a file."""
    path = os.path.join(output_dir, name)
    if isinstance(thing, dict):
        with open(path + ".partial", "w") as file:
            json.dump(thing, file, indent=2)
    else:
        thing.savefig(path + ".partial", format="png")
    os.replace(path + ".partial", path)


to_drop = max(tsteps, lahead) - 1
# A generator of its own gives the very numbers of the original, which seeded numpy's global one.
noise = pd.DataFrame(np.random.RandomState(seed).uniform(-0.1, 0.1, input_len + to_drop))
expected_output = noise.rolling(tsteps).mean()[to_drop:]
windows = np.lib.stride_tricks.sliding_window_view(noise[0].to_numpy(), lahead)  # oldest first
windows = windows[:, ::-1] if window_order == "newest-first" else windows  # the original's order
data_input = pd.DataFrame(windows[to_drop + 1 - lahead :], index=expected_output.index)

print(f"Input shape: {data_input.shape}\nOutput shape: {expected_output.shape}")
print("Input head: ", data_input.head(), "Output head: ", expected_output.head(), sep="\n")
print("Input tail: ", data_input.tail(), "Output tail: ", expected_output.tail(), sep="\n")

print("Plotting input and expected output")
fig, ax = plt.subplots()
ax.plot(noise[0][to_drop : to_drop + 10], ".", label="Input")  # each sample's newest input
ax.plot(expected_output[0][:10], "-", label="Expected output")
ax.set(title="Input", xlabel="time step")
ax.legend()
save("input.png", fig)  # the original showed it here, which held the run until it was closed

# %% [markdown]
# ## Keras's bug, and the workaround
#
# A stateful LSTM's state is a pair of variables, h and c, each holding a row per batch slot.
# Keras 3 keeps them out of the layer's `variables`. On JAX, whose trainer writes back only the
# variables it knows, `fit()` trains a stateless model without a word. On PyTorch, Keras
# overwrites the state in place while autograd still needs it, so `fit()` raises on some Keras
# versions and carries the state on others ([docs/keras-bug.md](docs/keras-bug.md) has them).
# `TrackedStateLSTM` is `keras.layers.LSTM` with the state among its variables, and each call
# starting from a copy of it: it carries the state on every backend. Copy it into your own code
# and use it as you would Keras's LSTM.


# %%
@keras.saving.register_keras_serializable(package="lstm_stateful")  # so load_model finds it
class TrackedStateLSTM(keras.layers.LSTM):
    """keras.layers.LSTM whose stateful state JAX and PyTorch carry from batch to batch too.

    The state joins the layer's `variables` (JAX writes back what is there) but not its weights,
    so summary(), get_weights() and saving see the parameters alone. Each call starts from a copy
    of the state, which PyTorch's autograd may keep while the state variable is overwritten.
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
# As in the original: an LSTM of 20 units, then one Dense output, trained with Adam on the mean
# squared error. A stateful LSTM keeps a state for each slot of a batch, so its batch size is
# fixed, part of its input shape. Both models start from the same weights, drawn by numpy from
# `seed`, so that every backend starts alike. `create_model` also chooses how Keras runs the
# model: many training steps per call and short windows unrolled, the same steps sooner
# (docs/speed.md). In the summary, the parameters are the weights alone: the state is not one.

# %%
units = 20  # the original's LSTM size


def initial_weights():
    """Keras's default initial weights for LSTM(units) and Dense(1), drawn by numpy from `seed`:
    glorot-uniform kernels, an orthogonal recurrent kernel, zero biases but the forget gate's."""
    rng = np.random.default_rng(seed)

    def glorot_uniform(fan_in, fan_out):
        limit = np.sqrt(6 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out))

    kernel = glorot_uniform(1, 4 * units)  # the gates i, f, c, o side by side
    orthogonal, upper = np.linalg.qr(rng.standard_normal((4 * units, units)))
    recurrent_kernel = (orthogonal * np.sign(np.diag(upper))).T
    bias = np.concatenate([np.zeros(units), np.ones(units), np.zeros(2 * units)])  # forget: 1
    return [kernel, recurrent_kernel, bias, glorot_uniform(units, 1), np.zeros(1)]


def create_model(stateful, batch_size=batch_size):
    model = keras.Sequential()
    model.add(keras.Input(batch_shape=(batch_size, lahead, 1)))  # Keras 3 takes the batch size here
    model.add(TrackedStateLSTM(units, stateful=stateful, unroll=lahead <= 4))
    model.add(keras.layers.Dense(1))
    # Many steps per call where Keras allows it (not on PyTorch); XLA on JAX, and on TensorFlow
    # for windows of 3+ steps, whose runs repeat only with it (docs/results.md).
    backend = keras.backend.backend()
    steps, xla = (1, False) if backend == "torch" else (1000, backend == "jax" or lahead > 2)
    adam = keras.optimizers.Adam(learning_rate)  # the original's "adam" is Adam(0.001)
    model.compile(loss="mse", optimizer=adam, steps_per_execution=steps, jit_compile=xla)
    model.set_weights(initial_weights())
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
# Interleaved, slot 0 sees t0, t3, t6: its state comes from `batch_size` steps back, of no use
# for a mean of 2 once `batch_size > 1`. Contiguous, the series is cut into `batch_size`
# *streams*, and slot i walks stream i one step at a time (docs/layouts.md). With
# `batch_size = 1`, the default, both are plain time order: one stream.


# %%
def split_data(x, y):
    """The original's split, as arrays of the shapes Keras takes: x (samples, lahead, 1) and y
    (samples, 1). to_numpy copies: the windows are a read-only view of the noise."""
    to_train, end = int(0.8 * len(x)) // batch_size * batch_size, len(x) // batch_size * batch_size
    x, y = x.to_numpy(copy=True)[:, :, np.newaxis], y.to_numpy(copy=True)
    return (x[:to_train], y[:to_train]), (x[to_train:end], y[to_train:end])


streams = batch_size if layout == "contiguous" else 1


def to_layout(rows, undo=False):
    """Rows in time order, put in the order the layout batches them (slot i of each batch takes
    the next row of stream i); `undo`: rows in that order, back in time order."""
    shape = (-1, streams) if undo else (streams, -1)
    return rows.reshape(*shape, *rows.shape[1:]).swapaxes(0, 1).reshape(rows.shape)


(x_train, y_train), (x_test, y_test) = split_data(data_input, expected_output)  # time order
print(f"x_train.shape:  {x_train.shape}\ny_train.shape:  {y_train.shape}")
print(f"x_test.shape:  {x_test.shape}\ny_test.shape:  {y_test.shape}")

# %% [markdown]
# ## Training the stateful model
#
# As in the original: one `fit()` per epoch, the batches in order (`shuffle=False`), and the
# state reset to zeros after each, so that every epoch starts alike. Within an epoch the state
# runs on from batch to batch, and the validation on the test set runs on from the state
# training left. Gradients stop at each batch's first step (truncated backpropagation through
# time): the state carries inputs forward, but training shapes it only through each batch's own
# loss. Each epoch prints a line; watch `val_loss`, the loss on the test set.

# %%
print("Training")
train, validation = (to_layout(x_train), to_layout(y_train)), (to_layout(x_test), to_layout(y_test))
# verbose=2, a line per epoch: with many steps per call, Keras's progress bar counts past its
# total. A progress bar passed in has Keras call each batch's callbacks in turn, not hand them
# to a thread, which costs PyTorch's one step per call a third of its time (docs/speed.md).
fit_args = dict(batch_size=batch_size, verbose=2, validation_data=validation, shuffle=False)
fit_args["callbacks"] = [keras.callbacks.ProgbarLogger()]
history_stateful = {"loss": [], "val_loss": []}
for epoch in range(epochs):
    print("Epoch", epoch + 1, "/", epochs)
    history = model_stateful.fit(*train, epochs=1, **fit_args).history
    history_stateful = {key: history_stateful[key] + history[key] for key in history_stateful}
    model_stateful.layers[0].reset_state()  # Keras 3 has no Model.reset_states()

print("Predicting")
# One step per call for predict(): with many, TensorFlow's predict builds a graph of every step,
# which is slow (docs/speed.md).
model_stateful.steps_per_execution = 1
predicted_stateful = to_layout(model_stateful.predict(validation[0], batch_size), undo=True)

# %% [markdown]
# ## The stateless model
#
# The same model without state, trained the usual way: one `fit()` for all epochs. Every window
# starts from zeros, so it knows only the `lahead` inputs it is shown. Where `lahead < tsteps`
# its `val_loss` stops falling after an epoch or two, well above the stateful model's.

# %%
print("Creating Stateless Model...")
model_stateless = create_model(stateful=False)

print("Training")
history_stateless = model_stateless.fit(*train, epochs=epochs, **fit_args).history

print("Predicting")
model_stateless.steps_per_execution = 1
predicted_stateless = to_layout(model_stateless.predict(validation[0], batch_size), undo=True)

# %% [markdown]
# ## The residuals
#
# The original's three panels, over the test set in time order: the expected output, then each
# model's residual, expected minus predicted, on one scale. Grey behind each residual: what
# the window cannot show. Without state, the best guess is the sum of the inputs in the window
# over `tsteps` (the inputs it cannot see average zero), and the grey line is that guess's
# residual. Its mean square is the *floor*: on average no model without state does better.
# Where `lahead < tsteps` the stateless residual follows the grey and the stateful one stays
# near zero. The stateful model meets each stream of the test set from a reset state, so the
# first `tsteps - 1` points of each, whose mean reaches back before the reset, are left out of
# its score (the original left them out of its plot). The score also gives R², 1 minus the test
# MSE over the variance of the target: 1 for a perfect fit, 0 for always guessing its mean.

# %%
print("Plotting Results")
expected = y_test[:, 0]
best_without_state = expected if lahead >= tsteps else x_test[:, :, 0].sum(axis=1) / tsteps


def score(predicted, skip, streams=streams):
    """Predictions in time order, scored but for the first `skip` points of each of `streams`:
    the residual (NaN where skipped), the test MSE, R², the floor on the same points, the share
    of the floor recovered, whether the model converged, and the verdict as printed (see the
    verdict, below)."""
    skipped = np.arange(len(expected)) % (len(expected) // streams) < skip
    residual = np.where(skipped, np.nan, expected - predicted)
    test_mse = float(np.mean(residual[~skipped] ** 2))
    r2 = 1 - test_mse / float(np.var(expected[~skipped]))
    floor_mse = float(np.mean((expected - best_without_state)[~skipped] ** 2))
    recovered = 1 - test_mse / floor_mse if floor_mse > 0 else None
    converged = r2 >= 0.8 if recovered is None else recovered >= 0.5
    verdict = f"R² {r2:.3f}" if recovered is None else f"{recovered:.1%} recovered"
    return dict(residual=residual, test_mse=test_mse, r2=r2, floor_mse=floor_mse,
                recovered=recovered, converged=converged, verdict=verdict)  # fmt: skip


results = {"stateful": score(predicted_stateful[:, 0], tsteps - 1) | history_stateful}
results["stateless"] = score(predicted_stateless[:, 0], 0) | history_stateless  # from zeros
fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True, layout="constrained")
axes[0].plot(expected, color="black")
axes[0].set(title="Expected: the mean of the last tsteps inputs")
axes[2].sharey(axes[1])
for ax, (name, scores) in zip(axes[1:], results.items(), strict=True):
    ax.plot(expected - best_without_state, color="0.75", label="what the window cannot show")
    ax.plot(scores["residual"], color="tab:red", label="expected - predicted")
    ax.set(title=f"{name.capitalize()}: Expected - Predicted (test MSE {scores['test_mse']:.2e})")
    ax.legend(loc="upper right", fontsize=8)
axes[2].set_xlabel("test time step")
save("results.png", fig)

# %% [markdown]
# ## The verdict
#
# Beyond the original: a number for "converges". The share of the floor a model *recovers* is
# 1 minus its test MSE over the floor: 100% for a perfect fit, 0% at the floor, below 0% when it
# does worse than the best guess without state. Here a model *converged* when it recovered at
# least half of the floor: the word means it fit what the window cannot show, not that its
# loss stopped falling. R² alone would credit a model at the floor with the part of the mean it
# sees. Where `lahead >= tsteps` there is no floor (the window shows every input of the mean),
# and a model converged when its R² reaches 0.8. Then the run says whether it agrees with the
# claim. The stateless model lands a little above its floor: Adam's steps on single samples
# chase noise that no model can fit. The same steps make the stateful model's `val_loss` jump
# now and then from one epoch to the next, as in the last epochs of the default run
# (docs/sweep.md tries smaller steps). metrics.json keeps each epoch's losses.

# %%
print(f"\nKeras {keras.version()} on {keras.backend.backend()}; seed {seed}")
for name, scores in results.items():
    floor = "" if scores["recovered"] is None else f" against a floor of {scores['floor_mse']:.2e}"
    converged = "converged" if scores["converged"] else "NOT converged"
    print(f"{name:<10} test MSE {scores['test_mse']:.2e}{floor}: {scores['verdict']}, {converged}")
claim = "both models converge when lahead >= tsteps"
if not window_suffices:
    claim = "only the stateful model converges when lahead < tsteps"
agrees = results["stateful"]["converged"] and results["stateless"]["converged"] == window_suffices
print(f"This run {'agrees' if agrees else 'does NOT agree'} with the example's claim: {claim}.")

# %% [markdown]
# ## The trained model, one step at a time
#
# How a stateful model is used next: on a stream, one sample per call, each call going on from
# the state the call before left. The weights do not depend on the batch size; the state does.
# So the weights go to a copy built for batches of one sample, whose state starts from zeros.
# Fed the test set in time order, it predicts what `predict()` gave where the batch size is 1
# (the run prints the largest difference). With bigger batches the two differ: `predict()` ran
# the test set in `batch_size` slots, the copy runs it as one stream (docs/layouts.md).

# %%
model_stream = create_model(stateful=True, batch_size=1)
model_stream.set_weights(model_stateful.get_weights())  # the weights only, not the state
streamed = np.concatenate([model_stream.predict_on_batch(x[np.newaxis]) for x in x_test])
results["stream"] = score(streamed[:, 0], tsteps - 1, streams=1)  # one stream, from one reset
difference = float(np.abs(streamed - predicted_stateful).max())
results["stream"]["largest_difference"] = difference
print(f"streamed   test MSE {results['stream']['test_mse']:.2e}: {results['stream']['verdict']}")
print(f"(one sample per call at batch size 1; largest difference from predict(): {difference:.1e})")

# %% [markdown]
# ## What the state remembers
#
# The claim is about memory, so look at it. Each trained LSTM runs over every sample's window,
# and its state after each sample (h and c, 40 numbers) is kept: the stateful one runs the
# windows end to end from one reset, the stateless one starts each window from zeros. Then, for
# each k, a linear readout (least squares, fitted on the training samples) tries to read back
# from the state the input k steps before each sample's newest input. Its R² on the test
# samples says how much of that input the state holds: 1 all of it, 0 nothing; below 0, the
# readout does worse than guessing the mean (it needs a few hundred training samples: with
# far fewer it overfits). The window shows k < `lahead`; the mean needs k < `tsteps`.
#
# Below, a row of R² per model, k = 0, 1, ...; memory.png draws them. Trained with `lahead =
# 1`, the stateful state still holds the inputs 2 and 3 steps back: what the state remembers
# is set by training, not by the window.


# %%
class StateCell(keras.layers.LSTMCell):
    """An LSTM step whose output is its whole state, h and c side by side."""

    def call(self, inputs, states, training=False):
        _, (h, c) = super().call(inputs, states, training=training)
        return keras.ops.concatenate([h, c], axis=-1), [h, c]


def states_after_each_sample(model, x):
    """The state after each sample of x (time order): stateful, the windows end to end as one
    stream from zeros (as at batch size 1); stateless, each window from zeros."""
    cell = StateCell(units)
    cell.output_size = 2 * units  # h and c
    rnn = keras.layers.RNN(cell, return_sequences=True)
    probe = keras.Sequential([keras.Input((None, 1)), rnn])
    probe.set_weights(model.layers[0].get_weights())  # the trained LSTM's kernels and biases
    sequences = x.reshape(1, -1, 1) if model.layers[0].stateful else x
    return probe.predict(sequences, verbose=0).reshape(len(x), lahead, 2 * units)[:, -1]


def memory_r2(states, lags):
    """For each k in `lags`: the R² of a least-squares readout, from the state after each sample
    (all samples, in time order), of the input k steps before the sample's newest. Fitted on the
    training samples, scored on the test samples, from sample max(lags) on (each k has its
    input)."""
    first, series, samples = max(lags), noise[0].to_numpy(), len(states)
    # sample i's newest input is series[to_drop + i]
    targets = np.stack([series[to_drop + first - k : to_drop + samples - k] for k in lags], axis=1)
    features = np.c_[states, np.ones(samples)][first:]
    fit_rows, score_rows = slice(0, len(x_train) - first), slice(len(x_train) - first, None)
    # rcond: directions of the state below float32's precision (1e-7 of the largest) are
    # rounding, not memory; left out, so that every backend reads the same
    weights = np.linalg.lstsq(features[fit_rows], targets[fit_rows], rcond=1e-7)[0]
    error = targets[score_rows] - features[score_rows] @ weights
    return (1 - np.mean(error**2, axis=0) / np.var(targets[score_rows], axis=0)).tolist()


lags = range(max(tsteps, lahead) + 3)
fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
ax.axvspan(-0.5, lahead - 0.5, color="0.9", label=f"in the window: k < lahead = {lahead}")
ax.axvline(tsteps - 0.5, color="tab:red", linestyle="--", label=f"in the mean: k < {tsteps}")
print(f"R² of the input k = {', '.join(map(str, lags))} steps back, read from the state:")
for name, model in (("stateful", model_stateful), ("stateless", model_stateless)):
    r2_by_lag = memory_r2(states_after_each_sample(model, np.concatenate([x_train, x_test])), lags)
    results[name]["memory_r2"] = r2_by_lag
    print(f"{name:<10}", " ".join(f"{r2:5.2f}" for r2 in r2_by_lag))
    ax.plot(lags, r2_by_lag, "-o", label=name)
ax.set(title="What the state remembers", xlabel="k: the input k steps before the newest")
ax.set(ylabel="R² of that input, read from the state", ylim=(min(-0.1, *ax.get_ylim()), 1.05))
ax.legend(fontsize=8)
save("memory.png", fig)

# %% [markdown]
# ## The numbers, in a file
#
# `metrics.json` holds the parameters and each model's scores, losses and memory (sweep.py
# reads it). In a terminal with a display the figures open now; `MPLBACKEND=Agg` keeps them
# closed. In a notebook each has been shown under its cell.

# %%
for scores in results.values():
    del scores["residual"]  # drawn above; NaN where a point is not scored, which JSON lacks
params = {name: value for name, value in vars(args).items() if name != "output_dir"}
metrics = {"backend": keras.backend.backend(), "params": params, "agrees": agrees, **results}
save("metrics.json", metrics)
print(f"Figures and metrics.json written to {output_dir}")
if plt.get_backend().lower() != "agg":  # Agg: no display (matplotlib's fallback)
    plt.show()

# %% [markdown]
# ## Conclusion
#
# With the defaults (`tsteps = 2`, `lahead = 1`) the stateful LSTM recovers nearly all of what
# its one-input window leaves out, and the stateless one ends a little above its floor: only a
# state that runs from sample to sample can hold the input before. The memory readout shows why: the
# stateful state holds the inputs before its window, the stateless one nothing beyond it.
#
# State helps when the target depends on more of the past than one sample shows, and the
# samples of each batch slot follow each other in time: batches of 1, or the contiguous layout.
# It does not help when the window already holds what the target needs (`--tsteps 3 --lahead
# 3`: both converge), when the slots are interleaved at `batch_size > 1` (each slot's previous
# sample lies `batch_size` steps back), or when a window several times longer than the mean
# comes newest first: the inputs the mean needs are read first, and the state holds best what
# it read last, the window's oldest input (`--window-order oldest-first` mends it).
#
# Next: run `sweep.py` for the claim over a grid of `tsteps` and `lahead` and over seeds
# ([docs/sweep.md](docs/sweep.md)); try `--batch-size 4` in each layout
# ([docs/layouts.md](docs/layouts.md)); and use `TrackedStateLSTM` in your own stateful model
# where the README's recipe says `keras.layers.LSTM` (on JAX and PyTorch it must).
