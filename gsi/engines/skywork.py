"""Skywork-o1-Open-PRM (`Qwen2ForPrmModel`) as a vLLM model class: vLLM 0.32 does not ship it.

The class is built on first access (PEP 562 `__getattr__`), so importing this module needs neither torch nor vLLM;
gsi.engines.worker registers it by name ("gsi.engines.skywork:SkyworkQwen2PrmModel") in every engine process that
serves it. The input layout and the score read-out are the `skywork_prm` adapter's (gsi.engines.rewards).
"""

from __future__ import annotations


def _build_skywork_model_cls():
    """vLLM has no `Qwen2ForPrmModel` (Skywork serves it with a vLLM-0.6 plugin): a Qwen2 backbone and a value head
    `v_head.summary` = Linear(hidden, 1) with bias, one raw value per token (ALL pooling, prefix caching on)."""
    import torch
    from torch import nn
    from vllm.model_executor.layers.pooler.tokwise import pooler_for_token_classify
    from vllm.model_executor.models.interfaces_base import default_pooling_type
    from vllm.model_executor.models.qwen2 import Qwen2Model
    from vllm.model_executor.models.utils import AutoWeightsLoader, maybe_prefix

    @default_pooling_type(tok_pooling_type="ALL")
    class SkyworkQwen2PrmModel(nn.Module):
        is_pooling_model = True
        hf_to_vllm_mapper = Qwen2Model.hf_to_vllm_mapper
        packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

        def __init__(self, *, vllm_config, prefix: str = ""):
            super().__init__()
            config = vllm_config.model_config.hf_config
            self.config = config
            self.model = Qwen2Model(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
            head_dtype = vllm_config.model_config.head_dtype
            self.v_head = nn.Linear(config.hidden_size, 1, bias=True, dtype=head_dtype)
            self.pooler = pooler_for_token_classify(vllm_config.model_config.pooler_config)
            self.make_empty_intermediate_tensors = self.model.make_empty_intermediate_tensors

        def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model.embed_input_ids(input_ids)

        def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None):
            hidden = self.model(input_ids, positions, intermediate_tensors, inputs_embeds)
            return self.v_head(hidden.to(self.v_head.weight.dtype))

        def load_weights(self, weights):
            def renamed():
                for name, tensor in weights:
                    if name.startswith("v_head.summary."):
                        name = "v_head." + name[len("v_head.summary."):]
                    yield name, tensor

            loader = AutoWeightsLoader(self, ignore_unexpected_prefixes=["lm_head."])
            return loader.load_weights(renamed())

    return SkyworkQwen2PrmModel


_LAZY_CLASSES = {"SkyworkQwen2PrmModel": _build_skywork_model_cls}


def __getattr__(name: str):  # PEP 562: the class is built on first access, by name
    if name in _LAZY_CLASSES:
        cls = _LAZY_CLASSES[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
