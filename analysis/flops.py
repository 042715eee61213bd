"""FLOPs conventions, and the exact FLOPs of the table's model family at any (N, S).

Budgets are only comparable under one convention (``--flops-convention``):
- ``ours``: the project's accounting (models/accounting.py): 6 x active non-embedding params
  + attention (6 L T d) + unembedding (6 V d) per token; the planner's budgets use it.
- ``6N``: 6 x active parameters (the declared N convention), as Abnar et al. 2025 count.
- ``chinchilla``: Hoffmann et al. 2022, Appendix F: embeddings, QKV and output projections,
  attention logits, softmax and reduction, the (active) feed-forward and the logits, x3 for
  training.

The law optimiser needs tokens D = C / flops_per_token(N, S) for sizes and sparsities that
were not trained. ``Family`` rebuilds the table's model family (width -> depth, heads, FFN,
vocabulary, context, K, granularity) from its columns and evaluates the exact accounting
(models.accounting.shape_counts, pure Python) on a fine grid of widths, at any sparsity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.accounting import Shape, shape_counts

CONVENTIONS = ("ours", "6N", "chinchilla")
ARCHITECTURE = (
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "seq_len",
    "vocab_size",
    "num_experts",
    "top_k",
    "granularity",
)


def chinchilla_flops_per_token(row) -> float:
    d, L, T, V = row["d_model"], row["n_layers"], row["seq_len"], row["vocab_size"]
    heads = row.get("n_heads", max(1, d // 64))
    ffn_active = row["params_active_non_embedding"] / L - 4 * d * d - 2 * d  # per layer
    forward = (
        2 * V * d  # embeddings, counted as a matmul in Appendix F
        + L * (2 * 3 * d * d + 2 * T * d + 3 * heads * T + 2 * T * d + 2 * d * d + 2 * ffn_active)
        + 2 * d * V
    )
    return 3 * forward


def flops_per_token(df: pd.DataFrame, convention: str, n_active: str) -> np.ndarray:
    """Each run's training FLOPs per token under a convention."""
    if convention == "ours":
        return df["flops_per_token"].to_numpy(float)
    if convention == "6N":
        return 6 * df[n_active].to_numpy(float)
    if convention == "chinchilla":
        missing = [
            c for c in (*ARCHITECTURE[:6], "params_active_non_embedding") if c not in df.columns
        ]
        if missing:
            raise ValueError(f"the chinchilla FLOPs convention needs column(s) {missing}")
        return np.array([chinchilla_flops_per_token(r) for _, r in df.iterrows()], float)
    raise ValueError(f"unknown FLOPs convention {convention!r}; choose one of {CONVENTIONS}")


def _mode(series: pd.Series):
    return series.mode().iloc[0]


class Family:
    """The table's model family, evaluated exactly at continuous widths and sparsities."""

    def __init__(self, df: pd.DataFrame, non_embedding: bool, convention: str):
        self.non_embedding, self.convention = non_embedding, convention
        self.ffn_ratio = float(_mode(df["d_ff"] / df["d_model"]))
        depths = df["n_layers"].unique()
        self.fixed_depth = float(depths[0]) if len(depths) == 1 else None
        self.aspect = float(_mode(df["d_model"] / df["n_layers"]))
        self.head_dim = float(_mode(df["d_model"] / df["n_heads"])) if "n_heads" in df else 64.0
        self.seq_len, self.vocab = float(_mode(df["seq_len"])), float(_mode(df["vocab_size"]))
        self.top_k = float(_mode(df["top_k"]))
        self.granularity = float(_mode(df["granularity"])) if "granularity" in df else 1.0
        self.glu = bool(_mode(df["expert_type"]) == "glu") if "expert_type" in df else True
        # MLA (models/mla.py): its latent, query rank and rotary part per head, with the
        # model's own defaults for options left unset (4 x head_dim; none; head_dim / 2)
        self.mla = "attention" in df and _mode(df["attention"]) == "mla"
        given = lambda col, default: (
            float(_mode(df[col].dropna())) if col in df and df[col].notna().any() else default
        )
        self.kv_rank = given("kv_lora_rank", 4 * self.head_dim)
        self.q_rank = given("q_lora_rank", 0.0)
        self.rope_dim = given("qk_rope_head_dim", max(2.0, self.head_dim // 4 * 2))
        lo, hi = df["d_model"].min(), df["d_model"].max()
        self.widths = np.exp(np.linspace(np.log(lo / 8), np.log(hi * 8), 400))
        self._cache: dict[float, dict] = {}

    @classmethod
    def from_table(cls, df: pd.DataFrame, non_embedding: bool, convention: str):
        """The family, or None when the table lacks the architecture columns (then the
        optimiser falls back to 6 N_active FLOPs per token, and says so)."""
        if not set(ARCHITECTURE) <= set(df.columns):
            return None
        return cls(df, non_embedding, convention)

    def counts(self, widths: np.ndarray, sparsity: float) -> dict[str, np.ndarray]:
        E = self.top_k / (1 - sparsity)
        out: dict[str, list] = {}
        for d in widths:
            layers = self.fixed_depth or max(1.0, round(d / self.aspect))
            shape = Shape(
                d,
                layers,
                self.ffn_ratio * d,
                self.seq_len,
                self.vocab,
                E,
                self.top_k,
                self.granularity,
                0,
                self.glu,
                False,
                2 * (self.head_dim + (self.rope_dim if self.mla else 0)),
                self.mla,
                d / self.head_dim,
                self.kv_rank if self.mla else 0,
                self.q_rank if self.mla else 0,
                self.rope_dim if self.mla else 0,
            )
            for k, v in shape_counts(shape).items():
                out.setdefault(k, []).append(v)
            if self.convention == "chinchilla":
                out.setdefault("chinchilla", []).append(
                    chinchilla_flops_per_token(
                        {
                            "d_model": d,
                            "n_layers": layers,
                            "seq_len": self.seq_len,
                            "vocab_size": self.vocab,
                            "n_heads": d / self.head_dim,
                            "params_active_non_embedding": out["params_active_non_embedding"][-1],
                        }
                    )
                )
        return {k: np.asarray(v, float) for k, v in out.items()}

    def n_columns(self, c: dict) -> tuple[np.ndarray, np.ndarray]:
        """(N_total, N_active) under the declared N convention."""
        if self.non_embedding:
            return c["params_total"] - c["params_embedding"], c["params_active_non_embedding"]
        return c["params_total"], c["params_active"]

    def flops_per_token(self, n: np.ndarray, sparsity: float, n_kind: str) -> np.ndarray:
        """FLOPs per token of the family member whose N (``n_kind``: total or active) is n."""
        key = round(float(sparsity), 9)
        if key not in self._cache:
            self._cache[key] = self.counts(self.widths, sparsity)
        c = self._cache[key]
        n_total, n_active = self.n_columns(c)
        ns = n_total if n_kind == "total" else n_active
        fpt = {"ours": c["flops_per_token"], "6N": 6 * n_active}.get(self.convention)
        fpt = c["chinchilla"] if fpt is None else fpt
        return np.exp(np.interp(np.log(n), np.log(ns), np.log(fpt)))


def six_n_flops(n_active: np.ndarray) -> np.ndarray:
    """The fallback when a table has no architecture columns: 6 x N_active."""
    return 6 * np.asarray(n_active, float)
