"""The stateful LSTM's state, on the Keras backend this process runs (KERAS_BACKEND):
the lesson's models as its cells build and train them, then used as a learner uses them
next; Keras's own stateful LSTM on this backend; README.md's recipe.

One process loads one Keras backend, so CI runs this file (and test_lesson.py) again
with KERAS_BACKEND=jax and with KERAS_BACKEND=torch (.ci/run)."""

import contextlib
import io
import os
import re

import helpers  # noqa: F401  (first: it loads Keras as the lesson's Setup does)
import keras
import numpy as np
import pytest
from helpers import ROOT, run


def built(tmp_path, **values):
    """The lesson's namespace after its cells up to training: create_model, the data."""
    with contextlib.redirect_stdout(io.StringIO()):
        return run(
            values | {"output_dir": str(tmp_path)}, until="Training the stateful"
        )


def state(model):
    return [keras.ops.convert_to_numpy(s) for s in model.layers[0].states]


def test_the_models_use_kerass_lstm_where_it_carries_the_state(tmp_path):
    """keras.layers.LSTM on TensorFlow; elsewhere the aside's subclass, StatefulLSTM."""
    ns = built(tmp_path)
    lstm = ns["create_model"](stateful=True).layers[0]
    assert isinstance(lstm, keras.layers.LSTM) and lstm.stateful and lstm.units == 20
    on_tensorflow = keras.backend.backend() == "tensorflow"
    assert (type(lstm) is keras.layers.LSTM) == on_tensorflow


def test_a_stateful_model_carries_its_state_and_reset_clears_it(tmp_path):
    model = built(tmp_path)["create_model"](stateful=True)
    x = np.full((1, 1, 1), 0.1)
    first = model.predict_on_batch(x)
    assert np.any(state(model)[0] != 0)  # the step left its trace in the state
    second = model.predict_on_batch(x)
    assert not np.allclose(first, second)  # same input, other answer: the state
    model.layers[0].reset_state()
    assert all(np.all(s == 0) for s in state(model))
    np.testing.assert_array_equal(model.predict_on_batch(x), first)  # fresh start


def test_a_stateless_model_forgets_between_batches(tmp_path):
    model = built(tmp_path)["create_model"](stateful=False)
    x = np.full((1, 1, 1), 0.1)
    np.testing.assert_array_equal(model.predict_on_batch(x), model.predict_on_batch(x))


def test_slot_i_continues_slot_i_of_the_batch_before(tmp_path):
    model = built(tmp_path, batch_size=2)["create_model"](stateful=True)
    model.predict_on_batch(np.array([[[0.1]], [[-0.1]]]))
    after = model.predict_on_batch(np.array([[[0.05]], [[0.05]]]))
    assert (
        after[0, 0] != after[1, 0]
    )  # the same input now, another history in each slot
    h, c = state(model)
    assert h.shape == c.shape == (2, 20)  # a row per slot


def test_both_models_start_from_the_seeds_weights(tmp_path):
    """keras.utils.set_random_seed(seed) before each model: the same weights for the
    same seed, other weights for another."""
    ns = built(tmp_path, seed=3)
    one, two = ns["create_model"](stateful=True), ns["create_model"](stateful=False)
    for a, b in zip(one.get_weights(), two.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = built(tmp_path, seed=4)["create_model"](stateful=True)
    assert not np.allclose(other.get_weights()[0], one.get_weights()[0])


@pytest.mark.parametrize("steps", ["the lesson's", 1])
def test_fit_carries_the_state_through_training_and_validation(tmp_path, steps):
    """After fit() the state is the one its last batch left, and the validation ran on
    from the state training left: with the lesson's steps per call and with one."""
    ns = built(tmp_path, input_len=40, seed=5)
    (x_train, y_train), test = (
        (ns["x_train"], ns["y_train"]),
        (ns["x_test"], ns["y_test"]),
    )

    def fit(validation):
        model = ns["create_model"](stateful=True)
        if steps == 1:
            model.steps_per_execution = 1
        data = {"validation_data": test} if validation else {}
        model.fit(x_train, y_train, batch_size=1, verbose=0, shuffle=False, **data)
        return model

    trained = fit(validation=False)
    after_training = state(trained)
    assert all(np.any(s != 0) for s in after_training)  # fit wrote the state back
    # the last step started from the state the steps before left: replayed from zeros
    # with the final weights, it ends elsewhere
    trained.layers[0].reset_state()
    trained.predict_on_batch(x_train[-1:])
    assert not np.allclose(state(trained)[1], after_training[1])

    validated = fit(validation=True)
    for a, b in zip(trained.get_weights(), validated.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for variable, value in zip(trained.layers[0].states, after_training, strict=True):
        variable.assign(value)
    trained.evaluate(*test, batch_size=1, verbose=0)  # the validation, from that state
    for a, b in zip(state(validated), state(trained), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(
        state(validated)[1], after_training[1]
    )  # validation moved it


def test_many_steps_per_call_carry_the_state_as_one_step_per_call(tmp_path):
    """The models run many batches per call (TensorFlow, JAX): the weights and the state
    must not notice. PyTorch takes one step per call."""
    ns = built(tmp_path, input_len=60, batch_size=2, lahead=2, seed=5)
    steps = ns["create_model"](stateful=True).steps_per_execution
    assert steps == (1 if keras.backend.backend() == "torch" else 100)

    def train(steps_per_execution):
        model = ns["create_model"](stateful=True)
        model.steps_per_execution = steps_per_execution
        model.fit(ns["x_train"], ns["y_train"], batch_size=2, verbose=0, shuffle=False)
        return [*model.get_weights(), *state(model)]

    for a, b in zip(train(steps), train(1), strict=True):
        assert np.any(a != 0)
        np.testing.assert_array_equal(a, b)


def test_summary_counts_the_weights_only(small_run):
    """LSTM(20) on one input and Dense(1): 4 gates x 20 units x (1 + 20 + 1), and
    20 + 1. The state is no weight; on JAX and PyTorch it is among the variables that
    trainers write back."""
    model = small_run[0]["model_stateful"]
    assert model.count_params() == 4 * 20 * (1 + 20 + 1) + 20 + 1 == 1781
    printed = []
    model.summary(print_fn=lambda text, **kwargs: printed.append(text))
    assert "Trainable params: 1,781" in "".join(printed)
    assert "Non-trainable params: 0" in "".join(printed)
    for variable in model.layers[0].states:
        assert tuple(variable.shape) == (3, 20)  # h and c, a row of 20 per batch slot
        assert not any(v is variable for v in model.weights)  # get_weights, saving
        if keras.backend.backend() != "tensorflow":  # JAX writes back what is there
            assert any(v is variable for v in model.non_trainable_variables)


def test_the_weights_go_to_a_model_of_another_batch_size(tmp_path):
    """From a batch-4 model to batch-1 copies, by get_weights/set_weights and by
    save_weights/load_weights: each copy computes what slot 0 of the batch-4 model
    does."""
    ns = built(tmp_path, batch_size=4)
    batch_4 = ns["create_model"](stateful=True)
    batch_4.fit(ns["x_train"], ns["y_train"], batch_size=4, verbose=0, shuffle=False)
    copied, loaded = (ns["create_model"](stateful=True, batch_size=1) for _ in range(2))
    copied.set_weights(batch_4.get_weights())
    batch_4.save_weights(tmp_path / "batch_4.weights.h5")
    loaded.load_weights(tmp_path / "batch_4.weights.h5")
    batches = np.random.RandomState(2).uniform(-0.1, 0.1, (5, 4, 1, 1))
    batch_4.layers[0].reset_state()
    slot_0 = [batch_4.predict_on_batch(batch)[0] for batch in batches]
    for model in (copied, loaded):
        alone = [model.predict_on_batch(batch[:1])[0] for batch in batches]
        np.testing.assert_allclose(alone, slot_0, rtol=1e-6, atol=1e-9)


def test_a_saved_model_loads_and_predicts_the_same(small_run, tmp_path):
    """model.save() then keras.models.load_model(): the same weights and predictions;
    the state starts from zeros (it is not saved), is carried from call to call, and
    training still writes it back."""
    ns = small_run[0]
    model = ns["model_stateful"]
    model.save(tmp_path / "trained.keras")
    custom = {"StatefulLSTM": ns["StatefulLSTM"]}
    loaded = keras.models.load_model(tmp_path / "trained.keras", custom_objects=custom)
    assert type(loaded.layers[0]) is type(model.layers[0]) and loaded.layers[0].stateful
    assert loaded.count_params() == 1781 and all(not np.any(s) for s in state(loaded))
    x = np.full((2, 3, 2, 1), 0.1)  # two batches of 3 windows of 2 steps
    model.layers[0].reset_state()
    answers = [[m.predict_on_batch(batch) for batch in x] for m in (model, loaded)]
    np.testing.assert_array_equal(answers[0], answers[1])
    assert not np.allclose(answers[1][0], answers[1][1])  # the same input, a new state
    loaded.layers[0].reset_state()
    loaded.fit(ns["x_train"], ns["y_train"], batch_size=3, verbose=0, shuffle=False)
    assert all(np.any(s) for s in state(loaded))


def test_one_sample_per_call_predicts_what_predict_does(small_run):
    """The lesson's stream: the trained weights in a batch-1 copy, fed the test set in
    time order one sample per call from zeros, predict what predict() does, and end in
    the state predict() leaves."""
    ns = small_run[0]
    stream, x = ns["model_stream"], ns["x_test"]
    copy = ns["create_model"](stateful=True, batch_size=1)
    copy.set_weights(ns["model_stateful"].get_weights())
    copy.steps_per_execution = 1
    predicted = copy.predict(x, batch_size=1, verbose=0)
    stream.layers[0].reset_state()
    streamed = np.concatenate([stream.predict_on_batch(sample[None]) for sample in x])
    np.testing.assert_array_equal(streamed, predicted)
    np.testing.assert_array_equal(ns["streamed"], predicted[:, 0])  # as the run found
    for a, b in zip(state(stream), state(copy), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_what_the_state_remembers_is_read_from_the_models_own_state(small_run):
    """The states the readout reads are the models' own: stateful, the state the trained
    model's slot holds after the same samples in time order, from zeros; stateless, the
    state after each window from zeros, whose h is what the LSTM layer outputs."""
    ns = small_run[0]
    every = np.concatenate([ns["x_train"], ns["x_test"]])
    states = ns["states_after_each_sample"](ns["model_stateful"])
    assert states.shape == (105, 40)
    stream = ns["model_stream"]
    stream.layers[0].reset_state()
    for i in range(len(every)):
        stream.predict_on_batch(every[i : i + 1])
        h_and_c = np.concatenate(state(stream), axis=1)[0]
        np.testing.assert_allclose(states[i], h_and_c, atol=1e-6)
    stateless = ns["model_stateless"]
    states = ns["states_after_each_sample"](stateless)
    h = keras.ops.convert_to_numpy(stateless.layers[0](every))
    np.testing.assert_allclose(states[:, :20], h, atol=1e-6)


# ------------------------------------------------------- Keras's own LSTM, and README
def test_kerass_own_stateful_lstm_still_needs_the_aside(capsys):
    """docs/keras-bug.md's script, on this backend: Keras's own stateful LSTM, trained
    with fit(). TensorFlow carries its state; JAX leaves it at zero; PyTorch raises on
    the Keras versions this was written against. A Keras that carries it on JAX or
    PyTorch tells the maintainers (in CI: LSTM_STATEFUL_REQUIRE_ALL=1) which half of
    StatefulLSTM can go; a learner's run of the suite skips it."""
    page = (ROOT / "docs" / "keras-bug.md").read_text()
    script = re.search(r"```python\n(.*?)```", page, re.DOTALL).group(1)
    exec(compile(script, "docs/keras-bug.md", "exec"), {})
    printed, backend = capsys.readouterr().out, keras.backend.backend()
    assert printed.startswith(f"Keras {keras.version()} on {backend}\n")
    assert "state among model.variables: False" in printed
    if backend == "tensorflow":
        assert re.search(
            r"after fit, largest \|h\| = 0\.\d*[1-9]\d*: state carried", printed
        )
    elif "state carried" in printed:
        part = {"jax": "`variables`", "torch": "the copy in `call`"}[backend]
        news = f"Keras {keras.version()} carries the state on {backend}: {part} can go"
        if os.environ.get("LSTM_STATEFUL_REQUIRE_ALL") == "1":
            pytest.fail(f"{news} (docs/keras-bug.md)\n{printed}")
        pytest.skip(news)
    elif backend == "jax":
        assert "after fit, largest |h| = 0.000: state never moved" in printed
    else:
        assert (
            "fit raised RuntimeError: one of the variables needed for gradient"
            in printed
        )


def test_the_readmes_recipe_trains_a_stateful_model_and_streams_it(capsys):
    """README.md's recipe, copied as written: on this backend it trains a stateful model
    whose stream recovers most of the floor, or stops with a message that says what to
    do."""
    readme = (ROOT / "README.md").read_text()
    (recipe,) = [
        b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "fit" in b
    ]
    namespace = {}
    exec(compile(recipe, "README.md", "exec"), namespace)
    model, stream = namespace["model"], namespace["stream"]
    assert model.layers[0].stateful and tuple(model.layers[0].states[0].shape) == (
        4,
        20,
    )
    assert tuple(stream.layers[0].states[0].shape) == (1, 20) and np.any(
        state(stream)[0]
    )
    for a, b in zip(model.get_weights(), stream.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    printed = capsys.readouterr().out
    floor, streamed = (float(n) for n in re.findall(r"\d\.\d\de-\d\d$", printed, re.M))
    assert streamed < 0.5 * floor, printed  # it recovers more than half the floor
