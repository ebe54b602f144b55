"""Chunked mode for one-dimensional heads (dk = dv = 1, the paper's SISO setting), pure PyTorch.

``gate_loop`` uses it in chunk mode when the compiled kernel (``siso_fused.py``) does not apply.

Matmuls with head dimension 1 waste the hardware, so the scalar recurrence h_n = a_n h_{n-1} + x_n
(x = k v, one complex scalar per head) is computed element-wise in two passes, in real arithmetic
(PyTorch's complex kernels are several times slower than real ones on CPU):

1. inside every chunk, from a zero state and for all chunks at once, with chunk-local
   G = cumsum log|a|, Φ = cumsum phase:
       C_n = cumsum_m(e^{-G_m} e^{-iΦ_m} x_m),   h_loc_n = e^{G_n} e^{iΦ_n} C_n
   chunks whose log-decay range exceeds ``safe_range`` (where e^{-G} could overflow) use an
   exact Hillis-Steele scan instead;
2. the chunk-end states are combined across the N = L/c chunks with a (short) scan, and each
   position adds the carried-in state: h_n = e^{G_n} e^{iΦ_n} (C_n + S_chunk).

Only Re(h) is needed at every position when q is real (y = q Re h); Im(h) only at chunk ends.
Derivation: docs/numerics.md, 'SISO: the two-pass element-wise form'. Non-finite inputs are set
aside first (``_nonfinite.causal_nonfinite``; docs/numerics.md, 'Non-finite inputs').
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from gateloop.ops._chunking import DEFAULT_SISO_CHUNK_SIZE, pad_time, safe_range
from gateloop.ops._inputs import Transitions, complex_dtype_of
from gateloop.ops._nonfinite import causal_nonfinite
from gateloop.ops.scan import associative_scan_linear


def _time_chunks(t: Tensor, c: int) -> Tensor:
    """(B, L, H, 1) -> (B, N, c, H): a view when L is a multiple of c (no transpose copies)."""
    B, L, H, _ = t.shape
    N = -(-L // c)
    return pad_time(t[..., 0], N * c - L).view(B, N, c, H)


def _rows(t: Tensor) -> Tensor:
    """(B, N, c, H) -> (B·N·H, c): one row per chunk, for the rare exact-scan path."""
    return t.permute(0, 1, 3, 2).reshape(-1, t.shape[2])


def _unrows(rows: Tensor, like: Tensor) -> Tensor:
    B, N, c, H = like.shape
    return rows.view(B, N, H, c).permute(0, 1, 3, 2)


def _exact_rows(unsafe: Tensor) -> tuple[Tensor, Tensor | None] | None:
    """Which rows (chunks of ``_rows``) take the exact scan: (idx, keep), or None for none.

    Eager: the unsafe rows only, keep = None (one host check; they are rare). Compiled: every row,
    with keep = the unsafe mask applied by ``_replace_rows``, since dynamo cannot branch on data;
    the exact scan is element-wise, so running it on every chunk costs O(B L H log c).
    """
    flat = unsafe.flatten()  # (B·N·H,)
    if torch.compiler.is_compiling():
        return torch.arange(flat.numel(), device=flat.device), flat
    return (flat.nonzero().squeeze(1), None) if bool(flat.any()) else None


def _replace_rows(rows: Tensor, idx: Tensor, new: Tensor, keep: Tensor | None) -> Tensor:
    """``rows`` with rows ``idx`` set to ``new`` (where ``keep``, when given)."""
    if keep is not None:
        keep = keep.view(-1, *([1] * (new.dim() - 1)))  # (n, 1, ...)
        new = torch.where(keep, new, rows.index_select(0, idx))
    return rows.index_copy(0, idx, new)


def _parts(t: Tensor) -> tuple[Tensor, Tensor | None]:
    """(real part, imaginary part or None) of a real or complex tensor."""
    return (t.real, t.imag) if t.is_complex() else (t, None)


class _SisoLogs(NamedTuple):
    """The transitions' logs cut into time chunks, each (B, N, c, H)."""

    lc: Tensor  # log|a| (floored) per position
    pc: Tensor | None  # the phase per position; None when nothing rotates
    G: Tensor  # cumsum of lc within each chunk: <= 0 for |a| <= 1
    Phi: Tensor | None  # cumsum of pc within each chunk


class _LocalSums(NamedTuple):
    """Pass 1 from a zero state, C_n = cumsum_m(e^{-G_m} e^{-iΦ_m} x_m) in real parts: (B, N, c, H)."""

    Cr: Tensor  # Re C
    Ci: Tensor | None  # Im C; None when x is real and nothing rotates
    cos: Tensor | None  # cos Φ, sin Φ; None when nothing rotates
    sin: Tensor | None


class _ExactScan(NamedTuple):
    """The exact local scan of the rows (chunks of ``_rows``) beyond the safe range."""

    idx: Tensor  # (n,) the rows
    keep: Tensor | None  # (n,) which of them to use (compiled: every row is scanned), or None: all
    h: Tensor  # (n, c): the state from a zero start at every position of the chunk


def _siso_logs(transitions: Transitions, c: int) -> _SisoLogs:
    """log|a| and the phase in chunks of c, with their chunk-local cumulative sums G and Φ."""
    log_mag, phase = transitions.as_log()  # (B, L, H, 1)
    lc = _time_chunks(log_mag, c)  # (B, N, c, H)
    G = torch.cumsum(lc, dim=2)  # (B, N, c, H), chunk-local, <= 0 for |a| <= 1
    pc = None if phase is None else _time_chunks(phase, c)  # (B, N, c, H)
    Phi = None if pc is None else torch.cumsum(pc, dim=2)  # (B, N, c, H)
    return _SisoLogs(lc, pc, G, Phi)


def _local_sums(x: Tensor, logs: _SisoLogs, limit: float) -> _LocalSums:
    """Pass 1 in every chunk at once: C_n = cumsum_m(e^{-G_m} e^{-iΦ_m} x_m) (see ``_LocalSums``)."""
    xr, xi = _parts(x)  # (B, N, c, H) each
    # why the clamp: e^{-G} overflows in unsafe chunks; those chunks are recomputed exactly
    # (``_exact_local_scan``)
    e_inc = torch.exp((-logs.G).clamp(max=limit))  # (B, N, c, H)
    ur = xr * e_inc  # (B, N, c, H)
    ui = None if xi is None else xi * e_inc  # (B, N, c, H)
    if logs.Phi is None:
        Cr = torch.cumsum(ur, dim=2)  # (B, N, c, H)
        Ci = None if ui is None else torch.cumsum(ui, dim=2)  # (B, N, c, H)
        return _LocalSums(Cr, Ci, None, None)
    cos, sin = torch.cos(logs.Phi), torch.sin(logs.Phi)  # (B, N, c, H)
    # (ur + i ui) e^{-iΦ}
    rot_r = ur * cos if ui is None else ur * cos + ui * sin  # (B, N, c, H)
    rot_i = -ur * sin if ui is None else ui * cos - ur * sin  # (B, N, c, H)
    return _LocalSums(torch.cumsum(rot_r, dim=2), torch.cumsum(rot_i, dim=2), cos, sin)


def _exact_local_scan(x: Tensor, logs: _SisoLogs, limit: float) -> _ExactScan | None:
    """The local states of the chunks whose log-decay range exceeds ``limit``, by an exact scan."""
    unsafe = (-logs.G).amax(dim=2) > limit  # (B, N, H)
    exact_rows = _exact_rows(unsafe)
    if exact_rows is None:
        return None
    idx, keep = exact_rows
    l_u = _rows(logs.lc).index_select(0, idx)  # (n_unsafe, c)
    if logs.pc is None:
        a_u = torch.exp(l_u).to(x.dtype)  # (n_unsafe, c); why the cast: complex when k is
    else:
        a_u = torch.exp(torch.complex(l_u, _rows(logs.pc).index_select(0, idx)))  # (n_unsafe, c)
    _, h = associative_scan_linear(a_u, _rows(x).index_select(0, idx), dim=-1)  # (n_unsafe, c)
    return _ExactScan(idx, keep, h)


def _chunk_states(
    logs: _SisoLogs, local: _LocalSums, exact: _ExactScan | None, initial_state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Pass 2: the states entering every chunk and those at every chunk end, both c(B N H)."""
    B, N, _, H = logs.G.shape
    G_end = logs.G[:, :, -1]  # (B, N, H)
    phi_end = logs.Phi[:, :, -1] if logs.Phi is not None else torch.zeros_like(G_end)  # (B, N, H)
    chunk_a = torch.exp(torch.complex(G_end, phi_end))  # (B, N, H): Π a over each chunk
    Ci_end = local.Ci[:, :, -1] if local.Ci is not None else torch.zeros_like(G_end)  # (B, N, H)
    C_end = torch.complex(local.Cr[:, :, -1], Ci_end)  # (B, N, H)
    # states at chunk ends from a zero start: h_loc_T = e^{G_T + iΦ_T} C_T
    local_end = chunk_a * C_end  # (B, N, H)
    if exact is not None:
        # why the cast: the exact scan is real when k and a are
        exact_end = exact.h[:, -1].to(local_end.dtype)  # (n_unsafe,)
        local_end = _replace_rows(local_end.flatten(), exact.idx, exact_end, exact.keep).view(B, N, H)
    prefix, ends = associative_scan_linear(chunk_a, local_end, dim=1)  # (B, N, H) states at chunk ends
    if initial_state is not None:
        h0 = initial_state[..., 0, 0]  # (B, H)
        ends = ends + prefix * h0[:, None]  # (B, N, H)
        first = h0[:, None]  # (B, 1, H)
    else:
        first = ends.new_zeros(B, 1, H)  # (B, 1, H)
    starts = torch.cat([first, ends[:, :-1]], dim=1)  # (B, N, H): state entering each chunk
    return starts, ends


def _position_states(
    logs: _SisoLogs, local: _LocalSums, starts: Tensor, with_imag: bool
) -> tuple[Tensor, Tensor | None]:
    """h = e^{G} e^{iΦ} (C + S) at every position, in real parts (Im h only ``with_imag``)."""
    e_dec = torch.exp(logs.G)  # (B, N, c, H), <= 1
    Sr, Si = starts.real[:, :, None], starts.imag[:, :, None]  # (B, N, 1, H): S over the chunk
    Ar = local.Cr + Sr  # (B, N, c, H)
    Ai = Si if local.Ci is None else local.Ci + Si  # (B, N, c|1, H)
    if local.cos is None or local.sin is None:
        hr = e_dec * Ar  # (B, N, c, H)
        hi = None if not with_imag else e_dec * Ai  # (B, N, c, H)
        return hr, hi
    hr = e_dec * (local.cos * Ar - local.sin * Ai)  # (B, N, c, H)
    hi = None if not with_imag else e_dec * (local.sin * Ar + local.cos * Ai)  # (B, N, c, H)
    return hr, hi


def _with_exact_states(
    hr: Tensor, hi: Tensor | None, logs: _SisoLogs, exact: _ExactScan, starts: Tensor
) -> tuple[Tensor, Tensor | None]:
    """hr, hi with the exact chunks' rows replaced: the exact local scan plus the carried-in state."""
    Phi = logs.Phi if logs.Phi is not None else torch.zeros_like(logs.G)  # (B, N, c, H)
    carried = torch.exp(torch.complex(logs.G, Phi)) * starts[:, :, None]  # (B, N, c, H)
    # why the cast: the exact scan is real when k and a are
    h_exact = exact.h.to(carried.dtype) + _rows(carried).index_select(0, exact.idx)  # (n_unsafe, c)
    hr = _unrows(_replace_rows(_rows(hr), exact.idx, h_exact.real, exact.keep), hr)  # (B, N, c, H)
    if hi is not None:
        hi = _unrows(_replace_rows(_rows(hi), exact.idx, h_exact.imag, exact.keep), hi)  # (B, N, c, H)
    return hr, hi


@causal_nonfinite
def gate_loop_siso_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    transitions: Transitions,
    *,
    scale: float,
    initial_state: Tensor | None,
    output_final_state: bool,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """q, k: r|c(B L H 1); v: r(B L H 1); transitions (B L H 1); state c(B H 1 1)."""
    B, L, H, _ = q.shape
    c = chunk_size or DEFAULT_SISO_CHUNK_SIZE
    limit = safe_range(v.dtype)
    logs = _siso_logs(transitions, c)  # (B, N, c, H) each
    x = _time_chunks(k * v, c)  # (B, N, c, H): k_m v_m, complex if k is
    local = _local_sums(x, logs, limit)  # (B, N, c, H) each
    exact = _exact_local_scan(x, logs, limit)
    starts, ends = _chunk_states(logs, local, exact, initial_state)  # (B, N, H) each
    qr, qi = _parts(_time_chunks(q, c))  # (B, N, c, H)
    # Im h is needed at every position only for complex q (y = Re q Re h - Im q Im h)
    hr, hi = _position_states(logs, local, starts, with_imag=qi is not None)  # (B, N, c, H)
    if exact is not None:
        hr, hi = _with_exact_states(hr, hi, logs, exact, starts)
    y = qr * hr if hi is None or qi is None else qr * hr - qi * hi  # (B, N, c, H): Re(q h)
    y = (y * scale).reshape(B, -1, H)[:, :L, :, None]  # (B, L, H, 1)
    # why the cast: the returned state is complex by contract, in the compute precision
    final = ends[:, -1].to(complex_dtype_of(v.dtype))[..., None, None] if output_final_state else None
    return y, final
