"""The stateful LSTM's state, on whichever Keras backend this process runs (KERAS_BACKEND).

test_lstm_stateful.py runs this file once more in a process of its own for each other installed
backend, since one process can load only one Keras backend.
"""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lstm_stateful as ls  # noqa: E402, I001  (first: it quiets TensorFlow before Keras loads)
from helpers import dataset, parameters  # noqa: E402

import keras  # noqa: E402


def lstm_state(model):
    return [keras.ops.convert_to_numpy(s) for s in model.layers[0].states]


def stateful_model(batch_size=1, lahead=1, fast=False, seed=0):
    speed = ls.speed_settings(fast, lahead)
    return ls.create_model(True, batch_size, lahead, speed, seed, learning_rate=0.001)


def test_stateful_model_carries_state_and_reset_clears_it():
    model = stateful_model()
    x = np.full((1, 1, 1), 0.1)
    first = model.predict_on_batch(x)
    assert np.any(lstm_state(model)[0] != 0)  # the step left its trace in the state
    second = model.predict_on_batch(x)
    assert not np.allclose(first, second)  # same input, other answer: the state carried over
    model.layers[0].reset_state()
    assert all(np.all(s == 0) for s in lstm_state(model))
    np.testing.assert_array_equal(model.predict_on_batch(x), first)  # fresh start, same answer


def test_stateless_model_forgets_between_batches():
    model = ls.create_model(
        False, batch_size=1, lahead=1, speed=ls.speed_settings(False, 1), seed=0, learning_rate=1e-3
    )
    x = np.full((1, 1, 1), 0.1)
    np.testing.assert_array_equal(model.predict_on_batch(x), model.predict_on_batch(x))


def test_state_slot_i_continues_slot_i_of_the_previous_batch():
    """With batch_size 2, slot 0's state must depend only on what went through slot 0."""
    model = stateful_model(batch_size=2)
    model.predict_on_batch(np.array([[[0.1]], [[-0.1]]]))
    after = model.predict_on_batch(np.array([[[0.05]], [[0.05]]]))
    assert after[0, 0] != after[1, 0]  # same input now, different history per slot


def test_predict_carries_state_from_batch_to_batch():
    x = np.random.RandomState(1).uniform(-0.1, 0.1, (6, 1, 1))
    model = stateful_model()
    one_by_one = np.concatenate([model.predict_on_batch(x[i : i + 1]) for i in range(6)])
    after_one_by_one = lstm_state(model)
    model.layers[0].reset_state()
    np.testing.assert_allclose(
        model.predict(x, batch_size=1, verbose=0), one_by_one, rtol=1e-5, atol=1e-7
    )
    for a, b in zip(lstm_state(model), after_one_by_one, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fast", [False, True])
def test_fit_carries_state_through_training_and_validation(fast):
    """The state after fit is the one the last batch left; validation continues from it."""
    (x_train, y_train), (x_test, y_test) = dataset(60, 2, 1, 1, 5)

    def fit(validation):
        model = stateful_model(fast=fast, seed=3)
        data = {"validation_data": (x_test, y_test)} if validation else {}
        model.fit(x_train, y_train, batch_size=1, epochs=1, verbose=0, shuffle=False, **data)
        return model

    trained = fit(validation=False)
    state_after_training = lstm_state(trained)
    assert all(np.any(s != 0) for s in state_after_training)  # fit wrote the state back
    # the last training step started from the state the steps before left: replaying the last
    # batch from a zero state with the final weights gives another state
    trained.layers[0].reset_state()
    trained.predict_on_batch(x_train[-1:])
    assert not np.allclose(lstm_state(trained)[1], state_after_training[1])

    validated = fit(validation=True)
    for a, b in zip(trained.trainable_variables, validated.trainable_variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # validation ran on from the training state: evaluate the same data from that state
    for variable, value in zip(trained.layers[0].states, state_after_training, strict=True):
        variable.assign(value)
    trained.evaluate(x_test, y_test, batch_size=1, verbose=0)
    for a, b in zip(lstm_state(validated), lstm_state(trained), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(lstm_state(validated)[1], state_after_training[1])  # validation moved it


def test_fused_steps_carry_state_exactly_as_single_steps():
    """fast runs many batches per compiled call; the weights and the state must not notice.
    Where that applies: TensorFlow and JAX. On PyTorch Keras runs one step per call, so nothing
    is fused, and the test checks only that fast asks for one."""
    spe = stateful_model(batch_size=2, lahead=2, fast=True).steps_per_execution
    if keras.backend.backend() == "torch":
        assert spe == 1
        return
    assert spe == ls.STEPS_PER_EXECUTION
    (x_train, y_train), _ = dataset(60, 2, 2, 2, 5)

    def train(steps_per_execution=None, fast=True):
        model = stateful_model(batch_size=2, lahead=2, fast=fast, seed=3)
        if steps_per_execution:  # the same compiled step, called once per batch
            model.steps_per_execution = steps_per_execution
        model.fit(x_train, y_train, batch_size=2, epochs=1, verbose=0, shuffle=False)
        return [*model.get_weights(), *lstm_state(model)]

    fused, one_at_a_time = train(), train(steps_per_execution=1)
    for a, b in zip(fused, one_at_a_time, strict=True):
        assert np.any(a != 0)
        np.testing.assert_array_equal(a, b)
    # --no-fast also loops over the window instead of unrolling it: float32 rounding may differ
    for a, b in zip(fused, train(fast=False), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("window", [1, 2, 3, 4, 7])
def test_the_same_steps_from_the_same_start_give_the_same_weights(window):
    """The windows whose runs the docs say repeat bit for bit (docs/results.md). TensorFlow's own
    runtime sums the gradients of an unrolled window's steps in an order that changes from call
    to call (AddN) once there are 3; the script's settings (XLA for windows of 3+ steps) keep one
    order. One compiled model, one step per call, trains 4 times from the same weights and
    optimizer state, and ends bit for bit alike each time, on every backend."""
    (x_train, y_train), _ = dataset(100, window + 1, window, 1, 5)
    speed = ls.speed_settings(True, window)
    model = ls.create_model(False, 1, window, speed, seed=3, learning_rate=0.001)
    model.steps_per_execution = 1  # a call per step: more calls to differ in
    model.optimizer.build(model.trainable_variables)
    variables = [*model.weights, *model.optimizer.variables]
    start = [keras.ops.convert_to_numpy(v) for v in variables]
    trained = []
    for _ in range(4):
        for variable, value in zip(variables, start, strict=True):
            variable.assign(value)
        model.fit(x_train, y_train, batch_size=1, epochs=1, verbose=0, shuffle=False)
        trained.append(model.get_weights())
    for weights in trained[1:]:
        for a, b in zip(weights, trained[0], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(trained[0][0], start[0])  # it trained


def test_same_seed_same_numbers_and_the_initial_weights_come_from_the_seed_alone():
    """The seed fixes the data and the initial weights, which numpy draws (initial_weights), so
    that the same seed trains to the same numbers, bit for bit, on any backend."""

    def scores(seed):
        results = ls.experiment(
            parameters(input_len=40, epochs=1, seed=seed),
            *ls.build_series(40, 2, 1, seed, "newest-first"),
        )
        return [
            results[m][k]
            for m in ls.STREAMED
            for k in ("test_mse", "loss", "val_loss")
            if k in results[m]
        ]

    assert scores(11) == scores(11)  # bit for bit
    for seed in (11, 12):
        for weight, drawn in zip(
            stateful_model(seed=seed).get_weights(), ls.initial_weights(seed), strict=True
        ):
            np.testing.assert_array_equal(weight, drawn.astype(np.float32))
    assert not np.allclose(ls.initial_weights(11)[0], ls.initial_weights(12)[0])


def test_the_initial_weights_follow_kerass_default_distributions():
    """glorot_uniform kernels (within +-sqrt(6 / (fan_in + fan_out))), an orthogonal recurrent
    kernel (its 20 rows orthonormal), zero biases but the forget gate's, at 1."""
    kernel, recurrent, bias, dense, dense_bias = ls.initial_weights(3)
    assert kernel.shape == (1, 80) and np.abs(kernel).max() <= np.sqrt(6 / 81)
    assert np.abs(kernel).max() > 0.9 * np.sqrt(6 / 81)  # uniform over the whole range
    assert dense.shape == (20, 1) and np.abs(dense).max() <= np.sqrt(6 / 21)
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(20), atol=1e-12)
    np.testing.assert_array_equal(bias, np.r_[np.zeros(20), np.ones(20), np.zeros(40)])
    np.testing.assert_array_equal(dense_bias, [0.0])


def test_fast_has_xla_compile_every_window_of_3_or_more_steps_on_tensorflow():
    """Without XLA, TensorFlow's runtime sums an unrolled window's gradients (AddN) in an order
    that can change from call to call once there are 3 terms. For a window of 3 that happens
    now and then (in 1 of 6 probes of 200 to 800 steps, 3 to 6 rounds, here), too seldom for the
    test above to catch every time: so this test checks the setting that prevents it."""
    for window in (1, 2, 3, 4, 7, 20):
        xla = ls.speed_settings(True, window)["compile"]["jit_compile"]
        if keras.backend.backend() == "tensorflow":
            assert xla == (window >= 3), window
        else:
            assert xla == (keras.backend.backend() == "jax"), window


def test_no_fast_is_kerass_plain_way():
    """--no-fast: one step per call and the window looped, on every backend, and XLA only where
    Keras cannot do without it (JAX), as docs/speed.md says."""
    for lahead in (1, 3, 7):
        plain = ls.speed_settings(False, lahead)
        assert plain["unroll"] is False
        assert plain["compile"]["steps_per_execution"] == 1
        assert plain["compile"]["jit_compile"] == (keras.backend.backend() == "jax")


def test_any_epoch_runs_many_steps_per_call_and_its_progress_bar_ends_at_its_total(
    monkeypatch, capsys
):
    """No speed cliff: an epoch of 10 steps with 4 steps per call takes 3 calls (4, 4, 2), not 10,
    and the progress bar counts 4, 8, 10 of 10, never past its total."""
    if keras.backend.backend() == "torch":  # Keras runs one step per call on PyTorch
        assert ls.speed_settings(True, 1)["compile"]["steps_per_execution"] == 1
        return
    assert ls.speed_settings(True, 1)["compile"]["steps_per_execution"] == ls.STEPS_PER_EXECUTION
    assert ls.speed_settings(False, 1)["compile"]["steps_per_execution"] == 1
    monkeypatch.setattr(ls, "STEPS_PER_EXECUTION", 4)
    (x_train, y_train), _ = dataset(13, 2, 1, 1, 5)  # 80% of 13: 10 training steps
    calls = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: calls.append(1))
    model = stateful_model(fast=True)
    model.fit(x_train, y_train, batch_size=1, epochs=1, shuffle=False, callbacks=[counter])
    assert len(calls) == 3
    counts = [
        (int(n), int(total)) for n, total in re.findall(r"(\d+)/(\d+)", capsys.readouterr().out)
    ]
    assert counts and counts[-1] == (10, 10) and all(n <= total for n, total in counts), counts
    # Keras 3.15 reports the short last call (steps 8 and 9) as ending at step 11, which its own
    # bar counts as 12/10; a redraw that soon after the one before is skipped, so a run this small
    # does not print it, but a bigger one does. The script's bar counts 10.
    bar = ls.ProgbarLogger()
    bar.set_params({"verbose": 1, "epochs": 1, "steps": 10})
    bar.on_epoch_begin(0)
    bar.on_train_batch_end(11, {})
    assert bar.seen == 10


@pytest.mark.parametrize(
    "tsteps, lahead, stateless_converges", [(2, 1, False), (3, 1, False), (2, 2, True)]
)
def test_the_point_only_the_stateful_model_sees_past_its_window(
    tsteps, lahead, stateless_converges
):
    """The example's claim, judged by the script's own rule, in small runs: with lahead < tsteps
    the stateful model recovers most of what the window cannot show while the stateless one stays
    at its floor; with lahead >= tsteps both fit."""
    args = parameters(input_len=500, epochs=3, tsteps=tsteps, lahead=lahead)
    results = ls.experiment(args, *ls.build_series(500, tsteps, lahead, args.seed, "newest-first"))
    stateful, stateless = results["stateful"], results["stateless"]
    assert stateful["converged"] and stateless["converged"] == stateless_converges
    if not stateless_converges:
        assert stateful["recovered"] > 0.6  # well past the verdict's 0.5
        assert abs(stateless["recovered"]) < 0.15  # at its floor, give or take the test set
        assert stateful["test_mse"] < 0.5 * ls.stateless_floor_mse(tsteps, lahead)


def test_experiment_fits_the_stateful_model_one_epoch_at_a_time_from_a_reset_state(monkeypatch):
    """The original's two procedures: the stateful model gets one fit per epoch and a reset after
    each, so every fit and the prediction start from zeros; the stateless one gets one fit."""
    calls, weights = [], []

    def recorded(method):
        real = getattr(keras.Model, method)

        def call(model, *args, **kwargs):
            lstm = model.layers[0]
            zeros = lstm.stateful and all(not np.any(s) for s in lstm_state(model))
            calls.append((method, lstm.stateful, kwargs.get("epochs"), zeros))
            weights.append(model.get_weights())
            return real(model, *args, **kwargs)

        return call

    for method in ("fit", "predict"):
        monkeypatch.setattr(keras.Model, method, recorded(method))
    ls.experiment(
        parameters(input_len=60, epochs=3), *ls.build_series(60, 2, 1, 1986, "newest-first")
    )
    assert calls == [
        *[("fit", True, 1, True)] * 3,
        ("predict", True, None, True),
        ("fit", False, 3, False),
        ("predict", False, None, False),
    ]
    # both models start from the same weights, drawn from the seed: at their first fit
    for first_fit in (weights[0], weights[4]):
        for weight, drawn in zip(first_fit, ls.initial_weights(1986), strict=True):
            np.testing.assert_array_equal(weight, drawn.astype(np.float32))


# ---------------------------------------------------------------- the trained model, as Keras's
def trained_stateful_model(batch_size):
    """A stateful model after a short fit, as the example leaves it."""
    (x_train, y_train), _ = dataset(40, 2, 1, batch_size, 5)
    model = stateful_model(batch_size=batch_size, fast=True, seed=4)
    model.fit(x_train, y_train, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return model


def test_summary_and_count_params_count_the_parameters_only():
    """LSTM(20) on one input and Dense(1): 4 gates x 20 units x (1 + 20 + 1), and 20 + 1. The
    state is not a weight, but it is among the variables the trainers write back."""
    model = trained_stateful_model(4)
    assert model.count_params() == 4 * 20 * (1 + 20 + 1) + 20 + 1 == 1781
    printed = []
    model.summary(print_fn=lambda text, **kwargs: printed.append(text))
    assert "Trainable params: 1,781" in "".join(printed)
    assert "Non-trainable params: 0" in "".join(printed)
    state = model.layers[0].states
    assert [tuple(v.shape) for v in state] == [(4, 20), (4, 20)]  # h and c, 20 per batch slot
    for variable in state:
        assert any(v is variable for v in model.non_trainable_variables)  # the JAX trainer's
        assert not any(v is variable for v in model.weights)  # get_weights, saving, summary


def test_weights_go_between_models_of_other_batch_sizes(tmp_path):
    """From a batch-4 model to batch-1 copies, by get_weights/set_weights and by
    save_weights/load_weights: each copy then computes what slot 0 of the batch-4 model does."""
    trained = trained_stateful_model(4)
    copied, loaded = stateful_model(batch_size=1, seed=8), stateful_model(batch_size=1, seed=9)
    copied.set_weights(trained.get_weights())
    trained.save_weights(tmp_path / "trained.weights.h5")
    loaded.load_weights(tmp_path / "trained.weights.h5")
    batches = np.random.RandomState(2).uniform(-0.1, 0.1, (5, 4, 1, 1))
    trained.layers[0].reset_state()
    slot_0 = [trained.predict_on_batch(batch)[0] for batch in batches]
    for model in (copied, loaded):
        for a, b in zip(model.get_weights(), trained.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        model.layers[0].reset_state()
        alone = [model.predict_on_batch(batch[:1])[0] for batch in batches]
        np.testing.assert_allclose(alone, slot_0, rtol=1e-6, atol=1e-9)
        assert lstm_state(model)[0].shape == (1, 20)


def test_a_saved_model_loads_and_predicts_the_same(tmp_path):
    """model.save() then keras.models.load_model(), with this script imported (so Keras finds its
    classes): the same classes, weights and predictions; the state starts from zeros (it is not
    saved), is carried from call to call, and training still writes it back."""
    trained = trained_stateful_model(1)
    trained.save(tmp_path / "trained.keras")
    loaded = keras.models.load_model(tmp_path / "trained.keras")
    assert type(loaded) is ls.FusedStepsSequential
    assert type(loaded.layers[0]) is ls.TrackedStateLSTM and loaded.layers[0].stateful
    assert loaded.count_params() == 1781
    assert all(not np.any(s) for s in lstm_state(loaded))
    x = np.full((4, 1, 1), 0.1)
    trained.layers[0].reset_state()
    answers = {}
    for name, model in (("trained", trained), ("loaded", loaded)):
        answers[name] = [model.predict_on_batch(x[i : i + 1]) for i in range(4)]
    np.testing.assert_array_equal(answers["loaded"], answers["trained"])
    assert not np.allclose(answers["loaded"][0], answers["loaded"][1])  # same input, state moved
    (x_train, y_train), _ = dataset(40, 2, 1, 1, 6)
    loaded.layers[0].reset_state()
    loaded.fit(x_train, y_train, batch_size=1, epochs=1, verbose=0, shuffle=False)
    assert all(np.any(s) for s in lstm_state(loaded))


def test_one_sample_per_call_gives_what_predict_gives(capsys):
    """The example's stream: the trained weights in a batch-1 copy, one sample per call from a
    reset state, predict what predict() does, and the state ends where predict() leaves it."""
    trained = trained_stateful_model(1)
    _, (x_test, _) = dataset(40, 2, 1, 1, 5)
    trained.layers[0].reset_state()
    predicted = trained.predict(x_test, batch_size=1, verbose=0).flatten()
    h_after_predict = lstm_state(trained)[0]
    streamed = ls.one_step_at_a_time(trained, x_test, 1, ls.speed_settings(True, 1))
    np.testing.assert_array_equal(streamed, predicted)
    printed = capsys.readouterr().out
    assert "h and c, each of shape (1, 20), a row per batch slot." in printed
    assert f"h[0, :4] = {np.round(h_after_predict[0, :4], 4)}: what 8 samples left" in printed
    assert "after reset_state(), h and c are all zeros: True" in printed


def test_kerass_own_stateful_lstm_still_needs_the_workaround(capsys):
    """docs/keras-bug.md's script, on this backend: Keras's own stateful LSTM, trained with fit().
    TensorFlow carries its state; JAX leaves it at zero and PyTorch raises, which is why the
    script uses TrackedStateLSTM. The day a Keras release carries the state on JAX or PyTorch
    too, this test fails and says that the workaround can go."""
    page = (ROOT / "docs" / "keras-bug.md").read_text()
    script = re.search(r"```python\n(.*?)```", page, re.DOTALL).group(1)
    assert len(script.splitlines()) <= 30
    exec(compile(script, "docs/keras-bug.md", "exec"), {})
    printed, backend = capsys.readouterr().out, keras.backend.backend()
    assert printed.startswith(f"Keras {keras.version()} on {backend}\n")
    if backend == "tensorflow":
        assert "state among model.variables: False" in printed
        assert re.search(r"after fit, largest \|h\| = 0\.\d*[1-9]\d*: state carried", printed)
        return
    if "state carried" in printed:
        pytest.fail(
            f"Keras {keras.version()} now carries a stateful LSTM's state through fit() on "
            f"{backend}: TrackedStateLSTM's workaround can go (docs/keras-bug.md)\n{printed}"
        )
    assert "state among model.variables: False" in printed
    if backend == "jax":
        assert "after fit, largest |h| = 0.000: state never moved" in printed
    else:
        assert "fit raised RuntimeError: one of the variables needed for gradient" in printed


def test_the_readmes_recipe_trains_a_stateful_model_and_streams_it(monkeypatch):
    """README.md's recipe, run as a learner copies it (on JAX and PyTorch with TrackedStateLSTM in
    place of keras.layers.LSTM, as the README says): a stateful model at batch size 4, one epoch
    per fit() from a reset state; its weights in a batch-1 copy, which predicts one sample per
    call, each from the state the call before left, what predict() gives from a reset state."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    (recipe,) = [block for block in blocks if "stateful=True" in block]
    if keras.backend.backend() != "tensorflow":
        monkeypatch.setattr(keras.layers, "LSTM", ls.TrackedStateLSTM)
    namespace = {}
    exec(compile(recipe, "README.md", "exec"), namespace)
    model, stream = namespace["model"], namespace["stream"]
    assert model.layers[0].stateful and tuple(model.layers[0].states[0].shape) == (4, 20)
    assert not np.any(lstm_state(model)[0])  # reset after the last epoch
    assert tuple(stream.layers[0].states[0].shape) == (1, 20) and np.any(lstm_state(stream)[0])
    for a, b in zip(model.get_weights(), stream.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    copy = namespace["lstm_model"](1)
    copy.set_weights(model.get_weights())
    expected = copy.predict(namespace["x_train"][:10], batch_size=1, verbose=0)
    np.testing.assert_allclose(np.concatenate(namespace["predictions"]), expected, rtol=1e-6)
