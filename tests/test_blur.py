"""gaussian_blur against scipy.ndimage ("mirror" = OpenCV's reflect-101) and a NumPy float64
convolution, on random images."""
import cv2  # dev dependency (pyproject.toml): the reference for uint8
import jax
import numpy as np
import pytest
from scipy import ndimage

from cervix_jax.data.blur import fixed_point_kernel, gaussian_blur, gaussian_kernel, opencv_sigma


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


def test_uint8_equals_opencv(rng):
    """uint8 against cv2.GaussianBlur itself: OpenCV's 8-bit path quantises the taps to 1/256, which exact
    float rounding misses by up to 2 grey levels; ours follows it. Random and 0/255 images, one smaller
    than the 49 kernel (repeated reflection), sigma rule (k >= 11) and explicit sigmas (any k)."""
    noise = rng.integers(0, 256, (2, 48, 72, 3), dtype=np.uint8)
    edges = (rng.random((2, 48, 72, 3)) < 0.5).astype(np.uint8) * 255
    small = rng.integers(0, 256, (1, 21, 30, 3), dtype=np.uint8)
    for ksize, sigma, images in [(19, None, np.concatenate([noise, edges])), (49, None, small),
                                 (5, float(rng.uniform(0.8, 2.0)), np.concatenate([noise, edges]))]:
        got = np.asarray(gaussian_blur(images, ksize, sigma))
        assert got.dtype == np.uint8 and got.shape == images.shape
        ref = np.stack([cv2.GaussianBlur(im, (ksize, ksize), sigma or 0) for im in images])
        diff = np.abs(got.astype(int) - ref)
        assert diff.max() <= 1, (ksize, sigma, images.shape, diff.max())
        assert (diff == 0).mean() > 0.999, (ksize, sigma, images.shape, (diff == 0).mean())


def test_fixed_point_kernel_is_opencvs(rng):
    for ksize in (11, 19, 49):
        q = fixed_point_kernel(gaussian_kernel(ksize))
        assert q.sum() == 256 and (q == q[::-1]).all() and (q >= 0).all()
        # An impulse through OpenCV's 8-bit path returns its integer taps (times 255, over 256, rounded).
        impulse = np.zeros((1, 2 * ksize + 1), np.uint8)
        impulse[0, ksize] = 255
        row = cv2.GaussianBlur(impulse, (ksize, 1), 0, borderType=cv2.BORDER_CONSTANT)
        row = row[0, ksize // 2 + 1:][:ksize]
        np.testing.assert_array_equal(row, np.floor(q * 255 / 256 + 0.5).astype(np.uint8))
    taps = rng.random(9)
    taps = (taps + taps[::-1]) / (2 * taps.sum())
    q = fixed_point_kernel(taps, 12)
    assert q.sum() == 4096 and np.abs(q - taps * 4096).max() <= 1.0


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
