"""The parts every Transformer in slimbert is built from: attention (self, cross, causal, with
a KV cache), positions (learned, sinusoidal, rotary), the feed-forward network, the block and
the stack. Models (slimbert.models) are builders over these; nothing here knows about BERT."""

from slimbert.modules.attention import MultiHeadAttention, causal_mask, combine_masks, padding_mask
from slimbert.modules.feedforward import FeedForward, activation
from slimbert.modules.gau import GatedAttentionUnit, GAULayer
from slimbert.modules.kv_cache import KVCache, LayerCache, StackCache
from slimbert.modules.layer import StackOutput, TransformerLayer, TransformerStack
from slimbert.modules.packed_linear import PackedLinear
from slimbert.modules.positions import LearnedPositions, RotaryEmbedding, SinusoidalPositions
from slimbert.modules.recurrent import PackedLSTM, merge_directions

__all__ = [
    "FeedForward", "GAULayer", "GatedAttentionUnit", "KVCache", "LayerCache", "LearnedPositions", "MultiHeadAttention", "PackedLSTM", "PackedLinear", "RotaryEmbedding",
    "SinusoidalPositions", "StackCache", "StackOutput", "TransformerLayer", "TransformerStack", "activation",
    "causal_mask", "combine_masks", "merge_directions", "padding_mask",
]
