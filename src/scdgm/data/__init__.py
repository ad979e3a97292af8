"""The data layer: AnnData to validated arrays and minibatches on the training device."""
