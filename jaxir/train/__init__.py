"""Training in JAX: the generic loop (:mod:`jaxir.train.loop`) and the restorer objective on procedural data
(:mod:`jaxir.train.restorer`)."""
