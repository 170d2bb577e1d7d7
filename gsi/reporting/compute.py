"""FLOPs accounting (methods.md): 2 * P * (tokens prefilled + tokens generated) per role, with P the model's
parameter count without the input embeddings, counted from the model's own config.

P includes the output head (lm_head, or the PRM's score head), tied to the input embedding or not: it is a
matmul every token pays. The input embedding is a table lookup and costs nothing.

Applied to gsi.runtime.state's token counts this is the *ideal* count (summary.json `flops`, "ideal FLOPs" in tables and
plots): token-granular, each problem's prefix computed once per role. Applied to the tokens the engines report
prefilling and generating it is the *executed* count (`measured.flops_executed`): whole KV blocks, recomputed
blocks and the shared system prompt included (docs/reports.md, "FLOPs: ideal and executed").
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def non_embedding_params(path: str, trust_remote_code: bool = False) -> int:
    import torch
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    with torch.device("meta"):  # shapes only: nothing is allocated or loaded
        if cls is not None:
            model = cls(config)
        else:
            from transformers import AutoModel
            model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    total = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name
                and "wte" not in name and "word_embeddings" not in name)
    # A tied output head shares its matrix with the input embedding, so named_parameters() lists it only under
    # the embedding's name (filtered out above); it is still a matmul every token pays.
    head, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and inputs is not None and head.weight is inputs.weight:
        total += head.weight.numel() + (head.bias.numel() if getattr(head, "bias", None) is not None else 0)
    return total


def flops_per_token(params: int) -> float:
    return 2.0 * params
