"""The MARS loss: CE + α·MSE to a frozen teacher's features, with its parts returned."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mars_sta import MARSLoss, build_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors only: one intra-op thread avoids OpenMP spinning against other processes on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def student_and_teacher():
    torch.manual_seed(0)
    student = build_model("tiny_resnet", num_classes=4, sample_size=16)
    teacher = build_model("tiny_resnet", num_classes=4, in_channels=2, sample_size=16).eval()
    return student, teacher


def test_mars_loss_is_ce_plus_alpha_mse_and_trains_only_the_student(student_and_teacher):
    student, teacher = student_and_teacher
    rgb, flow, labels = torch.randn(3, 3, 8, 16, 16), torch.randn(3, 2, 8, 16, 16), torch.tensor([0, 1, 3])
    features = student.forward_features(rgb)
    teacher_features = teacher.forward_features(flow)
    logits = student.forward_head(features)
    parts = MARSLoss()(logits, labels, features, teacher_features)
    assert torch.allclose(parts.ce, F.cross_entropy(logits, labels))
    assert torch.allclose(parts.mse, ((features - teacher_features) ** 2).mean())
    assert torch.allclose(parts.total, parts.ce + 50 * parts.mse)
    parts.total.backward()
    assert student.conv1.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_normalised_mse_is_relative_to_the_teachers_mean_square():
    student, teacher = torch.randn(5, 64, requires_grad=True), 3 * torch.randn(5, 64)
    logits, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    parts = MARSLoss(alpha=10, normalize=True)(logits, labels, student, teacher)
    expected = F.mse_loss(student, teacher) / teacher.pow(2).mean()
    assert torch.allclose(parts.mse, expected)
    assert torch.allclose(parts.total, parts.ce + 10 * expected)
    zeros = MARSLoss(normalize=True)(logits, labels, torch.zeros(5, 64), teacher)
    assert torch.allclose(zeros.mse, torch.tensor(1.0))
