"""Lightning training of HedgeNet and the baselines: data module, losses, metrics, module, callbacks."""
