"""Deploy targets: one small module per place a model can be served, each behind one function."""

# Names of the targets (modules under steps/deploy_targets/, run by steps/deploy.py); the deploy
# declaration and the workflow's enum come from here.
TARGETS = ("local", "kubernetes")
