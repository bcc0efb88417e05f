# %% [markdown]
# # Stateful vs stateless LSTM
#
# **Author:** Shadi Akiki, from cassianokc's stateful LSTM example; Keras 3 port by the
# lstm_stateful project<br>
# **Date created:** 2017/09/19<br>
# **Last modified:** 2026/12/07<br>
# **Description:** A stateful LSTM remembers the inputs its window no longer shows.<br>
# **Accelerator:** None

# %% [markdown]
# ## Introduction
#
# An LSTM reads a sequence one step at a time and carries a *state* from step to step:
# two vectors, `h` (its output) and `c` (its memory cell). By default, Keras starts
# every sample from a state of zeros. With `stateful=True`, the state a sample ends with
# is where the sample in the same position, or *slot*, of the next batch starts. So a
# stateful model can remember inputs it no longer sees, as long as slot `i` of each
# batch continues slot `i` of the batch before.
#
# We test this on a made-up series. The input is uniform noise. The target at each step
# is the mean of the last `tsteps` inputs: with `tsteps = 2`, the inputs `1, 2, 3, 4, 5`
# give the targets `1.5, 2.5, 3.5, 4.5`. Each sample shows the model a window of the
# last `lahead` inputs (read it as "the window's length"). With `lahead = 3`, the
# windows of `1, 2, 3, 4, 5` are `3, 2, 1` / `4, 3, 2` / `5, 4, 3`.
#
# The claim: when `lahead < tsteps`, the window misses inputs of the mean. A stateless
# LSTM cannot know them, and a stateful LSTM can learn to remember them. When
# `lahead >= tsteps`, the window holds every input of the mean, and both models fit.

# %% [markdown]
# ## Setup
#
# TensorFlow reads its settings as it loads, so we set them before importing Keras. It
# still prints a few lines. Keras runs on TensorFlow unless the `KERAS_BACKEND`
# environment variable says `jax` or `torch`.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow logs fatal errors only
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN off, and its note
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")  # ops in turn, so runs repeat
import keras  # noqa: E402  (after the settings)

# %% [markdown]
# ## Parameters
#
# The defaults are the original's experiment. Edit them and run the cells again.

# %% tags=["parameters"]
input_len = 1000  # length of the series to learn from
tsteps = 2  # the target is the mean of the last tsteps inputs
lahead = 1  # each sample is a window of the last lahead inputs
batch_size = 1  # samples per batch, each in its own slot with its own state
epochs = 10  # passes over the training set
seed = 1986  # for the noise and the initial weights
layout = "interleaved"  # which sample goes to which slot: or "contiguous"
window_order = "newest-first"  # the inputs in a window: or "oldest-first"
learning_rate = 0.001  # Adam's step size
output_dir = "outputs"  # where the figures go

# %% [markdown]
# ## The data
#
# The banner says what the original expects of the stateless model. The first
# `max(tsteps, lahead) - 1` inputs have no full mean or no full window, so we draw that
# many more and drop them. The windows come newest first, as in the original, so
# column `i` of the printed input holds the input `i` steps back.

# %%
stateless_can_fit = lahead >= tsteps
print("*" * 33)
print("STATELESS LSTM WILL", "ALSO CONVERGE" if stateless_can_fit else "NOT CONVERGE")
print("*" * 33)

print("Generating Data...")
to_drop = max(tsteps, lahead) - 1
keras.utils.set_random_seed(seed)  # seeds numpy too: the original's noise, bit for bit
noise = pd.DataFrame(np.random.uniform(-0.1, 0.1, input_len + to_drop))
expected_output = noise.rolling(tsteps).mean()[to_drop:]
windows = np.lib.stride_tricks.sliding_window_view(noise[0], lahead)  # oldest first
if window_order == "newest-first":
    windows = windows[:, ::-1]
data_input = pd.DataFrame(windows[to_drop + 1 - lahead :], index=expected_output.index)
print(f"Input shape: {data_input.shape}\nOutput shape: {expected_output.shape}")
for end in ("head", "tail"):
    print(f"Input {end}:", getattr(data_input, end)(), sep="\n")
    print(f"Output {end}:", getattr(expected_output, end)(), sep="\n")

print("Plotting input and expected output")
os.makedirs(output_dir, exist_ok=True)
fig, ax = plt.subplots(layout="constrained")
ax.plot(noise[0][to_drop : to_drop + 10], ".", label="input")
ax.plot(expected_output[0][:10], "-", label="expected output")
ax.set(title="Input", xlabel="time step", ylabel="value")
fig.legend(loc="outside right upper")
fig.savefig(os.path.join(output_dir, "input.png"))  # shown at the end, not here

# %% [markdown]
# ## Aside: stateful LSTMs on JAX and PyTorch
#
# Keras's `LSTM(stateful=True)` keeps its state in two variables, `h` and `c`, with a
# row per batch slot. Keras 3 leaves them out of the layer's `variables`. On JAX,
# `fit()` writes back only those variables, so the state never moves and the model
# trains as a stateless one. On PyTorch, some Keras versions overwrite the state while
# autograd still needs it, and `fit()` raises an error. TensorFlow carries the state as
# documented.
#
# `StatefulLSTM` fixes both. It lists the state among the layer's variables (not among
# its weights), and each call starts from a copy of the state. The models below use
# `LSTM`, which is Keras's own on TensorFlow, as in the original, and `StatefulLSTM` on
# JAX and PyTorch.


# %%
class StatefulLSTM(keras.layers.LSTM):
    @property
    def variables(self):
        return super().variables + list(self.states or [])

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if self.stateful and initial_state is None:
            initial_state = [keras.ops.copy(state) for state in self.states]
        return super().call(sequences, initial_state, mask, training)


LSTM = keras.layers.LSTM if keras.backend.backend() == "tensorflow" else StatefulLSTM

# %% [markdown]
# ## The models
#
# As in the original, each model is an LSTM of 20 units and a `Dense` output, trained
# with Adam on the mean squared error. A stateful model keeps a state per slot, so its
# batch size is part of its input shape. We seed Keras before building each model, so
# both models start from the same weights. The summary counts the weights only, and the
# state is not a weight.
#
# A training step on one sample is tiny, and Python's overhead would dominate it. So we
# ask Keras to run 100 steps per call (`steps_per_execution`; PyTorch allows one).

# %%
steps_per_call = 1 if keras.backend.backend() == "torch" else 100


def create_model(stateful, batch_size=batch_size):
    keras.utils.set_random_seed(seed)  # the same initial weights for every model
    model = keras.Sequential()
    model.add(keras.Input(batch_shape=(batch_size, lahead, 1)))
    model.add(LSTM(20, stateful=stateful))
    model.add(keras.layers.Dense(1))
    adam = keras.optimizers.Adam(learning_rate)  # the original's "adam" is 0.001
    model.compile(loss="mse", optimizer=adam, steps_per_execution=steps_per_call)
    return model


print("Creating Stateful Model...")
model_stateful = create_model(stateful=True)
model_stateful.summary()

# %% [markdown]
# ## Train and test sets, in batches
#
# The first 80% of the samples train and the rest test, each cut to whole batches. Which
# sample sits in which slot decides what the state carries. With `batch_size = 3` and 12
# time steps `t0` to `t11`:
#
# ```
# layout = "interleaved" (original)    layout = "contiguous"
#          slot 0  slot 1  slot 2               slot 0  slot 1  slot 2
# batch 0    t0      t1      t2        batch 0    t0      t4      t8
# batch 1    t3      t4      t5        batch 1    t1      t5      t9
# batch 2    t6      t7      t8        batch 2    t2      t6      t10
# batch 3    t9      t10     t11       batch 3    t3      t7      t11
# ```
#
# Interleaved, slot 0 sees `t0`, `t3`, `t6`. Its state comes from 3 steps back, which a
# mean of 2 cannot use. Contiguous, the series is cut into `batch_size` *streams*, and
# slot `i` walks stream `i` one step at a time. With `batch_size = 1`, the default, both
# layouts are plain time order.

# %%
to_train = int(0.8 * input_len) // batch_size * batch_size
end = input_len // batch_size * batch_size
x, y = data_input.to_numpy()[:, :, np.newaxis], expected_output.to_numpy()
x_train, x_test = x[:to_train], x[to_train:end]
y_train, y_test = y[:to_train], y[to_train:end]
streams = batch_size if layout == "contiguous" else 1


def to_layout(rows, undo=False):
    """Rows in time order, put in the layout's order; `undo`: back in time order."""
    shape = (-1, streams) if undo else (streams, -1)
    return rows.reshape(*shape, *rows.shape[1:]).swapaxes(0, 1).reshape(rows.shape)


print(f"x_train.shape: {x_train.shape}\ny_train.shape: {y_train.shape}")
print(f"x_test.shape: {x_test.shape}\ny_test.shape: {y_test.shape}")
train = (to_layout(x_train), to_layout(y_train))
test = (to_layout(x_test), to_layout(y_test))

# %% [markdown]
# ## Training the stateful model
#
# As in the original, we call `fit()` once per epoch, with the batches in order
# (`shuffle=False`). Within an epoch, the state runs on from batch to batch, and the
# validation on the test set runs on from where training stopped. After each epoch we
# reset the state to zeros, because the next epoch starts again at the first step of the
# series, which follows nothing.
#
# The gradient stops at the start of each batch (truncated backpropagation through
# time). With one step per sample, a loss's gradient never reaches the step that wrote
# the state it reads. The state remembers anyway. Even with random weights, an LSTM's
# state keeps a fading trace of its last few inputs. Training teaches each step to read
# that trace, and the trace sharpens. To keep an input further back than the trace
# reaches, the model needs samples long enough for the gradient to cross the gap.
#
# Watch `val_loss`, the loss on the test set, as each epoch ends.

# %%
print("Training")
fit_args = dict(batch_size=batch_size, verbose=2, shuffle=False, validation_data=test)
history_stateful = []
for epoch in range(epochs):
    print("Epoch", epoch + 1, "/", epochs)
    history_stateful.append(model_stateful.fit(*train, **fit_args).history)
    model_stateful.layers[0].reset_state()

print("Predicting")
model_stateful.steps_per_execution = 1  # predict() is slow with many steps a call
predicted = model_stateful.predict(test[0], batch_size=batch_size, verbose=0)
predicted_stateful = to_layout(predicted, undo=True)[:, 0]

# %% [markdown]
# ## The stateless model
#
# The same model without state, trained with one `fit()` for all epochs. Every window
# starts from zeros, so the model knows only the `lahead` inputs it is shown.

# %%
print("Creating Stateless Model...")
model_stateless = create_model(stateful=False)
print("Training")
history_stateless = model_stateless.fit(*train, epochs=epochs, **fit_args).history
print("Predicting")
model_stateless.steps_per_execution = 1
predicted = model_stateless.predict(test[0], batch_size=batch_size, verbose=0)
predicted_stateless = to_layout(predicted, undo=True)[:, 0]

# %% [markdown]
# ## The residuals
#
# As in the original, we plot the expected output over the test set, then each model's
# residual (expected minus predicted), on one scale.
#
# The grey line is what the window cannot show. A model without state can at best guess
# the mean from the inputs it sees, taking each unseen one as 0, its average. That
# guess is the window's sum divided by `tsteps`, and the grey line is its residual. Its
# mean square is the *floor*. On average, no stateless model does better. Where
# `lahead < tsteps`, look for the stateless residual to follow the grey line and the
# stateful one to stay near zero.
#
# The stateful model starts each stream of the test set from a reset state. The first
# `tsteps - 1` points of each stream need inputs from before the reset, so we leave them
# out of its score, as the original left them out of its plot. So its floor differs a
# little from the stateless model's.
#
# A model *recovers* the share of the floor it removes, 1 minus its test error divided
# by the floor. That is 100% for a perfect fit, 0% at the floor, and below 0% when the
# model does worse than the best guess without state. We say a model *converged* when it
# recovers at least half of the floor. Where `lahead >= tsteps` there is no floor, and a
# model converged when its R² reaches 0.8 (R² is 1 minus the test error divided by the
# target's variance).
#
# Expect the stateless model above its floor, by 19% in the default run. With
# `shuffle=False` the same samples end every epoch, and Adam, one sample per step,
# leaves the output offset toward them. More epochs keep the offset. The stateful score
# is the model as its last epoch left it. In 10 epochs its validation loss seldom jumps,
# in 100 it often does. Its residual has an offset too.

# %%
print("Plotting Results")
expected = y_test[:, 0]
best_guess = x_test[:, :, 0].sum(axis=1) / tsteps if lahead < tsteps else expected


def score(predicted, skip, streams=streams):
    """The scores, leaving out the first `skip` points of each stream."""
    scored = np.arange(len(expected)) % (len(expected) // streams) >= skip
    residual = np.where(scored, expected - predicted, np.nan)
    test_mse = np.mean(residual[scored] ** 2)
    floor = np.mean((expected - best_guess)[scored] ** 2)
    r2 = 1 - test_mse / np.var(expected[scored])
    recovered = 1 - test_mse / floor if floor > 0 else None
    converged = r2 >= 0.8 if recovered is None else recovered >= 0.5
    return dict(residual=residual, test_mse=test_mse, floor=floor, r2=r2,
                recovered=recovered, converged=converged)  # fmt: skip


results = {"stateful": score(predicted_stateful, skip=tsteps - 1)}
results["stateless"] = score(predicted_stateless, skip=0)
fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True, layout="constrained")
axes[0].plot(expected, color="black")
axes[0].set(title="Expected", ylabel="mean of the last tsteps inputs")
axes[2].sharey(axes[1])
for ax, (name, scores) in zip(axes[1:], results.items(), strict=True):
    ax.plot(expected - best_guess, color="0.7", label="what the window cannot show")
    ax.plot(scores["residual"], color="tab:red", label="expected - predicted")
    ax.set(title=f"{name.capitalize()}: Expected - Predicted", ylabel="residual")
axes[2].set_xlabel("test time step")
fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center", ncols=2)
fig.savefig(os.path.join(output_dir, "results.png"))

print(f"\nKeras {keras.version()} on {keras.backend.backend()}, seed {seed}")
for name, s in results.items():
    verdict = f"{s['recovered']:.1%} recovered" if s["floor"] else f"R² {s['r2']:.3f}"
    floor = f" against a floor of {s['floor']:.2e}" if s["floor"] else ""
    converged = "converged" if s["converged"] else "NOT converged"
    print(f"{name:<10} test MSE {s['test_mse']:.2e}{floor}: {verdict}, {converged}")
claim = "only the stateful model converges when lahead < tsteps"
if stateless_can_fit:
    claim = "both models converge when lahead >= tsteps"
agrees = results["stateful"]["converged"]
agrees &= results["stateless"]["converged"] == stateless_can_fit
print(f"This run {'agrees' if agrees else 'does NOT agree'} with the claim: {claim}.")

# %% [markdown]
# ## The trained model, one step at a time
#
# In use, a stateful model often gets a stream, one sample per call, each going on
# from the last one's state. The weights do not depend on the batch size, but the
# state does. So we copy the weights into a model built for batches of one sample, and
# feed it the test set in time order from a state of zeros. At `batch_size = 1` it
# predicts exactly what `predict()` did.

# %%
model_stream = create_model(stateful=True, batch_size=1)
model_stream.set_weights(model_stateful.get_weights())
streamed = np.array([model_stream.predict_on_batch(x[None])[0, 0] for x in x_test])
results["stream"] = score(streamed, skip=tsteps - 1, streams=1)
difference = np.abs(streamed - predicted_stateful).max()
print(f"streamed   test MSE {results['stream']['test_mse']:.2e}, one sample per call")
print(f"(largest difference from predict(): {difference:.1e})")

# %% [markdown]
# ## What the state remembers
#
# We feed each trained LSTM the whole series again, one sample per call, and keep its
# state (`h` and `c`, 40 numbers) after each sample. The stateful copy runs on from
# sample to sample, and the stateless one starts each sample from zeros. Then, for each
# `k`, a linear readout fitted on the training samples tries to read back the input `k`
# steps before each sample's newest input. Its R² on the test samples says how much of
# that input the state holds (1 all of it, 0 nothing). The window shows `k < lahead`,
# and the mean needs `k < tsteps`.


# %%
def states_after_each_sample(model):
    copy = create_model(stateful=True, batch_size=1)
    copy.set_weights(model.get_weights())
    lstm, states = copy.layers[0], []
    for sample in np.concatenate([x_train, x_test]):
        if not model.layers[0].stateful:
            lstm.reset_state()
        copy.predict_on_batch(sample[None])
        h_and_c = [keras.ops.convert_to_numpy(state)[0] for state in lstm.states]
        states.append(np.concatenate(h_and_c))
    return np.array(states)


def memory_r2(states, lags):
    """For each k in lags, the R² of a linear readout of the input k steps back."""
    first, series = max(lags), noise[0].to_numpy()
    newest = to_drop + np.arange(first, len(states))  # each sample's newest input
    targets = np.stack([series[newest - k] for k in lags], axis=1)
    features = np.c_[states, np.ones(len(states))][first:]
    fit, held_out = slice(0, len(x_train) - first), slice(len(x_train) - first, None)
    # rcond leaves out directions below float32's precision: rounding, not memory
    weights = np.linalg.lstsq(features[fit], targets[fit], rcond=1e-7)[0]
    error = targets[held_out] - features[held_out] @ weights
    return 1 - np.mean(error**2, axis=0) / np.var(targets[held_out], axis=0)


lags = range(max(tsteps, lahead) + 3)
fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
ax.axvspan(-0.5, lahead - 0.5, color="0.9", label=f"in the window: k < {lahead}")
ax.axvline(tsteps - 0.5, color="tab:red", ls="--", label=f"in the mean: k < {tsteps}")
print(f"R² of the input k steps back, read from the state, k = 0 to {max(lags)}:")
for name, model in [("stateful", model_stateful), ("stateless", model_stateless)]:
    results[name]["memory_r2"] = memory_r2(states_after_each_sample(model), lags)
    print(f"{name:<10}", " ".join(f"{r2:5.2f}" for r2 in results[name]["memory_r2"]))
    ax.plot(lags, results[name]["memory_r2"], "-o", label=name)
ax.set(title="What the state remembers", xlabel="k: the input k steps back")
ax.set(ylabel="R² of that input, read from the state", ylim=(-0.1, 1.05))
fig.legend(loc="outside right upper")
fig.savefig(os.path.join(output_dir, "memory.png"))
print("Figures written to", output_dir)
plt.show()  # in a terminal with a display, the figures open now

# %% [markdown]
# ## Conclusion
#
# With the defaults (`tsteps = 2`, `lahead = 1`), the stateful LSTM recovers nearly all
# of what its one-input window leaves out, and the stateless one ends above its floor.
# The memory readout shows the difference. The stateful state holds the inputs before
# the window, and the stateless state holds nothing beyond it.
#
# A stateful LSTM helps when the target depends on more of the past than one sample
# shows, and each batch slot's samples follow each other in time. Its state learns to
# keep the inputs of the last few steps. Inputs further back need samples long enough
# for the gradient to reach them. It does not help when the window already holds what
# the target needs (with `tsteps = 3` and `lahead = 3` both converge), or when
# interleaved slots skip the inputs the target needs (`batch_size >= tsteps`).
