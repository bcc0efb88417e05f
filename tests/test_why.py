"""why.py's experiments where they can break: the targets and their data, the K-step
layout of the samples, the state carried from sample to sample, and the memory
readout's lags. Small and fast; the experiments themselves are docs/why.md's."""

import helpers  # noqa: F401  (first: it loads Keras as the lesson's Setup does)
import keras
import numpy as np
import pytest
from helpers import original_data

import why


def test_the_mean_is_the_lessons_data_bit_for_bit():
    x, y, guess, noise, lag = why.data("mean", 1986)
    ((x_train, y_train), (x_test, y_test)), drawn = original_data(1000, 2, 1, 1, 1986)
    np.testing.assert_array_equal(noise, drawn)
    np.testing.assert_array_equal(x, np.concatenate([x_train, x_test])[:, 0, 0])
    np.testing.assert_allclose(y, np.concatenate([y_train, y_test])[:, 0], atol=1e-16)
    np.testing.assert_array_equal(guess, x / 2)  # the lesson's best guess at lahead 1
    assert lag == 1 and len(x) == len(y) == 1000


@pytest.mark.parametrize("delay", [1, 4])
def test_a_delayed_target_is_the_input_that_many_steps_back(delay):
    x, y, guess, noise, lag = why.data(delay, 3)
    assert lag == delay and len(x) == len(y) == 1000
    np.testing.assert_array_equal(y[delay:], x[:-delay])  # y[t] = x[t - delay]
    np.testing.assert_array_equal(x, noise[delay:])
    np.testing.assert_array_equal(y, noise[:-delay])
    assert not np.any(guess)  # the current input says nothing of it: the guess is 0


def test_samples_of_k_steps_hold_consecutive_steps_in_order():
    a = np.arange(16.0)
    np.testing.assert_array_equal(why.chunks(a, 4)[:, :, 0], a.reshape(4, 4))
    assert why.chunks(a, 4)[2, 3, 0] == 11  # sample 2, step 3: the series' step 11


def test_the_state_runs_on_from_sample_to_sample():
    """A model fed samples of 4 steps, one after another, outputs at each step what a
    copy fed one step per call does, and ends in the same state: the state crosses
    from sample to sample, and each sample continues the one before."""
    x = np.random.default_rng(0).uniform(-0.1, 0.1, 12)
    four, one = why.model(4, seed=1), why.model(1, seed=1)
    one.set_weights(four.get_weights())
    chunked = np.concatenate([four.predict_on_batch(s[None]) for s in why.chunks(x, 4)])
    stepped = np.concatenate([one.predict_on_batch(np.array([[[v]]])) for v in x])
    np.testing.assert_allclose(chunked.ravel(), stepped.ravel(), rtol=1e-5, atol=1e-7)
    h_and_c = [keras.ops.convert_to_numpy(s)[0] for s in four.layers[0].states]
    for a, b in zip(h_and_c, one.layers[0].states, strict=True):
        np.testing.assert_allclose(
            a, keras.ops.convert_to_numpy(b)[0], rtol=1e-5, atol=1e-7
        )
        assert np.any(a)
    states = why.states(four, x, seed=1)  # the readout's states: the same, step by step
    np.testing.assert_allclose(states[-1], np.concatenate(h_and_c), atol=1e-6)


@pytest.mark.parametrize("lag", [1, 4])
def test_the_readout_names_each_input_by_its_steps_back(lag):
    """States made by hand that hold the inputs 0 and 3 steps back (and noise): the
    readout finds those two, whatever the target's reach back."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.1, 0.1, 1000 + lag)
    newest = lag + np.arange(1000)  # each input's index in noise
    held = np.c_[noise[newest], noise[newest - 3], rng.normal(0, 1, (1000, 2))]
    r2 = why.readout(held @ rng.normal(0, 1, (4, 40)), noise, lag)
    assert r2[0] > 0.999 and r2[3] > 0.999
    assert all(abs(r2[k]) < 0.03 for k in (1, 2, 4, 5, 6, 7, 8))
