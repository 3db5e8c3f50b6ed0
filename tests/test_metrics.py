"""The quality metrics: the noise-free SSIM estimate against a noisy reference."""

import numpy as np
import pytest

from astra_inr.metrics import noise_free_ssim, ssim


def _truth(n: int = 96) -> np.ndarray:
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    return ((x ** 2 + y ** 2 < 0.6).astype(float) + 0.5 * (np.abs(x - 0.2) < 0.15)
            + 0.3 * np.sin(6 * x) * (y > 0))


@pytest.mark.parametrize("sigma_noise, slack", [(0.02, 0.015), (0.05, 0.04), (0.2, 0.12)])
def test_noise_free_ssim_bounds_the_perfect_images_score_from_another_noise_sample(sigma_noise,
                                                                                 slack):
    rng = np.random.default_rng(0)
    truth = _truth()
    reference = truth + sigma_noise * rng.standard_normal(truth.shape)
    other_sample = sigma_noise * rng.standard_normal(truth.shape)   # same statistics, no signal
    actual = ssim(truth, reference)
    assert actual < 0.96                        # the noise matters at every level
    assert actual <= noise_free_ssim(reference, other_sample) <= actual + slack
    # Another equally noisy reference scores higher: it shares the reference's noise structure.
    assert ssim(reference + other_sample, reference) > actual


def test_noise_free_ssim_is_one_without_noise():
    truth = _truth(48)
    assert noise_free_ssim(truth, np.zeros_like(truth)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        noise_free_ssim(truth, np.zeros((4, 4)))
