"""gaussian_blur against scipy.ndimage ("mirror" = OpenCV's reflect-101) and a NumPy float64
convolution, on random images."""
import jax
import numpy as np
import pytest
from scipy import ndimage

from cervix_jax.data.blur import gaussian_blur, gaussian_kernel, opencv_sigma


def _reference(image, ksize, sigma=None):
    """NumPy float64: explicit Gaussian taps, np.pad "reflect" (reflect-101), separable correlation."""
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8 if sigma is None else sigma
    x = np.arange(ksize) - ksize // 2
    taps = np.exp(-x ** 2 / (2 * sigma ** 2))
    taps /= taps.sum()
    r = ksize // 2
    out = np.pad(image.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")
    out = sum(t * out[i:i + image.shape[0]] for i, t in enumerate(taps))
    return sum(t * out[:, i:i + image.shape[1]] for i, t in enumerate(taps))


@pytest.mark.parametrize("ksize", [3, 19, 49])
def test_float_matches_numpy_and_scipy(ksize):
    rng = np.random.default_rng(ksize)
    images = rng.random((2, 30, 41, 3)).astype(np.float32)  # smaller than the 49 kernel: repeated reflection
    got = np.asarray(gaussian_blur(images, ksize))
    assert got.shape == images.shape and got.dtype == np.float32
    for image, out in zip(images, got):
        np.testing.assert_allclose(out, _reference(image, ksize), atol=2e-6)
        sigma = opencv_sigma(ksize)
        scipy_out = ndimage.gaussian_filter(image.astype(np.float64), (sigma, sigma, 0), mode="mirror",
                                            radius=(ksize // 2, ksize // 2, 0))
        np.testing.assert_allclose(out, scipy_out, atol=2e-6)


def test_uint8_rounds_and_clips_like_opencv():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    got = np.asarray(gaussian_blur(image, 19))
    assert got.dtype == np.uint8
    ref = np.clip(np.round(_reference(image, 19)), 0, 255)
    assert np.abs(got.astype(int) - ref).max() <= 1  # float32 vs float64 at .5 boundaries
    assert (got == ref).mean() > 0.99


def test_explicit_sigma_and_leading_axes_and_jit():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 3, 16, 20, 1)).astype(np.float32)
    got = jax.jit(gaussian_blur, static_argnums=(1, 2))(images, 7, 2.5)
    assert got.shape == images.shape
    np.testing.assert_allclose(np.asarray(got[1, 2]), _reference(images[1, 2], 7, 2.5), atol=2e-6)


def test_keeps_the_mean_and_the_kernel_sums_to_one():
    for ksize in (19, 49):
        assert gaussian_kernel(ksize).sum() == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(2)
    # Reflect-101 extends an image periodically with period 2m - 2, in which the border rows and
    # columns occur once and the others twice: that weighted mean is kept exactly by any blur.
    image = rng.random((30, 45, 3)).astype(np.float32)
    wy, wx = np.ones(30), np.ones(45)
    wy[[0, -1]] = wx[[0, -1]] = 0.5
    weight = np.outer(wy, wx)[..., None] / (wy.sum() * wx.sum())
    for ksize in (19, 49):
        out = np.asarray(gaussian_blur(image, ksize), np.float64)
        np.testing.assert_allclose((out * weight).sum((0, 1)), (image * weight).sum((0, 1)), rtol=1e-5)
        assert out.std() < 0.5 * image.std()  # it does blur


def test_identity_and_errors():
    image = np.random.default_rng(3).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    for ksize in (0, 1):
        np.testing.assert_array_equal(np.asarray(gaussian_blur(image, ksize)), image)
    for bad in (2, 18, -3):
        with pytest.raises(ValueError, match="odd positive int"):
            gaussian_blur(image, bad)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_blur(image, 5, 0.0)
