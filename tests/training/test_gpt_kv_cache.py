"""GPT sampling through a KV cache computes the same next-token logits as the full forward over the prefix,
so samples are the same draws, at one token's cost per step instead of the whole prefix's."""

from __future__ import annotations

import pytest
import torch

from latentflow.priors.gpt import GPTConfig, GPTPrior


@pytest.fixture
def prior():
    torch.manual_seed(0)
    return GPTPrior(GPTConfig(latent_shape=[4, 4], vocab_size=17, hidden_size=32, num_layers=2, num_heads=4)).eval()


def test_cached_step_logits_equal_the_full_forward(prior):
    tokens = torch.randint(0, 17, (3, 16))
    full = prior(tokens[:, :-1])  # (3, 16, V): output i predicts token i
    caches = [{} for _ in prior.blocks]
    h = prior.start_emb(prior.class_labels(None, 3, tokens.device))[:, None]
    for i in range(16):
        step = prior._step(h + prior.pos_emb[:, i: i + 1], caches)
        torch.testing.assert_close(step, full[:, i], atol=1e-5, rtol=1e-5)
        h = prior.tok_emb(tokens[:, i: i + 1])


def test_samples_equal_the_uncached_draws(prior):
    drawn = prior.sample(2, generator=torch.Generator().manual_seed(3), top_k=5)
    # the same draws without a cache: the full forward over each prefix
    gen, tokens = torch.Generator().manual_seed(3), torch.zeros(2, 0, dtype=torch.long)
    with torch.no_grad():
        for _ in range(16):
            logits = prior(tokens)[:, -1].float()
            kth = torch.topk(logits, 5).values[:, -1:]
            probs = torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)
            tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=gen)], dim=1)
    assert drawn.shape == (2, 4, 4) and torch.equal(drawn.view(2, 16), tokens)


def test_a_cache_refuses_non_causal_attention():
    from latentflow.models.layers import Attention

    with pytest.raises(ValueError, match="KV cache takes causal attention"):
        Attention(8, 2)(torch.randn(1, 2, 8), cache={})
