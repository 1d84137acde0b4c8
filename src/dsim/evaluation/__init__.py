"""Evaluation of predictors on the known results, and reproductions of published results."""
