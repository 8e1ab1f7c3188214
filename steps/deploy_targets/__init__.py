"""Deploy targets: one small module per place a model can be served, each behind one function."""
