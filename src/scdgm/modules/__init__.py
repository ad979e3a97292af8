"""Pure torch / pyro modules: they take tensors and never see AnnData."""
