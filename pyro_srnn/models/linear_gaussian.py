"""Exact log-likelihood of a linear-Gaussian state-space model (the linear DMM).

    z_{-1} = z_init (a fixed vector)
    z_t = A z_{t-1} + w_t,   w_t ~ N(0, σ_z² I)
    x_t = C z_t + e_t,       e_t ~ N(0, σ_x² I)

:func:`kalman_log_likelihood` runs the Kalman filter, ``log p(x) = Σ_t log N(x_t; C m_t⁻,
C P_t⁻ Cᵀ + R)`` with the predicted mean and covariance ``m_t⁻, P_t⁻``; masked steps are
missing observations (predict, no update, no term). :func:`joint_gaussian_log_likelihood`
computes the same quantity by brute force from the joint Gaussian of ``(x_0 … x_{T-1})``
(for tests on tiny ``T``).

Reference: Kalman (1960); e.g. Särkkä, "Bayesian Filtering and Smoothing" (2013), §4.3.
"""
from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal

__all__ = ["kalman_log_likelihood", "joint_gaussian_log_likelihood"]


def kalman_log_likelihood(A: torch.Tensor, C: torch.Tensor, sigma_z: float, sigma_x: float, z_init: torch.Tensor,
                          x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``log p(x)`` per row: ``x (B, T, L)``, ``mask (B, T)`` (False = not observed) → ``(B,)``."""
    B, T, L = x.shape
    d = A.shape[0]
    eye_d = torch.eye(d, dtype=x.dtype, device=x.device)
    Q = sigma_z ** 2 * eye_d
    R = sigma_x ** 2 * torch.eye(L, dtype=x.dtype, device=x.device)
    m = z_init.to(x).expand(B, d)
    P = torch.zeros(B, d, d, dtype=x.dtype, device=x.device)
    total = x.new_zeros(B)
    for t in range(T):
        m = m @ A.T  # predict z_t
        P = A @ P @ A.T + Q
        S = C @ P @ C.T + R
        lp = MultivariateNormal(m @ C.T, covariance_matrix=S).log_prob(x[:, t])
        K = P @ C.T @ torch.linalg.inv(S)  # Kalman gain (B, d, L)
        m_upd = m + (K @ (x[:, t] - m @ C.T).unsqueeze(-1)).squeeze(-1)
        P_upd = (eye_d - K @ C) @ P
        P_upd = 0.5 * (P_upd + P_upd.transpose(-1, -2))  # keep it symmetric
        if mask is None:
            observed = torch.ones(B, dtype=torch.bool, device=x.device)
        else:
            observed = mask[:, t]
        total = total + torch.where(observed, lp, torch.zeros_like(lp))
        m = torch.where(observed[:, None], m_upd, m)
        P = torch.where(observed[:, None, None], P_upd, P)
    return total


def joint_gaussian_log_likelihood(A: torch.Tensor, C: torch.Tensor, sigma_z: float, sigma_x: float,
                                  z_init: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Brute force ``log p(x)`` of one sequence ``x (T, L)`` from the joint Gaussian of all its steps.

    ``z_t = A^{t+1} z_init + Σ_{s≤t} A^{t-s} w_s``, so the stacked path is ``Z = M z_init + G W``
    and ``X = (I ⊗ C) Z + E``: mean ``(I ⊗ C) M z_init``, covariance
    ``σ_z² (I ⊗ C) G Gᵀ (I ⊗ C)ᵀ + σ_x² I``.
    """
    T, L = x.shape
    d = A.shape[0]
    powers = [torch.eye(d, dtype=x.dtype)]
    for _ in range(T):
        powers.append(A @ powers[-1])
    M = torch.cat([powers[t + 1] for t in range(T)], 0)  # (T d, d)
    G = torch.zeros(T * d, T * d, dtype=x.dtype)
    for t in range(T):
        for s in range(t + 1):
            G[t * d:(t + 1) * d, s * d:(s + 1) * d] = powers[t - s]
    CC = torch.block_diag(*([C] * T))  # (T L, T d)
    mean = CC @ M @ z_init.to(x)
    cov = sigma_z ** 2 * CC @ G @ G.T @ CC.T + sigma_x ** 2 * torch.eye(T * L, dtype=x.dtype)
    return MultivariateNormal(mean, covariance_matrix=cov).log_prob(x.reshape(-1))
