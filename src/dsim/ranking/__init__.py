"""Ranking: measures over candidates, the predictor that turns them into a Ranking."""
