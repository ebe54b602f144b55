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
    real = v.dtype
    cdtype = complex_dtype_of(real)
    log_mag, phase = transitions.as_log()  # (B, L, H, 1)
    lc = _time_chunks(log_mag, c)  # (B, N, c, H)
    N = lc.shape[1]
    G = torch.cumsum(lc, dim=2)  # (B, N, c, H), chunk-local, <= 0 for |a| <= 1
    pc = None if phase is None else _time_chunks(phase, c)  # (B, N, c, H)
    Phi = None if pc is None else torch.cumsum(pc, dim=2)
    x = _time_chunks(k * v, c)  # (B, N, c, H): k_m v_m, complex if k is
    xr, xi = _parts(x)
    limit = safe_range(real)
    # why the clamp: e^{-G} overflows in unsafe chunks; those chunks are recomputed exactly below
    e_inc = torch.exp((-G).clamp(max=limit))  # (B, N, c, H)
    e_dec = torch.exp(G)  # (B, N, c, H), <= 1
    ur = xr * e_inc
    ui = None if xi is None else xi * e_inc
    if Phi is None:
        Cr = torch.cumsum(ur, dim=2)  # (B, N, c, H)
        Ci = None if ui is None else torch.cumsum(ui, dim=2)
        cos = sin = None
    else:
        cos, sin = torch.cos(Phi), torch.sin(Phi)  # (B, N, c, H)
        # (ur + i ui) e^{-iΦ}
        rot_r = ur * cos if ui is None else ur * cos + ui * sin
        rot_i = -ur * sin if ui is None else ui * cos - ur * sin
        Cr, Ci = torch.cumsum(rot_r, dim=2), torch.cumsum(rot_i, dim=2)

    # states at chunk ends from a zero start: h_loc_T = e^{G_T + iΦ_T} C_T
    unsafe = (-G).amax(dim=2) > limit  # (B, N, H)
    exact_rows = _exact_rows(unsafe)
    exact = None
    if exact_rows is not None:
        idx, keep = exact_rows
        l_u = _rows(lc).index_select(0, idx)  # (n_unsafe, c)
        if pc is None:
            a_u = torch.exp(l_u).to(x.dtype)
        else:
            a_u = torch.exp(torch.complex(l_u, _rows(pc).index_select(0, idx)))
        _, exact = associative_scan_linear(a_u, _rows(x).index_select(0, idx), dim=-1)  # (n_unsafe, c)

    G_end = G[:, :, -1]  # (B, N, H)
    chunk_log = torch.complex(G_end, Phi[:, :, -1] if Phi is not None else torch.zeros_like(G_end))
    chunk_a = torch.exp(chunk_log)  # (B, N, H): Π a over each chunk
    C_end = torch.complex(Cr[:, :, -1], Ci[:, :, -1] if Ci is not None else torch.zeros_like(G_end))
    local_end = chunk_a * C_end  # (B, N, H)
    if exact is not None:
        local_end = _replace_rows(local_end.flatten(), idx, exact[:, -1].to(cdtype), keep).view(B, N, H)
    prefix, ends = associative_scan_linear(chunk_a, local_end, dim=1)  # (B, N, H) states at chunk ends
    if initial_state is not None:
        h0 = initial_state[..., 0, 0]  # (B, H)
        ends = ends + prefix * h0[:, None]
        first = h0[:, None]
    else:
        first = ends.new_zeros(B, 1, H)
    starts = torch.cat([first, ends[:, :-1]], dim=1)  # (B, N, H): state entering each chunk

    # h = e^{G} e^{iΦ} (C + S): in real parts, with S broadcast over the chunk
    Sr, Si = starts.real[:, :, None], starts.imag[:, :, None]  # (B, N, 1, H)
    Ar = Cr + Sr
    Ai = Si if Ci is None else Ci + Si
    qr, qi = _parts(_time_chunks(q, c))  # (B, N, c, H)
    # Im h is needed at every position only for complex q (y = Re q Re h - Im q Im h)
    if cos is None:
        hr = e_dec * Ar  # (B, N, c, H)
        hi = None if qi is None else e_dec * Ai
    else:
        hr = e_dec * (cos * Ar - sin * Ai)
        hi = None if qi is None else e_dec * (sin * Ar + cos * Ai)
    if exact is not None:
        carried = (
            torch.exp(torch.complex(G, Phi if Phi is not None else torch.zeros_like(G))) * starts[:, :, None]
        )
        h_exact = exact.to(cdtype) + _rows(carried).index_select(0, idx)  # (n_unsafe, c)
        hr = _unrows(_replace_rows(_rows(hr), idx, h_exact.real, keep), hr)
        if hi is not None:
            hi = _unrows(_replace_rows(_rows(hi), idx, h_exact.imag, keep), hi)

    y = qr * hr if hi is None else qr * hr - qi * hi  # Re(q h)
    y = (y * scale).reshape(B, -1, H)[:, :L, :, None]  # (B, L, H, 1)
    final = ends[:, -1].to(cdtype)[..., None, None] if output_final_state else None
    return y, final
