"""``generate``: a trained prior plus the codec of the latents it was trained on -> decoded samples.

What ``jobs/train_prior.py`` does after training (:func:`~latentflow.training.prior_stage.sample_and_decode`),
as a pipeline: the prior samples (``prior.sample``; a text-conditioned flow prior from prompts embedded by the
text encoder the codec records, :func:`~latentflow.encode.prompts.prompt_embeddings`), and the decoder rebuilt
from the codec (``AutoModel.from_codec``, weights' sha256 checked) decodes, inverting the codec's normalization.

Example::

    gen = pipeline("generate", model="runs/flow_prior/final", codec="outputs/default")
    images = gen(num_samples=4, steps=8, seed=0)          # 4 PIL images
    image = text_gen("a red bicycle", guidance_scale=3)    # a text-conditioned prior: one sample per prompt
"""

from __future__ import annotations

from typing import Any

import torch

from latentflow.errors import ConfigError, InputError
from latentflow.pipelines.base import Pipeline, Unit
from latentflow.pipelines.codec import MEDIA_OUTPUT_PARAMS, _from_codec, _sampling_rate, decode_batch
from latentflow.pipelines.media import to_media

SAMPLE_PARAMS = ("seed", "steps", "temperature", "top_k", "guidance_scale", "labels", "latent_size")


class GenerationPipeline(Pipeline):
    """Sample a prior and decode the samples through its codec's decoder.

    Args:
        model: a prior checkpoint folder or URL (``<train.output_dir>/final``) or a loaded prior.
        codec: the latent output the prior was trained on (its directory, or its
            :class:`~latentflow.format.codec.Codec` or JSON dict); its fingerprint must be the prior's.
        decoder: where the decoder's weights are, when not where the codec records them (sha256 checked),
            or a loaded decoder.
        normalized: the prior models normalized latents (``data.normalize``, the trainer's default); their
            rule (the codec's) is inverted before decoding. Token priors ignore it.
        text_column: the codec's text column a text-conditioned prior was trained on (default: the one
            whose width is the prior's ``text_dim``).

    Call: ``gen(num_samples=4)``, or ``gen("a prompt")`` / ``gen([...prompts])`` for a text-conditioned prior
    (one sample per prompt). Call parameters: ``num_samples``, ``seed``, ``steps`` (MaskGIT, discrete diffusion,
    flow), ``temperature`` and ``top_k`` (token priors), ``guidance_scale`` (text priors), ``labels`` (class
    priors), ``latent_size`` (a flow prior's other bucket), and the media outputs' ``output_type``,
    ``return_dict``, ``output_dir``, ``fps``.

    Returns:
        a list of decoded samples (a single one when called without ``num_samples`` and with at most one prompt).
    """

    task = "generate"

    def __init__(self, model: Any = None, device: Any = None, dtype: Any = "fp32", batch_size: int | None = None,
                 codec: Any = None, decoder: Any = None, normalized: bool = True, text_column: str | None = None,
                 storage_options: dict | None = None, **kwargs: Any):
        from latentflow.priors.base import PriorModel, load_prior

        if model is None or codec is None:
            raise ConfigError("pipeline('generate') needs model=<prior checkpoint, e.g. runs/flow_prior/final> and "
                              "codec=<the latent output it was trained on, e.g. outputs/default>")
        prior = model if isinstance(model, PriorModel) else load_prior(str(model), storage_options)
        self.storage_options = storage_options
        self.decoder, self.codec, self.fps = _from_codec(codec, decoder, storage_options)
        prior.check_codec(self.codec.fingerprint)
        self.normalized = normalized and not self.codec.discrete
        self.text_column = text_column
        super().__init__(prior.eval(), device, dtype, batch_size or 1, **kwargs)
        self._batch_given = batch_size is not None
        self.model.to(self.device)
        self.decoder.eval().to(self.device)

    def _sanitize_parameters(self, **kwargs: Any):
        post = {k: kwargs.pop(k) for k in MEDIA_OUTPUT_PARAMS if k in kwargs}
        fwd = {k: kwargs.pop(k) for k in SAMPLE_PARAMS if k in kwargs}
        super()._sanitize_parameters(**kwargs)
        return {}, fwd, post

    @property
    def text_dim(self) -> int:
        return int(getattr(self.model.config, "text_dim", 0) or 0)

    def __call__(self, inputs: str | list[str] | None = None, num_samples: int | None = None, batch_size: int | None = None,
                 **kwargs: Any) -> Any:
        """Draw ``num_samples`` samples (or one per prompt) and decode them (see the class docstring)."""
        _, fwd, post = (dict(d) for d in self._defaults)
        _, given_fwd, given_post = self._sanitize_parameters(**kwargs)
        fwd.update(given_fwd)
        post.update(given_post)
        prompts = [inputs] if isinstance(inputs, str) else list(inputs) if inputs is not None else None
        if prompts is not None and num_samples is not None and num_samples != len(prompts):
            raise InputError(f"one sample per prompt: got {len(prompts)} prompt(s) and num_samples={num_samples}")
        n = len(prompts) if prompts else (num_samples or 1)
        if n < 1:
            raise InputError(f"num_samples must be >= 1, got: {n}")
        single = num_samples is None and (inputs is None or isinstance(inputs, str))
        text = self._text(prompts)
        chunk = batch_size or (self.batch_size if self._batch_given else n)
        gen = torch.Generator(device=self.device).manual_seed(int(fwd.pop("seed", 0)))
        samples = []
        for start in range(0, n, chunk):
            part = slice(start, min(n, start + chunk))
            samples += self._forward_samples(part, gen, text, **fwd)
        units = [Unit(torch.empty(0), i, {}) for i in range(n)]
        outputs = [self.postprocess([x], [u], **post) for x, u in zip(samples, units)]
        return outputs[0] if single else outputs

    def _text(self, prompts: list[str] | None) -> dict[str, Any] | None:
        """The prompts' embeddings and mask, from the text encoder the codec records."""
        if prompts is None:
            return None
        if not self.text_dim:
            raise InputError("this prior is not text-conditioned (text_dim=0): call it without a prompt, e.g. gen(num_samples=4)")
        from latentflow.encode.prompts import prompt_embeddings

        columns = [t for t in self.codec.text if (t.name == self.text_column if self.text_column else t.hidden_width == self.text_dim)]
        if not columns:
            raise ConfigError(f"the codec records no text column {self.text_column or f'of width {self.text_dim}'} "
                              f"(it has {[t.name for t in self.codec.text] or 'none'}); pass text_column=<name>")
        values, mask, _ = prompt_embeddings(columns[0], prompts, storage_options=self.storage_options)
        return {"text": values, "text_mask": mask}

    def _forward_samples(self, part: slice, gen: torch.Generator, text: dict[str, Any] | None, steps: int = 8,
                         temperature: float = 1.0, top_k: int | None = None, guidance_scale: float = 1.0,
                         labels: Any = None, latent_size: tuple[int, ...] | None = None) -> list[torch.Tensor]:
        n = part.stop - part.start
        kwargs: dict[str, Any] = {"temperature": temperature, "top_k": top_k, "steps": steps}
        if latent_size is not None:
            kwargs["latent_size"] = tuple(latent_size)
        if text is not None:
            kwargs.update(text=text["text"][part].to(self.device), text_mask=text["text_mask"][part].to(self.device),
                          guidance_scale=guidance_scale)
        if labels is not None:
            labels = torch.as_tensor(labels).reshape(-1)[part] if torch.as_tensor(labels).ndim else torch.full((n,), int(labels))
            labels = labels.to(self.device)
        with torch.inference_mode():
            z = self.model.sample(n, labels=labels, generator=gen, **kwargs)
            return list(decode_batch(self.decoder, z, self.codec.normalization, self.normalized, self.dtype, self.device))

    def postprocess(self, outputs: list[Any], units: list[Unit], **params: Any) -> Any:
        x = outputs[0]
        rate = _sampling_rate(self.decoder, self.codec)
        return to_media(x, self.codec.modality, **{"fps": self.fps, "sampling_rate": rate, **params})


__all__ = ["GenerationPipeline"]
