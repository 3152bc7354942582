"""What a masked-LM checkpoint predicts for [MASK]: its top tokens for each sentence.

A quick look at how far pretraining has come. A model that has learned frequent tokens only ranks
the same few (",", "the", "and") first everywhere; one that has learned syntax and some facts
fills each blank with words that fit it.

    python benchmarks/fill_mask.py --model runs/mini-pretrained
    python benchmarks/fill_mask.py --model runs/mini-pretrained "the cat sat on the [MASK] ."
"""

from __future__ import annotations

import argparse

import torch

from slimbert.checkpoint import load_model, load_tokenizer

SENTENCES = (
    "the capital of france is [MASK] .",
    "he went to the [MASK] to buy some bread .",
    "she [MASK] the door and walked in .",
    "the [MASK] of the united states is the head of state .",
    "it was a cold [MASK] in december .",
)


@torch.inference_mode()
def top_tokens(model, tokenizer, pieces: dict[int, str], sentence: str, k: int) -> list[str]:
    """The k most likely tokens (`pieces`: id -> token) at the first [MASK] of `sentence`."""
    ids = torch.tensor(tokenizer.encode([sentence]).input_ids)
    masked = (ids[0] == tokenizer.mask_id).nonzero().view(-1)
    if not len(masked):
        raise SystemExit(f"no [MASK] in: {sentence}")
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return [pieces[i] for i in logits[0, masked[0]].topk(k).indices.tolist()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a checkpoint with an MLM head (slimbert pretrain's OUT)")
    p.add_argument("--top", type=int, default=8, help="tokens shown per sentence")
    p.add_argument("sentences", nargs="*", help="sentences with a [MASK] (default: a few built in)")
    args = p.parse_args()
    model, tokenizer = load_model(args.model).eval(), load_tokenizer(args.model)
    pieces = {i: t for t, i in tokenizer.vocab.items()}
    for sentence in args.sentences or SENTENCES:
        print(f"{sentence}\n    {' '.join(top_tokens(model, tokenizer, pieces, sentence, args.top))}")


if __name__ == "__main__":
    main()
