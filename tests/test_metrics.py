"""The quality metrics: the noise-free SSIM estimate against a noisy reference, SSIM within
the object."""

import numpy as np
import pytest
from scipy import ndimage

from astra_inr.metrics import noise_free_ssim, object_region, ssim


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


def _object_in_clipped_noise(n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A non-negative object in empty space, and a reference like non-negative SIRT's:
    noise clipped at 0, so the empty space holds sparse positive values."""
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    truth = (x ** 2 / 0.3 + y ** 2 / 0.2 < 1) * (1.0 + 0.3 * np.sin(8 * x))
    rng = np.random.default_rng(1)
    return truth, np.clip(truth + 0.03 * rng.standard_normal(truth.shape), 0.0, None)


def test_object_region_holds_the_object_and_leaves_out_the_clipped_noise_around_it():
    truth, reference = _object_in_clipped_noise()
    region = object_region(reference)
    assert region[truth > 0].mean() > 0.97
    inside = truth > 0
    far = ~ndimage.binary_dilation(inside, iterations=6)     # two blur widths from the object
    assert far.mean() > 0.3 and region[far].mean() < 0.01
    # Units and offsets do not move it.
    np.testing.assert_array_equal(object_region(250.0 * reference + 7.0), region)


def test_ssim_within_the_object_scores_the_object_not_the_noise_around_it():
    truth, reference = _object_in_clipped_noise()
    region = object_region(reference)
    whole, within = ssim(truth, reference), ssim(truth, reference, region=region)
    # Exact zeros where the reference holds clipped noise cost SSIM over the whole field.
    assert within > whole + 0.05
    # Within the object an error inside it still counts.
    assert ssim(0.8 * truth, reference, region=region) < within - 0.02
    assert ssim(truth, reference, region=np.ones_like(region)) == pytest.approx(whole)
    with pytest.raises(ValueError, match="shape"):
        ssim(truth, reference, region=region[:10])
    with pytest.raises(ValueError, match="no window"):
        ssim(truth, reference, region=np.zeros_like(region))
