import math

import torch

from mirage_env.evaluation import psnr, ssim


def test_psnr_of_a_known_error():
    a = torch.full((4, 8, 8, 3), 100, dtype=torch.uint8)
    b = a + 10
    assert math.isclose(psnr(a, b), 10 * math.log10(255.0**2 / 100.0), rel_tol=1e-6)
    mask = torch.zeros(4, 8, 8, dtype=torch.bool)
    mask[:, :2] = True
    c = b.clone()
    c[:, 2:] = 0  # errors outside the mask do not count
    assert math.isclose(psnr(a, c, mask), psnr(a, b), rel_tol=1e-6)


def test_ssim_is_one_for_equal_images_and_drops_with_noise():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (2, 32, 32, 3), generator=g, dtype=torch.uint8)
    assert math.isclose(ssim(image, image), 1.0, rel_tol=1e-5)
    noisy = (image.float() + 40 * torch.randn(image.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    assert ssim(image, noisy) < 0.9
    assert ssim(image, 255 - image) < 0
