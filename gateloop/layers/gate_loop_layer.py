"""The GateLoop time-mixing layer (paper §4, eq 24) and its fixed-transition special cases."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gateloop._validation import check_rows, check_tensor
from gateloop.layers.gate_loop_options import TRANSITION_PRESETS, GateLoopOptions
from gateloop.layers.masks import apply_masks, document_starts, packed_slice_documents
from gateloop.layers.transitions import (
    initial_transitions,
    inverse_magnitude,
    inverse_phase,
    log_magnitude,
    phase,
)
from gateloop.ops import gate_loop, gate_loop_step
from gateloop.ops.context_parallel import gate_loop_context_parallel, slice_begins_document
from gateloop.ops.step_real import gate_loop_step_real

# Attribute set on every parameter that controls the state transitions, so that optimizers can
# give them their own learning rate and no weight decay (paper Table 4).
TRANSITION_TAG = "_gateloop_transition"


def is_transition_parameter(p: nn.Parameter) -> bool:
    return bool(getattr(p, TRANSITION_TAG, False))


def _tag(p: nn.Parameter) -> nn.Parameter:
    setattr(p, TRANSITION_TAG, True)
    return p


class GateLoop(nn.Module):
    """GateLoop time mixing: ``x [B, L, d_model] -> y [B, L, d_model]``.

    q, k, v and the transition pre-activations α, β come from real linear projections of x;
    ``a = f(α) · exp(i g(β))``, passed to the op as ``log a = log f(α) + i g(β)``; ``y = Re(q h)``
    per head, then an output projection. ``n_head`` heads split ``d_qk`` and ``d_v`` (totals, as in
    the paper's Tables 3-4): 64 heads over ``d_qk = d_v = 64`` is the SISO case with 1x1 states.

    Args:
        d_model: input and output width.
        options: the layer's options (``GateLoopOptions``, which documents each); keywords set
            single fields on top of it (``GateLoop(64, n_head=4)``).
        device, dtype: where and in what dtype the parameters are made.

    Example:
        >>> layer = GateLoop(64, n_head=4)
        >>> layer(torch.randn(2, 100, 64)).shape
        torch.Size([2, 100, 64])
    """

    def __init__(
        self,
        d_model: int,
        options: GateLoopOptions | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **fields: Any,
    ) -> None:
        super().__init__()
        options = GateLoopOptions.of(options, fields)
        options.validate(d_model)
        self.options = options
        d_qk = d_model if options.d_qk is None else options.d_qk
        d_v = d_model if options.d_v is None else options.d_v
        n_head, bias = options.n_head, options.bias
        self.d_model, self.d_qk, self.d_v, self.n_head = d_model, d_qk, d_v, n_head
        self.head_qk, self.head_v = d_qk // n_head, d_v // n_head
        self.magnitude_activation = options.magnitude_activation
        self.phase_activation = options.phase_activation
        self.data_controlled = options.data_controlled
        self.per_head_transition = options.per_head_transition
        self.transition_init = options.transition_init
        self.magnitude_init = (float(options.magnitude_init[0]), float(options.magnitude_init[1]))
        self.phase_init_max = float(options.phase_init_max)
        self.mode = options.mode
        self.chunk_size = options.chunk_size
        self.transition_dim = 1 if options.per_head_transition else self.head_qk  # transitions per head
        factory = {"device": device, "dtype": dtype}

        self.q_proj = nn.Linear(d_model, d_qk, bias=bias, **factory)
        self.k_proj = nn.Linear(d_model, d_qk, bias=bias, **factory)
        self.v_proj = nn.Linear(d_model, d_v, bias=bias, **factory)
        self.out_proj = nn.Linear(d_v, d_model, bias=bias, **factory)
        self.gate_proj = nn.Linear(d_model, d_v, bias=bias, **factory) if options.output_gate else None
        self.norm = nn.GroupNorm(n_head, d_v, **factory) if options.group_norm else None

        self._make_transitions(options.trainable_transitions, factory)
        self.reset_parameters()

    def _make_transitions(self, trainable: bool, factory: dict[str, Any]) -> None:
        """The α, β projections (data-controlled) or per-channel parameters (fixed), each tagged as
        a transition parameter; none for an activation that is "none"."""
        d_model, n_head = self.d_model, self.n_head
        n_trans = n_head * self.transition_dim
        self.alpha_proj: nn.Linear | None = None
        self.beta_proj: nn.Linear | None = None
        self.alpha: nn.Parameter | None = None
        self.beta: nn.Parameter | None = None
        if self.data_controlled:
            if self._has_alpha:
                self.alpha_proj = nn.Linear(d_model, n_trans, bias=True, **factory)
            if self._has_beta:
                self.beta_proj = nn.Linear(d_model, n_trans, bias=True, **factory)
        else:
            shape = (n_head, self.transition_dim)
            if self._has_alpha:
                self.alpha = nn.Parameter(torch.empty(shape, **factory), requires_grad=trainable)
            if self._has_beta:
                self.beta = nn.Parameter(torch.empty(shape, **factory), requires_grad=trainable)
        for module in (self.alpha_proj, self.beta_proj):
            if module is not None:
                for p in module.parameters():
                    _tag(p)
        for p in (self.alpha, self.beta):
            if p is not None:
                _tag(p)

    # ------------------------------------------------------------------ presets (paper §3.1)
    @classmethod
    def retnet_like(cls, d_model: int, *, n_head: int, **kwargs: object) -> GateLoop:
        """RetNet: fixed per-head decay γ_h = 1 - 2^(-5-h) and fixed xPos-style rotation per key
        dim; q and k stay data-controlled. Transitions are frozen (not trained)."""
        return cls(d_model, n_head=n_head, **{**TRANSITION_PRESETS["retnet_like"], **kwargs})  # type: ignore[arg-type]

    @classmethod
    def lru_like(cls, d_model: int, *, n_head: int, **kwargs: object) -> GateLoop:
        """LRU: fixed (input-independent, trained) complex transitions a = exp(-exp(ν) + i exp(θ))
        with the ring initialisation |a| in [0.9, 0.999], phase in [0, 2π]."""
        return cls(d_model, n_head=n_head, **{**TRANSITION_PRESETS["lru_like"], **kwargs})  # type: ignore[arg-type]

    @classmethod
    def s4d_like(cls, d_model: int, *, n_head: int, **kwargs: object) -> GateLoop:
        """S4D-Lin: fixed (trained) diagonal transitions a_n = exp(Δ(-1/2 + iπn)) (ZOH of the
        S4D-Lin eigenvalues), Δ log-uniform in [1e-3, 1e-1]."""
        return cls(d_model, n_head=n_head, **{**TRANSITION_PRESETS["s4d_like"], **kwargs})  # type: ignore[arg-type]

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise every weight; each choice is explained inline."""
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.gate_proj):
            if proj is None:
                continue
            # PyTorch's default Linear init (Kaiming-uniform, fan-in): unit-variance inputs give
            # O(1) q, k, v; the paper states no init of its own
            proj.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()
        magnitude, theta = initial_transitions(  # float64 (n_head, transition_dim)
            self.transition_init,
            (self.n_head, self.transition_dim),
            self.magnitude_init,
            self.phase_init_max,
            self.phase_activation,
        )
        alpha = inverse_magnitude(magnitude, self.magnitude_activation) if self._has_alpha else None
        beta = inverse_phase(theta, self.phase_activation) if self._has_beta else None
        for proj, target in ((self.alpha_proj, alpha), (self.beta_proj, beta)):
            if proj is None or target is None:
                continue
            # weights 1/10 of the default: the gates start close to the biases' target
            # transitions and data control grows as training needs it
            nn.init.uniform_(proj.weight, -0.1 / math.sqrt(self.d_model), 0.1 / math.sqrt(self.d_model))
            # the bias sets the initial transitions: |a| in magnitude_init (a memory of 10 to 1000
            # tokens) instead of σ(0) = 0.5 (a memory of about one token)
            proj.bias.copy_(target.reshape(-1).to(proj.bias.dtype))
        for param, target in ((self.alpha, alpha), (self.beta, beta)):
            if param is not None and target is not None:
                # fixed transitions start at the preset's targets (ring, S4D-Lin, RetNet, uniform)
                param.copy_(target.to(param.dtype))

    @property
    def _has_alpha(self) -> bool:
        return self.magnitude_activation != "none"

    @property
    def _has_beta(self) -> bool:
        return self.phase_activation != "none"

    # ------------------------------------------------------------------ forward
    def _log_transition_parts(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(log|a|, arg a) for input x [B, L, d_model] (or [B, d_model]): two r(B L H d) tensors in
        float32 or better; the phase is None for real transitions (phase activation "none")."""
        lead = x.shape[:-1]
        shape = (*lead, self.n_head, self.transition_dim)
        # why the cast: the activations run in float32 at least, so that bf16 activations do not
        # round gates near |a| = 1 to exactly 1
        work = torch.promote_types(x.dtype, torch.float32)
        if not self._has_alpha:
            log_mag = x.new_zeros(shape, dtype=work)  # |a| = 1
        else:
            if self.alpha_proj is not None:
                alpha = self.alpha_proj(x).to(work).view(shape)
            else:
                assert self.alpha is not None
                alpha = self.alpha.to(work).expand(shape)
            log_mag = log_magnitude(alpha, self.magnitude_activation)
        if not self._has_beta:
            return log_mag, None
        if self.beta_proj is not None:
            beta = self.beta_proj(x).to(work).view(shape)
        else:
            assert self.beta is not None
            beta = self.beta.to(work).expand(shape)
        return log_mag, phase(beta, self.phase_activation)

    @staticmethod
    def _pack(log_mag: Tensor, arg: Tensor | None) -> Tensor:
        """log a = log|a| + i arg a (real log|a| when there is no phase)."""
        return log_mag if arg is None else torch.complex(log_mag, arg)

    def log_transitions(self, x: Tensor) -> Tensor:
        """log a for input x [B, L, d_model] (or [B, d_model]): r|c(B L H d) in float32 or better.

        Complex when the phase activation is not "none"; d = 1 per head or d_qk / n_head per key.
        No padding or document masks: this is the layer's parametrisation alone.
        """
        self._check_x(x)
        return self._pack(*self._log_transition_parts(x))

    def _check_x(self, x: object, ndim: int | None = None) -> Tensor:
        """x: a floating-point tensor (TypeError otherwise) of shape [..., d_model], of rank ``ndim``
        when given (ValueError otherwise)."""
        x = check_tensor("x", x)
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        rank_ok = x.ndim >= 1 if ndim is None else x.ndim == ndim
        if not rank_ok or x.shape[-1] != self.d_model:
            layout = {3: "[B, L, d_model]", 2: "[B, d_model]"}.get(ndim or 0, "[..., d_model]")
            got = tuple(x.shape)
            raise ValueError(f"x must have shape {layout} with d_model = {self.d_model}, got {got}")
        return x

    def forward(
        self,
        x: Tensor,
        *,
        state: Tensor | None = None,
        return_state: bool = False,
        attention_mask: Tensor | None = None,
        document_ids: Tensor | None = None,
        cu_seqlens: Tensor | None = None,
        context_parallel: Any = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x [B, L, d_model] -> y [B, L, d_model] (and the final state c(B H dk dv) when asked).

        state: the state after a previous segment (continues it). attention_mask: bool [B, L],
        False marks padding: a padded step is the identity on the state (a = 1, kᵀv = 0).
        document_ids: int [B, L]; the state restarts (a = 0) wherever the id changes.
        cu_seqlens: int [N+1] offsets of N sequences packed into a batch of one (FlashAttention's
        convention); each starts from its own state (``state``: c(N H dk dv) or None) and the final
        state is one per sequence. Handed to the op, whose kernels take it natively.
        context_parallel: a process group whose ranks hold consecutive slices of the sequence, x
        being this rank's (``ops.context_parallel``; ``state``: before the whole sequence, the
        returned state: after this slice). Padding and documents work across slices: then
        ``document_ids`` are numbered alike on every rank (the whole sequence's, sliced), and
        ``cu_seqlens`` are the whole packed sequence's offsets (B = 1; no per-sequence states).
        """
        self._check_x(x, 3)
        B, L, _ = x.shape
        if cu_seqlens is not None and (document_ids is not None or attention_mask is not None):
            raise ValueError(
                "cu_seqlens marks the sequences already: pass it without document_ids/attention_mask"
            )
        if state is not None:
            check_tensor("state", state)
        mask = (
            None
            if attention_mask is None
            else check_rows("attention_mask", attention_mask, (B, L), (torch.bool,))
        )
        if context_parallel is not None and cu_seqlens is not None:
            document_ids = packed_slice_documents(cu_seqlens, x, state, return_state, context_parallel)
            cu_seqlens = None  # the slice's documents are document_ids from here on
        starts = None if document_ids is None else document_starts(document_ids, (B, L))
        if starts is not None and context_parallel is not None:
            starts[:, 0] = slice_begins_document(document_ids, context_parallel)  # type: ignore[arg-type]
        one_token = L == 1 and mask is None and cu_seqlens is None and context_parallel is None
        if one_token:  # one token: a start at 0 changes nothing
            y, new_state = self.step(x[:, 0], state)
            return (y[:, None], new_state) if return_state else y[:, None]
        H = self.n_head
        q = self.q_proj(x).view(B, L, H, self.head_qk)  # (B, L, H, dk)
        k = self.k_proj(x).view(B, L, H, self.head_qk)  # (B, L, H, dk)
        v = self.v_proj(x).view(B, L, H, self.head_v)  # (B, L, H, dv)
        log_mag, arg = self._log_transition_parts(x)  # 2 x (B, L, H, d), arg None when real
        log_mag, arg, k = apply_masks(log_mag, arg, k, mask, starts)
        log_a = self._pack(log_mag, arg)
        chunk_size = self.chunk_size if self.mode == "chunk" else None
        if context_parallel is not None:
            y, final = gate_loop_context_parallel(
                q, k, v, log_a=log_a, group=context_parallel, mode=self.mode, initial_state=state,
                output_final_state=return_state, chunk_size=chunk_size,
            )  # fmt: skip
        else:
            y, final = gate_loop(
                q, k, v, log_a=log_a, mode=self.mode, initial_state=state, output_final_state=return_state,
                chunk_size=chunk_size, cu_seqlens=cu_seqlens,
            )  # fmt: skip
        out = self._output(y.reshape(B, L, self.d_v), x)
        return (out, final) if return_state else out  # type: ignore[return-value]

    def step(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """One token: x [B, d_model], state c(B H dk dv) or None -> (y [B, d_model], new state)."""
        self._check_x(x, 2)
        if state is not None:
            check_tensor("state", state)
        q, k, v, log_mag, arg = self._step_inputs(x)
        y, new_state = gate_loop_step(q, k, v, log_a=self._pack(log_mag, arg), state=state)
        return self._output(y.reshape(x.shape[0], self.d_v), x), new_state

    def step_real(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """``step`` with the complex state stored as real pairs, for runtimes without complex
        tensors (ONNX): x [B, d_model], state r(B H dk dv 2) or None -> (y [B, d_model], new state).

        The same math as ``step`` (``gateloop.ops.step_real``); state[..., 0] / [..., 1] are the
        real / imaginary parts of ``step``'s complex state.
        """
        self._check_x(x, 2)
        if state is not None:
            check_tensor("state", state)
        q, k, v, log_mag, arg = self._step_inputs(x)
        y, new_state = gate_loop_step_real(q, k, v, log_abs_a=log_mag, arg_a=arg, state=state)
        return self._output(y.reshape(x.shape[0], self.d_v), x), new_state

    def _step_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """x [B, d_model] -> q, k (B, H, dk), v (B, H, dv), log|a| and arg a (B, H, d)."""
        B, H = x.shape[0], self.n_head
        q = self.q_proj(x).view(B, H, self.head_qk)  # (B, H, dk)
        k = self.k_proj(x).view(B, H, self.head_qk)  # (B, H, dk)
        v = self.v_proj(x).view(B, H, self.head_v)  # (B, H, dv)
        return q, k, v, *self._log_transition_parts(x)

    def _output(self, y: Tensor, x: Tensor) -> Tensor:
        """Optional group norm and output gate (extensions), then the output projection."""
        if self.norm is not None:
            y = self.norm(y.reshape(-1, self.d_v)).view_as(y)
        if self.gate_proj is not None:
            y = y * F.silu(self.gate_proj(x))
        return self.out_proj(y)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_qk={self.d_qk}, d_v={self.d_v}, n_head={self.n_head}, "
            f"magnitude={self.magnitude_activation}, phase={self.phase_activation}, "
            f"data_controlled={self.data_controlled}, per_head_transition={self.per_head_transition}, "
            f"init={self.transition_init}, mode={self.mode}"
        )
