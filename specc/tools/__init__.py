"""What the commands do with a checked plan or a trained run: lint, cost, test, emit, diff, graph, import, eval/predict, export, generate."""
