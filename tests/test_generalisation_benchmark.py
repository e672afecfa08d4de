"""benchmarks/generalisation.py scores training-pool entries and unseen-scene entries of the same recipe."""


def test_generalisation_benchmark_scores_both_sets(run_benchmark):
    report = run_benchmark("generalisation", "--samples", "2", "--draws", "1")
    assert set(report["results"]) == {"training pool", "unseen scenes"}
    losses = [row["mean"] for row in report["results"].values()]
    assert all(0 < loss < 10 for loss in losses) and losses[0] != losses[1]
    assert report["unseen_over_training"] == losses[1] / losses[0]
