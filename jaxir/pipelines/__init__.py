"""Restoration pipelines built from jaxir's models and samplers: DiffBIR (:mod:`jaxir.pipelines.diffbir`), the
shared latent sampling (:mod:`jaxir.pipelines.sampling`) and colour fixes (:mod:`jaxir.pipelines.colorfix`)."""
