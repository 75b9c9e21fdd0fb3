"""``--recipe auto``: convert the candidates a target allows, measure them on the target and pick the fastest
that meets the size / accuracy / latency / RAM budgets; accuracy-aware mixed precision."""
